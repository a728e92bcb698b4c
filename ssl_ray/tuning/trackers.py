"""Experiment trackers for `ssl-ray tune`: Ray's MLflow and Weights & Biases logger callbacks.

`--mlflow URI` (a tracking server, a database such as sqlite:////abs/path/mlflow.db, or a local folder
file:///abs/path/mlruns) logs every trial as one MLflow run of the experiment named after the tune experiment:
as parameters its searched values and the space's fixed hyperparameters (nothing else: not the `_ssl_ray/spec`
tree Tune's config carries), and each epoch's metrics (ours: not Ray's bookkeeping such as pid, timestamp, done,
should_checkpoint or iterations_since_restore). MLflow 3 keeps its file store (file:// or a plain folder) in
maintenance mode and refuses it unless MLFLOW_ALLOW_FILE_STORE is set: asking for a file:// URI sets it (in this
process, where the callback runs), since that is what the user asked for. `--wandb PROJECT` does the same in a
W&B project, grouped by experiment (the API key comes from `wandb login` or $WANDB_API_KEY). Packages: pip install
"ssl-ray[mlflow]" / "ssl-ray[wandb]". check_trackers runs before Ray starts (also under --dry-run): a missing
package or an unusable URI is one line. Ray-specific lines: [1], [2].
"""
from __future__ import annotations

import os
from typing import Any

from ..errors import SSLRayError
from .options import SPEC_KEY

FILE_STORE_ENV = "MLFLOW_ALLOW_FILE_STORE"
RAY_RESULT_KEYS = frozenset((  # what Tune adds to every result (ray.tune.result, Ray 2.60), not logged as metrics
    "training_iteration", "time_total_s", "episodes_total", "timesteps_total", "node_ip", "hostname", "pid",
    "time_this_iter_s", "timestamp", "date", "time_since_restore", "timesteps_since_restore",
    "iterations_since_restore", "config", "checkpoint_dir_name", "done", "should_checkpoint", "trial_id",
    "experiment_tag", "episodes_this_iter", "timesteps_this_iter", "experiment_id"))


def _file_store_path(uri: str) -> str | None:
    """The folder of an MLflow file store URI (file:///abs or a plain path), None for any other store."""
    if uri.startswith("file://"):
        return uri[len("file://"):] or "/"
    if uri.startswith("file:"):
        return uri[len("file:"):]
    if "://" in uri or ":" in uri.split("/")[0] or uri.startswith("databricks"):
        return None
    return uri


def check_trackers(mlflow: str | None, wandb: str | None) -> None:
    """Fail before Ray starts when a tracker's package is missing or the MLflow URI cannot be used; for a file
    store, allow MLflow's (MLFLOW_ALLOW_FILE_STORE) and check its folder can be made."""
    import importlib

    for flag, value, module in (("--mlflow", mlflow, "mlflow"), ("--wandb", wandb, "wandb")):
        if value:
            try:
                importlib.import_module(module)
            except ImportError:
                raise SSLRayError(f"{flag} needs the {module!r} package: pip install \"ssl-ray[{module}]\"") from None
    if not mlflow:
        return
    folder = _file_store_path(mlflow)
    if folder is None:
        return
    if not os.path.isabs(os.path.expanduser(folder)):
        raise SSLRayError(f"--mlflow {mlflow}: give an absolute folder (file:///abs/path/mlruns): the trials' "
                          f"working folders are not this one")
    path = os.path.expanduser(folder)
    if os.path.exists(path) and not os.path.isdir(path):
        raise SSLRayError(f"--mlflow {mlflow}: {path} is a file, not a folder for MLflow's runs")
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.access(probe, os.W_OK):
        raise SSLRayError(f"--mlflow {mlflow}: cannot write to {probe}")
    os.environ.setdefault(FILE_STORE_ENV, "true")  # MLflow 3: a file store is refused unless this is set


def trial_params(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's MLflow parameters: the space's fixed hyperparameters and the searched values of its config."""
    fixed = ((config.get(SPEC_KEY) or {}).get("spec") or {}).get("config") or {}
    return {**fixed, **{k: v for k, v in config.items() if k != SPEC_KEY}}


def trial_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """A result's metrics without Tune's own bookkeeping (RAY_RESULT_KEYS)."""
    return {k: v for k, v in result.items() if k not in RAY_RESULT_KEYS}


def _mlflow_callback(**kwargs: Any) -> Any:
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class MLflowCallback(MLflowLoggerCallback):  # [1] Ray 2.60's hooks, each given a filtered copy
        def log_trial_start(self, trial):
            if trial not in self._trial_runs:
                tags = {**(self.tags or {}), "trial_name": str(trial)}
                self._trial_runs[trial] = self.mlflow_util.start_run(tags=tags, run_name=str(trial)).info.run_id
            self.mlflow_util.log_params(run_id=self._trial_runs[trial], params_to_log=trial_params(trial.config))

        def log_trial_result(self, iteration, trial, result):
            step = result.get("training_iteration") or iteration
            self.mlflow_util.log_metrics(run_id=self._trial_runs[trial], metrics_to_log=trial_metrics(result),
                                         step=step)

        def log_trial_end(self, trial, failed=False):
            self.mlflow_util.end_run(run_id=self._trial_runs[trial], status="FAILED" if failed else "FINISHED")

    return MLflowCallback(**kwargs)


def tracker_callbacks(mlflow: str | None, wandb: str | None, experiment: str) -> list[Any]:
    check_trackers(mlflow, wandb)
    callbacks: list[Any] = []
    if mlflow:
        callbacks.append(_mlflow_callback(tracking_uri=mlflow, experiment_name=experiment, save_artifact=False))
    if wandb:
        from ray.air.integrations.wandb import WandbLoggerCallback

        callbacks.append(WandbLoggerCallback(project=wandb, group=experiment))  # [2]
    return callbacks
