"""Experiment trackers for `ssl-ray tune`: Ray's MLflow and Weights & Biases logger callbacks.

`--mlflow URI` (a tracking server, or a local store such as file:///path/mlruns) logs every trial as one
MLflow run of the experiment named after the tune experiment: its config as parameters (the searched values,
and the fixed ones flattened under _ssl_ray/spec/config/...) and each epoch's metrics. `--wandb PROJECT`
does the same in a W&B project, grouped by experiment (the API key comes from `wandb login` or
$WANDB_API_KEY). Packages: pip install "ssl-ray[mlflow]" / "ssl-ray[wandb]". Ray-specific lines: [1], [2].
"""
from __future__ import annotations

from typing import Any

from ..errors import SSLRayError


def check_trackers(mlflow: str | None, wandb: str | None) -> None:
    """Fail before Ray starts when a tracker's package is missing."""
    import importlib

    for flag, module, extra in (("--mlflow", "mlflow", "mlflow"), ("--wandb", "wandb", "wandb")):
        if (mlflow if flag == "--mlflow" else wandb):
            try:
                importlib.import_module(module)
            except ImportError:
                raise SSLRayError(f"{flag} needs the {module!r} package: pip install \"ssl-ray[{extra}]\"") from None


def tracker_callbacks(mlflow: str | None, wandb: str | None, experiment: str) -> list[Any]:
    check_trackers(mlflow, wandb)
    callbacks: list[Any] = []
    if mlflow:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        callbacks.append(MLflowLoggerCallback(tracking_uri=mlflow, experiment_name=experiment,  # [1]
                                              save_artifact=False))
    if wandb:
        from ray.air.integrations.wandb import WandbLoggerCallback

        callbacks.append(WandbLoggerCallback(project=wandb, group=experiment))  # [2]
    return callbacks
