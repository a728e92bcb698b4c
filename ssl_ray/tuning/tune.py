"""`ssl-ray tune METHOD`: Ray Tune over a validated search space, its scheduler from tuning/schedulers/.

A search runs in phases (run_tune): open the experiment under its lock (fresh, or the saved one to resume: _open),
start Ray while every planned configuration is built once (_start), the trial configs to run (_todo), the search
algorithm (_search_alg), the scheduler, the Tuner (_tuner), the run under our Ctrl-C/SIGTERM handler (_fit), the
summary. One trial is tuning/trial.py. Ray-specific lines are numbered [1]..[6] ([1]..[4]: trial.py).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import SSLRayError
from . import experiment, lock, schedulers
from .experiment import INTERRUPT
from .options import SPEC_KEY, TuneOptions, check_name, storage_root  # TuneOptions: also imported from here
from .schedulers.base import METRIC, MODE, TIME_ATTR
from .spaces import SearchSpace
from .trial import DRIVER_ONLY, preflight_plan, trial_fn, trial_meta, trial_resources

__all__ = ["DRIVER_ONLY", "METRIC", "MODE", "TIME_ATTR", "TuneOptions", "apply_options", "confirm",
           "experiment_path", "preflight_plan", "preflight_while_ray_starts", "run_tune", "trial_fn",
           "trial_gpus", "trial_meta", "trial_resources"]


# ---- the search -------------------------------------------------------------------------------------------
def apply_options(space: SearchSpace, o: TuneOptions) -> SearchSpace:
    s = space.scheduler
    if o.scheduler:
        s.name = o.scheduler
    if o.max_epochs:
        s.max_epochs = o.max_epochs
    if o.grace_epochs:
        s.grace_epochs = o.grace_epochs
    if o.reduction_factor:
        s.reduction_factor = o.reduction_factor
    if o.perturbation_interval:
        s.perturbation_interval = o.perturbation_interval
    if o.num_samples:
        space.num_samples = o.num_samples
    schedulers.validate(s)
    schedulers.validate_space(space)
    if o.search or space.searcher:
        from .searchers import check_searcher

        space.searcher = check_searcher(o.search or space.searcher, space)
    schedulers.get(s.name).check(space, o)
    brought = schedulers.brought_by(space.searcher)
    if brought is not None:
        s.name = brought.name  # e.g. TuneBOHB's own HyperBand replaces ASHA; summaries say so
        brought.check(space, o)
    return space


GPU_FLAG = "--gpus-per-trial"


def trial_gpus(o: TuneOptions, state) -> float:
    """GPUs per trial worker: --gpus-per-trial, or the rule `ssl-ray train` follows too (resources.GPU_RULE)."""
    from .resources import check_gpu_split, default_gpus

    gpus = default_gpus(state, GPU_FLAG) if o.gpus_per_trial is None else o.gpus_per_trial
    check_gpu_split(o.workers, gpus, GPU_FLAG)
    return gpus


def _cluster(o: TuneOptions):
    """What the running Ray instance has and can grow to (cluster.cluster_state)."""
    from .cluster import cluster_state

    return cluster_state(o.address is None and not os.environ.get("RAY_ADDRESS"), o.wait_for_resources)


def check_trial_fits(o: TuneOptions, state) -> str | None:
    """One trial must fit the cluster now, or in what it can grow to (then the search is submitted and its trials
    wait PENDING while the autoscaler adds nodes: the notice returned); else one line (SSLRayError)."""
    from .resources import check_fits

    return check_fits(o.workers, o.cpus_per_trial, o.gpus_per_trial or 0, state, unit="worker(s) of one trial",
                      hint="lower --cpus-per-trial, --gpus-per-trial or --workers")


def _concurrency(o: TuneOptions, state, n_trials: int) -> int:
    """Trials run at once: as many as fit what the cluster has, or can grow to (never capped at what is up now on
    a cluster that grows), at most --max-concurrent (resources.concurrency)."""
    from .resources import concurrency

    return concurrency(o.workers, o.cpus_per_trial, o.gpus_per_trial or 0, state, max_concurrent=o.max_concurrent,
                       n_trials=n_trials)


def experiment_path(o: TuneOptions, space: SearchSpace) -> tuple[str, str]:
    storage = storage_root(o.storage)
    name = o.name or f"{space.method}-{space.data.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    check_name(name)
    return storage, name


def preflight_while_ray_starts(check: Callable[[], None], start: Callable[[], None]) -> float:
    """Run the pre-flight build (`check`, 1-2 s: the first build of a process imports torch's compiler) in a
    thread while Ray starts (`start`: seconds spent mostly waiting for Ray's processes), not one after the
    other: every trial slot is idle until both are done. A pre-flight error still comes first and alone: a Ray
    instance started meanwhile is shut down again, and the error is raised as it was when the check ran before
    Ray. Returns the seconds `start` took."""
    import concurrent.futures

    import ray

    was_running = ray.is_initialized()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ssl-ray-preflight") as pool:
        checked = pool.submit(check)
        t0 = time.perf_counter()
        try:
            start()
        except BaseException:
            if checked.exception() is not None:  # waits for the check: a config error explains more
                raise checked.exception() from None  # type: ignore[misc]
            raise
        seconds = time.perf_counter() - t0
        if checked.exception() is not None:
            if not was_running:
                ray.shutdown()
            raise checked.exception()  # type: ignore[misc]
    return seconds


@dataclass
class _Search:
    """A search being set up: where it is kept, its plan (ssl_ray_space.json) and its trial records."""

    space: SearchSpace
    o: TuneOptions
    storage: str
    name: str
    plan: list[dict[str, Any]]
    records: dict[str, dict[str, Any]]
    doc: dict[str, Any] | None = None
    """The saved ssl_ray_space.json (None until a fresh search has written it)."""
    extended: bool = False
    """A resume with a larger --num-samples: the plan grew and is written again."""
    lock: lock.ExperimentLock | None = None
    """This driver's lock on the experiment (lock.py), taken by _open, released by run_tune."""

    @property
    def exp(self) -> str:
        return self.storage.rstrip("/") + "/" + self.name

    @property
    def adaptive(self) -> bool:
        """A model-based searcher (optuna, hyperopt, bohb) proposes each trial from the results so far: its plan
        grows as trials start (hooks.PlanSearcher records every proposal in ssl_ray_space.json)."""
        return self.space.searcher not in (None, "random")

    def write_doc(self, doc: dict[str, Any]) -> None:
        fs, base = experiment.fs_of(self.exp)
        experiment.write_json(fs, f"{base}/{experiment.SPACE_FILE}", doc)


def _open(space: SearchSpace, o: TuneOptions) -> _Search:
    """A fresh search (refused where an experiment already is), or the saved one to resume (its plan extended
    by a larger --num-samples); either way under the experiment's lock (refused while another driver runs it)."""
    storage, name = experiment_path(o, space)
    if not o.resume:
        apply_options(space, o)
    run = _Search(space, o, storage, name, plan=[], records={})
    run.lock = lock.take(run.exp)
    try:
        return _read_or_plan(run)
    except BaseException:
        run.lock.release()
        raise


def _read_or_plan(run: _Search) -> _Search:
    space, o = run.space, run.o
    if o.resume:
        run.doc, run.records = experiment.load(run.exp)
        run.plan = run.doc["plan"]
        if space.num_samples > run.doc["num_samples"]:  # --num-samples N: more trials appended to the plan
            if not run.adaptive:
                run.plan = run.plan + experiment.make_plan(space, o.seed)[len(run.plan):]
            run.doc, run.extended = {**run.doc, "num_samples": space.num_samples, "plan": run.plan}, True
        return run
    fs, base = experiment.fs_of(run.exp)
    if experiment.read_text(fs, f"{base}/{experiment.SPACE_FILE}") is not None:
        raise SSLRayError(f"an experiment already exists at {run.exp}: continue it with --resume, or pick another "
                          f"--name")
    run.plan = [] if run.adaptive else experiment.make_plan(space, o.seed)
    return run


def _start(run: _Search) -> tuple[float, Any, str | None]:
    """Ray started (the pre-flight build meanwhile), the GPUs per trial decided, the search's files written:
    (seconds Ray took to start, the cluster's state, a notice that trials will wait for nodes)."""
    from .cluster import init_ray

    space, o = run.space, run.o
    data = space.data
    if data.root and "://" not in data.root:
        data.root = str(Path(data.root).resolve())  # trials run in their own directories
    ray_init_s = preflight_while_ray_starts(
        lambda: preflight_plan(space, run.plan or experiment.make_plan(space, o.seed, 1), o.seed),
        lambda: init_ray(o.address, dashboard=o.workers > 1))  # the dashboard serves Ray Train only (cluster.py)
    state = _cluster(o)
    o.gpus_per_trial = trial_gpus(o, state)  # decided here, saved with the experiment's options
    notice = check_trial_fits(o, state)
    if not o.resume:
        run.doc = _save_space(run.exp, space, o, run.plan)
    elif run.extended and run.doc is not None:
        run.write_doc(run.doc)
    return ray_init_s, state, notice


def _todo(run: _Search, saved: list[dict[str, Any]], meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The trial configs to run: the saved trials not finished (from their last checkpoints), then the plan's
    entries not started."""
    todo = [t for t in saved if t["status"] not in ("TERMINATED", "STOPPED", "ERROR")]
    todo += [{"index": i, "config": hp, "checkpoint": None} for i, hp in enumerate(run.plan) if i >= len(saved)]
    configs = []
    for t in todo:
        m = {**meta, "index": t["index"]}
        if t["checkpoint"]:
            m["resume"] = {"checkpoint": t["checkpoint"], "from_epoch": t["checkpoint_epoch"]}
        configs.append({**t["config"], SPEC_KEY: m})
    return configs


def _search_alg(run: _Search, configs: list[dict[str, Any]], meta: dict[str, Any], state) -> tuple[Any, int]:
    """Tune's search algorithm over `configs` (then, with a model-based searcher, its new proposals) and how many
    trials run at once."""
    from .hooks import PlanSearcher

    assert run.doc is not None
    new = max(0, run.space.num_samples - len(run.doc["plan"])) if run.adaptive else 0
    concurrent = _concurrency(run.o, state, len(configs) + new)
    if not run.adaptive:
        return PlanSearcher(configs, METRIC, MODE), concurrent
    from .searchers import build_searcher

    inner = build_searcher(run.space.searcher, metric=METRIC, mode=MODE, seed=run.o.seed, max_concurrent=concurrent)
    return PlanSearcher(configs, METRIC, MODE, inner=inner, space=run.space.param_space(), meta=meta, doc=run.doc,
                        new=new, write_plan=run.write_doc), concurrent


def _tuner(run: _Search, kind: schedulers.Kind, scheduler, search_alg, concurrent: int, callbacks: list):
    """The Tuner (and its trial recorder): trials of trial.trial_fn, our callbacks, checkpoints as the scheduler
    needs them."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from .hooks import InterruptStopper, TrialRecorder, trial_dirname

    o = run.o
    recorder = TrialRecorder(run.exp, run.records)
    run_config = tune.RunConfig(
        name=run.name, storage_path=run.storage, progress_reporter=None,  # our progress line instead (callbacks)
        # our own TensorBoard files replace Tune's; TrialRecorder first: it saves result.json before a restart
        callbacks=[recorder, JsonLoggerCallback(), CSVLoggerCallback()]
        + _trackers(o, run.name) + list(callbacks),
        stop=InterruptStopper(),
        failure_config=tune.FailureConfig(max_failures=o.max_failures),
        checkpoint_config=kind.checkpoint_config(),  # what each trial keeps (PBT: all)
        # TensorBoard files are written in the trial's working dir; copy them to storage with each checkpoint
        sync_config=tune.SyncConfig(sync_artifacts=True),
        verbose=0)
    return recorder, tune.Tuner(
        tune.with_resources(trial_fn, trial_resources(o)),
        tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, scheduler=scheduler, search_alg=search_alg,
                                    num_samples=max(1, len(search_alg.queue) + search_alg.new),
                                    max_concurrent_trials=concurrent if kind.limits_concurrency else None,
                                    trial_dirname_creator=trial_dirname,
                                    # reuse saves a process start per trial; Train-driving trials cannot
                                    reuse_actors=o.workers == 1),
        run_config=run_config)


def _fit(tuner, recorder) -> bool:
    """Run the search with our Ctrl-C and SIGTERM handler (lock.stop_on_signals; Tune's own would stop the trials
    as if they had finished); True when it was interrupted."""
    from .ray_internals import SIGINT_HANDLER_ENV, rare_experiment_snapshots

    os.environ[SIGINT_HANDLER_ENV] = "1"
    with lock.stop_on_signals(INTERRUPT), rare_experiment_snapshots():  # Tune's snapshots rare (item 10)
        try:
            tuner.fit()
        finally:
            recorder.store.compact()  # the whole ssl_ray_trials.json once per search, for older readers
    return INTERRUPT.is_set()


def run_tune(space: SearchSpace, o: TuneOptions, callbacks: Iterable[Any] = ()) -> dict[str, Any]:
    """A fresh search (the plan drawn from `space`), or with o.resume the unfinished part of a saved one
    (`space` and `o` then come from the experiment's own files: experiment.resume_setup). `callbacks`: more Tune
    callbacks (a progress line). One driver at a time per experiment (lock.py); a Ctrl-C or SIGTERM stops the
    trials, records the search as interrupted and raises KeyboardInterrupt or lock.Terminated."""
    run = _open(space, o)
    try:
        return _run(run, callbacks)
    finally:
        assert run.lock is not None
        run.lock.release()


def _run(run: _Search, callbacks: Iterable[Any]) -> dict[str, Any]:
    from . import results

    space, o = run.space, run.o
    ray_init_s, state, notice = _start(run)
    lock.catch_sigterm()  # ray.init put its own in place (sys.exit, which aborts Tune)
    assert run.doc is not None
    meta = trial_meta(space, o, run.exp, seed=o.seed, config=dict(space.fixed), searched=list(space.search))
    saved = experiment.collect(run.exp, run.doc, run.records) if o.resume else []
    configs = _todo(run, saved, meta)
    search_alg, concurrent = _search_alg(run, configs, meta, state)
    if notice:
        print(notice, file=sys.stderr, flush=True)
    kind = schedulers.get(space.scheduler.name)
    scheduler = kind.build(space, run.exp, len(configs) + search_alg.new)  # [5] on our own epoch counter
    if o.resume:  # [6] Ray saves no scheduler state (ASHA's rungs): rebuild it from the saved results
        kind.replay(scheduler, {experiment.plan_key(t["index"]): t["history"] for t in saved})
    from .progress import search_progress  # one line on stderr every 15 s (60 s with --quiet), and at the end

    progress = search_progress(space, o, trials=len(configs) + search_alg.new)
    recorder, tuner = _tuner(run, kind, scheduler, search_alg, concurrent, [progress, *callbacks])
    t0 = time.time()
    INTERRUPT.clear()
    lock.TERMINATED.clear()
    interrupted = _fit(tuner, recorder) if configs or search_alg.new else False
    summary = results.summarize(run.exp, space, experiment.collect(run.exp, run.doc, run.records),
                                max_epochs=space.scheduler.max_epochs, seconds=time.time() - t0,
                                interrupted=interrupted, ray_init_seconds=ray_init_s)
    said = kind.summary(scheduler, run.exp)  # what the scheduler did (PBT's exploits), and where it is written
    if said is not None:
        summary[kind.name] = said
        results.write_summary(run.exp, summary)
    if interrupted:
        then = (f"\nit is {kind.not_resumable}" if not kind.resumable else
                f"\ncontinue with: ssl-ray tune {space.method} --storage {run.storage} --name {run.name} --resume")
        print(f"interrupted: {summary['num_interrupted']} of {summary['num_trials']} trials unfinished, their "
              f"checkpoints kept in {run.exp}{then}", file=sys.stderr, flush=True)
        raise lock.stopped_by()
    if o.confirm_seeds:
        summary["confirm"] = confirm(summary, space, o, run.storage, run.name)
        results.write_summary(run.exp, summary)
    return summary


def _trackers(o: TuneOptions, name: str) -> list:
    if not (o.mlflow or o.wandb):
        return []
    from .trackers import tracker_callbacks

    return tracker_callbacks(o.mlflow, o.wandb, name)


def _save_space(exp: str, space: SearchSpace, o: TuneOptions, plan: list[dict[str, Any]]) -> dict[str, Any]:
    fs, base = experiment.fs_of(exp)
    experiment.make_dirs(fs, base)
    doc = {"method": space.method, "source": space.source, "dataset": space.data.to_dict(), "fixed": space.fixed,
           "search": {k: {p.dist: p.args} for k, p in space.search.items()},
           "scheduler": vars(space.scheduler), "num_samples": space.num_samples, "searcher": space.searcher,
           "options": {k: v for k, v in vars(o).items() if k not in ("resume", "progress")},
           "plan": plan}
    experiment.write_json(fs, f"{base}/{experiment.SPACE_FILE}", doc)
    return json.loads(json.dumps(doc, default=str))


def confirm(summary: dict[str, Any], space: SearchSpace, o: TuneOptions, storage: str, name: str) -> dict[str, Any]:
    """Train the best configuration again with K seeds (FIFO, full budget): test error mean +- std."""
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from .progress import confirm_progress as heartbeat  # compare --quiet's line through the retraining
    best = summary["best"]["config"]
    seeds = list(range(o.seed + 1, o.seed + 1 + o.confirm_seeds))
    fixed = {**space.fixed, **best}
    metas = [{**trial_meta(space, o, storage + "/" + name + "-confirm", seed=s, config=fixed), "index": i}
             for i, s in enumerate(seeds)]
    tuner = tune.Tuner(tune.with_resources(trial_fn, trial_resources(o)),
                       param_space={SPEC_KEY: tune.grid_search(metas)},
                       tune_config=tune.TuneConfig(metric=METRIC, mode=MODE,
                                                   max_concurrent_trials=_concurrency(o, _cluster(o), len(metas))),
                       run_config=tune.RunConfig(name=name + "-confirm", storage_path=storage, verbose=0,
                                                 # JSON logger: Tune's ResultGrid reads the result.json files
                                                 callbacks=[JsonLoggerCallback(), heartbeat(len(metas), space, o)],
                                                 failure_config=tune.FailureConfig(max_failures=o.max_failures)))
    grid = tuner.fit()
    found = [r.metrics.get("test_error_at_best_val") for r in (grid[i] for i in range(len(grid))) if r.metrics]
    errs: list[float] = [e for e in found if e is not None and math.isfinite(e)]
    import statistics
    return {"seeds": seeds, "test_errors": errs,
            "test_error_mean": statistics.fmean(errs) if errs else None,
            "test_error_std": statistics.stdev(errs) if len(errs) > 1 else 0.0 if errs else None,
            "experiment": storage + "/" + name + "-confirm"}
