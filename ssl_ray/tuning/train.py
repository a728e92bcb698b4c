"""`ssl-ray train`: one run, in this process (one local worker) or through Ray Train (a TorchTrainer with N
workers, CPU/gloo or GPU/nccl).

One local worker (`--workers 1`, no `--address`, no `--max-failures`) runs the training loop right here: no
`ray.init`, no Train worker group, nothing to start but the loop (BENCHMARKS.md: a 2 s job cost ~60 s of Ray
start-up before). Ray Train is used for data parallelism (N > 1 workers), a cluster (`--address`), worker
restarts (`--max-failures`), or when asked (`ray_train=True`). Both paths write the same files: TensorBoard
scalars, checkpoints, and <output>/result.json, also when interrupted (marked "interrupted", with the last
checkpoint) so that `--resume` continues exactly where the last checkpoint left off.

The Ray-specific lines are numbered [1]..[5] where they happen.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import torch

from ..engine import checkpoint
from ..engine.loop import RunSpec, Trainer
from ..errors import DivergenceError, SSLRayError

LOCAL_CHECKPOINT = "checkpoint"  # <output>/checkpoint/state.pt: the in-process path's checkpoint
RAY_RUN = "ray_train"  # <output>/ray_train/checkpoint_*: Ray Train's checkpoints
DIVERGED_KEY = "diverged"


def _threads(cpus: float) -> None:
    torch.set_num_threads(max(1, int(cpus)))


def require_gpu(gpus: float) -> None:
    """Fail loudly when Ray gave this process GPUs but torch cannot use them (a torch build that needs a
    newer CUDA than the node's driver, or no driver at all), instead of silently training on the CPU."""
    if gpus > 0 and not torch.cuda.is_available():
        raise SSLRayError(f"asked for {gpus:g} GPU(s) but torch {torch.__version__} (CUDA {torch.version.cuda}) "
                          f"sees none on this node: check `nvidia-smi` against the torch build (clusters/README.md)")


def resume(trainer: Trainer, ckpt) -> None:
    """Restore `trainer` from a Ray checkpoint (Train's or Tune's), when there is one."""
    if ckpt is not None:
        with ckpt.as_directory() as d:
            trainer.restore(checkpoint.load(d))


def worker_loop(config: dict[str, Any]) -> None:
    """The body of every Ray Train worker (and, with report=tune, of a single-worker Tune trial)."""
    import ray.train
    import ray.train.torch

    from .ray_internals import quiet_train_reports

    quiet_train_reports()  # Train V2 logs every report at INFO, out of LoggingConfig's reach (Ray 2.60)
    spec = RunSpec.from_dict(config["spec"])
    _threads(config.get("cpus_per_worker", 1))
    require_gpu(config.get("gpus_per_worker", 0))
    device = ray.train.torch.get_device()  # [1] the worker's device (GPU when given one, else CPU)
    trainer = Trainer(spec, device=device, log_dir=config.get("log_dir"), progress=config.get("progress", True))
    # [2] resume: Ray's checkpoint (a restart after a failure in this run) or the one `--resume` names,
    # whichever is further along
    states = []
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            if os.path.exists(os.path.join(d, checkpoint.STATE_FILE)):  # not the record of a divergence
                states.append(checkpoint.load(d))
    if config.get("resume_from"):
        states.append(checkpoint.load(config["resume_from"]))
    if states:
        trainer.restore(max(states, key=lambda s: int(s["epoch"])))

    def report(metrics: dict[str, Any], ckpt_dir: str | None) -> None:
        from ray.train import Checkpoint

        # [3] every worker reports each epoch; rank 0 attaches the checkpoint
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(ckpt_dir) if ckpt_dir else None)

    try:
        trainer.fit(report)
    except DivergenceError as e:
        # Divergence is the same on every worker (the loop sums losses over workers before its check) and a
        # retry would diverge again: report it as the run's last result and end normally, so that Ray Train
        # neither restarts the group (--max-failures) nor raises a WorkerGroupError at the driver. The driver
        # reads the metrics of the last checkpoint, so rank 0 attaches one that holds only the message.
        import tempfile

        from ray.train import Checkpoint

        with tempfile.TemporaryDirectory(prefix="ssl_ray_diverged_") as d:
            with open(os.path.join(d, "DIVERGED.txt"), "w") as f:
                f.write(str(e))
            ray.train.report({DIVERGED_KEY: str(e), "epoch": trainer.epoch},
                             checkpoint=Checkpoint.from_directory(d) if trainer.rank == 0 else None)


