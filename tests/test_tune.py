"""`ssl-ray tune` for real: a local Ray instance, ASHA stopping trials, more trials than CPUs, every output
(JSON, Parquet, TensorBoard, report) agreeing, and --resume after the driver is SIGKILLed."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tb_read import has_hparams, read_scalars
from trial_rows import rows_per_trial

pytestmark = pytest.mark.ray

SPACE = """\
method: supervised
dataset: {name: digits, labels: 30}
fixed: {batch_size: 32}
search:
  lr: {loguniform: [1.0e-5, 3.0e-2]}
scheduler: {name: asha, max_epochs: 6, grace_epochs: 1, reduction_factor: 2}
num_samples: 6
"""


def _cli(*args, timeout=600, **kw):
    return subprocess.run([sys.executable, "-m", "ssl_ray.cli", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    space = root / "space.yaml"
    space.write_text(SPACE)
    env = {**os.environ, "SSL_RAY_CACHE": str(root / "cache")}
    r = _cli("tune", "supervised", "--space", str(space), "--storage", str(root / "runs"), "--name", "asha",
             "--json", "--seed", "1", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return root, json.loads(r.stdout.strip().splitlines()[-1]), r


def test_asha_stops_poor_trials_and_all_trials_finish_on_two_cpus(finished):
    _, s, _ = finished
    assert s["num_trials"] == 6          # 6 trials on a 2-CPU machine: more than fit at once
    assert s["num_errored"] == 0
    assert s["num_stopped_early"] >= 1   # ASHA did stop someone
    assert s["num_completed"] >= 1
    assert s["num_stopped_early"] + s["num_completed"] == 6


def test_json_parquet_and_tensorboard_agree(finished):
    root, s, _ = finished
    exp = Path(s["experiment"])
    rows = pq.read_table(exp / "results.parquet").to_pylist()
    hist = pq.read_table(exp / "history.parquet").to_pylist()
    assert len(rows) == 6
    assert sum(r["stopped_early"] for r in rows) == s["num_stopped_early"]
    for r in rows:
        assert r["status"] in ("TERMINATED", "STOPPED")
        assert r["stopped_early"] == (r["epochs"] < 6)
        mine = [h for h in hist if h["trial_id"] == r["trial_id"]]
        assert [h["epoch"] for h in mine] == list(range(1, r["epochs"] + 1))
        assert r["best_val_error"] == pytest.approx(min(h["val_error"] for h in mine))
        assert 1e-5 <= r["config/lr"] <= 3e-2 and r["config/batch_size"] == 32
        # TensorBoard: the trial's own event file holds the same per-epoch validation errors, and HParams
        tb = Path(r["path"]) / "tensorboard"
        sc = read_scalars(tb)
        assert [st for st, _ in sc["error/val"]] == list(range(1, r["epochs"] + 1))
        for (_, v), h in zip(sc["error/val"], mine):
            assert v == pytest.approx(h["val_error"], rel=1e-5)
        assert "loss/lab" in sc
        assert has_hparams(tb)
    best = min(rows, key=lambda r: r["best_val_error"])
    assert s["best"]["val_error"] == pytest.approx(best["best_val_error"])
    assert s["best"]["test_error"] == pytest.approx(best["test_error_at_best_val"])
    assert s["best"]["config"]["lr"] == pytest.approx(best["config/lr"])
    assert math.isfinite(s["best"]["test_error"]) and s["best"]["test_error"] < 60  # chance is 90%
    assert json.loads((exp / "summary.json").read_text())["best"] == s["best"]


def test_progress_table_and_summary_are_shown(finished):
    _, _, r = finished
    assert "[tune " in r.stderr and "trials 6/6 done" in r.stderr  # the progress line (stderr with --json)
    assert "stopped early by ASHA" in r.stderr                  # the human summary (stderr with --json)
    assert [json.loads(line) for line in r.stdout.splitlines() if line.strip()]  # stdout: JSON only, for jq


def test_report_and_tensorboard_commands(finished):
    _, s, _ = finished
    exp = s["experiment"]
    md = _cli("report", exp, exp)
    assert md.returncode == 0, md.stderr
    lines = [l for l in md.stdout.splitlines() if l.startswith("| asha")]
    assert len(lines) == 2 and "supervised" in lines[0]
    js = json.loads(_cli("report", exp, "--format", "json").stdout)
    assert js[0]["trials"] == 6 and js[0]["stopped_early"] == s["num_stopped_early"]
    out = _cli("tensorboard", exp, "--print-only")
    assert out.returncode == 0, out.stderr
    runs = [l[5:] for l in out.stdout.splitlines() if l.startswith("run: ")]
    assert len(runs) == 6 and all(r.startswith("asha/trial") and "lr=" in r for r in runs)
    logdir = out.stdout.split("--logdir ")[1].split()[0]
    for r in runs:  # each readable run folder serves that trial's own event file (TensorBoard reads it)
        sc = read_scalars(Path(logdir) / r)
        assert sc["error/val"], r
    bad = _cli("report", "/nonexistent/exp")
    assert bad.returncode == 2 and "not a finished ssl-ray experiment" in bad.stderr


SHA_SPACE = """\
method: supervised
dataset: {name: digits, labels: 30}
fixed: {batch_size: 16, steps_per_epoch: 20}
search:
  lr: {grid: [0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03]}
