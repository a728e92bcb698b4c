"""Ray Tune hooks of `ssl-ray tune`, defined at module level so Tune can save them by reference: the search
over a fixed plan, ASHA keyed by plan entry, synchronous successive halving, PBT that keeps plan entries, the
Ctrl-C stopper, and the recorder of ssl_ray_trials.json.
(Tune writes its own tuner.pkl; ssl-ray never reads it back.)"""
from __future__ import annotations

import os
from typing import Any

from ray.tune import Callback, Stopper
from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler, PopulationBasedTraining
from ray.tune.search import Searcher

from .experiment import INTERRUPT, TRIALS_FILE, fs_of, write_json
from .options import SPEC_KEY, hparams
from .ray_internals import push_result_file, sha_arrived, sha_bracket, sha_join


def plan_key(index: int) -> str:
    return f"plan{index:05d}"


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


class PlanSHA(HyperBandScheduler):
    """Synchronous successive halving (`scheduler: {name: sha}`): all n trials of the plan in one bracket, deciding
    at ASHA's rungs (plan.asha_rungs) and then at max_epochs. A trial that reaches a rung pauses (its slot goes to
    another trial; Tune restarts it later from that epoch's checkpoint) until every live trial has reached the
    rung; then the best ceil(alive / reduction_factor) go on and the others stop. Unlike asynchronous ASHA, no trial
    is promoted for lack of competition (the first to reach a rung), at the price of the wait at each rung.
    Ray's HyperBandScheduler does the bookkeeping; this class only holds it to one bracket (Ray's would open
    several, sized for HyperBand) and makes it wait for the whole plan."""

    def __init__(self, *, n_trials: int, time_attr: str, max_t: int, grace_period: int, reduction_factor: int):
        from .plan import asha_rungs

        super().__init__(time_attr=time_attr, max_t=max_t, reduction_factor=reduction_factor)
        self._n_trials, self._max_t, self._deciding = n_trials, max_t, False
        self._bracket = sha_bracket(time_attr, n_trials, grace_period, max_t, reduction_factor,
                                    len(asha_rungs(max_t, grace_period, reduction_factor)))

    def on_trial_add(self, tc, trial):
        sha_join(self, self._bracket, trial)

    def on_trial_result(self, tc, trial, result):
        if result.get(self._time_attr, 0) >= self._max_t:  # its last epoch: the trial ends by itself, no pause
            self._bracket.update_trial_stats(trial, result)
            return self.CONTINUE
        return super().on_trial_result(tc, trial, result)

    def on_trial_remove(self, tc, trial):
        # Ray decides on a removal only before the bracket's first decision; a trial that ends (or errors) while
        # the others wait at a later rung must let them go on too
        self._bracket.cleanup_trial(trial)
        if not self._deciding and not self._bracket.finished():
            self._process_bracket(tc, self._bracket)

    def _process_bracket(self, tc, bracket):
        if sha_arrived(bracket) < self._n_trials:  # trials of the plan not started yet: the rung waits for them
            return self.PAUSE
        self._deciding = True  # stopping the losers calls on_trial_remove: no decision inside a decision
        try:
            return super()._process_bracket(tc, bracket)
        finally:
            self._deciding = False


class _WithoutSearch:
    """A TuneController seen without its search algorithm (PlanPBT.on_trial_add)."""

    search_alg = None

    def __init__(self, tc):
        self._tc = tc

    def __getattr__(self, k):
        return getattr(self._tc, k)


