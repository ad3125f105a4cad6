"""Function settings validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from control_plane.functions import FunctionCreate


def test_defaults() -> None:
    cfg = FunctionCreate(name="hello")
    assert (cfg.handler, cfg.memory_mb, cfg.timeout_s, cfg.concurrency) == ("main.handler", 256, 30.0, 1)
    assert (cfg.min_instances, cfg.max_instances, cfg.keep_alive_s) == (0, 10, 600.0)
    assert cfg.effective_cpu_millis() == 250
    assert FunctionCreate(name="big", memory_mb=2048).effective_cpu_millis() == 2000
    assert FunctionCreate(name="set", cpu_millis=100).effective_cpu_millis() == 100


@pytest.mark.parametrize("bad", [
    {"name": "Upper"}, {"name": "-dash"}, {"name": "a" * 64}, {"name": "ok", "memory_mb": 32},
    {"name": "ok", "timeout_s": 0}, {"name": "ok", "concurrency": 0}, {"name": "ok", "handler": "nodot"},
    {"name": "ok", "handler": "a.b-c"}, {"name": "ok", "min_instances": 3, "max_instances": 2},
    {"name": "ok", "env": {"1BAD": "x"}}, {"name": "ok", "env": {"CUMULUS_TOKEN": "x"}},
])
def test_invalid(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FunctionCreate.model_validate(bad)
