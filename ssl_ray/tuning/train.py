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

This file: the driver's choice and the in-process path; Ray Train's path: train_ray.py; the run's folder, its
checkpoints and result.json: run_folder.py.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from ..engine import checkpoint
from ..engine.loop import Trainer
from ..engine.spec import RunSpec
from ..engine.worker import run_worker
from ..errors import DivergenceError, SSLRayError
from .lock import catch_sigterm, restore_sigterm
from .run_folder import LOCAL_CHECKPOINT, RAY_RUN, RunFolder, latest_checkpoint, previous_metrics, write_summary
from .train_ray import run_ray, torch_trainer

__all__ = ["LOCAL_CHECKPOINT", "RAY_RUN", "RunFolder", "default_output", "latest_checkpoint", "run_train",
           "torch_trainer", "uses_ray_train"]


def uses_ray_train(workers: int = 1, address: str | None = None, max_failures: int = 0,
                   ray_train: bool | None = None) -> bool:
    """Ray Train for N > 1 workers, a cluster, worker restarts, or when asked; otherwise this process."""
    if ray_train is not None:
        return ray_train
    return workers > 1 or address is not None or bool(os.environ.get("RAY_ADDRESS")) or max_failures > 0


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
    KeyboardInterrupt (lock.Terminated for a SIGTERM) is re-raised after result.json is written with
    "interrupted": true."""
    folder = RunFolder(output, storage_filesystem, shared)
    if folder.fs is not None:
        newest = folder.latest()
        if resume and newest is None and not folder.has_result():
            raise SSLRayError(f"--resume: nothing to resume in {folder} (no checkpoint, no result.json)")
        if not resume and newest is not None:
            raise SSLRayError(f"{folder} already holds a run: continue it with --resume, or choose another --output")
        if resume and newest is not None:
            _check_resumable(folder.load(newest), spec, workers, folder)
        return run_ray(spec, folder, workers, cpus_per_worker, gpus_per_worker, address, max_failures, progress,
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
        return run_ray(spec, folder, workers, cpus_per_worker, gpus_per_worker, address, max_failures, progress,
                        str(start) if start else None, wait_for_resources)
    previous = catch_sigterm()  # SIGTERM recorded as Ctrl-C is (result.json "interrupted"), then lock.Terminated
    try:
        return _run_local(spec, out, cpus_per_worker, gpus_per_worker, progress, start)
    finally:
        restore_sigterm(previous)


def _run_local(spec: RunSpec, out: Path, cpus: float, gpus: float | None, progress: bool,
               start: Path | None) -> dict[str, Any]:
    """One worker in this process (engine.worker.run_worker): its checkpoints in <output>/checkpoint, no Ray."""
    t0 = time.time()
    device = "cuda" if (gpus is None or gpus > 0) and torch.cuda.is_available() else "cpu"
    ckpt_dir = out / LOCAL_CHECKPOINT
    started: list[Trainer] = []

    def done(checkpoint_epoch: int | None = None, **extra: Any) -> dict[str, Any]:
        trainer = started[0]
        last = trainer.history[-1] if trainer.history else previous_metrics(out)  # resumed a finished run
        has = (ckpt_dir / checkpoint.STATE_FILE).is_file()
        return write_summary(spec, out, last, epochs=trainer.epoch, seconds=time.time() - t0, workers=1,
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


def default_output(kind: str, name: str) -> str:
    root = Path(os.environ.get("SSL_RAY_RUNS", "ssl_ray_runs"))
    return str(root / kind / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
