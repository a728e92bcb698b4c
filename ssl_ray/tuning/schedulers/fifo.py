"""FIFO (`scheduler: {name: fifo}`): every trial runs max_epochs; nothing is stopped early."""
from __future__ import annotations

from typing import Any

from .base import Kind


class FIFO(Kind):
    name, order = "fifo", 2

    def build(self, space: Any, exp: str, n_trials: int) -> Any:
        from ray.tune.schedulers import FIFOScheduler

        return FIFOScheduler()

    def plan_line(self, p: dict[str, Any]) -> str:
        return f"FIFO: every trial runs {p['max_epochs']} epochs"


KIND = FIFO()
