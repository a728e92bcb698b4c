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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.loop import RunSpec, Trainer
from ..errors import DivergenceError, SSLRayError
from ..methods import get_method
from .spaces import SearchSpace, check_scheduler
from .train import resume

METRIC, MODE, TIME_ATTR = "val_error", "min", "epoch"
SPEC_KEY = "_ssl_ray"
DRIVER_ONLY = {"cpu": 0, "memory": 1 << 20}
DIVERGED = "DIVERGED.txt"  # the non-hyperparameter part of a trial's config (method, data, budget, resources)


@dataclass
class TuneOptions:
    num_samples: int | None = None
    max_epochs: int | None = None
    grace_epochs: int | None = None
    reduction_factor: int | None = None
    scheduler: str | None = None
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    workers: int = 1
    address: str | None = None
    storage: str | None = None
    name: str | None = None
    resume: bool = False
    confirm_seeds: int = 0
    max_failures: int = 0
    seed: int = 0
    progress: bool = True
    amp: bool = False
    compile: bool = False
    data_resident: bool = True
    search: str | None = None  # searcher (searchers.py); None = the space's `searcher`, else Ray's random sampling
    mlflow: str | None = None  # MLflow tracking URI (trackers.py)
    wandb: str | None = None  # W&B project (trackers.py)


# ---- the trial --------------------------------------------------------------------------------------------
def _hparams(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != SPEC_KEY}


def trial_fn(config: dict[str, Any]) -> None:
    """Tune's function trainable: one Trainer run, reporting once per epoch."""
    import ray.tune

    meta = config[SPEC_KEY]
    spec = RunSpec.from_dict({**meta["spec"], "config": {**meta["spec"]["config"], **_hparams(config)}})
    if meta["workers"] > 1:
        return _trial_data_parallel(spec, meta)
    import torch

    torch.set_num_threads(max(1, int(meta["cpus"])))
    trial_dir = ray.tune.get_context().get_trial_dir()  # [1] this trial's directory
    marker = os.path.join(trial_dir, DIVERGED)
    if os.path.exists(marker):  # a retry of a diverged trial would diverge again: fail at once, no compute
        raise DivergenceError(open(marker).read())
    device = "cuda" if meta["gpus"] > 0 and torch.cuda.is_available() else "cpu"
    trainer = Trainer(spec, device=device, log_dir=os.path.join(trial_dir, "tensorboard"), progress=False)
    resume(trainer, ray.tune.get_checkpoint())  # [2] resume after a crash or a driver restart

    def report(metrics: dict[str, Any], ckpt_dir: str | None) -> None:
        from ray.tune import Checkpoint

        ray.tune.report(metrics, checkpoint=Checkpoint.from_directory(ckpt_dir) if ckpt_dir else None)  # [3]

    try:
        trainer.fit(report)
    except DivergenceError as e:
        with open(marker, "w") as f:
            f.write(str(e))
        raise


def _trial_data_parallel(spec: RunSpec, meta: dict[str, Any]) -> None:
    """[4] An N-worker trial: a TorchTrainer launched inside the Tune trial (Train V2 + Tune interop)."""
    import ray.tune
    from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from .train import worker_loop

    trial_dir = ray.tune.get_context().get_trial_dir()
    use_gpu = meta["gpus"] > 0
    res = {"CPU": meta["cpus"], **({"GPU": meta["gpus"]} if use_gpu else {})}
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"spec": spec.to_dict(), "log_dir": os.path.join(trial_dir, "tensorboard"),
                           "cpus_per_worker": meta["cpus"], "progress": False},
        scaling_config=ScalingConfig(num_workers=meta["workers"], use_gpu=use_gpu, resources_per_worker=res),
        run_config=RunConfig(name="train", storage_path=meta["storage"] + "/" + os.path.basename(trial_dir),
                             callbacks=[TuneReportCallback()], failure_config=FailureConfig(meta["max_failures"]),
                             logging_config=LoggingConfig(log_level="WARNING")),
    )
    trainer.fit()


# ---- the search -------------------------------------------------------------------------------------------
def _scheduler(space: SearchSpace):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    s = space.scheduler
    if s.name == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(time_attr=TIME_ATTR, max_t=s.max_epochs, grace_period=s.grace_epochs,
                         reduction_factor=s.reduction_factor)  # [5] ASHA on our own epoch counter


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
    if o.num_samples:
        space.num_samples = o.num_samples
    check_scheduler(s)
    if o.search or space.searcher:
        from .searchers import check_searcher

        space.searcher = check_searcher(o.search or space.searcher, space)
        if space.searcher == "bohb":
            s.name = "bohb"  # TuneBOHB's own HyperBand replaces ASHA (run_tune); summaries say so
    return space


