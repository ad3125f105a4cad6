"""What happened: fleet events with their reasons, invocation records, and their flush to the store.

Coming here: Prometheus metrics.
"""

from control_plane.telemetry.events import Event, EventLog
from control_plane.telemetry.invocations import InvocationBuffer, InvocationRecord
from control_plane.telemetry.recorder import Telemetry
from control_plane.telemetry.schemas import EventPublic, InvocationPublic

__all__ = ["Event", "EventLog", "EventPublic", "InvocationBuffer", "InvocationPublic", "InvocationRecord",
           "Telemetry"]
