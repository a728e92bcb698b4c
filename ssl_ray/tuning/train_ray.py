"""`ssl-ray train` through Ray Train (and an N-worker tune trial): a TorchTrainer of N workers, each running
engine.worker.run_worker between Ray's lines, CPU/gloo or GPU/nccl; the driver side records the run in its folder
(run_folder.py) also when interrupted or diverged. The Ray-specific lines are numbered [1]..[6] where they
happen."""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from ..engine import checkpoint
from ..engine.loop import Trainer
from ..engine.spec import RunSpec
from ..engine.worker import diverged, require_gpu, run_worker
from ..errors import DivergenceError, SSLRayError
from .lock import catch_sigterm
from .run_folder import RAY_RUN, RunFolder, latest, write_summary


def worker_loop(config: dict[str, Any]) -> None:
    """The body of every Ray Train worker: engine.worker.run_worker between Ray's lines."""
    import contextlib
    import shutil
    import tempfile
    import uuid

    import ray.train
    import ray.train.torch

    from .ray_internals import quiet_train_reports

    quiet_train_reports()  # Train V2 logs every report at INFO, out of LoggingConfig's reach (Ray 2.60)
    spec = RunSpec.from_dict(config["spec"])
    gpus = config.get("gpus_per_worker", 0)
    require_gpu(gpus)  # before asking Ray for the device: a GPU torch cannot use would give "cpu" there
    device = ray.train.torch.get_device()  # [1] the worker's device (GPU when given one, else CPU)
    log_dir, sync_tb = _tensorboard_dir(config.get("log_dir"), config.get("log_fs"))
    staged = None if log_dir == config.get("log_dir") else log_dir  # on this node, for a run in a bucket
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
    # Made only on a divergence (mark_diverged), so that a worker Ray kills (an ASHA stop, a Ctrl-C) leaves
    # nothing behind; removed with the staged TensorBoard folder when the worker ends.
    marker = os.path.join(tempfile.gettempdir(), f"ssl_ray_diverged_{uuid.uuid4().hex[:12]}")
    try:
        with contextlib.ExitStack() as stack:
            folders = [stack.enter_context(c.as_directory())
                       for c in (ray.train.get_checkpoint(), config.get("resume_from")) if c is not None]
            try:
                run_worker(spec, device, report, folders, threads=config.get("cpus_per_worker", 1), gpus=gpus,
                           log_dir=log_dir, progress=config.get("progress", True), marker_dir=marker,
                           started=trainer.append)
            except DivergenceError:
                # Divergence is the same on every worker (the loop sums losses over workers before its check) and
                # a retry would diverge again: rank 0 reports the marker as the run's last checkpoint and every
                # worker ends normally, so that Ray Train neither restarts the group (--max-failures) nor raises a
                # WorkerGroupError at the driver, which finds the marker there (run_ray).
                from ray.train import Checkpoint

                if rank == 0:
                    sync_tb()  # the TensorBoard files up to the divergence
                ray.train.report({"epoch": trainer[0].epoch},
                                 checkpoint=Checkpoint.from_directory(marker) if rank == 0 else None)
                return
        if rank == 0:
            sync_tb()  # the files as closed by fit
    finally:
        for folder in (marker, staged):
            if folder:
                shutil.rmtree(folder, ignore_errors=True)


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


def run_ray(spec: RunSpec, out: RunFolder, workers: int, cpus_per_worker: float, gpus_per_worker: float | None,
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
    catch_sigterm()  # ray.init put its own in place (sys.exit): SIGTERM is recorded as Ctrl-C is (below)
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
    # [6] fit() in a helper thread: from the main thread Ray Train installs its own SIGINT handler (it aborts the
    # run, exits 1 without a word); here Ctrl-C (SIGTERM: lock.Terminated) reaches this one, recorded below.
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
        ckpt = latest(out)
        epoch = int((checkpoint.load(ckpt) if out.fs is None else out.load(ckpt))["epoch"]) if ckpt else 0
        write_summary(spec, out, {}, epochs=epoch, seconds=time.time() - t0, workers=workers, path="ray-train",
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
        ckpt = latest(out)
        write_summary(spec, out, {}, epochs=int(metrics.get("epoch", 0)), seconds=time.time() - t0, workers=workers,
                 ckpt=str(ckpt) if ckpt else None, path="ray-train", error=message)
        raise DivergenceError(message)
    return write_summary(spec, out, metrics, epochs=int(metrics.get("epoch", 0)), seconds=time.time() - t0,
                    workers=workers, ckpt=result.checkpoint.path if result.checkpoint else None, path="ray-train",
                    checkpoint_epoch=int(metrics.get("epoch", 0)))


def _diverged(ckpt: Any) -> str | None:
    """The divergence the run's last checkpoint records (worker_loop), or None."""
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        return diverged(d)


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
