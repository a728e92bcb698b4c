"""Ray Tune's schedulers and controller reached privately: items 6, 8 and 10 of ray_internals.py's list (where
they are weighed). Split out of ray_internals.py for size only: ray_internals re-exports every name here and runs
the probes below in its check(); no other module imports this one.
"""
from __future__ import annotations

import contextlib
import inspect
import os
from typing import Any, Callable, Iterator

GLOBAL_CHECKPOINT_ENV = "TUNE_GLOBAL_CHECKPOINT_S"  # Tune's experiment snapshot period (its "auto": 10 s or more)
SNAPSHOT_PERIOD_S = "600"  # item 10: ssl-ray's default for it (a user's own setting wins)
CHECKPOINT_MANAGER_STEP = "_create_checkpoint_manager"  # TuneController's step that builds its snapshot manager

# (what, the private names it covers, probe): added to ray_internals.PROBES, run by ray_internals.check()
PROBES: list[tuple[str, tuple[str, ...], Callable[[], bool]]] = []


def probe(what: str, *covers: str) -> Callable[[Callable[[], bool]], Callable[[], bool]]:
    def register(f: Callable[[], bool]) -> Callable[[], bool]:
        PROBES.append((what, covers, f))
        return f

    return register


def _params(f: Any) -> list[str]:  # a function's parameter names
    return list(inspect.signature(f).parameters)


# ---- 6. one HyperBand bracket (sha) -------------------------------------------------------------------------
def sha_bracket(time_attr: str, n_trials: int, first_rung: int, max_t: int, rf: int, decisions: int) -> Any:
    """One HyperBand bracket: n_trials trials, the first decision at first_rung, then every rf times later (capped
    at max_t), `decisions` halvings in all, each keeping ceil(alive / rf)."""
    from ray.tune.schedulers.hyperband import _Bracket

    return _Bracket(time_attr=time_attr, max_trials=n_trials, init_t_attr=first_rung, max_t_attr=max_t, eta=rf,
                    s=decisions, stop_last_trials=True)


def sha_join(scheduler: Any, bracket: Any, trial: Any) -> None:
    """Put a new trial into the scheduler's one bracket (HyperBandScheduler.on_trial_add would open more)."""
    if not scheduler._hyperbands[0]:
        scheduler._hyperbands[0].append(bracket)
        scheduler._state["bracket"] = bracket
    bracket.add_trial(trial)
    scheduler._trial_info[trial] = bracket, 0


def sha_arrived(bracket: Any) -> int:
    """How many trials the bracket has been given so far (finished ones included)."""
    return len(bracket._all_trials)


def sha_record(bracket: Any, trial: Any, result: dict[str, Any]) -> None:  # a result, no decision (its last epoch)
    bracket.update_trial_stats(trial, result)


def sha_remove(bracket: Any, trial: Any) -> bool:  # a trial that ended, out of the bracket; is it finished?
    bracket.cleanup_trial(trial)
    return bracket.finished()


def sha_decide(scheduler: Any, tc: Any, bracket: Any) -> Any:  # decide now (Ray does on a removal only at first)
    return scheduler._process_bracket(tc, bracket)


class BracketDecisionHook:
    """A HyperBandScheduler base whose decision step (`_process_bracket`) first asks `self.may_decide(bracket)`
    (no: the trial pauses) and tells `self.deciding_now(True / False)` around the decision."""

    def _process_bracket(self, tc: Any, bracket: Any) -> Any:
        if not self.may_decide(bracket):  # type: ignore[attr-defined]
            return self.PAUSE  # type: ignore[attr-defined]
        self.deciding_now(True)  # type: ignore[attr-defined]
        try:
            return super()._process_bracket(tc, bracket)  # type: ignore[misc]
        finally:
            self.deciding_now(False)  # type: ignore[attr-defined]


