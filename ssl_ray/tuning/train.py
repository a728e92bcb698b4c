"""`ssl-ray train`: one run, in this process (one local worker) or through Ray Train (a TorchTrainer with N
workers, CPU/gloo or GPU/nccl).

One local worker (`--workers 1`, no `--address`, no `--max-failures`) runs the training loop right here: no
`ray.init`, no Train worker group, nothing to start but the loop (BENCHMARKS.md: a 2 s job cost ~60 s of Ray
start-up before). Ray Train is used for data parallelism (N > 1 workers), a cluster (`--address`), worker
restarts (`--max-failures`), or when asked (`ray_train=True`). Both paths write the same files: TensorBoard
scalars, checkpoints, and <output>/result.json, also when interrupted (marked "interrupted", with the last
checkpoint) so that `--resume` continues exactly where the last checkpoint left off.

On a cluster the run's folder must be storage every node reaches (`--storage`: a bucket or a shared mount):
Ray Train's checkpoints, the TensorBoard files (rank 0 copies them there after each epoch when the folder is in
a bucket) and result.json all go there, and a resumed worker reads its checkpoint from there on its own node.
Resources: tuning/resources.py (the rules), tuning/cluster.py cluster_state (what the cluster has and can grow to).

The Ray-specific lines are numbered [1]..[6] where they happen.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from ..engine import checkpoint
from ..engine.loop import RunSpec, Trainer
from ..engine.worker import diverged, require_gpu, run_worker
from ..errors import DivergenceError, SSLRayError

LOCAL_CHECKPOINT = "checkpoint"  # <output>/checkpoint/state.pt: the in-process path's checkpoint
RAY_RUN = "ray_train"  # <output>/ray_train/checkpoint_*: Ray Train's checkpoints


def worker_loop(config: dict[str, Any]) -> None:
    """The body of every Ray Train worker: engine.worker.run_worker between Ray's lines."""
    import contextlib
    import tempfile

    import ray.train
    import ray.train.torch

    from .ray_internals import quiet_train_reports

    quiet_train_reports()  # Train V2 logs every report at INFO, out of LoggingConfig's reach (Ray 2.60)
    spec = RunSpec.from_dict(config["spec"])
    gpus = config.get("gpus_per_worker", 0)
    require_gpu(gpus)  # before asking Ray for the device: a GPU torch cannot use would give "cpu" there
    device = ray.train.torch.get_device()  # [1] the worker's device (GPU when given one, else CPU)
    log_dir, sync_tb = _tensorboard_dir(config.get("log_dir"), config.get("log_fs"))
    rank = ray.train.get_context().get_world_rank()

    def report(metrics: dict[str, Any], ckpt_dir: str | None) -> None:
        from ray.train import Checkpoint

        if rank == 0:
            sync_tb()  # this epoch's TensorBoard files into the run's storage, before the driver may read them
        # [3] every worker reports each epoch; rank 0 attaches the checkpoint
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(ckpt_dir) if ckpt_dir else None)

    # [2] resume: Ray's checkpoint (a restart after a failure in this run) and the one `--resume` names (a
    # ray.train.Checkpoint, read from the run's storage on this node): run_worker continues the one further along
    trainer: list[Trainer] = []
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="ssl_ray_diverged_") as marker:
        folders = [stack.enter_context(c.as_directory())
                   for c in (ray.train.get_checkpoint(), config.get("resume_from")) if c is not None]
        try:
            run_worker(spec, device, report, folders, threads=config.get("cpus_per_worker", 1), gpus=gpus,
                       log_dir=log_dir, progress=config.get("progress", True), marker_dir=marker,
                       started=trainer.append)
        except DivergenceError:
            # Divergence is the same on every worker (the loop sums losses over workers before its check) and a
            # retry would diverge again: rank 0 reports the marker as the run's last checkpoint and every worker
            # ends normally, so that Ray Train neither restarts the group (--max-failures) nor raises a
            # WorkerGroupError at the driver, which finds the marker there (_run_ray).
            from ray.train import Checkpoint

            ray.train.report({"epoch": trainer[0].epoch},
                             checkpoint=Checkpoint.from_directory(marker) if rank == 0 else None)
            return
    if rank == 0:
        sync_tb()  # the files as closed by fit