def _concurrency(o: TuneOptions) -> int:
    """Trials that fit at once: never more than the cluster can start (RAY.md's deadlock)."""
    import ray

    res = ray.cluster_resources()
    per_cpu = o.cpus_per_trial * o.workers
    fit = int(res.get("CPU", 1) // per_cpu) if per_cpu > 0 else 1 << 30
    if o.gpus_per_trial > 0:
        fit = min(fit, int(res.get("GPU", 0) // (o.gpus_per_trial * o.workers)))
    if fit < 1:
        raise SSLRayError(f"one trial needs {per_cpu:g} CPUs and {o.gpus_per_trial * o.workers:g} GPUs but the "
                          f"cluster has {res.get('CPU', 0):g} CPUs and {res.get('GPU', 0):g} GPUs")
    return max(1, min(fit, o.max_concurrent or fit))


def experiment_path(o: TuneOptions, space: SearchSpace) -> tuple[str, str]:
    storage = o.storage or os.environ.get("SSL_RAY_RUNS", "ssl_ray_runs") + "/tune"
    if "://" not in storage:
        storage = str(Path(storage).resolve())
    name = o.name or f"{space.method}-{space.data.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return storage, name


def run_tune(space: SearchSpace, o: TuneOptions) -> dict[str, Any]:
    from ray import tune
    from ray.tune import CLIReporter

    from . import results
    from .cluster import init_ray

    apply_options(space, o)
    storage, name = experiment_path(o, space)
    exp = storage.rstrip("/") + "/" + name
    init_ray(o.address)
    concurrent = _concurrency(o)
    data = space.data
    if data.root and "://" not in data.root:
        data.root = str(Path(data.root).resolve())  # trials run in their own directories
    meta = {"spec": RunSpec(space.method, data, epochs=space.scheduler.max_epochs, seed=o.seed,
                            config=dict(space.fixed), amp=o.amp, compile=o.compile,
                            data_resident=o.data_resident, searched=list(space.search)).to_dict(),
            "workers": o.workers, "cpus": o.cpus_per_trial, "gpus": o.gpus_per_trial,
            "storage": exp, "max_failures": o.max_failures}
    if o.workers > 1:
        # The trial only drives its TorchTrainer, which reserves the workers' resources; a CPU-free bundle
        # (1 MiB of memory) keeps the trial from holding a CPU its own workers then wait for.
        trial_res = DRIVER_ONLY
    else:
        trial_res = {"cpu": o.cpus_per_trial, "gpu": o.gpus_per_trial}
    trainable = tune.with_resources(trial_fn, trial_res)
    scheduler = _scheduler(space)
    from .searchers import bohb_scheduler, build_searcher, trial_dirname

    search_alg = build_searcher(space.searcher, metric=METRIC, mode=MODE, seed=o.seed, max_concurrent=concurrent)
    if space.searcher == "bohb":  # BOHB brings its own HyperBand
        scheduler = bohb_scheduler(TIME_ATTR, space.scheduler.max_epochs, space.scheduler.reduction_factor)
    reporter = CLIReporter(metric_columns={"epoch": "epoch", "val_error": "val_err", "best_val_error": "best_val"},
                           parameter_columns=list(space.search), max_report_frequency=15, sort_by_metric=True)
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    run_config = tune.RunConfig(
        name=name, storage_path=storage, progress_reporter=reporter if o.progress else None,
        callbacks=[JsonLoggerCallback(), CSVLoggerCallback()]  # our own TensorBoard files replace Tune's
        + _trackers(o, name),
        failure_config=tune.FailureConfig(max_failures=o.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        # TensorBoard files are written in the trial's working dir; copy them to storage with each checkpoint
        sync_config=tune.SyncConfig(sync_artifacts=True),
        verbose=1 if o.progress else 0)
    t0 = time.time()
    if o.resume:
        if not tune.Tuner.can_restore(exp):
            raise SSLRayError(f"nothing to resume at {exp} (no experiment state there); check --storage/--name")
        tuner = tune.Tuner.restore(exp, trainable=trainable, resume_unfinished=True, resume_errored=True)
        _replay_asha(tuner, exp, scheduler)  # [6] rebuild ASHA's rungs from the saved results
    else:
        tuner = tune.Tuner(
            trainable, param_space={**space.param_space(), SPEC_KEY: meta},
            tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, scheduler=scheduler, num_samples=space.num_samples,
                                        search_alg=search_alg,  # random sampling limits its own concurrency
                                        trial_dirname_creator=trial_dirname(list(space.search))
                                        if space.searcher not in (None, "random") else None,
                                        max_concurrent_trials=None if space.searcher == "random" else concurrent,
                                        # reuse saves a process start per trial; Train-driving trials cannot
                                        reuse_actors=o.workers == 1),
            run_config=run_config)
        _save_space(exp, space, o)
    grid = tuner.fit()
    summary = results.summarize(grid, exp, space, max_epochs=space.scheduler.max_epochs, seconds=time.time() - t0)
    if o.confirm_seeds:
        summary["confirm"] = confirm(summary, space, o, storage, name)
        results.write_summary(exp, summary)
    return summary


def _trackers(o: TuneOptions, name: str) -> list:
    if not (o.mlflow or o.wandb):
        return []
    from .trackers import tracker_callbacks

    return tracker_callbacks(o.mlflow, o.wandb, name)


def _save_space(exp: str, space: SearchSpace, o: TuneOptions) -> None:
    if "://" in exp:
        return
    Path(exp).mkdir(parents=True, exist_ok=True)
    doc = {"method": space.method, "source": space.source, "dataset": space.data.to_dict(), "fixed": space.fixed,
           "search": {k: {p.dist: p.args} for k, p in space.search.items()},
           "scheduler": vars(space.scheduler), "num_samples": space.num_samples, "searcher": space.searcher,
           "options": {k: v for k, v in vars(o).items()}}
    (Path(exp) / "ssl_ray_space.json").write_text(json.dumps(doc, indent=2, default=str))


def _replay_asha(tuner, exp: str, scheduler) -> None:
    """Hand the restored Tuner a scheduler whose ASHA rungs are rebuilt from the saved results."""
    from . import results

    tuner._local_tuner._tune_config.scheduler = scheduler  # no public way to hand a restored Tuner one
    replay_rungs(scheduler, results.read_histories(exp))


def replay_rungs(scheduler, histories: dict[str, list[dict[str, Any]]]) -> int:
    """ASHA's rung state is not saved by Tuner.restore (RAY.md). Rebuild it: every saved (epoch, val_error)
    of every trial is fed to ASHA's bracket in epoch order, so the rungs hold what they held before the
    interruption; trials that resume are judged against the same cut-offs, and a rung a trial already
    passed is never re-decided (ASHA's own rule). Returns the number of results replayed."""
    from ray.tune.schedulers import ASHAScheduler

    if not isinstance(scheduler, ASHAScheduler):
        return 0
    rows = sorted((r["epoch"], tid, r["val_error"]) for tid, rs in histories.items() for r in rs
                  if isinstance(r.get("val_error"), (int, float)) and math.isfinite(r["val_error"])
                  and isinstance(r.get("epoch"), (int, float)))

    class _T:
        def __init__(self, tid: str):
            self.trial_id = tid

    bracket = scheduler._brackets[0]  # ssl-ray uses ASHA with one bracket (Ray's default)
    for epoch, tid, val in rows:
        bracket.on_result(_T(tid), epoch, -val if MODE == "min" else val)  # ASHA stores sign-flipped for min
    return len(rows)


def confirm(summary: dict[str, Any], space: SearchSpace, o: TuneOptions, storage: str, name: str) -> dict[str, Any]:
    """Train the best configuration again with K seeds (FIFO, full budget): test error mean +- std."""
    from ray import tune

    best = summary["best"]["config"]
    seeds = list(range(o.seed + 1, o.seed + 1 + o.confirm_seeds))
    fixed = {**space.fixed, **best}
    metas = []
    for s in seeds:
        metas.append({"spec": RunSpec(space.method, space.data, epochs=space.scheduler.max_epochs, seed=s,
                                      config=fixed, amp=o.amp, compile=o.compile,
                                      data_resident=o.data_resident).to_dict(),
                      "workers": o.workers, "cpus": o.cpus_per_trial, "gpus": o.gpus_per_trial,
                      "storage": storage + "/" + name + "-confirm", "max_failures": o.max_failures})
    trial_res = DRIVER_ONLY if o.workers > 1 else {"cpu": o.cpus_per_trial, "gpu": o.gpus_per_trial}
    tuner = tune.Tuner(tune.with_resources(trial_fn, trial_res),
                       param_space={SPEC_KEY: tune.grid_search(metas)},
                       tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, max_concurrent_trials=_concurrency(o)),
                       run_config=tune.RunConfig(name=name + "-confirm", storage_path=storage, verbose=0,
                                                 failure_config=tune.FailureConfig(max_failures=o.max_failures)))
    grid = tuner.fit()
    errs = [r.metrics.get("test_error_at_best_val") for r in grid if r.metrics]
    errs = [e for e in errs if e is not None and math.isfinite(e)]
    import statistics

    return {"seeds": seeds, "test_errors": errs,
            "test_error_mean": statistics.fmean(errs) if errs else None,
            "test_error_std": statistics.stdev(errs) if len(errs) > 1 else 0.0 if errs else None,
            "experiment": storage + "/" + name + "-confirm"}


def validate_method(method: str) -> None:
    get_method(method)