class PlanPBT(PopulationBasedTraining):
    """Ray's PBT (tuning/pbt.py) over plan entries. Ray's exploit copies the whole config of the trial it clones,
    our SPEC_KEY meta with its plan index included: the exploiting trial keeps its own meta (so its own plan
    entry, folder and records), takes the clone's hyperparameters mutated and clipped into their distributions
    (pbt.clip), and every exploit is appended to <experiment>/ssl_ray_pbt.json."""

    def __init__(self, *, space, exp: str, **kw):
        from .pbt import hyperparam_mutations

        super().__init__(hyperparam_mutations=hyperparam_mutations(space), **kw)
        self.space, self.exp = space, exp
        self.exploits: list[dict[str, Any]] = []

    def on_trial_result(self, tc, trial, result):
        # No decision at a trial's last epoch: Ray's PBT would still clone another trial into it (the config it
        # "ended with" then never trained) and, synchronous, wait there for the others.
        if result.get(self._time_attr, 0) >= self.space.scheduler.max_epochs:
            return self.CONTINUE
        return super().on_trial_result(tc, trial, result)

    def on_trial_add(self, tc, trial):
        # Ray's PBT refuses every search algorithm, since a model-based one would learn from configs PBT changes
        # under it. PlanSearcher only hands out the fixed random plan (tune.apply_options refuses the others with
        # pbt), so PBT is shown the controller without it.
        super().on_trial_add(_WithoutSearch(tc), trial)

    def _get_new_config(self, trial, trial_to_clone):
        from .pbt import PBT_FILE, clip

        new, ops = super()._get_new_config(trial, trial_to_clone)
        new = {**clip(self.space, new), SPEC_KEY: trial.config[SPEC_KEY]}
        # the results at this decision (Ray updates trial.last_result only after the scheduler has decided)
        mine, donor = (self._trial_state[t].last_result or {} for t in (trial, trial_to_clone))
        self.exploits.append({
            "index": trial.config[SPEC_KEY]["index"], "epoch": mine.get("epoch"),
            "clone_of": trial_to_clone.config[SPEC_KEY]["index"], "clone_epoch": donor.get("epoch"),
            "config_before": hparams(trial.config), "clone_config": hparams(trial_to_clone.config),
            "config": hparams(new), "operations": {k: str(v) for k, v in ops.items()}})
        fs, base = fs_of(self.exp)
        write_json(fs, f"{base}/{PBT_FILE}", self.exploits)
        return new, ops


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
        rec["config"] = hparams(trial.config)  # PBT changes it as the trial runs: the last one is kept
        fs, base = fs_of(self.exp)
        write_json(fs, f"{base}/{TRIALS_FILE}", self.records)

    def on_trial_start(self, iteration, trials, trial, **info):
        # A trial restarted after a pause (PBT pauses trials, and restarts the ones it clones into) gets its
        # result.json copied back from the storage by Tune's JSON logger, a copy that may miss the latest epochs:
        # send the complete local copy there first (this callback runs before the loggers: tune.run_tune).
        push_result_file(trial)
        self._put(trial, "RUNNING")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        # Tune syncs the driver's result.json to the storage only now and then: a driver killed in between (a
        # SIGKILL, a lost head node) leaves the storage's copy behind, and `--resume` reads that copy. Send it
        # at every result (this callback runs before the JSON logger writes this result: the copy lags by one
        # row here and is complete at on_trial_complete/on_trial_error).
        push_result_file(trial)
        rec = self.records.get(trial.trial_id)
        if rec is not None and rec.get("config") != hparams(trial.config):  # a PBT exploit changed it
            self._put(trial, rec.get("status", "RUNNING"))

    def on_trial_complete(self, iteration, trials, trial, **info):
        push_result_file(trial)  # every epoch in the storage before the record says the trial is finished
        if not INTERRUPT.is_set():  # trials stopped because of Ctrl-C have not finished
            self._put(trial, "TERMINATED")

    def on_trial_error(self, iteration, trials, trial, **info):
        push_result_file(trial)
        self._put(trial, "ERROR")

    def on_trial_recover(self, iteration, trials, trial, **info):
        # Tune will restart the trial and first copy result.json back from the storage, which may miss the
        # latest epochs (ray_internals.push_result_file): send the complete local copy there now.
        push_result_file(trial)
