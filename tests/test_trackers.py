"""Trackers (tuning/trackers.py): a missing package or an unusable MLflow URI is one line before Ray starts
(nothing written, also under --dry-run); a file:// store works under MLflow 3 (MLFLOW_ALLOW_FILE_STORE); each
trial's MLflow run holds the searched and fixed hyperparameters and our metrics, not Ray's bookkeeping."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ssl_ray.cli import main
from ssl_ray.tuning import trackers as T

SPACE = """\
method: supervised
dataset: {name: digits, labels: 30}
fixed: {steps_per_epoch: 2, weight_decay: 1.0e-4}
search:
  lr: {loguniform: [1.0e-4, 1.0e-1]}
scheduler: {name: fifo, max_epochs: 2, grace_epochs: 1}
num_samples: 2
"""


def _invoke(root: Path, *args: str):
    (root / "space.yaml").write_text(SPACE)
    return CliRunner().invoke(main, ["tune", "supervised", "--space", str(root / "space.yaml"), "--storage",
                                     str(root / "runs"), "--name", "x", *args])


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("args, blocked, needle", [
    (["--mlflow", "file:///tmp/mlruns"], "mlflow", "--mlflow needs the 'mlflow' package: pip install \"ssl-ray[mlflow]\""),
    (["--wandb", "proj"], "wandb", "--wandb needs the 'wandb' package: pip install \"ssl-ray[wandb]\""),
    (["--mlflow", "file:mlruns"], None, "--mlflow file:mlruns: give an absolute folder (file:///abs/path/mlruns)"),
    (["--mlflow", "mlruns"], None, "--mlflow mlruns: give an absolute folder"),
])
def test_tracker_problems_are_one_line_before_anything(tmp_path, monkeypatch, args, blocked, needle, dry_run):
    import ray

    was = ray.is_initialized()  # a session fixture may hold one from another test
    if blocked:
        monkeypatch.setitem(sys.modules, blocked, None)  # a real ImportError, as if not installed
    r = _invoke(tmp_path, *args, *(["--dry-run"] if dry_run else []))
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {needle}"), lines
    assert ray.is_initialized() == was and not (tmp_path / "runs").exists()


def test_a_file_in_the_way_of_the_store_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    r = _invoke(tmp_path, "--mlflow", f"file://{tmp_path / 'f'}", "--dry-run")
    assert r.exit_code == 2 and f"{tmp_path / 'f'} is a file, not a folder for MLflow's runs" in r.output


def test_a_file_store_is_allowed_for_mlflow_3(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv(T.FILE_STORE_ENV, raising=False)
    T.check_trackers(None, None)
    assert T.FILE_STORE_ENV not in os.environ
    T.check_trackers("http://127.0.0.1:5000", None)  # a server: nothing to allow
    assert T.FILE_STORE_ENV not in os.environ
    T.check_trackers(f"file://{tmp_path}/mlruns", None)
    assert os.environ[T.FILE_STORE_ENV] == "true"
    monkeypatch.setenv(T.FILE_STORE_ENV, "false")  # the user's own setting wins
    T.check_trackers(f"file://{tmp_path}/mlruns", None)
    assert os.environ[T.FILE_STORE_ENV] == "false"
    assert T._file_store_path("sqlite:////a/b.db") is None and T._file_store_path("databricks") is None
    assert T._file_store_path("/abs/mlruns") == "/abs/mlruns" and T._file_store_path("file:///x") == "/x"


def test_params_and_metrics_leave_rays_bookkeeping_out():
    config = {"lr": 0.01, "_ssl_ray": {"spec": {"config": {"steps_per_epoch": 2, "weight_decay": 1e-4}},
                                       "workers": 1, "storage": "/x"}}
    assert T.trial_params(config) == {"lr": 0.01, "steps_per_epoch": 2, "weight_decay": 1e-4}
    result = {"epoch": 1, "val_error": 9.5, "best_val_error": 9.5, "pid": 12, "timestamp": 1, "done": False,
              "should_checkpoint": True, "iterations_since_restore": 1, "config": config, "training_iteration": 1,
              "trial_id": "a", "time_total_s": 1.0, "date": "x", "node_ip": "1.2.3.4", "hostname": "h"}
    assert T.trial_metrics(result) == {"epoch": 1, "val_error": 9.5, "best_val_error": 9.5}


@pytest.mark.ray
def test_mlflow_runs_hold_our_hyperparameters_and_metrics_only(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    (tmp_path / "space.yaml").write_text(SPACE)
    store = f"file://{tmp_path / 'mlruns'}"
    env = {k: v for k, v in os.environ.items() if k != T.FILE_STORE_ENV}
    env["SSL_RAY_CACHE"] = str(tmp_path / "cache")
    r = subprocess.run([sys.executable, "-m", "ssl_ray.cli", "tune", "supervised", "--space", str(tmp_path / "space.yaml"),
                        "--storage", str(tmp_path / "runs"), "--name", "ml", "--quiet", "--json", "--mlflow", store],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["num_trials"] == 2 and summary["num_errored"] == 0
    monkeypatch.setenv(T.FILE_STORE_ENV, "true")
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name("ml")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2
    for run in runs:
        assert set(run.data.params) == {"lr", "steps_per_epoch", "weight_decay"}, run.data.params
        assert run.data.params["weight_decay"] == "0.0001"
        metrics = set(run.data.metrics)
        assert {"val_error", "best_val_error"} <= metrics
        assert not metrics & T.RAY_RESULT_KEYS, metrics & T.RAY_RESULT_KEYS
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_error")] == [1, 2]
        assert run.info.status == "FINISHED"