# ---- 8. PBT over plan entries --------------------------------------------------------------------------------
class ExploitHook:
    """A PopulationBasedTraining base whose exploit step (`_get_new_config(trial, trial_to_clone)`) hands Ray's new
    config to `self.exploited(trial, clone, config, operations, trial's result, clone's result)`, which returns the
    config the trial continues with (the results: those at this decision; Ray updates trial.last_result only after
    the scheduler has decided)."""

    def _get_new_config(self, trial: Any, trial_to_clone: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        new, ops = super()._get_new_config(trial, trial_to_clone)  # type: ignore[misc]
        mine, donor = (self._trial_state[t].last_result or {} for t in (trial, trial_to_clone))  # type: ignore
        return self.exploited(trial, trial_to_clone, new, ops, mine, donor), ops  # type: ignore[attr-defined]


class without_search:  # noqa: N801 - used as a function
    """The controller `tc` seen without its search algorithm, as PopulationBasedTraining.on_trial_add reads it."""

    search_alg = None

    def __init__(self, tc: Any):
        self.controller = tc

    def __getattr__(self, k: str) -> Any:
        return getattr(self.controller, k)


# ---- 10. Tune's experiment snapshots made rare ---------------------------------------------------------------
@contextlib.contextmanager
def rare_experiment_snapshots(period_s: str = SNAPSHOT_PERIOD_S) -> Iterator[None]:
    """While a Tuner fits: Tune snapshots the experiment (experiment_state-*.json, every trial's driver-side
    params.json, progress.csv, result.json, error.txt uploaded to the storage) every `period_s` seconds
    (TUNE_GLOBAL_CHECKPOINT_S, unless it is set already) and at the end, and no longer each time a trial has saved
    CheckpointConfig.num_to_keep checkpoints since the last snapshot (`TuneController._create_checkpoint_manager`
    builds its manager with sync_every_n_trial_checkpoints=None, this fit only). Both are put back afterwards."""
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager
    from ray.tune.execution.tune_controller import TuneController

    saved = TuneController.__dict__[CHECKPOINT_MANAGER_STEP]
    env_set_here = GLOBAL_CHECKPOINT_ENV not in os.environ
    os.environ.setdefault(GLOBAL_CHECKPOINT_ENV, period_s)  # read by TuneController.__init__, inside fit()

    def manager(self: Any) -> Any:  # Ray's step, without the forced snapshot every num_to_keep checkpoints
        return _ExperimentCheckpointManager(storage=self._storage, checkpoint_period=self._checkpoint_period,
                                            sync_every_n_trial_checkpoints=None)

    setattr(TuneController, CHECKPOINT_MANAGER_STEP, manager)
    try:
        yield
    finally:
        setattr(TuneController, CHECKPOINT_MANAGER_STEP, saved)
        if env_set_here:
            os.environ.pop(GLOBAL_CHECKPOINT_ENV, None)


# ---- the probes of items 6, 8 and 10 ----------------------------------------------------------------------------
@probe("ray.tune.schedulers.hyperband: _Bracket(time_attr, max_trials, init_t_attr, max_t_attr, eta, s, "
       "stop_last_trials) with add_trial, update_trial_stats, cleanup_trial, finished, _all_trials; HyperBandScheduler."
       "_hyperbands/_state/_trial_info and _process_bracket(tune_controller, bracket)", "_Bracket", "_all_trials",
       "_hyperbands", "_state", "_trial_info", "_process_bracket")
def _sha() -> bool:
    from ray.tune.schedulers import HyperBandScheduler

    hb = HyperBandScheduler(time_attr="epoch", max_t=9, metric="m", mode="min")
    b = sha_bracket("epoch", 4, 1, 9, 3, 2)
    return (isinstance(hb._hyperbands, list) and isinstance(hb._state, dict) and isinstance(hb._trial_info, dict)
            and _params(hb._process_bracket) == ["tune_controller", "bracket"] and sha_arrived(b) == 0
            and all(callable(getattr(b, m)) for m in ("add_trial", "update_trial_stats", "cleanup_trial", "finished")))


@probe("PopulationBasedTraining._get_new_config(trial, trial_to_clone), its _trial_state[t].last_result; its "
       "on_trial_add reads tune_controller.search_alg", "_get_new_config", "_trial_state", "_PBTTrialState")
def _pbt() -> bool:
    from ray.tune.schedulers.pbt import PopulationBasedTraining as P, _PBTTrialState

    return (_params(P._get_new_config) == ["self", "trial", "trial_to_clone"]
            and "self._trial_state" in inspect.getsource(P.__init__) and "last_result" in inspect.getsource(_PBTTrialState)
            and "search_alg" in inspect.getsource(P.on_trial_add))


@probe(f"TuneController.{CHECKPOINT_MANAGER_STEP}(self) builds _ExperimentCheckpointManager(*, storage, "
       f"checkpoint_period, sync_every_n_trial_checkpoints) from self._storage and self._checkpoint_period (None: no "
       f"forced snapshot, its on_trial_checkpoint returns); TuneController.__init__ reads {GLOBAL_CHECKPOINT_ENV}",
       CHECKPOINT_MANAGER_STEP, "_ExperimentCheckpointManager", "_storage", "_checkpoint_period")
def _snapshots() -> bool:
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager as M
    from ray.tune.execution.tune_controller import TuneController as TC

    step = inspect.getsource(TC.__dict__[CHECKPOINT_MANAGER_STEP])
    return (_params(TC.__dict__[CHECKPOINT_MANAGER_STEP]) == ["self"]
            and _params(M.__init__) == ["self", "storage", "checkpoint_period", "sync_every_n_trial_checkpoints"]
            and all(f"{k}=self.{v}" in step.replace(" ", "").replace("\n", "") for k, v in (
                ("storage", "_storage"), ("checkpoint_period", "_checkpoint_period")))
            and "if not self._sync_every_n_trial_checkpoints" in inspect.getsource(M.on_trial_checkpoint)
            and f'"{GLOBAL_CHECKPOINT_ENV}"' in inspect.getsource(TC.__init__))
