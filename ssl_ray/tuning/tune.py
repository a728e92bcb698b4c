"""`ssl-ray tune METHOD`: Ray Tune + ASHA over a validated search space.

One trial = one Trainer run. A single-worker trial runs the training loop in the trial's own process
(no Train worker group: RAY.md measured ~17 s of start-up per group); an N-worker trial launches its own
TorchTrainer inside the trial function, the Ray 2.x pattern (RAY.md), its metrics flowing back to Tune
through TuneReportCallback. Ray-specific lines are numbered [1]..[6].
"""
from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..engine.spec import RunSpec
from ..engine.worker import run_worker
from ..errors import SSLRayError
from . import experiment
from .experiment import INTERRUPT
from .options import SPEC_KEY, TuneOptions, hparams, check_name, storage_root  # TuneOptions: also imported from here
from . import schedulers
from .spaces import SearchSpace
from .train import torch_trainer

METRIC, MODE, TIME_ATTR = "val_error", "min", "epoch"
DRIVER_ONLY: dict[str, float] = {"cpu": 0, "memory": 1 << 20}


# ---- the trial --------------------------------------------------------------------------------------------
def trial_fn(config: dict[str, Any]) -> None:
    """Tune's function trainable: one worker (engine.worker.run_worker) reporting once per epoch, or an N-worker
    trial's TorchTrainer."""
    import contextlib

    import ray.tune

    meta = config[SPEC_KEY]
    spec = RunSpec.from_dict({**meta["spec"], "config": {**meta["spec"]["config"], **hparams(config)}})
    if meta["workers"] > 1:
        return _trial_data_parallel(spec, meta)
    trial_dir = ray.tune.get_context().get_trial_dir()  # [1] this trial's directory

    def report(metrics: dict[str, Any], ckpt_dir: str | None) -> None:
        from ray.tune import Checkpoint

        ray.tune.report(metrics, checkpoint=Checkpoint.from_directory(ckpt_dir) if ckpt_dir else None)  # [3]

    # [2] resume after a crash (--max-failures), or continue an earlier attempt (ssl-ray tune --resume); the
    # trial's folder holds the record of a divergence, which a retry would repeat: it then fails at once
    ckpts = [ray.tune.get_checkpoint()] + ([ray.tune.Checkpoint(meta["resume"]["checkpoint"])] if meta.get("resume")
                                           else [])
    with contextlib.ExitStack() as stack:
        folders = [trial_dir] + [stack.enter_context(c.as_directory()) for c in ckpts if c is not None]
        run_worker(spec, "cuda" if meta["gpus"] > 0 else "cpu", report, folders, threads=meta["cpus"],
                   gpus=meta["gpus"], log_dir=os.path.join(trial_dir, "tensorboard"), progress=False,
                   marker_dir=trial_dir)


