"""Level-triggered instance loops: mirror what nodes report, then act (keep-alive, minimum warm,
version drain, adoption after a restart), and the fleet loop's tick when this control plane leads."""

from control_plane.reconcile.reconciler import Reconciler

__all__ = ["Reconciler"]