def _tensorboard_dir(log_dir: str | None, fs: Any) -> tuple[str | None, Any]:
    """Where this worker writes TensorBoard files, and the function that puts them where the results are: with
    a local (or shared) run folder that is the folder itself; with a run folder in a pyarrow filesystem (a
    bucket) a folder on this node, copied into the storage after each epoch."""
    if log_dir is None or fs is None:
        return log_dir, lambda: None
    import tempfile

    local = tempfile.mkdtemp(prefix="ssl_ray_tb_")

    def sync() -> None:  # the whole folder each time: event files grow, and are small
        for where, _, files in os.walk(local):
            rel = os.path.relpath(where, local)
            dest = log_dir if rel == "." else f"{log_dir}/{rel}"
            fs.create_dir(dest, recursive=True)  # a local or sub-tree filesystem creates no parents by itself
            for name in files:
                with open(os.path.join(where, name), "rb") as src, fs.open_output_stream(f"{dest}/{name}") as dst:
                    dst.write(src.read())

    return local, sync


def torch_trainer(spec: RunSpec, *, log_dir: str, workers: int, cpus_per_worker: float, gpus_per_worker: float,
                  progress: bool, name: str, storage_path: str, max_failures: int, resume_from: Any = None,
                  callbacks: list[Any] | None = None, storage_filesystem: Any = None) -> Any:
    """A Ray Train TorchTrainer of `workers` worker_loop's (`ssl-ray train`'s and an N-worker tune trial's):
    its run `name` under `storage_path` (inside `storage_filesystem` when given: a bucket), restarted up to
    `max_failures` times from its last checkpoint; `resume_from`: a ray.train.Checkpoint to continue."""
    from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    return TorchTrainer(
        worker_loop,
        train_loop_config={"spec": spec.to_dict(), "log_dir": log_dir, "cpus_per_worker": cpus_per_worker,
                           "gpus_per_worker": gpus_per_worker, "progress": progress, "resume_from": resume_from,
                           "log_fs": storage_filesystem},
        # [4] data parallelism: N workers; gradients are averaged by Method.step over the process group
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus_per_worker > 0,
                                     resources_per_worker={"CPU": cpus_per_worker,
                                                           **({"GPU": gpus_per_worker} if gpus_per_worker > 0
                                                              else {})}),
        run_config=RunConfig(name=name, storage_path=storage_path, storage_filesystem=storage_filesystem,
                             callbacks=callbacks,
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


class RunFolder:
    """A run's folder: a local one (`fs` None; also a folder every node mounts), or a path inside a pyarrow
    filesystem: a bucket (s3://, gs://), or a filesystem handed to run_train (tests: a SubTreeFileSystem standing
    in for a bucket). Ray Train's checkpoints, the TensorBoard files and result.json all go into it."""

    def __init__(self, output: str, fs: Any = None, shared: bool = False):
        import pyarrow.fs as pafs

        self.shown, self.shared = output, shared or fs is not None or "://" in output
        if fs is None and "://" in output:
            from .experiment import fs_of

            fs, output = fs_of(output)
        if isinstance(fs, pafs.LocalFileSystem):
            fs = None  # file:// is a local folder
        self.fs = fs
        self.path = str(Path(output).resolve()) if fs is None else output.rstrip("/")
        if fs is None:
            self.shown = self.path

    def __str__(self) -> str:
        return self.shown

    def latest(self) -> str | None:
        """The newest checkpoint folder of Ray Train's run in a bucket (the local case: latest_checkpoint)."""
        import pyarrow.fs as pafs

        assert self.fs is not None
        infos = self.fs.get_file_info(pafs.FileSelector(f"{self.path}/{RAY_RUN}", allow_not_found=True))
        found = []
        for d in infos:
            if d.type == pafs.FileType.Directory and d.base_name.startswith("checkpoint_"):
                f = self.fs.get_file_info(f"{d.path}/{checkpoint.STATE_FILE}")
                if f.type == pafs.FileType.File:
                    found.append((f.mtime, d.path))
        return max(found)[1] if found else None

    def load(self, ckpt: str) -> dict[str, Any]:
        """A checkpoint's state, copied from the bucket to a temporary folder on this node."""
        from ray.train import Checkpoint

        with Checkpoint(ckpt, filesystem=self.fs).as_directory() as d:
            return checkpoint.load(d)

    def write_result(self, s: dict[str, Any]) -> None:
        text = json.dumps(s, indent=2, default=str)
        if self.fs is None:
            (Path(self.path) / "result.json").write_text(text)
            return
        from .experiment import make_dirs, write_json

        make_dirs(self.fs, self.path)
        write_json(self.fs, f"{self.path}/result.json", s)

    def has_result(self) -> bool:
        import pyarrow.fs as pafs

        if self.fs is None:
            return (Path(self.path) / "result.json").exists()
        return self.fs.get_file_info(f"{self.path}/result.json").type == pafs.FileType.File


RESUME_IGNORES = ("epochs", "checkpoint_every", "checkpoint_seconds", "test_every", "picture_every")


def _check_resumable(state: dict[str, Any], spec: RunSpec, world: int, where: Any) -> None:
    """A checkpoint continues only the run that wrote it: same method, data, seed, hyperparameters, workers."""
    saved = RunSpec.from_dict({k: v for k, v in state["spec"].items() if k in RunSpec.__dataclass_fields__})
    a, b = saved.to_dict(), spec.to_dict()
    a["config"], b["config"] = saved.config_dict(), spec.config_dict()
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
              progress: bool = True, resume: bool = False, ray_train: bool | None = None,
              shared: bool = False, storage_filesystem: Any = None,
              wait_for_resources: bool | None = None) -> dict[str, Any]:
    """Run `spec`; returns the summary dict (also written to <output>/result.json).

    output: the run's folder: a local path, or a URI (s3://, gs://), or a path inside `storage_filesystem` (a
    pyarrow filesystem); `shared`: the folder is storage every node reaches (`--storage`), which a run on a
    cluster of several nodes needs. A run folder in a filesystem other than the local one runs through Ray Train,
    whose storage layer writes it. resume: continue from the newest checkpoint under `output` (an error when the
    options contradict it). wait_for_resources: see cluster.cluster_state.
    KeyboardInterrupt is re-raised after result.json is written with "interrupted": true."""
    folder = RunFolder(output, storage_filesystem, shared)
    if folder.fs is not None:
        newest = folder.latest()
        if resume and newest is None and not folder.has_result():
            raise SSLRayError(f"--resume: nothing to resume in {folder} (no checkpoint, no result.json)")
        if not resume and newest is not None:
            raise SSLRayError(f"{folder} already holds a run: continue it with --resume, or choose another --output")
        if resume and newest is not None:
            _check_resumable(folder.load(newest), spec, workers, folder)
        return _run_ray(spec, folder, workers, cpus_per_worker, gpus_per_worker, address, max_failures, progress,
                        newest if resume else None, wait_for_resources)
    out = Path(folder.path)
    out.mkdir(parents=True, exist_ok=True)
    start = None
    if resume:
        start = latest_checkpoint(out)
        if start is None and not (out / "result.json").exists():
            raise SSLRayError(f"--resume: nothing to resume in {out} (no checkpoint, no result.json)")
        if start is not None:
            _check_resumable(checkpoint.load(start), spec, workers, folder)
    elif latest_checkpoint(out) is not None:
        raise SSLRayError(f"{out} already holds a run: continue it with --resume, or choose another --output")
    if uses_ray_train(workers, address, max_failures, ray_train):
        return _run_ray(spec, folder, workers, cpus_per_worker, gpus_per_worker, address, max_failures, progress,
                        str(start) if start else None, wait_for_resources)
    return _run_local(spec, out, cpus_per_worker, gpus_per_worker, progress, start)


