"""The event bus: EventBridge-shaped events routed by rules (event patterns) to targets."""

from control_plane.eventbus.patterns import (
    InvalidPattern,
    InvalidTransform,
    Pattern,
    Transform,
    compile_pattern,
    compile_transform,
    matches,
)

__all__ = ["InvalidPattern", "InvalidTransform", "Pattern", "Transform", "compile_pattern",
           "compile_transform", "matches"]