def torch_trainer(spec: RunSpec, *, log_dir: str, workers: int, cpus_per_worker: float, gpus_per_worker: float,
                  progress: bool, name: str, storage_path: str, max_failures: int, resume_from: str | None = None,
                  callbacks: list[Any] | None = None) -> Any:
    """A Ray Train TorchTrainer of `workers` worker_loop's (`ssl-ray train`'s and an N-worker tune trial's):
    its run `name` under `storage_path`, restarted up to `max_failures` times from its last checkpoint."""
    from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    return TorchTrainer(
        worker_loop,
        train_loop_config={"spec": spec.to_dict(), "log_dir": log_dir, "cpus_per_worker": cpus_per_worker,
                           "gpus_per_worker": gpus_per_worker, "progress": progress, "resume_from": resume_from},
        # [4] data parallelism: N workers; gradients are averaged by Method.step over the process group
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus_per_worker > 0,
                                     resources_per_worker={"CPU": cpus_per_worker,
                                                           **({"GPU": gpus_per_worker} if gpus_per_worker > 0
                                                              else {})}),
        run_config=RunConfig(name=name, storage_path=storage_path, callbacks=callbacks,
                             failure_config=FailureConfig(max_failures),
                             logging_config=LoggingConfig(log_level="WARNING")),
    )


# ---- the driver --------------------------------------------------------------------------------------------
def uses_ray_train(workers: int = 1, address: str | None = None, max_failures: int = 0,
                   ray_train: bool | None = None) -> bool:
    """Ray Train for N > 1 workers, a cluster, worker restarts, or when asked; otherwise this process."""
    if ray_train is not None:
        return ray_train
    return workers > 1 or address is not None or bool(os.environ.get("RAY_ADDRESS")) or max_failures > 0


def latest_checkpoint(out: Path) -> Path | None:
    """The newest loadable checkpoint folder of a run directory (either path's), or None."""
    dirs = [out / LOCAL_CHECKPOINT] + list((out / RAY_RUN).glob("checkpoint_*"))
    found = sorted((d for d in dirs if (d / checkpoint.STATE_FILE).is_file()),
                   key=lambda d: (d / checkpoint.STATE_FILE).stat().st_mtime, reverse=True)
    for d in found:
        try:
            checkpoint.load(d)
        except SSLRayError:  # cut short while being written or copied: take the one before
            continue
        return d
    return None


RESUME_IGNORES = ("epochs", "checkpoint_every", "checkpoint_seconds", "test_every", "picture_every")


def _check_resumable(state: dict[str, Any], spec: RunSpec, world: int, where: Path) -> None:
    """A checkpoint continues only the run that wrote it: same method, data, seed, hyperparameters, workers."""
    saved = RunSpec.from_dict({k: v for k, v in state["spec"].items() if k in RunSpec.__dataclass_fields__})
    a, b = saved.to_dict(), spec.to_dict()
    a["config"], b["config"] = _config_dict(saved), _config_dict(spec)
    diff = [k for k in b if k not in RESUME_IGNORES and json.dumps(a.get(k), sort_keys=True, default=str)
            != json.dumps(b[k], sort_keys=True, default=str)]
    if diff:
        k = diff[0]
        raise SSLRayError(f"--resume: the run in {where} has {k}={a.get(k)!r}, this command {k}={b[k]!r}; "
                          f"repeat the original options (only --epochs may change)")
    if int(state.get("world", 1)) != world:
        raise SSLRayError(f"--resume: the run in {where} was trained with {state.get('world', 1)} worker(s), "
                          f"this command asks for {world}; data-parallel runs resume with the same --workers")