def _summary(spec: RunSpec, out: Path | RunFolder, metrics: dict[str, Any], *, epochs: int, seconds: float,
             workers: int, ckpt: str | None, path: str, **extra: Any) -> dict[str, Any]:
    s = {
        "method": spec.method, "dataset": spec.data.name, "labels": spec.data.labels, "seed": spec.seed,
        "epochs": epochs, "val_error": metrics.get("val_error"),
        "test_error": metrics.get("test_error"), "best_val_error": metrics.get("best_val_error"),
        "test_error_at_best_val": metrics.get("test_error_at_best_val"),
        "seconds": round(seconds, 2), "workers": workers, "path": path,
        "config": spec.config_dict(), "data": spec.data.to_dict(), "output": str(out),
        "checkpoint": ckpt,
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        **extra,
    }
    (out if isinstance(out, RunFolder) else RunFolder(str(out))).write_result(s)
    return s


def _run_local(spec: RunSpec, out: Path, cpus: float, gpus: float | None, progress: bool,
               start: Path | None) -> dict[str, Any]:
    """One worker in this process (engine.worker.run_worker): its checkpoints in <output>/checkpoint, no Ray."""
    t0 = time.time()
    device = "cuda" if (gpus is None or gpus > 0) and torch.cuda.is_available() else "cpu"
    ckpt_dir = out / LOCAL_CHECKPOINT
    started: list[Trainer] = []

    def done(checkpoint_epoch: int | None = None, **extra: Any) -> dict[str, Any]:
        trainer = started[0]
        last = trainer.history[-1] if trainer.history else _previous_metrics(out)  # resumed a finished run
        has = (ckpt_dir / checkpoint.STATE_FILE).is_file()
        return _summary(spec, out, last, epochs=trainer.epoch, seconds=time.time() - t0, workers=1,
                        ckpt=str(ckpt_dir) if has else (str(start) if start else None), path="in-process",
                        checkpoint_epoch=trainer.checkpoint_epoch if checkpoint_epoch is None else checkpoint_epoch,
                        **extra)

    try:
        run_worker(spec, device, None, [start] if start else [], threads=cpus, gpus=gpus or 0,
                   log_dir=str(out / "tensorboard"), progress=progress, checkpoint_dir=str(ckpt_dir),
                   started=started.append)
    except KeyboardInterrupt:
        if started:
            # Ctrl-C can land after a checkpoint is written and before the loop notes its epoch: the file decides
            saved = started[0].checkpoint_epoch
            if (ckpt_dir / checkpoint.STATE_FILE).is_file():
                saved = int(checkpoint.load(ckpt_dir)["epoch"])
            done(interrupted=True, checkpoint_epoch=saved)
        raise
    except DivergenceError as e:
        if started:
            done(error=str(e))
        raise
    return done()


