"""What every trial scheduler says of itself (`Kind`), with the defaults most of them share. Time is our own epoch
counter (TIME_ATTR): restored trials may restart Tune's training_iteration (RAY.md)."""
from __future__ import annotations

import math
from typing import Any, Callable

from ...errors import SSLRayError

METRIC, MODE, TIME_ATTR = "val_error", "min", "epoch"

Fail = Callable[[tuple[str, ...], str], Exception]
"""Makes the error for a key of the space's `scheduler:` (path, message): spaces.py names the file and line."""


class Kind:
    """One scheduler. `name`: the `scheduler: {name: ...}` of a space and --scheduler; `order`: its place in --help;
    `chosen_by_name`: False for one a searcher brings (bohb)."""

    name: str = ""
    order: int = 0
    chosen_by_name: bool = True
    searcher: str | None = None
    """The searcher that brings this scheduler with it, replacing the space's (bohb)."""
    own_keys: tuple[str, ...] = ()
    """Settings of `scheduler:` only this scheduler takes (another refuses them when set)."""
    resumable: bool = True
    not_resumable: str = ""
    """Why a search with this scheduler cannot be resumed (`resumable` False)."""
    keep_checkpoints: int | None = 2
    """Checkpoints Tune keeps per trial by validation error (None: all), besides the latest one."""

    def checkpoint_config(self) -> Any:
        """The trial checkpoints Tune keeps (RunConfig's checkpoint_config): the `keep_checkpoints` of lowest
        validation error and, always, the latest (Ray's checkpoint manager never deletes the latest: a restarted
        or resumed trial continues from it). Scored on engine.loop.VAL_TIEBREAK (val_error, ties broken towards
        the earlier epoch; Ray itself ranks the later of equal scores higher), so the checkpoint kept for sure is
        the first epoch of the lowest validation error: the epoch `report` calls the trial's best, which `export`
        ships."""
        from ray import tune

        from ...engine.loop import VAL_TIEBREAK

        if self.keep_checkpoints is None:
            return tune.CheckpointConfig(num_to_keep=None)
        return tune.CheckpointConfig(num_to_keep=self.keep_checkpoints, checkpoint_score_attribute=VAL_TIEBREAK,
                                     checkpoint_score_order=MODE)
    limits_concurrency: bool = True
    """Whether Tune's max_concurrent_trials may cap the trials running at once."""
    label: str = ""
    """How reports and figures name it where it stops trials ("ASHA"); empty: "the scheduler"."""
    in_compare: bool = True
    """Whether `ssl-ray compare --scheduler` offers it (compare gives every method the same fixed budget)."""
    final_configs: str = ""
    """Set where a trial's recorded hyperparameters are its last ones, not its first (PBT's mutations): said in the
    figures' titles."""
    rungs_not_drawn: str = ""
    """Set where the scheduler stops trials at rungs the figures cannot draw (BOHB's brackets): why."""

    # ---- checks, before anything starts ---------------------------------------------------------------------
    def validate(self, s: Any, fail: Fail) -> None:
        """The space's `scheduler:` settings `s` (spaces.Scheduler), each error made by `fail`."""
        if s.grace_epochs > s.max_epochs:
            raise fail(("scheduler", "grace_epochs"), f"{s.grace_epochs} exceeds max_epochs {s.max_epochs}")

    def validate_space(self, space: Any, fail: Fail) -> None:
        """The whole space, for a scheduler that depends on what is searched."""

    def check(self, space: Any, o: Any) -> None:
        """The search's options (TuneOptions) against this scheduler: SSLRayError when they cannot combine."""

    # ---- running ----------------------------------------------------------------------------------------------
    def build(self, space: Any, exp: str, n_trials: int) -> Any:
        """The Ray scheduler of a search of `n_trials` trials in experiment folder `exp`."""
        raise NotImplementedError

    def checkpoint_every(self, s: Any) -> int:
        """Epochs between a trial's checkpoints (and always at its last)."""
        return 1

    def replay(self, scheduler: Any, histories: dict[str, list[dict[str, Any]]]) -> int:
        """Rebuild the state a resumed search had (Ray saves no scheduler state) from the saved results of every
        trial, keyed by plan entry; returns the number of results replayed."""
        return 0

    def summary(self, scheduler: Any, exp: str) -> dict[str, Any] | None:
        """What the scheduler did, for the search's summary (None: nothing to say)."""
        return None

    def refuse_resume(self, where: str) -> None:
        if not self.resumable:
            raise SSLRayError(f"{where} is {self.not_resumable}")

    # ---- the dry run (plan.py) ---------------------------------------------------------------------------------
    def rungs(self, s: Any) -> list[int]:
        """The epochs at which it stops trials."""
        return []

    def nominal_epochs(self, s: Any, trials: int) -> float:
        """Epochs in all when it decides as designed (the worst case: every trial runs max_epochs)."""
        return float(trials * s.max_epochs)

    def plan_fields(self, space: Any) -> dict[str, Any]:
        """Its settings, as the dry run lists them."""
        return {}

    def plan_line(self, p: dict[str, Any]) -> str:
        raise NotImplementedError

    def budget_note(self, p: dict[str, Any]) -> str:
        """After "epochs in all: N at worst": what the nominal budget means ("" when it is the worst case)."""
        return ""


def asha_rungs(max_epochs: int, grace: int, rf: int) -> list[int]:
    """The epochs at which ASHA decides (Ray's _Bracket with one bracket: grace * rf^k below max_epochs)."""
    n = int(math.log(max_epochs / grace) / math.log(rf) + 1)
    return [m for m in (grace * rf ** k for k in range(n)) if m < max_epochs]


class Halving(Kind):
    """Successive halving at ASHA's rungs (asha, sha): each rung keeps 1/reduction_factor of the trials."""

    def validate(self, s: Any, fail: Fail) -> None:
        if s.reduction_factor < 2:
            raise fail(("scheduler", "reduction_factor"), f"must be at least 2, got {s.reduction_factor}")
        super().validate(s, fail)

    def survivors(self, alive: float, rf: int) -> float:
        """Trials a rung keeps of `alive`."""
        return alive / rf

    def rungs(self, s: Any) -> list[int]:
        return asha_rungs(s.max_epochs, s.grace_epochs, s.reduction_factor)

    def nominal_epochs(self, s: Any, trials: int) -> float:
        nominal, alive, last = 0.0, float(trials), 0
        for m in self.rungs(s) + [s.max_epochs]:
            nominal += alive * (m - last)
            alive, last = self.survivors(alive, s.reduction_factor), m
        return nominal

    def plan_fields(self, space: Any) -> dict[str, Any]:
        s = space.scheduler
        return {"grace_epochs": s.grace_epochs, "reduction_factor": s.reduction_factor}
