"""`ssl-ray train` as real processes: one local worker trains in-process (no Ray); Ctrl-C is told truly (exit 130,
result.json marked interrupted with its last checkpoint) and `--resume` continues it exactly (same parameters and
metrics as a run that was never interrupted), on both paths; too many workers and divergence are one-line errors."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from leftovers import staged
from ssl_ray.engine import checkpoint

PLUGINS = str(Path(__file__).parent / "plugins")
# ~0.3-1 s per epoch on a quiet 2-core machine: long enough to interrupt in the middle of a run
JOB = ["supervised", "--dataset", "digits", "--labels", "50", "--epochs", "5", "--set", "steps_per_epoch=120",
       "--checkpoint-every", "1"]


def _env(tmp_path):
    return {**os.environ, "SSL_RAY_PLUGINS": "faulty_methods", "SSL_RAY_CACHE": str(tmp_path / "cache"),
            "PYTHONPATH": os.pathsep.join([PLUGINS, os.environ.get("PYTHONPATH", "")])}


def _cli(args, tmp_path, timeout=600):
    return subprocess.run([sys.executable, "-m", "ssl_ray.cli", "train", *args], capture_output=True, text=True,
                          env=_env(tmp_path), timeout=timeout)


def _interrupt_after(args, tmp_path, epoch_line: str, timeout=600):
    """Start `ssl-ray train ARGS` in its own process group, send SIGINT to the group (as Ctrl-C in a terminal
    does) once stderr shows `epoch_line`; return (returncode, stderr)."""
    p = subprocess.Popen([sys.executable, "-m", "ssl_ray.cli", "train", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=_env(tmp_path), start_new_session=True)
    err = []
    deadline = time.time() + timeout
    for line in p.stderr:
        err.append(line)
        if epoch_line in line:
            os.killpg(p.pid, signal.SIGINT)
            break
        assert time.time() < deadline, "".join(err[-30:])
    rest_out, rest_err = p.communicate(timeout=120)
    return p.returncode, "".join(err) + rest_err


def _params(run: Path, ckpt: str | None = None):
    return checkpoint.load(ckpt or json.loads((run / "result.json").read_text())["checkpoint"])["method"]


def _assert_same_run(a: Path, b: Path):
    ra, rb = (json.loads((r / "result.json").read_text()) for r in (a, b))
    for k in ("epochs", "val_error", "test_error", "best_val_error", "test_error_at_best_val"):
        assert ra[k] == rb[k], (k, ra[k], rb[k])
    torch.testing.assert_close(ra["metrics"]["loss_lab"], rb["metrics"]["loss_lab"], rtol=1e-6, atol=0)
    pa, pb = _params(a), _params(b)
    for name in pa["modules"]:
        for k, v in pa["modules"][name].items():
            torch.testing.assert_close(pb["modules"][name][k], v, rtol=0, atol=0, msg=f"{name}.{k}")


def _held(tmp_path, after: int, name: str):
    """JOB as the test plugin's `faulty` method (the supervised baseline, bit for bit), which waits at the first
    step after epoch `after` until `<marker>.go` exists: a Ctrl-C sent when the epoch line shows up then lands
    mid-run however fast the epochs are (at 0.2 s an epoch a quiet machine finished the 5 epochs before it)."""
    marker = tmp_path / f"{name}.marker"
    return ["faulty", *JOB[1:], "--set", f"hold_after_epoch={after}", "--set", f"marker={marker}"], marker


def _straight(tmp_path, job=JOB):
    run = tmp_path / "straight"
    r = _cli([*job, "--output", str(run), "--json"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["path"] == "in-process" and s["epochs"] == 5
    # a successful run prints progress and the summary, no error-level log line (Ray's "[... E ...]" lines)
    bad = [ln for ln in r.stderr.splitlines() if re.search(r"\bERROR\b|^\[[^]]* E \d+|Traceback", ln)]
    assert not bad, bad
    return run


def test_one_local_worker_trains_in_process_without_ray(tmp_path):
    run = _straight(tmp_path)
    r = json.loads((run / "result.json").read_text())
    assert r["checkpoint"] == str(run / "checkpoint") and r["checkpoint_epoch"] == 5
    assert not (run / "ray_train").exists()
    # the same command again into the same folder is refused instead of silently mixing two runs
    again = _cli([*JOB, "--output", str(run)], tmp_path)
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr


def test_ctrl_c_is_recorded_and_resume_continues_exactly(tmp_path):
    free, free_marker = _held(tmp_path, 3, "free")
    free_marker.with_name(free_marker.name + ".go").touch()  # the uninterrupted run never waits
    straight = _straight(tmp_path, free)
    job, marker = _held(tmp_path, 3, "cut")
    run = tmp_path / "cut"
    rc, err = _interrupt_after([*job, "--output", str(run)], tmp_path, "epoch 3/5")
    marker.with_name(marker.name + ".go").touch()  # the resume goes straight on
    assert rc == 130, err[-3000:]
    assert "interrupted after" in err and "--resume" in err and "Traceback" not in err
    r = json.loads((run / "result.json").read_text())
    assert r["interrupted"] is True and 2 <= r["checkpoint_epoch"] <= r["epochs"] < 5
    assert checkpoint.load(r["checkpoint"])["epoch"] == r["checkpoint_epoch"]
    res = _cli([*job, "--output", str(run), "--resume", "--json"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"epoch {r['checkpoint_epoch'] + 1}/5" in res.stderr and "epoch 1/5" not in res.stderr
    _assert_same_run(straight, run)
    # a resume with other hyperparameters is refused (one line, exit 2)
    bad = _cli([*job, "--set", "lr=0.01", "--output", str(run), "--resume"], tmp_path)
    assert bad.returncode == 2 and "lr" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.ray
def test_ctrl_c_through_ray_train_then_resume_in_process(tmp_path):
    """The Ray Train path (Train's own SIGINT handler used to exit 1 silently): exit 130, result.json with Ray's
    last checkpoint; the resume (one worker, so in-process) ends where an uninterrupted run ends."""
    free, free_marker = _held(tmp_path, 2, "free")
    free_marker.with_name(free_marker.name + ".go").touch()
    straight = _straight(tmp_path, free)
    job, marker = _held(tmp_path, 2, "cut")
    run = tmp_path / "cut"
    rc, err = _interrupt_after([*job, "--ray-train", "--output", str(run)], tmp_path, "epoch 2/5")
    marker.with_name(marker.name + ".go").touch()
    assert rc == 130, err[-3000:]
    # no traceback of ours (Ray's controller may log a warning with one when its 5 s actor calls time out on an
    # overloaded machine: "Failed to send resource request ... safe to ignore")
    assert "interrupted after" in err and "KeyboardInterrupt" not in err and "/ssl_ray/" not in err, err[-3000:]
    r = json.loads((run / "result.json").read_text())
    assert r["interrupted"] is True and r["path"] == "ray-train"
    assert r["checkpoint_epoch"] >= 1 and "ray_train" in r["checkpoint"]
    res = _cli([*job, "--output", str(run), "--resume", "--json"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_same_run(straight, run)


def test_more_workers_than_cpus_is_one_line_error(tmp_path):
    n = (os.cpu_count() or 1) + 3
    t0 = time.time()
    r = _cli(["supervised", "--workers", str(n), "--output", str(tmp_path / "w")], tmp_path, timeout=120)
    assert r.returncode == 2, r.stderr[-3000:]
    assert f"{n} worker(s) need {n} CPUs" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert time.time() - t0 < 60  # no Ray start-up, no 60 s placement wait


def test_divergence_in_process_is_one_line_error(tmp_path):
    run = tmp_path / "nan"
    r = _cli(["faulty", "--set", "nan_epoch=2", "--set", "steps_per_epoch=5", "--epochs", "4", "--output", str(run)],
             tmp_path)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "error: training diverged: loss_lab became nan at epoch 2, step 6" in r.stderr
    assert "Traceback" not in r.stderr
    assert json.loads((run / "result.json").read_text())["error"].startswith("loss_lab became nan")


@pytest.mark.ray
def test_divergence_through_ray_train_is_one_line_error_and_not_retried(tmp_path):
    marker = tmp_path / "epochs.log"
    before = staged()
    r = _cli(["faulty", "--workers", "2", "--max-failures", "2", "--set", "nan_epoch=2", "--set",
              "steps_per_epoch=5", "--set", f"marker={marker}", "--epochs", "4", "--output", str(tmp_path / "nan")],
             tmp_path)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "error: training diverged: loss_lab became nan at epoch 2" in r.stderr
    for needle in ("WorkerGroupError", "DivergenceError", "/ssl_ray/", "PreemptionWatcher"):
        assert needle not in r.stderr, r.stderr[-3000:]
    # each of the 2 workers finished epoch 1 once (epoch 2 diverged): no restart of the group
    assert sorted(int(e) for e in marker.read_text().split()) == [1, 1]
    assert staged() - before == set()  # each worker's divergence marker removed after its report


def test_ctrl_c_right_after_a_checkpoint_write_records_that_checkpoints_epoch(tmp_path, monkeypatch):
    """Ctrl-C between `checkpoint.save` and the loop noting the epoch (found by the Ctrl-C test above on a fast
    machine: result.json said epoch 2 while the file held epoch 3): result.json names the epoch on disk."""
    from ssl_ray.data import DataSpec
    from ssl_ray.engine import loop
    from ssl_ray.engine.loop import RunSpec
    from ssl_ray.tuning.train import run_train

    real_save = loop.checkpoint.save

    def save_then_interrupt(directory, state):
        path = real_save(directory, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(loop.checkpoint, "save", save_then_interrupt)
    spec = RunSpec("supervised", DataSpec("digits", labels=50), epochs=4, seed=0,
                   config={"steps_per_epoch": 3}, checkpoint_every=1)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_train(spec, output=str(out), progress=False)
    r = json.loads((out / "result.json").read_text())
    assert r["interrupted"] is True and r["epochs"] == 2
    assert checkpoint.load(r["checkpoint"])["epoch"] == 2 and r["checkpoint_epoch"] == 2
