"""SIGTERM (what `kill PID`, batch schedulers and Kubernetes send) is handled as Ctrl-C is (issue 30): real
`ssl-ray train` and `ssl-ray tune` processes are sent SIGTERM (to their own PID only, as `kill PID` does) while a
run is under way; each exits 143 with its result recorded as interrupted and the resume command printed, and
`--resume` then finishes the run, each epoch trained once.

Runs use the supervised baseline with a pause (tests/plugins/faulty_methods.py `hold_after_epoch`: the first
step after that epoch waits for the file MARKER.go), so the signal lands at a known point however fast or slow
the machine; the marker file logs each epoch trained."""
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from trial_rows import rows_per_trial

PLUGINS = str(Path(__file__).parent / "plugins")
CLI = [sys.executable, "-m", "ssl_ray.cli"]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "SSL_RAY_PLUGINS": "faulty_methods", "SSL_RAY_CACHE": str(tmp_path / "cache"),
            "PYTHONPATH": os.pathsep.join([PLUGINS, os.environ.get("PYTHONPATH", "")])}


def _epochs(marker: Path) -> list[int]:
    return [int(e) for e in marker.read_text().split()] if marker.exists() else []


def _wait(proc: subprocess.Popen, ready, seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        if ready():
            return
        time.sleep(0.2)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    pytest.fail(f"{what} not reached (exit {proc.returncode}): {err[-3000:]}")


def _checkpoint_epoch(folder: Path) -> int | None:
    from ssl_ray.engine import checkpoint

    try:
        return int(checkpoint.load(folder)["epoch"])
    except Exception:  # noqa: BLE001 - not written yet
        return None


@pytest.mark.parametrize("ray_train", [False, pytest.param(True, marks=pytest.mark.ray)], ids=["local", "ray"])
def test_sigterm_on_train_records_the_run_and_resume_finishes_it(tmp_path, ray_train):
    marker, out = tmp_path / "epochs.log", tmp_path / "run"
    args = CLI + ["train", "faulty", "--dataset", "digits", "--labels", "50", "--epochs", "4",
                  "--set", "steps_per_epoch=20", "--set", f"marker={marker}", "--set", "hold_after_epoch=2",
                  "--checkpoint-every", "1", "--output", str(out)] + (["--ray-train"] if ray_train else [])
    proc = subprocess.Popen(args, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    if ray_train:  # Ray Train keeps its checkpoints in its own run folder; the marker tells epoch 2 is done
        _wait(proc, lambda: len(_epochs(marker)) >= 2 and list(out.rglob("checkpoint_*/state.pt")), 400,
              "epoch 2's checkpoint")
        time.sleep(3)  # Ray Train's controller registers the reported checkpoint
    else:
        _wait(proc, lambda: _checkpoint_epoch(out / "checkpoint") == 2, 300, "epoch 2's checkpoint")
    os.kill(proc.pid, signal.SIGTERM)  # the CLI process only, as `kill PID` does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert f"--resume --output {out}" in err, err[-3000:]
    r = json.loads((out / "result.json").read_text())
    assert r["interrupted"] is True and r["checkpoint_epoch"] == 2, r
    assert _epochs(marker) == [1, 2]

    Path(str(marker) + ".go").touch()
    done = subprocess.run(args + ["--resume", "--json"], env=_env(tmp_path), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    s = json.loads(done.stdout.strip().splitlines()[-1])
    assert s["epochs"] == 4 and not s.get("interrupted") and 0 < s["test_error"] < 60, s
    assert _epochs(marker) == [1, 2, 3, 4]  # continued from epoch 2's checkpoint: nothing trained twice


SPACE = """\
method: faulty
dataset: {name: digits, labels: 30}
fixed: {batch_size: 16, steps_per_epoch: 20, marker: MARKER}
search:
  hold_after_epoch: {grid: [0, 2, 1]}
scheduler: {name: fifo, max_epochs: 3}
num_samples: 1
"""


@pytest.mark.ray
def test_sigterm_on_tune_records_the_search_and_resume_finishes_it(tmp_path):
    """Three trials one at a time: trial 0 finishes, trial 1 pauses after its epoch 2 (checkpointed) and then
    gets SIGTERM (trial 2 has not started): exit 143, summary.json interrupted, results.parquet 1 TERMINATED and
    2 INTERRUPTED, the resume line on stderr; --resume runs epoch 3 of trial 1 and all of trial 2."""
    marker, space = tmp_path / "epochs.log", tmp_path / "space.yaml"
    space.write_text(SPACE.replace("MARKER", str(marker)))
    exp = tmp_path / "runs" / "t"
    args = CLI + ["tune", "faulty", "--space", str(space), "--storage", str(tmp_path / "runs"), "--name", "t",
                  "--quiet", "--max-concurrent", "1"]
    proc = subprocess.Popen(args, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)

    def paused() -> bool:  # trial 1 ran epochs 1-2: both rows and epoch 2's checkpoint are in its folder (the
        # driver's row files, written as results arrive; Tune's own result.json copy waits for its rare snapshot)
        return len(_epochs(marker)) >= 5 and any(
            n == 2 and (exp / name / "checkpoint_000001").is_dir() for name, n in rows_per_trial(exp).items())

    _wait(proc, paused, 400, "trial 1 paused after epoch 2")
    time.sleep(2)  # the driver records the checkpointed result (its row file) before the signal
    assert (exp / "ssl_ray.lock").exists()
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    assert "SIGTERM" in err and "Traceback" not in err, err[-3000:]
    assert f"continue with: ssl-ray tune faulty --storage {tmp_path / 'runs'} --name t --resume" in err, err[-3000:]
    assert not (exp / "ssl_ray.lock").exists(), "the lock outlived the driver"
    s = json.loads((exp / "summary.json").read_text())
    assert s["interrupted"] is True and s["num_trials"] == 3
    assert (s["num_completed"], s["num_interrupted"]) == (1, 2), s
    rows = pq.read_table(exp / "results.parquet").to_pylist()
    assert sorted(r["status"] for r in rows) == ["INTERRUPTED", "INTERRUPTED", "TERMINATED"]
    assert _epochs(marker) == [1, 2, 3, 1, 2]

    Path(str(marker) + ".go").touch()
    done = subprocess.run(CLI + ["tune", "faulty", "--storage", str(tmp_path / "runs"), "--name", "t",
                                "--resume", "--json", "--quiet"],
                          env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    s = json.loads(done.stdout.strip().splitlines()[-1])
    assert s["interrupted"] is False and s["num_completed"] == 3 and s["num_interrupted"] == 0, s
    hist = pq.read_table(exp / "history.parquet").to_pylist()
    for row in pq.read_table(exp / "results.parquet").to_pylist():
        assert row["status"] == "TERMINATED"
        assert sorted(h["epoch"] for h in hist if h["trial_id"] == row["trial_id"]) == [1, 2, 3]
    # trial 1 continued at epoch 3 from its checkpoint, trial 2 ran; trial 0 was not run again
    assert Counter(_epochs(marker)) == {1: 3, 2: 3, 3: 3}, _epochs(marker)
