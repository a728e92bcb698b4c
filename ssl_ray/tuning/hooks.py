"""Ray Tune hooks of `ssl-ray tune`, defined at module level so Tune can save them by reference: the search
over a fixed plan, ASHA keyed by plan entry, the Ctrl-C stopper, and the recorder of ssl_ray_trials.json.
(Tune writes its own tuner.pkl; ssl-ray never reads it back.)"""
from __future__ import annotations

import os
from typing import Any

from ray.tune import Callback, Stopper
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher

from .experiment import INTERRUPT, TRIALS_FILE, fs_of, write_json

SPEC_KEY = "_ssl_ray"


def plan_key(index: int) -> str:
    return f"plan{index:05d}"


class PlanSearcher(Searcher):
    """Tune's search algorithm for a fixed list of trial configs (the plan's unfinished entries)."""

    def __init__(self, configs: list[dict[str, Any]], metric: str, mode: str):
        super().__init__(metric=metric, mode=mode)
        self.queue = list(configs)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id):
        return self.queue.pop(0) if self.queue else Searcher.FINISHED

    def on_trial_complete(self, trial_id, result=None, error=False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:  # nothing to save: the plan is in ssl_ray_space.json
        pass

    def restore(self, checkpoint_path: str) -> None:
        pass


def trial_dirname(trial) -> str:
    """<trainable>_<trial id>_<plan index>: short, and `ssl-ray tensorboard` finds the plan entry in it."""
    return f"trial_fn_{trial.trial_id}_{trial.config[SPEC_KEY]['index']}"


class _Alias:
    """A trial seen under its plan entry's key (for ASHA's rung records)."""

    def __init__(self, trial):
        self._t, self.trial_id = trial, plan_key(trial.config[SPEC_KEY]["index"])

    def __getattr__(self, k):
        return getattr(self._t, k)


class PlanASHA(ASHAScheduler):
    """ASHA that knows a trial by its plan entry, not by Tune's trial id: a trial resumed in a new Tune trial
    keeps the rungs it already passed (they are replayed under the same key: tune.replay_rungs)."""

    def on_trial_add(self, tc, trial):
        super().on_trial_add(tc, _Alias(trial))

    def on_trial_result(self, tc, trial, result):
        return super().on_trial_result(tc, _Alias(trial), result)

    def on_trial_complete(self, tc, trial, result):
        super().on_trial_complete(tc, _Alias(trial), result)

    def on_trial_remove(self, tc, trial):
        super().on_trial_remove(tc, _Alias(trial))


class InterruptStopper(Stopper):
    """Stops the whole run once Ctrl-C (SIGINT) set experiment.INTERRUPT; the trials keep their checkpoints."""

    def __call__(self, trial_id, result):
        return False

    def stop_all(self):
        return INTERRUPT.is_set()


class TrialRecorder(Callback):
    """Keeps <experiment>/ssl_ray_trials.json up to date: plan index, folder and status of every Tune trial."""

    def __init__(self, exp: str, records: dict[str, dict[str, Any]]):
        self.exp, self.records = exp, records

    def _put(self, trial, status: str) -> None:
        meta = trial.config.get(SPEC_KEY, {})
        rec = self.records.setdefault(trial.trial_id, {"index": meta.get("index"), "resume": meta.get("resume")})
        rec["dir"] = os.path.basename(str(trial.path).rstrip("/"))
        rec["status"] = status
        fs, base = fs_of(self.exp)
        write_json(fs, f"{base}/{TRIALS_FILE}", self.records)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._put(trial, "RUNNING")

    def on_trial_complete(self, iteration, trials, trial, **info):
        if not INTERRUPT.is_set():  # trials stopped because of Ctrl-C have not finished
            self._put(trial, "TERMINATED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._put(trial, "ERROR")