scheduler: {name: sha, max_epochs: 3, grace_epochs: 1, reduction_factor: 3}
num_samples: 1
"""


def test_synchronous_halving_keeps_the_best_third_of_all_trials(tmp_path):
    """sha: 6 trials on 2 CPUs, one rung at epoch 1. Every trial reaches it before anyone goes on, so the two
    that continue to epoch 3 are the two best of all six at epoch 1 (asynchronous ASHA would promote whichever
    arrived first with no competition), and the paused-and-restarted ones report each epoch exactly once."""
    space = tmp_path / "space.yaml"
    space.write_text(SHA_SPACE)
    env = {**os.environ, "SSL_RAY_CACHE": str(tmp_path / "cache")}
    dry = _cli("tune", "supervised", "--space", str(space), "--dry-run", env=env)
    assert dry.returncode == 0 and "10 with SHA" in dry.stdout, dry.stdout + dry.stderr  # 6 x 1 + 2 x 2
    r = _cli("tune", "supervised", "--space", str(space), "--storage", str(tmp_path / "runs"), "--name", "sha",
             "--json", "--quiet", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert (s["num_trials"], s["num_errored"], s["num_completed"], s["num_stopped_early"]) == (6, 0, 2, 4)
    hist = pq.read_table(Path(s["experiment"]) / "history.parquet").to_pylist()
    epochs = {t: sorted(h["epoch"] for h in hist if h["trial_id"] == t) for t in {h["trial_id"] for h in hist}}
    kept = {t for t, e in epochs.items() if e == [1, 2, 3]}
    assert len(kept) == 2 and all(e == [1] for t, e in epochs.items() if t not in kept), epochs
    at1 = {h["trial_id"]: h["val_error"] for h in hist if h["epoch"] == 1}
    assert max(at1[t] for t in kept) <= min(v for t, v in at1.items() if t not in kept), at1
    again = _cli("tune", "supervised", "--storage", str(tmp_path / "runs"), "--name", "sha", "--resume", env=env)
    assert again.returncode == 2 and "cannot be resumed" in again.stderr, again.stderr[-2000:]
    limited = _cli("tune", "supervised", "--space", str(space), "--scheduler", "sha", "--max-concurrent", "1",
                   "--dry-run", env=env)
    assert limited.returncode == 2 and "--max-concurrent does not combine" in limited.stderr, limited.stderr


SLOW_SPACE = """\
method: supervised
dataset: {name: digits, labels: 30}
fixed: {batch_size: 16, steps_per_epoch: 40}
search:
  lr: {grid: [0.001, 0.002, 0.003, 0.004]}
scheduler: {name: fifo, max_epochs: 5}
num_samples: 1
"""


def test_resume_after_driver_sigkill(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(SLOW_SPACE)
    env = {**os.environ, "SSL_RAY_CACHE": str(tmp_path / "cache")}
    args = [sys.executable, "-m", "ssl_ray.cli", "tune", "supervised", "--space", str(space), "--storage",
            str(tmp_path / "runs"), "--name", "r", "--quiet", "--max-concurrent", "1"]
    exp = tmp_path / "runs" / "r"
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    # wait until one trial has finished all 5 epochs and a second one has started, then kill the driver
    deadline = time.time() + 300
    done_before = set()
    while time.time() < deadline:
        # results as they arrive (the driver's row files; Tune's result.json copy comes when a trial ends)
        lens = rows_per_trial(exp)
        done_before = {k for k, n in lens.items() if n >= 5 and (exp / k / "result.json").is_file()
                       and len((exp / k / "result.json").read_text().splitlines()) >= 5}
        if done_before and len(lens) >= 2:
            break
        time.sleep(0.5)
    assert done_before, "no trial finished before the deadline"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(2)
    lines_before = {k: (exp / k / "result.json").read_text() for k in done_before}
    r = subprocess.run(args + ["--resume", "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["num_trials"] == 4 and s["num_errored"] == 0 and s["num_completed"] == 4
    rows = pq.read_table(exp / "results.parquet").to_pylist()
    assert len(rows) == 4 and all(r["epochs"] == 5 for r in rows)
    hist = pq.read_table(exp / "history.parquet").to_pylist()
    for r in rows:  # each epoch reported exactly once: nothing re-run, nothing lost
        assert sorted(h["epoch"] for h in hist if h["trial_id"] == r["trial_id"]) == [1, 2, 3, 4, 5]
    for k, text in lines_before.items():  # finished trials were not run again
        assert (exp / k / "result.json").read_text() == text
