"""What functions may call (`context.services`): the mail their tenant may send (log entries need no
control plane: they go in the call's own logs, see `node_agent.shim.cumulus_runtime`)."""

from control_plane.services.mail import MAX_BODY_CHARS, MAX_RECIPIENTS, Mailer, MailMessage, Relay

__all__ = ["MAX_BODY_CHARS", "MAX_RECIPIENTS", "MailMessage", "Mailer", "Relay"]
