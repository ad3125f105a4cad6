"""The event bus: EventBridge-shaped events routed by rules (event patterns) to targets (`bus`),
and the pure pattern language and input transforms (`patterns`)."""

from control_plane.eventbus.bus import EventBus, check_rule, pattern_matches
from control_plane.eventbus.index import RuleIndex, exact_sources
from control_plane.eventbus.patterns import (
    InvalidPattern,
    InvalidTransform,
    Pattern,
    Transform,
    compile_pattern,
    compile_transform,
    matches,
)

__all__ = ["EventBus", "InvalidPattern", "InvalidTransform", "Pattern", "RuleIndex", "Transform",
           "check_rule", "compile_pattern", "compile_transform", "exact_sources", "matches",
           "pattern_matches"]
