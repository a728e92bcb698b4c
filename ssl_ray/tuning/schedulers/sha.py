"""Synchronous successive halving (`scheduler: {name: sha}`): all n trials of the plan in one bracket, deciding at
ASHA's rungs and then at max_epochs. A trial that reaches a rung pauses (its slot goes to another trial; Tune
restarts it later from that epoch's checkpoint) until every live trial has reached the rung; then the best
ceil(alive / reduction_factor) go on and the others stop. Unlike asynchronous ASHA, no trial is promoted for lack
of competition (the first to reach a rung), at the price of the wait at each rung. Ray's HyperBandScheduler does
the bookkeeping; PlanSHA only holds it to one bracket (Ray's would open several, sized for HyperBand) and makes
it wait for the whole plan (its internals: ray_internals)."""
from __future__ import annotations

import math
from typing import Any

from ray.tune.schedulers import HyperBandScheduler

from ...errors import SSLRayError
from .. import ray_internals as RI
from .base import TIME_ATTR, Halving, asha_rungs


class PlanSHA(RI.BracketDecisionHook, HyperBandScheduler):
    """One bracket of n_trials trials that decides only when all of them have arrived (module docstring)."""

    def __init__(self, *, n_trials: int, max_t: int, grace_period: int, reduction_factor: int):
        super().__init__(time_attr=TIME_ATTR, max_t=max_t, reduction_factor=reduction_factor)
        self.n_trials, self.max_t, self.deciding = n_trials, max_t, False
        self.bracket = RI.sha_bracket(TIME_ATTR, n_trials, grace_period, max_t, reduction_factor,
                                      len(asha_rungs(max_t, grace_period, reduction_factor)))

    def on_trial_add(self, tc, trial):
        RI.sha_join(self, self.bracket, trial)

    def on_trial_result(self, tc, trial, result):
        if result.get(TIME_ATTR, 0) >= self.max_t:  # its last epoch: the trial ends by itself, no pause
            RI.sha_record(self.bracket, trial, result)
            return self.CONTINUE
        return super().on_trial_result(tc, trial, result)

    def on_trial_remove(self, tc, trial):
        # Ray decides on a removal only before the bracket's first decision; a trial that ends (or errors) while
        # the others wait at a later rung must let them go on too
        if not RI.sha_remove(self.bracket, trial) and not self.deciding:
            RI.sha_decide(self, tc, self.bracket)

    def may_decide(self, bracket) -> bool:
        """Decide only once every trial of the plan has arrived: the rung waits for those not started yet."""
        return RI.sha_arrived(bracket) >= self.n_trials

    def deciding_now(self, flag: bool) -> None:
        self.deciding = flag  # stopping the losers calls on_trial_remove: no decision inside a decision


class SHA(Halving):
    name, order = "sha", 1
    label = "SHA"
    resumable = False
    not_resumable = ("a synchronous successive-halving search (sha), which cannot be resumed: its rung decisions "
                     "wait for every trial of the plan and are not saved; its results so far stay there; start a "
                     "new experiment (or use asha, which resumes)")
    limits_concurrency = False  # Tune's limit would count the trials paused at a rung and stop there

    def check(self, space: Any, o: Any) -> None:
        if o.workers > 1:
            raise SSLRayError("--scheduler sha runs single-worker trials: it pauses trials at each rung and restarts "
                              "them from their checkpoints, which is tested for single-worker trials only; drop "
                              "--workers, or use asha")
        if o.max_concurrent:
            raise SSLRayError("--max-concurrent does not combine with --scheduler sha: Tune counts a trial paused at "
                              "a rung as running, so the search would stop at the first rung; sha runs as many "
                              "trials at once as the resources allow (--cpus-per-trial sets how many)")

    def build(self, space: Any, exp: str, n_trials: int) -> Any:
        s = space.scheduler
        return PlanSHA(n_trials=n_trials, max_t=s.max_epochs, grace_period=s.grace_epochs,
                       reduction_factor=s.reduction_factor)

    def survivors(self, alive: float, rf: int) -> float:
        return math.ceil(alive / rf)

    def plan_line(self, p: dict[str, Any]) -> str:
        at = ", ".join(map(str, p["rungs"])) or "(none: grace reaches max)"
        return (f"SHA (synchronous): up to {p['max_epochs']} epochs per trial; at epochs {at} every trial waits "
                f"for all the others, then the best 1/{p['reduction_factor']} (rounded up) go on")

    def budget_note(self, p: dict[str, Any]) -> str:
        return f", {p['epochs_nominal']:g} with SHA (unless trials fail)"


KIND = SHA()
