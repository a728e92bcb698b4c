"""Faults provoked for real: a diverging trial, a crashing trial, a killed data-parallel worker, and the
ASHA rungs rebuilt after a driver restart. Divergence and crashes come from a plugin method
(tests/plugins/faulty_methods.py) loaded the way users load their own methods: $SSL_RAY_PLUGINS."""
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

from leftovers import staged
from ssl_ray.data import DataSpec
from ssl_ray.engine.loop import RunSpec, Trainer
from ssl_ray.errors import DivergenceError

PLUGINS = str(Path(__file__).parent / "plugins")


def _env(tmp_path):
    return {**os.environ, "SSL_RAY_PLUGINS": "faulty_methods", "SSL_RAY_CACHE": str(tmp_path / "cache"),
            "PYTHONPATH": os.pathsep.join([PLUGINS, os.environ.get("PYTHONPATH", "")])}


def test_divergence_names_loss_epoch_and_step(monkeypatch):
    """In-process: the loop stops with the loss's name, the epoch and the global step."""
    monkeypatch.syspath_prepend(PLUGINS)
    import faulty_methods  # noqa: F401  (registers `faulty`)

    spec = RunSpec("faulty", DataSpec("digits", labels=20, val_size=100), epochs=5, seed=0,
                   config={"nan_epoch": 3, "steps_per_epoch": 7})
    tr = Trainer(spec, progress=False)
    reported = []
    with pytest.raises(DivergenceError, match=r"loss_lab became nan at epoch 3, step 15"):
        tr.fit(lambda m, c: reported.append(m))
    assert [m["epoch"] for m in reported] == [1, 2]  # the good epochs were reported before the failure


SPACE = """\
method: faulty
dataset: {name: digits, labels: 30}
fixed: {batch_size: 32, steps_per_epoch: 5}
search:
  nan_epoch: {grid: [0, 2]}
scheduler: {name: fifo, max_epochs: 4}
num_samples: 1
"""


@pytest.mark.ray
def test_diverging_trial_fails_with_reason_and_the_search_goes_on(tmp_path):
    space = tmp_path / "s.yaml"
    space.write_text(SPACE)
    r = subprocess.run([sys.executable, "-m", "ssl_ray.cli", "tune", "faulty", "--space", str(space), "--storage",
                        str(tmp_path / "runs"), "--name", "div", "--max-failures", "2", "--json", "--quiet"],
                       capture_output=True, text=True, env=_env(tmp_path), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["num_trials"] == 2 and s["num_errored"] == 1 and s["num_completed"] == 1
    (reason,) = s["errors"].values()
    assert "loss_lab became nan at epoch 2, step 6" in reason
    assert "failed: " in r.stderr and "became nan" in r.stderr  # said in the human summary too
    rows = {row["config/nan_epoch"]: row for row in pq.read_table(Path(s["experiment"]) / "results.parquet")
            .to_pylist()}
    bad, good = rows[2], rows[0]
    assert bad["status"] == "ERROR" and "became nan" in bad["error"]
    assert bad["epochs"] == 1 and math.isfinite(bad["val_error"])  # its last good metrics stay
    assert good["status"] == "TERMINATED" and good["epochs"] == 4
    assert s["best"]["trial_id"] == good["trial_id"]


CRASH_SPACE = """\
method: faulty
dataset: {name: digits, labels: 30}
fixed: {batch_size: 32, steps_per_epoch: 5, crash_epoch: 3, marker: MARKER}
search:
  lr: {grid: [0.001]}
scheduler: {name: fifo, max_epochs: 5}
num_samples: 1
"""


@pytest.mark.ray
def test_crashed_trial_is_retried_from_its_last_checkpoint(tmp_path):
    marker = tmp_path / "epochs.log"
    space = tmp_path / "s.yaml"
    space.write_text(CRASH_SPACE.replace("MARKER", str(marker)))
    r = subprocess.run([sys.executable, "-m", "ssl_ray.cli", "tune", "faulty", "--space", str(space), "--storage",
                        str(tmp_path / "runs"), "--name", "crash", "--max-failures", "1", "--json", "--quiet"],
                       capture_output=True, text=True, env=_env(tmp_path), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["num_errored"] == 0 and s["num_completed"] == 1
    # first attempt ran epochs 1-2 and crashed in 3; the retry continued at 3 (not from scratch)
    assert marker.read_text().split() == ["1", "2", "3", "4", "5"]
    assert Path(str(marker) + ".crashed").exists()
    hist = pq.read_table(Path(s["experiment"]) / "history.parquet").to_pylist()
    assert sorted(h["epoch"] for h in hist) == [1, 2, 3, 4, 5]


@pytest.mark.ray
def test_killed_data_parallel_worker_recovers_from_checkpoint(tmp_path):
    marker = tmp_path / "epochs.log"
    args = [sys.executable, "-m", "ssl_ray.cli", "train", "faulty", "--workers", "2", "--max-failures", "1",
            "--epochs", "6", "--set", "steps_per_epoch=150", "--set", f"marker={marker}", "--set", "hold_after_epoch=3",
            "--output", str(tmp_path / "run"), "--json"]
    before = staged()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path))
    deadline = time.time() + 400
    killed = False
    while time.time() < deadline and proc.poll() is None:
        # both workers finished epoch 3 and wait (hold_after_epoch) before epoch 4 until marker.go exists: the kill
        # lands between epochs 3 and 4 however fast the machine (a fast CI machine once ran epochs 4-6 during the
        # wait below, and the kill then re-ran epoch 6)
        if marker.exists() and len(marker.read_text().split()) >= 2 * 3:
            time.sleep(2)  # let Ray Train's controller register the reported checkpoints
            # the victim: a worker of this run, by the PID it wrote itself (never a name lookup, which could
            # hit another user's Ray worker)
            pids = Path(str(marker) + ".pids").read_text().split()
            if pids:
                os.kill(int(pids[-1]), signal.SIGKILL)
                Path(str(marker) + ".go").touch()  # the restarted group runs on
                killed = True
                break
        time.sleep(0.2)
    out, err = proc.communicate(timeout=600)
    assert killed, "no worker to kill: " + err[-2000:]
    assert proc.returncode == 0, err[-3000:]
    s = json.loads(out.strip().splitlines()[-1])
    assert s["epochs"] == 6 and s["test_error"] < 60
    epochs = [int(e) for e in marker.read_text().split()]
    # each of the 2 workers logs every epoch; after the kill the group restarted from a checkpoint, not from
    # scratch: epoch 1 ran once per worker, and the epochs after the restart continue the count
    assert epochs.count(1) == 2, epochs
    assert epochs.count(6) == 2, epochs
    assert epochs[:6] == [1, 1, 2, 2, 3, 3], epochs  # nothing ran past epoch 3 before the kill
    assert len(epochs) >= 12, epochs
    assert staged() - before == set()  # the SIGKILLed worker had made no folder it could not remove