def _trial_data_parallel(spec: RunSpec, meta: dict[str, Any]) -> None:
    """[4] An N-worker trial: a TorchTrainer launched inside the Tune trial (Train V2 + Tune interop)."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_dir = ray.tune.get_context().get_trial_dir()
    # one Train run per plan entry: a resumed attempt finds its predecessor's run there and continues it
    trainer = torch_trainer(spec, log_dir=os.path.join(trial_dir, "tensorboard"), workers=meta["workers"],
                            cpus_per_worker=meta["cpus"], gpus_per_worker=meta["gpus"], progress=False,
                            name=f"train-{meta['index']:05d}", storage_path=meta["storage"],
                            max_failures=meta["max_failures"], callbacks=[TuneReportCallback()])
    trainer.fit()


# ---- the search -------------------------------------------------------------------------------------------
def _on_sigint(signum, frame) -> None:
    if INTERRUPT.is_set():
        raise KeyboardInterrupt  # a second Ctrl-C: quit at once
    INTERRUPT.set()
    print("\ninterrupt: stopping the trials (their checkpoints stay); Ctrl-C again to quit at once",
          file=sys.stderr, flush=True)


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


def trial_meta(space: SearchSpace, o: TuneOptions, storage: str, *, seed: int, config: dict[str, Any],
               searched: list[str] | None = None) -> dict[str, Any]:
    """A trial's config entry SPEC_KEY: the run it trains (its searched values are the rest of the config) and
    the resources it runs on."""
    s = space.scheduler
    return {"spec": RunSpec(space.method, space.data, epochs=s.max_epochs, seed=seed,
                            config=config, amp=o.amp, compile=o.compile, data_resident=o.data_resident,
                            searched=list(searched or []),
                            checkpoint_every=schedulers.get(s.name).checkpoint_every(s)).to_dict(),
            "workers": o.workers, "cpus": o.cpus_per_trial, "gpus": o.gpus_per_trial,
            "storage": storage, "max_failures": o.max_failures}


def trial_resources(o: TuneOptions) -> dict[str, float]:
    """What Tune reserves for one trial."""
    if o.workers > 1:
        # The trial only drives its TorchTrainer, which reserves the workers' resources; a CPU-free bundle
        # (1 MiB of memory) keeps the trial from holding a CPU its own workers then wait for.
        return DRIVER_ONLY
    return {"cpu": o.cpus_per_trial, "gpu": o.gpus_per_trial or 0.0}  # decided by run_tune (trial_gpus)


def preflight_plan(space: SearchSpace, plan: list[dict[str, Any]], seed: int) -> None:
    """Build the method for every distinct planned configuration against the dataset's shape (no training):
    a config x dataset error is one line before any trial runs, not a traceback from inside a trial."""
    from .preflight import preflight

    seen = set()
    for hp in plan:
        key = json.dumps(hp, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            preflight(RunSpec(space.method, space.data, epochs=1, seed=seed, config={**space.fixed, **hp}))


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


def run_tune(space: SearchSpace, o: TuneOptions) -> dict[str, Any]:
    """A fresh search (the plan drawn from `space`), or with o.resume the unfinished part of a saved one
    (`space` and `o` then come from the experiment's own files: experiment.resume_setup)."""
    import signal

    from ray import tune
    from ray.tune import CLIReporter

    from . import results
    from .cluster import init_ray
    from .hooks import InterruptStopper, PlanSearcher, TrialRecorder, trial_dirname

    storage, name = experiment_path(o, space)
    exp = storage.rstrip("/") + "/" + name
    fs, base = experiment.fs_of(exp)
    extended = False
    if not o.resume:
        apply_options(space, o)
    # A model-based searcher (optuna, hyperopt, bohb) proposes each trial from the results so far: its plan
    # grows as trials start (hooks.PlanSearcher records every proposal in ssl_ray_space.json).
    adaptive = space.searcher not in (None, "random")
    if o.resume:
        doc, records = experiment.load(exp)
        plan = doc["plan"]
        if space.num_samples > doc["num_samples"]:  # --num-samples N: more trials appended to the plan
            if not adaptive:
                plan = plan + experiment.make_plan(space, o.seed)[len(plan):]
            doc, extended = {**doc, "num_samples": space.num_samples, "plan": plan}, True
    else:
        if experiment.read_text(fs, f"{base}/{experiment.SPACE_FILE}") is not None:
            raise SSLRayError(f"an experiment already exists at {exp}: continue it with --resume, or pick another "
                              f"--name")
        plan, records = ([] if adaptive else experiment.make_plan(space, o.seed)), {}
    data = space.data
    if data.root and "://" not in data.root:
        data.root = str(Path(data.root).resolve())  # trials run in their own directories
    ray_init_s = preflight_while_ray_starts(
        lambda: preflight_plan(space, plan or experiment.make_plan(space, o.seed, 1), o.seed),
        lambda: init_ray(o.address, dashboard=o.workers > 1))  # the dashboard serves Ray Train only (cluster.py)
    state = _cluster(o)
    o.gpus_per_trial = trial_gpus(o, state)  # decided here, saved with the experiment's options
    notice = check_trial_fits(o, state)
    meta = trial_meta(space, o, exp, seed=o.seed, config=dict(space.fixed), searched=list(space.search))
    if not o.resume:
        doc = _save_space(exp, space, o, plan)
    elif extended:
        experiment.write_json(fs, f"{base}/{experiment.SPACE_FILE}", doc)
    trials = experiment.collect(exp, doc, records) if o.resume else []
    todo = [t for t in trials if t["status"] not in ("TERMINATED", "STOPPED", "ERROR")]
    todo += [{"index": i, "config": hp, "checkpoint": None} for i, hp in enumerate(plan) if i >= len(trials)]
    configs = []
    for t in todo:
        m = {**meta, "index": t["index"]}
        if t["checkpoint"]:
            m["resume"] = {"checkpoint": t["checkpoint"], "from_epoch": t["checkpoint_epoch"]}
        configs.append({**t["config"], SPEC_KEY: m})
    new_trials = max(0, space.num_samples - len(doc["plan"])) if adaptive else 0
    concurrent = _concurrency(o, state, len(configs) + new_trials)
    if notice:
        print(notice, file=sys.stderr, flush=True)
    trainable = tune.with_resources(trial_fn, trial_resources(o))
    search_alg = PlanSearcher(configs, METRIC, MODE)
    if adaptive:  # unfinished trials first (from their checkpoints), then the searcher's new proposals
        from .searchers import build_searcher

        inner = build_searcher(space.searcher, metric=METRIC, mode=MODE, seed=o.seed, max_concurrent=concurrent)
        search_alg = PlanSearcher(configs, METRIC, MODE, inner=inner, space=space.param_space(), meta=meta,
                                  doc=doc, new=max(0, space.num_samples - len(doc["plan"])),
                                  write_plan=lambda d: experiment.write_json(fs, f"{base}/{experiment.SPACE_FILE}", d))
    kind = schedulers.get(space.scheduler.name)
    scheduler = kind.build(space, exp, len(configs) + search_alg.new)  # [5] on our own epoch counter
    if o.resume:  # [6] Ray saves no scheduler state (ASHA's rungs): rebuild it from the saved results
        kind.replay(scheduler, {experiment.plan_key(t["index"]): t["history"] for t in trials})
    reporter = CLIReporter(metric_columns={"epoch": "epoch", "val_error": "val_err", "best_val_error": "best_val"},
                           parameter_columns=list(space.search), max_report_frequency=15, sort_by_metric=True)
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    run_config = tune.RunConfig(
        name=name, storage_path=storage, progress_reporter=reporter if o.progress else None,
        # our own TensorBoard files replace Tune's; TrialRecorder first: it saves result.json before a restart
        callbacks=[TrialRecorder(exp, records), JsonLoggerCallback(), CSVLoggerCallback()] + _trackers(o, name),
        stop=InterruptStopper(),
        failure_config=tune.FailureConfig(max_failures=o.max_failures),
        # PBT may clone any trial's checkpoint of its last decision: keep them all (max_epochs / interval + 1)
        checkpoint_config=tune.CheckpointConfig(num_to_keep=kind.keep_checkpoints),
        # TensorBoard files are written in the trial's working dir; copy them to storage with each checkpoint
        sync_config=tune.SyncConfig(sync_artifacts=True),
        verbose=1 if o.progress else 0)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, scheduler=scheduler, search_alg=search_alg,
                                    num_samples=max(1, len(configs) + search_alg.new),
                                    max_concurrent_trials=concurrent if kind.limits_concurrency else None,
                                    trial_dirname_creator=trial_dirname,
                                    # reuse saves a process start per trial; Train-driving trials cannot
                                    reuse_actors=o.workers == 1),
        run_config=run_config)
    t0 = time.time()
    INTERRUPT.clear()
    # Ctrl-C: our handler (Tune's own would stop the trials as if they had finished)
    from .ray_internals import SIGINT_HANDLER_ENV

    os.environ[SIGINT_HANDLER_ENV] = "1"
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _on_sigint) if main_thread else None
    try:
        if configs or search_alg.new:
            tuner.fit()
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    interrupted = INTERRUPT.is_set()
    trials = experiment.collect(exp, doc, records)
    summary = results.summarize(exp, space, trials, max_epochs=space.scheduler.max_epochs,
                                seconds=time.time() - t0, interrupted=interrupted, ray_init_seconds=ray_init_s)
    said = kind.summary(scheduler, exp)  # what the scheduler did (PBT's exploits), and where it is written down
    if said is not None:
        summary[kind.name] = said
        results.write_summary(exp, summary)
    if interrupted:
        then = (f"\nit is {kind.not_resumable}" if not kind.resumable
                else f"\ncontinue with: ssl-ray tune {space.method} --storage {storage} --name {name} --resume")
        print(f"interrupted: {summary['num_interrupted']} of {summary['num_trials']} trials unfinished, their "
              f"checkpoints kept in {exp}{then}", file=sys.stderr, flush=True)
        raise KeyboardInterrupt
    if o.confirm_seeds:
        summary["confirm"] = confirm(summary, space, o, storage, name)
        results.write_summary(exp, summary)
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
                                                 failure_config=tune.FailureConfig(max_failures=o.max_failures)))
    grid = tuner.fit()
    found = [r.metrics.get("test_error_at_best_val") for r in (grid[i] for i in range(len(grid))) if r.metrics]
    errs: list[float] = [e for e in found if e is not None and math.isfinite(e)]
    import statistics

    return {"seeds": seeds, "test_errors": errs,
            "test_error_mean": statistics.fmean(errs) if errs else None,
            "test_error_std": statistics.stdev(errs) if len(errs) > 1 else 0.0 if errs else None,
            "experiment": storage + "/" + name + "-confirm"}
