"""`ssl-ray train`: one run through Ray Train (a TorchTrainer with N workers, CPU/gloo or GPU/nccl).

The Ray-specific lines are numbered [1]..[4] where they happen.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from ..engine import checkpoint
from ..engine.loop import RunSpec, Trainer
from ..errors import SSLRayError


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

    spec = RunSpec.from_dict(config["spec"])
    _threads(config.get("cpus_per_worker", 1))
    require_gpu(config.get("gpus_per_worker", 0))
    device = ray.train.torch.get_device()  # [1] the worker's device (GPU when given one, else CPU)
    trainer = Trainer(spec, device=device, log_dir=config.get("log_dir"), progress=config.get("progress", True))
    resume(trainer, ray.train.get_checkpoint())  # [2] resume from the last checkpoint after a failure

    def report(metrics: dict[str, Any], ckpt_dir: str | None) -> None:
        from ray.train import Checkpoint

        # [3] every worker reports each epoch; rank 0 attaches the checkpoint
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(ckpt_dir) if ckpt_dir else None)

    trainer.fit(report)


def run_train(spec: RunSpec, *, output: str, workers: int = 1, cpus_per_worker: float = 1,
              gpus_per_worker: float | None = None, address: str | None = None, max_failures: int = 0,
              progress: bool = True) -> dict[str, Any]:
    """Run `spec` on a TorchTrainer; returns the summary dict (also written to <output>/result.json)."""
    import ray
    from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from .cluster import init_ray

    spec.method_config()  # validate before any Ray start-up
    out = Path(output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    init_ray(address)
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if ray.cluster_resources().get("GPU", 0) >= workers else 0.0
    t0 = time.time()
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"spec": spec.to_dict(), "log_dir": str(out / "tensorboard"),
                           "cpus_per_worker": cpus_per_worker, "gpus_per_worker": gpus_per_worker,
                           "progress": progress},
        # [4] data parallelism: N workers; gradients are averaged by Method.step over the process group
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus_per_worker > 0,
                                     resources_per_worker={"CPU": cpus_per_worker,
                                                           **({"GPU": gpus_per_worker} if gpus_per_worker else {})}),
        run_config=RunConfig(name="ray_train", storage_path=str(out), failure_config=FailureConfig(max_failures),
                             logging_config=LoggingConfig(log_level="WARNING")),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    metrics = dict(result.metrics or {})
    summary = {
        "method": spec.method, "dataset": spec.data.name, "labels": spec.data.labels, "seed": spec.seed,
        "epochs": int(metrics.get("epoch", 0)), "val_error": metrics.get("val_error"),
        "test_error": metrics.get("test_error"), "best_val_error": metrics.get("best_val_error"),
        "test_error_at_best_val": metrics.get("test_error_at_best_val"),
        "seconds": round(time.time() - t0, 2), "workers": workers,
        "config": _config_dict(spec), "data": spec.data.to_dict(), "output": str(out),
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
    }
    (out / "result.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _config_dict(spec: RunSpec) -> dict[str, Any]:
    from ..config import to_dict

    return to_dict(spec.method_config())


def default_output(kind: str, name: str) -> str:
    root = Path(os.environ.get("SSL_RAY_RUNS", "ssl_ray_runs"))
    return str(root / kind / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