def _run_ray(spec: RunSpec, out: RunFolder, workers: int, cpus_per_worker: float, gpus_per_worker: float | None,
             address: str | None, max_failures: int, progress: bool, start: str | None,
             wait: bool | None = None) -> dict[str, Any]:
    """N workers through Ray Train's TorchTrainer, their files in `out`; `start`: a checkpoint folder in it."""
    import ray
    from ray.train import Checkpoint

    from .cluster import alive_nodes, cluster_state, init_ray
    from .resources import check_gpu_split, local_state

    if gpus_per_worker is not None:
        check_gpu_split(workers, gpus_per_worker, GPU_FLAG)
    local = address is None and not os.environ.get("RAY_ADDRESS")
    if local:
        # Train V2's PreemptionWatcher (node-drain polling, for spot clusters) makes Ray log an error-level line
        # about its restart policy on every run (ray-project/ray#53727); one machine is never preempted.
        from .ray_internals import PREEMPTION_WATCHER_ENV

        os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")
    if local and not ray.is_initialized():  # check against this machine before paying for Ray's start-up
        machine = local_state()
        _resources(workers, cpus_per_worker, gpus_per_worker, machine)
        init_ray(None, num_gpus=int(machine.has("GPU")))
    else:
        init_ray(address)
    state = cluster_state(local, wait)
    gpus_per_worker, notice = _resources(workers, cpus_per_worker, gpus_per_worker, state)
    nodes = 1 if local else alive_nodes()
    if not out.shared and (nodes > 1 or state.grows):
        raise SSLRayError(f"the run folder {out} is on this node, and the cluster has {nodes} node(s)"
                          f"{' and can add more' if state.grows else ''}: workers on other nodes could neither write "
                          f"their checkpoints there nor read them back; give --storage s3://BUCKET/PATH, gs://... or "
                          f"a folder every node mounts (--output then names the run inside it)")
    if notice:
        print(notice, file=sys.stderr, flush=True)
    t0 = time.time()
    tb = f"{out.path}/tensorboard"
    trainer = torch_trainer(spec, log_dir=tb, workers=workers, cpus_per_worker=cpus_per_worker,
                            gpus_per_worker=gpus_per_worker, progress=progress, name=RAY_RUN, storage_path=out.path,
                            storage_filesystem=out.fs, max_failures=max_failures,
                            # [5] read by each worker from the run's storage, on its own node
                            resume_from=Checkpoint(start, filesystem=out.fs) if start else None)
    # [6] fit() in a helper thread: Ray Train installs its own SIGINT handler when called from the main
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
        ckpt = _latest(out)
        epoch = int((checkpoint.load(ckpt) if out.fs is None else out.load(ckpt))["epoch"]) if ckpt else 0
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
    message = _diverged(result.checkpoint)
    if message is not None:
        ckpt = _latest(out)
        _summary(spec, out, {}, epochs=int(metrics.get("epoch", 0)), seconds=time.time() - t0, workers=workers,
                 ckpt=str(ckpt) if ckpt else None, path="ray-train", error=message)
        raise DivergenceError(message)
    return _summary(spec, out, metrics, epochs=int(metrics.get("epoch", 0)), seconds=time.time() - t0,
                    workers=workers, ckpt=result.checkpoint.path if result.checkpoint else None, path="ray-train",
                    checkpoint_epoch=int(metrics.get("epoch", 0)))