def test_asha_rungs_are_rebuilt_from_saved_results():
    from ray.tune.schedulers import ASHAScheduler

    from ssl_ray.tuning.schedulers.asha import replay_rungs

    fresh = ASHAScheduler(time_attr="epoch", metric="val_error", mode="min", max_t=9, grace_period=1,
                          reduction_factor=3)
    hist = {"a": [{"epoch": e, "val_error": v} for e, v in [(1, 50.0), (2, 40.0), (3, 30.0)]],
            "b": [{"epoch": 1, "val_error": 20.0}],
            "c": [{"epoch": 1, "val_error": 80.0}, {"epoch": 2, "val_error": float("nan")}]}
    assert replay_rungs(fresh, hist) == 5
    from ssl_ray.tuning.ray_internals import asha_bracket, asha_rungs

    rungs = asha_rungs(fresh)
    assert rungs[1] == {"a": -50.0, "b": -20.0, "c": -80.0}
    assert rungs[3] == {"a": -30.0}
    assert rungs[9] == {}

    class T:
        trial_id = "d"

    # a new trial at rung 1 with 70% error is now judged against the rebuilt rung (cut-off between -50 and -20)
    from ray.tune.schedulers import TrialScheduler

    assert asha_bracket(fresh).on_result(T(), 1, -70.0) == TrialScheduler.STOP


def _trial_dir(root: Path, name: str, epochs: int, ckpt_epochs: list[int]) -> None:
    d = root / name
    d.mkdir()
    rows = [{"epoch": e, "val_error": 0.5, "time_total_s": float(e),
             **({"checkpoint_dir_name": f"checkpoint_{e:06d}"} if e in ckpt_epochs else {})}
            for e in range(1, epochs + 1)]
    (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("epochs, ckpts, status", [
    (3, [1, 2, 3], "TERMINATED"),   # its last checkpoint is the final epoch: Ctrl-C hit before Tune recorded the end
    (3, [1, 2], "INTERRUPTED"),     # the last epoch's row is there, its checkpoint is not: run epoch 3 again
    (2, [1, 2], "INTERRUPTED"),
    (0, [], "INTERRUPTED"),
])
def test_a_trial_cut_off_after_its_final_checkpoint_counts_as_finished(tmp_path, epochs, ckpts, status):
    """What `--resume` runs again (the CI failure of 2026-12-01: a resumed trial with no epoch left to run
    reported nothing, and Tune failed the whole resume for the missing metric)."""
    from ssl_ray.tuning import experiment

    _trial_dir(tmp_path, "t0", epochs, ckpts)
    doc = {"scheduler": {"max_epochs": 3}, "plan": [{"lr": 0.1}]}
    records = {"a": {"index": 0, "dir": "t0", "status": "RUNNING", "config": {"lr": 0.1}}}
    (t,) = experiment.collect(str(tmp_path), doc, records)
    assert t["status"] == status
    assert [r["epoch"] for r in t["history"]] == list(range(1, epochs + 1))
    assert t["checkpoint_epoch"] == max(ckpts, default=0)
