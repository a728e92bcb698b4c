"""ASHA (`scheduler: {name: asha}`, the default): asynchronous successive halving on our own epoch counter. At each
rung (grace_epochs * reduction_factor^k) a trial goes on when its val_error is in the best 1/reduction_factor of
what the trials that reached the rung so far reported, else it stops. Trials are known by their plan entry, not
by Tune's trial id, so a trial resumed in a new Tune trial keeps the rungs it passed, and a resumed search gets
its rungs back by replaying the saved results (Ray saves no scheduler state: RAY.md)."""
from __future__ import annotations

import math
from typing import Any

from ray.tune.schedulers import ASHAScheduler

from ..options import SPEC_KEY, plan_key
from .base import MODE, TIME_ATTR, Halving, asha_rungs

__all__ = ["KIND", "PlanASHA", "asha_rungs", "replay_rungs"]


class _Alias:
    """A trial seen under its plan entry's key (for ASHA's rung records)."""

    def __init__(self, trial):
        self._t, self.trial_id = trial, plan_key(trial.config[SPEC_KEY]["index"])

    def __getattr__(self, k):
        return getattr(self._t, k)


class PlanASHA(ASHAScheduler):
    """ASHA that knows a trial by its plan entry, not by Tune's trial id: a trial resumed in a new Tune trial
    keeps the rungs it already passed (they are replayed under the same key: replay_rungs)."""

    def on_trial_add(self, tc, trial):
        super().on_trial_add(tc, _Alias(trial))

    def on_trial_result(self, tc, trial, result):
        return super().on_trial_result(tc, _Alias(trial), result)

    def on_trial_complete(self, tc, trial, result):
        super().on_trial_complete(tc, _Alias(trial), result)

    def on_trial_remove(self, tc, trial):
        super().on_trial_remove(tc, _Alias(trial))


def replay_rungs(scheduler: Any, histories: dict[str, list[dict[str, Any]]]) -> int:
    """ASHA's rung state is not saved by Tuner.restore (RAY.md). Rebuild it: every saved (epoch, val_error)
    of every trial is fed to ASHA's bracket in epoch order, so the rungs hold what they held before the
    interruption; trials that resume are judged against the same cut-offs, and a rung a trial already
    passed is never re-decided (ASHA's own rule). Returns the number of results replayed."""
    if not isinstance(scheduler, ASHAScheduler):
        return 0
    rows = sorted((r["epoch"], tid, r["val_error"]) for tid, rs in histories.items() for r in rs
                  if isinstance(r.get("val_error"), (int, float)) and math.isfinite(r["val_error"])
                  and isinstance(r.get("epoch"), (int, float)))
    from ..ray_internals import asha_replay

    asha_replay(scheduler, rows, MODE)  # Ray internal: ssl-ray uses ASHA with one bracket (Ray's default)
    return len(rows)


class ASHA(Halving):
    name, order = "asha", 0
    label = "ASHA"

    def build(self, space: Any, exp: str, n_trials: int) -> Any:
        s = space.scheduler
        return PlanASHA(time_attr=TIME_ATTR, max_t=s.max_epochs, grace_period=s.grace_epochs,
                        reduction_factor=s.reduction_factor)

    def replay(self, scheduler: Any, histories: dict[str, list[dict[str, Any]]]) -> int:
        return replay_rungs(scheduler, histories)

    def plan_line(self, p: dict[str, Any]) -> str:
        at = ", ".join(map(str, p["rungs"])) or "(none: grace reaches max)"
        return (f"ASHA: up to {p['max_epochs']} epochs per trial, decisions at epochs {at}, "
                f"keeping 1/{p['reduction_factor']}")

    def budget_note(self, p: dict[str, Any]) -> str:
        return f", about {p['epochs_nominal']:g} if ASHA keeps exactly 1/{p['reduction_factor']} at each decision"


KIND = ASHA()