def _diverged(ckpt: Any) -> str | None:
    """The divergence the run's last checkpoint records (worker_loop), or None."""
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        return diverged(d)


def _latest(out: RunFolder) -> str | None:
    """The newest checkpoint folder of the run, local or in a bucket."""
    if out.fs is not None:
        return out.latest()
    found = latest_checkpoint(Path(out.path))
    return str(found) if found else None


def _previous_metrics(out: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((out / "result.json").read_text()).get("metrics") or {})
    except (OSError, ValueError):
        return {}


GPU_FLAG = "--gpus-per-worker"


def _resources(workers: int, cpus: float, gpus: float | None, state: Any) -> tuple[float, str | None]:
    """GPUs per worker (the default rule when `gpus` is None: resources.GPU_RULE) and whether N workers fit the
    cluster `state` (resources.ClusterState): (gpus, None) when they fit now, (gpus, notice) when the run waits
    for nodes; SSLRayError (one line) when they never can, or the GPUs asked for cannot serve the workers."""
    from .resources import GPU_RULE, check_fits, check_gpu_split, default_gpus

    g = default_gpus(state, GPU_FLAG) if gpus is None else gpus
    check_gpu_split(workers, g, GPU_FLAG)
    hint = "lower --workers or --cpus-per-worker"
    if g > 0 and workers * g > state.has("GPU"):
        most = int(state.has("GPU") // g)
        hint = (f"lower --workers{f' to {most}' if most else ''} ({g:g} GPU each), or give {GPU_FLAG} 0 to train on "
                f"CPUs" + (f" (the default: {GPU_RULE})" if gpus is None else ""))
    return g, check_fits(workers, cpus, g, state, hint=hint)


NO_GPU_FOR_NCCL = "ProcessGroupNCCL is only supported with GPUs, no GPUs found"
"""torch's error when Ray Train, given GPUs, sets up NCCL on a worker whose torch sees none (before require_gpu)."""


def _readable(err: BaseException) -> BaseException:
    """A worker's own SSLRayError (bad config x dataset, missing data) as itself, not as a WorkerGroupError; a
    worker that got GPUs its torch cannot use (NCCL's set-up fails before worker_loop runs) as one line."""
    failures = getattr(err, "worker_failures", None) or {}
    for e in failures.values():
        for x in (e, getattr(e, "cause", None), e.__cause__):
            if isinstance(x, SSLRayError):
                return x
    seen: list[BaseException] = []
    todo: list[Any] = [err, *failures.values()]
    while todo:
        x = todo.pop()
        if x is None or any(x is y for y in seen):
            continue
        seen.append(x)
        if NO_GPU_FOR_NCCL in str(x):
            return SSLRayError(f"the Ray Train workers were given GPUs but torch on their node sees none ({NO_GPU_FOR_NCCL}"
                               f"): check `nvidia-smi` against the torch build there (clusters/README.md), or give "
                               f"--gpus-per-worker 0")
        todo += [getattr(x, "cause", None), x.__cause__, x.__context__,
                 *(getattr(x, "worker_failures", None) or {}).values(),
                 getattr(x, "controller_failure", None)]
    return err


def default_output(kind: str, name: str) -> str:
    root = Path(os.environ.get("SSL_RAY_RUNS", "ssl_ray_runs"))
    return str(root / kind / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
