"""Schedules: cron expressions (in a time zone) or rates that fire async calls of a function."""

from control_plane.schedules.runner import Schedules, iso, when_of
from control_plane.schedules.spec import InvalidSchedule, When

__all__ = ["InvalidSchedule", "Schedules", "When", "iso", "when_of"]
