"""Ray Tune hooks of `ssl-ray tune`, defined at module level so Tune can save them by reference: the search
over a fixed plan, the Ctrl-C stopper, and the recorder of the trials' records (records.py; the schedulers:
schedulers/).
(Tune writes its own tuner.pkl; ssl-ray never reads it back.)"""
from __future__ import annotations

import os
from typing import Any

from ray.tune import Callback, Stopper
from ray.tune.search import Searcher

from . import records as R
from .experiment import INTERRUPT, TRIAL_DIR, fs_of
from .options import SPEC_KEY, hparams
from .ray_internals import RESULT_FILE, push_result_file, trial_storage


class PlanSearcher(Searcher):
    """Tune's search algorithm for a fixed list of trial configs (the plan's unfinished entries), then, with a
    model-based `inner` searcher (searchers.py), `new` more trials that it proposes: each proposal is appended
    to the plan in ssl_ray_space.json (`write_plan`) before its trial starts, so a resume finds it there. The inner
    searcher's model is not saved (that would mean unpickling from the storage on resume): a resumed search
    runs its unfinished trials from their checkpoints and a fresh searcher proposes the remaining samples."""

    def __init__(self, configs: list[dict[str, Any]], metric: str, mode: str, *, inner: Searcher | None = None,
                 space: dict[str, Any] | None = None, meta: dict[str, Any] | None = None,
                 doc: dict[str, Any] | None = None, new: int = 0, write_plan=None):
        super().__init__(metric=metric, mode=mode)
        self.queue = list(configs)
        self.inner, self.meta, self.doc, self.write_plan = inner, meta, doc, write_plan
        self.new = new if inner is not None else 0
        self.proposed: set[str] = set()
        if inner is not None:
            inner.set_search_properties(metric, mode, space or {})

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id):
        if self.queue:
            return self.queue.pop(0)
        if self.inner is None or self.new <= 0:
            return Searcher.FINISHED
        hp = self.inner.suggest(trial_id)
        if hp is None or hp == Searcher.FINISHED:
            return hp
        self.new -= 1
        self.proposed.add(trial_id)
        hp = {k: v.item() if hasattr(v, "item") else v for k, v in hp.items()}
        index = len(self.doc["plan"])
        self.doc["plan"].append(hp)
        self.write_plan(self.doc)
        return {**hp, SPEC_KEY: {**self.meta, "index": index}}

    def on_trial_result(self, trial_id, result) -> None:
        if trial_id in self.proposed and self.inner is not None:
            self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id, result=None, error=False) -> None:
        if trial_id in self.proposed and self.inner is not None:
            self.inner.on_trial_complete(trial_id, result=result, error=error)

    def on_pause(self, trial_id) -> None:  # BOHB's HyperBand pauses and unpauses trials through the searcher
        if trial_id in self.proposed and self.inner is not None and hasattr(self.inner, "on_pause"):
            self.inner.on_pause(trial_id)

    def on_unpause(self, trial_id) -> None:
        if trial_id in self.proposed and self.inner is not None and hasattr(self.inner, "on_unpause"):
            self.inner.on_unpause(trial_id)

    def save(self, checkpoint_path: str) -> None:  # nothing to save: the plan is in ssl_ray_space.json
        pass

    def restore(self, checkpoint_path: str) -> None:
        pass


def trial_dirname(trial) -> str:
    """experiment.TRIAL_DIR: short, and it names the trial and its plan entry."""
    return TRIAL_DIR.format(trial_id=trial.trial_id, index=trial.config[SPEC_KEY]["index"])


class InterruptStopper(Stopper):
    """Stops the whole run once Ctrl-C (SIGINT) set experiment.INTERRUPT; the trials keep their checkpoints."""

    def __call__(self, trial_id, result):
        return False

    def stop_all(self):
        return INTERRUPT.is_set()


def push_results(trial) -> None:
    """ray_internals.push_result_file for a trial whose folder may not be in the storage yet. A trial whose worker
    died before its first result has no folder there (no row file, no checkpoint, no experiment snapshot since
    it started) while the driver has its empty result.json (Tune's JSON logger opens it when the trial starts):
    copying into the missing folder raised FileNotFoundError out of this callback, and that ended the whole search
    instead of retrying the trial (issue 30). The folder is made first; a trial with no result.json is skipped."""
    if not os.path.isfile(os.path.join(trial.local_path, RESULT_FILE)):
        return
    fs, folder = trial_storage(trial)
    fs.create_dir(folder, recursive=True)
    push_result_file(trial)


class TrialRecorder(Callback):
    """Keeps the record of every Tune trial up to date (plan index, folder, status, config): one small file per
    trial, <experiment>/ssl_ray_trials/<trial id>.json, rewritten only for that trial (records.py); the whole
    ssl_ray_trials.json once at the end (RecordStore.compact, by run_tune)."""

    def __init__(self, exp: str, records: dict[str, dict[str, Any]]):
        self.exp, self.records = exp, records
        fs, base = fs_of(exp)
        self.store = R.RecordStore(fs, base, records)  # the same dict: run_tune reads it after the search
        self._rows_made: set[str] = set()

    def _put(self, trial, status: str) -> None:
        meta = trial.config.get(SPEC_KEY, {})
        rec = self.records.setdefault(trial.trial_id, {"index": meta.get("index"), "resume": meta.get("resume")})
        rec["dir"] = os.path.basename(str(trial.path).rstrip("/"))
        rec["status"] = status
        rec["config"] = hparams(trial.config)  # PBT changes it as the trial runs: the last one is kept
        self.store.put(trial.trial_id, rec)

    def on_trial_start(self, iteration, trials, trial, **info):
        # A trial restarted after a pause (PBT pauses trials, and restarts the ones it clones into) gets its
        # result.json copied back from the storage by Tune's JSON logger, a copy that may miss the latest epochs:
        # send the complete local copy there first (this callback runs before the loggers: tune.run_tune).
        push_results(trial)
        self._put(trial, "RUNNING")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        # Tune syncs the driver's result.json to the storage only now and then: a driver killed in between (a
        # SIGKILL, a lost head node) leaves the storage's copy behind, and `--resume` reads that copy. Each result
        # is written as its own row file, which collect() reads for trials not recorded finished (records.py).
        fs, path = trial_storage(trial)
        R.put_row(fs, path, result, made=self._rows_made)  # this result, not the whole file
        rec = self.records.get(trial.trial_id)
        if rec is not None and rec.get("config") != hparams(trial.config):  # a PBT exploit changed it
            self._put(trial, rec.get("status", "RUNNING"))

    def on_trial_complete(self, iteration, trials, trial, **info):
        push_results(trial)  # every epoch in the storage before the record says the trial is finished
        if not INTERRUPT.is_set():  # trials stopped because of Ctrl-C have not finished
            self._put(trial, "TERMINATED")

    def on_trial_error(self, iteration, trials, trial, **info):
        push_results(trial)
        self._put(trial, "ERROR")

    def on_trial_recover(self, iteration, trials, trial, **info):
        # Tune will restart the trial and first copy result.json back from the storage, which may miss the
        # latest epochs (push_results): send the complete local copy there now.
        push_results(trial)