def run_train(spec: RunSpec, *, output: str, workers: int = 1, cpus_per_worker: float = 1,
              gpus_per_worker: float | None = None, address: str | None = None, max_failures: int = 0,
              progress: bool = True, resume: bool = False, ray_train: bool | None = None) -> dict[str, Any]:
    """Run `spec`; returns the summary dict (also written to <output>/result.json).

    resume: continue from the newest checkpoint under `output` (an error when the options contradict it).
    KeyboardInterrupt is re-raised after result.json is written with "interrupted": true."""
    spec.method_config()  # validate before any start-up
    out = Path(output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = None
    if resume:
        start = latest_checkpoint(out)
        if start is None and not (out / "result.json").exists():
            raise SSLRayError(f"--resume: nothing to resume in {out} (no checkpoint, no result.json)")
        if start is not None:
            _check_resumable(checkpoint.load(start), spec, workers, out)
    elif latest_checkpoint(out) is not None:
        raise SSLRayError(f"{out} already holds a run: continue it with --resume, or choose another --output")
    if uses_ray_train(workers, address, max_failures, ray_train):
        return _run_ray(spec, out, workers, cpus_per_worker, gpus_per_worker, address, max_failures, progress, start)
    return _run_local(spec, out, cpus_per_worker, gpus_per_worker, progress, start)


def _summary(spec: RunSpec, out: Path, metrics: dict[str, Any], *, epochs: int, seconds: float, workers: int,
             ckpt: str | None, path: str, **extra: Any) -> dict[str, Any]:
    s = {
        "method": spec.method, "dataset": spec.data.name, "labels": spec.data.labels, "seed": spec.seed,
        "epochs": epochs, "val_error": metrics.get("val_error"),
        "test_error": metrics.get("test_error"), "best_val_error": metrics.get("best_val_error"),
        "test_error_at_best_val": metrics.get("test_error_at_best_val"),
        "seconds": round(seconds, 2), "workers": workers, "path": path,
        "config": _config_dict(spec), "data": spec.data.to_dict(), "output": str(out),
        "checkpoint": ckpt,
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        **extra,
    }
    (out / "result.json").write_text(json.dumps(s, indent=2, default=str))
    return s


def _run_local(spec: RunSpec, out: Path, cpus: float, gpus: float | None, progress: bool,
               start: Path | None) -> dict[str, Any]:
    """One worker in this process: the training loop, its checkpoints in <output>/checkpoint, no Ray."""
    t0 = time.time()
    _threads(cpus)
    require_gpu(gpus or 0)  # asked for a GPU and sees none: an error, not a silent CPU run
    device = "cuda" if (gpus is None or gpus > 0) and torch.cuda.is_available() else "cpu"
    trainer = Trainer(spec, device=device, log_dir=str(out / "tensorboard"), progress=progress)
    if start is not None:
        trainer.restore(checkpoint.load(start))
    ckpt_dir = out / LOCAL_CHECKPOINT

    def done(checkpoint_epoch: int | None = None, **extra: Any) -> dict[str, Any]:
        last = trainer.history[-1] if trainer.history else _previous_metrics(out)  # resumed a finished run
        has = (ckpt_dir / checkpoint.STATE_FILE).is_file()
        return _summary(spec, out, last, epochs=trainer.epoch, seconds=time.time() - t0, workers=1,
                        ckpt=str(ckpt_dir) if has else (str(start) if start else None), path="in-process",
                        checkpoint_epoch=trainer.checkpoint_epoch if checkpoint_epoch is None else checkpoint_epoch,
                        **extra)

    try:
        trainer.fit(checkpoint_dir=str(ckpt_dir))
    except KeyboardInterrupt:
        # Ctrl-C can land after a checkpoint is written and before the loop notes its epoch: the file decides
        saved = trainer.checkpoint_epoch
        if (ckpt_dir / checkpoint.STATE_FILE).is_file():
            saved = int(checkpoint.load(ckpt_dir)["epoch"])
        done(interrupted=True, checkpoint_epoch=saved)
        raise
    except DivergenceError as e:
        done(error=str(e))
        raise
    return done()


def _run_ray(spec: RunSpec, out: Path, workers: int, cpus_per_worker: float, gpus_per_worker: float | None,
             address: str | None, max_failures: int, progress: bool, start: Path | None) -> dict[str, Any]:
    """N workers through Ray Train's TorchTrainer."""
    import ray

    from .cluster import init_ray

    # PRE-FLIGHT (issue 15): build the method against the dataset's shape here, before Ray starts, so that
    # a config x dataset error is one line (the in-process path builds it in this process anyway).
    local = address is None and not os.environ.get("RAY_ADDRESS")
    if local:  # a local instance gets this machine's CPUs: check before paying for its start-up
        _check_fits(workers, cpus_per_worker, gpus_per_worker or 0, {"CPU": os.cpu_count() or 1})
        # Train V2's PreemptionWatcher (node-drain polling, for spot clusters) makes Ray log an error-level line
        # about its restart policy on every run (ray-project/ray#53727); one machine is never preempted.
        from .ray_internals import PREEMPTION_WATCHER_ENV

        os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")
    init_ray(address)
    res = ray.cluster_resources()
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if res.get("GPU", 0) >= workers else 0.0
    _check_fits(workers, cpus_per_worker, gpus_per_worker, res)
    t0 = time.time()
    trainer = torch_trainer(spec, log_dir=str(out / "tensorboard"), workers=workers, cpus_per_worker=cpus_per_worker,
                            gpus_per_worker=gpus_per_worker, progress=progress, name=RAY_RUN, storage_path=str(out),
                            max_failures=max_failures, resume_from=str(start) if start else None)
    # [5] fit() in a helper thread: Ray Train installs its own SIGINT handler when called from the main
    # thread (it aborts the run and exits 1 without a word); here Ctrl-C reaches this thread as
    # KeyboardInterrupt, and the run is recorded as interrupted below.
    box: dict[str, Any] = {}

    def fit() -> None:
        try:
            box["result"] = trainer.fit()
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            box["error"] = e

    th = threading.Thread(target=fit, name="ray-train-fit", daemon=True)
    th.start()
    try:
        while th.is_alive():
            th.join(0.2)
    except KeyboardInterrupt:
        ckpt = latest_checkpoint(out)
        epoch = int(checkpoint.load(ckpt)["epoch"]) if ckpt else 0
        _summary(spec, out, {}, epochs=epoch, seconds=time.time() - t0, workers=workers, path="ray-train",
                 ckpt=str(ckpt) if ckpt else None, checkpoint_epoch=epoch, interrupted=True)
        ray.shutdown()  # ends this driver's Train controller and workers
        raise
    if "error" in box:
        raise _readable(box["error"]) from None
    result = box["result"]
    if result.error is not None:
        raise _readable(result.error) from None
    metrics = dict(result.metrics or {})
    if DIVERGED_KEY in metrics:
        ckpt = latest_checkpoint(out)
        _summary(spec, out, {}, epochs=int(metrics.get("epoch", 0)), seconds=time.time() - t0, workers=workers,
                 ckpt=str(ckpt) if ckpt else None, path="ray-train", error=metrics[DIVERGED_KEY])
        raise DivergenceError(metrics[DIVERGED_KEY])
    return _summary(spec, out, metrics, epochs=int(metrics.get("epoch", 0)), seconds=time.time() - t0,
                    workers=workers, ckpt=result.checkpoint.path if result.checkpoint else None, path="ray-train",
                    checkpoint_epoch=int(metrics.get("epoch", 0)))


def _previous_metrics(out: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((out / "result.json").read_text()).get("metrics") or {})
    except (OSError, ValueError):
        return {}


def _check_fits(workers: int, cpus: float, gpus: float, res: dict[str, float]) -> None:
    """N workers must fit in the cluster at once, or Ray Train waits for resources forever."""
    need_cpu, need_gpu = workers * cpus, workers * gpus
    if need_cpu > res.get("CPU", 0) or need_gpu > res.get("GPU", 0):
        raise SSLRayError(f"{workers} worker(s) need {need_cpu:g} CPUs and {need_gpu:g} GPUs but the cluster has "
                          f"{res.get('CPU', 0):g} CPUs and {res.get('GPU', 0):g} GPUs; lower --workers or "
                          f"--cpus-per-worker")


def _readable(err: BaseException) -> BaseException:
    """A worker's own SSLRayError (bad config x dataset, missing data) as itself, not as a WorkerGroupError."""
    failures = getattr(err, "worker_failures", None) or {}
    for e in failures.values():
        for x in (e, getattr(e, "cause", None), e.__cause__):
            if isinstance(x, SSLRayError):
                return x
    return err


def _config_dict(spec: RunSpec) -> dict[str, Any]:
    from ..config import to_dict

    return to_dict(spec.method_config())


def default_output(kind: str, name: str) -> str:
    root = Path(os.environ.get("SSL_RAY_RUNS", "ssl_ray_runs"))
    return str(root / kind / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
