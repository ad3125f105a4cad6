"""Typed API errors. Each has its HTTP status and a stable `type`, rendered as
`{"error": {"type": ..., "message": ...}}` (plus `traceback` where the function raised)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from node_agent import protocol as p


class CumulusError(Exception):
    """Base of every error the API reports."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "InternalError"
    retry_after_s: float | None = None  # when retrying may succeed, for those that say

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The JSON error envelope."""
        return {"error": {"type": self.type, "message": self.message, **self.extra}}

    def headers(self) -> dict[str, str]:
        """The answer's headers beyond the envelope: `Retry-After` (whole seconds, at least 1)."""
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


class Unauthorized(CumulusError):
    status, type = 401, "Unauthorized"


class Forbidden(CumulusError):
    status, type = 403, "Forbidden"


class FunctionNotFound(CumulusError):
    status, type = 404, "FunctionNotFound"

    def __init__(self, name: str) -> None:
        super().__init__(f"no function named {name!r}")


class NotFound(CumulusError):
    status, type = 404, "NotFound"


class InvalidCode(CumulusError):
    status, type = 400, "InvalidCode"


class InvalidEvent(CumulusError):
    status, type = 400, "InvalidEvent"


class InvalidConfig(CumulusError):
    status, type = 422, "InvalidConfig"


class InvalidRequest(CumulusError):
    """A request the API cannot take as it is (a header with an unknown value, say)."""

    status, type = 400, "InvalidRequest"


class QueueUnavailable(CumulusError):
    """The durable queue (the database, or the job broker) does not take jobs just now."""

    status, type = 503, "QueueUnavailable"


class MailNotConfigured(CumulusError):
    """The cluster has no SMTP relay (`mail_relay`): functions cannot send mail."""

    status, type = 503, "MailNotConfigured"


class InvalidMail(CumulusError):
    """A message a function asked to send is not one (an address, a header, a size)."""

    status, type = 400, "InvalidMail"


class MailRelayError(CumulusError):
    """The SMTP relay could not be reached, or refused the message."""

    status, type = 502, "MailRelayError"


class RequirementsFailed(CumulusError):
    status, type = 422, "RequirementsInstallFailed"


class BuildUnavailable(CumulusError):
    """The build sandbox cannot run (its Docker engine or the runtime image is missing)."""

    status, type = 503, "BuildUnavailable"


class PayloadTooLarge(CumulusError):
    status, type = 413, "PayloadTooLarge"


class ConflictError(CumulusError):
    status, type = 409, "Conflict"


class Throttled(CumulusError):
    status, type = 429, "Throttled"


class QuotaExceeded(CumulusError):
    """A tenant's quota (named in `quota`) is used up: 429 with `Retry-After` when waiting helps,
    403 when it does not (a deploy over the function quota)."""

    status, type = 429, "QuotaExceeded"

    def __init__(self, message: str, *, quota: str, retry_after_s: float | None = None,
                 status: int = 429) -> None:
        super().__init__(message, quota=quota)
        self.status = status  # type: ignore[misc]
        self.retry_after_s = retry_after_s


class BudgetExceeded(CumulusError):
    """A tenant spent its monthly budget and its budget action is to throttle."""

    status, type = 429, "BudgetExceeded"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NoCapacity(CumulusError):
    status, type = 503, "NoCapacity"


class InstanceStartFailed(CumulusError):
    status, type = 503, "InstanceStartFailed"


class NodeUnavailable(CumulusError):
    status, type = 502, "NodeUnavailable"


# Outcomes reported by the runtime shim or the node agent, mapped to the status the caller sees.
OUTCOME_STATUS: dict[str, int] = {
    p.HANDLER_ERROR: 500,
    p.NOT_SERIALIZABLE: 500,
    p.INIT_ERROR: 500,
    p.CRASHED: 502,
    p.OUT_OF_MEMORY: 502,
    p.TIMEOUT: 504,
    p.INVALID_EVENT: 400,
    p.RESPONSE_TOO_LARGE: 502,
}
