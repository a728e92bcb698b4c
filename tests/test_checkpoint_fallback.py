"""A checkpoint that cannot be loaded costs only the epochs after the newest one that can (issue 30: with the
latest checkpoint_00000K/state.pt truncated, `ssl-ray tune --resume` failed the trial with a Ray traceback
although checkpoint_00000(K-1) was intact).

engine.worker.newest_loadable / run_worker (no Ray): the newest checkpoint that loads is continued, each one
passed over is said in one line on stderr, and when none loads the run fails in one line naming every file
(never a silent fresh start). Then a real search: interrupted, its latest recorded checkpoint truncated,
`--resume` continues from the kept one before it, records the fallback in the trial's rows and history.parquet,
and every trial ends TERMINATED with each epoch once."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ssl_ray.data import DataSpec
from ssl_ray.engine import checkpoint
from ssl_ray.engine.spec import RunSpec
from ssl_ray.engine.worker import Restored, newest_loadable, run_worker
from ssl_ray.errors import SSLRayError
from trial_rows import rows_per_trial

DATA = DataSpec("digits", labels=20, val_size=100)


def _spec(epochs: int) -> RunSpec:
    return RunSpec("supervised", DATA, epochs=epochs, seed=0, config={"steps_per_epoch": 2})


def _truncate(folder: Path) -> Path:
    f = folder / checkpoint.STATE_FILE
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    return f


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[int, Path]:
    """Checkpoints of the same run after 1, 2 and 3 epochs (folders e1, e2, e3)."""
    root = tmp_path_factory.mktemp("ckpts")
    out = {}
    for e in (1, 2, 3):
        run_worker(_spec(e), "cpu", None, [], checkpoint_dir=str(root / f"e{e}"), progress=False)
        out[e] = root / f"e{e}"
        assert checkpoint.load(out[e])["epoch"] == e
    return out


def _copy(ckpts: dict[int, Path], tmp_path: Path) -> dict[int, Path]:
    return {e: Path(shutil.copytree(d, tmp_path / d.name)) for e, d in ckpts.items()}


def test_the_newest_checkpoint_that_loads_is_continued_and_said_in_one_line(ckpts, tmp_path, capsys):
    c = _copy(ckpts, tmp_path)
    bad = _truncate(c[3])
    seen: list[int] = []
    trainer = run_worker(_spec(4), "cpu", lambda m, d: seen.append(m["epoch"]), [c[1], c[3], c[2]],
                         threads=1, progress=False)
    assert seen == [3, 4] and trainer.epoch == 4  # from epoch 2: its epoch 3 recomputed
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    assert err[0].startswith(f"checkpoint {bad} (RuntimeError: ") and "central directory" in err[0]
    assert err[0].endswith(f"; continuing from {c[2]} (epoch 2)") and "This is an internal" not in err[0]


def test_the_choice_and_its_record(ckpts, tmp_path):
    c = _copy(ckpts, tmp_path)
    state, r = newest_loadable([c[1], c[2], tmp_path / "nothing"])  # all load: no record, the furthest along
    assert state is not None and state["epoch"] == 2 and r == Restored(str(c[2]), 2, ()) and r.line() == ""
    assert r.record() == {}
    bad = _truncate(c[2])
    state, r = newest_loadable([c[2], c[1]])
    assert state is not None and state["epoch"] == 1 and r.folder == str(c[1]) and r.epoch == 1
    assert [f for f, _ in r.skipped] == [str(bad)]
    rec = r.record()
    assert rec["restored_from_epoch"] == 1 and rec["skipped_checkpoints"].startswith(f"{bad} (RuntimeError: ")
    assert newest_loadable([]) == (None, Restored())  # nothing handed: a fresh start


def test_fallbacks_are_fetched_newest_first_and_only_when_needed(ckpts, tmp_path):
    c = _copy(ckpts, tmp_path)
    fetched: list[int] = []

    def older(*epochs):
        for e in epochs:
            fetched.append(e)
            yield c[e]

    state, r = newest_loadable([c[3]], older(2, 1))
    assert state is not None and state["epoch"] == 3 and fetched == []  # the latest loads: nothing fetched
    bad = _truncate(c[3])
    state, r = newest_loadable([c[3]], older(2, 1))
    assert state is not None and state["epoch"] == 2 and fetched == [2] and r.skipped[0][0] == str(bad)
    _truncate(c[2])
    fetched.clear()
    state, r = newest_loadable([c[3]], older(2, 1))
    assert state is not None and state["epoch"] == 1 and fetched == [2, 1] and len(r.skipped) == 2


def test_when_none_loads_the_run_fails_in_one_line_naming_every_file(ckpts, tmp_path):
    c = _copy(ckpts, tmp_path)
    bad = [_truncate(c[3]), _truncate(c[2])]
    checkpoint.save(c[1], {"weights": [1, 2]})  # a torch file, but no training state
    bad.append(c[1] / checkpoint.STATE_FILE)
    seen: list = []
    with pytest.raises(SSLRayError) as e:
        run_worker(_spec(4), "cpu", lambda m, d: seen.append(m), [c[3]], fallbacks=[c[2], c[1]], progress=False)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("no checkpoint to continue can be loaded: ")
    # the two cut short in one brace (same folder, same reason), the third with its own reason
    assert f"{tmp_path}/{{e3,e2}}/state.pt (RuntimeError: PytorchStreamReader failed reading zip archive: " in msg
    assert f"; {bad[2]} (no training state in it (a dict without an epoch)) (starting again" in msg, msg
    assert seen == []  # refused before any epoch: no silent fresh start


def test_a_payload_is_passed_over_without_running_it(ckpts, tmp_path):
    import torch

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    c = _copy(ckpts, tmp_path)
    torch.save({"epoch": 9, "x": Evil()}, c[3] / checkpoint.STATE_FILE)
    state, r = newest_loadable([c[3], c[2]])
    assert state is not None and state["epoch"] == 2 and not (tmp_path / "pwned").exists()
    assert "GLOBAL" in r.skipped[0][1] and "system" in r.skipped[0][1]


# ---- a real search: interrupted, its latest recorded checkpoint truncated, resumed --------------------------
SPACE = """\
method: supervised
dataset: {name: digits, labels: 30}
fixed: {batch_size: 16, steps_per_epoch: 400}
search:
  lr: {grid: [0.001]}
scheduler: {name: fifo, max_epochs: 8}
num_samples: 1
"""


def _rows(trial_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (trial_dir / "result.json").read_text().splitlines() if ln.strip()]


@pytest.mark.ray
def test_resume_continues_from_the_kept_checkpoint_before_a_truncated_latest(tmp_path):
    from ssl_ray.tuning import experiment

    (tmp_path / "space.yaml").write_text(SPACE)
    env = {**os.environ, "SSL_RAY_CACHE": str(tmp_path / "cache")}
    cli = [sys.executable, "-m", "ssl_ray.cli", "tune", "supervised", "--storage", str(tmp_path / "runs"),
           "--name", "x", "--quiet"]
    exp = tmp_path / "runs" / "x"
    proc = subprocess.Popen(cli + ["--space", str(tmp_path / "space.yaml")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        rows = list(rows_per_trial(exp).values())
        if len(list(exp.glob("trial_fn_*/checkpoint_*/state.pt"))) >= 2 and rows and max(rows) >= 3:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as a terminal sends it
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]

    # the checkpoint --resume continues (the experiment's own choice), and the kept one before it
    doc, records = experiment.load(str(exp))
    (t,) = experiment.collect(str(exp), doc, records)
    assert t["status"] == "INTERRUPTED" and t["checkpoint"], t
    latest, k = Path(t["checkpoint"]), t["checkpoint_epoch"]
    old_dir = latest.parent
    epoch_of = {r["checkpoint_dir_name"]: int(r["epoch"]) for r in _rows(old_dir) if r.get("checkpoint_dir_name")}
    kept = sorted((d.name for d in old_dir.glob("checkpoint_*") if d.name < latest.name), reverse=True)
    assert kept, sorted(old_dir.iterdir())  # Tune kept an older one (best validation error)
    fallback, j = old_dir / kept[0], epoch_of[kept[0]]
    assert j < k and checkpoint.load(fallback)["epoch"] == j
    # a copy of the interrupted experiment whose every checkpoint is cut short: nothing to fall back to
    shutil.copytree(exp, tmp_path / "runs" / "y")
    copies = sorted((tmp_path / "runs" / "y").glob("trial_fn_*/checkpoint_*"))
    assert copies and all(_truncate(d) for d in copies)
    bad = _truncate(latest)

    r = subprocess.run(cli + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    said = [ln for ln in r.stderr.splitlines() if "cannot be loaded" in ln]
    assert len(said) == 1 and said[0].endswith(f"checkpoint {bad} (RuntimeError: PytorchStreamReader failed "
                                               f"reading zip archive: failed finding central directory) cannot "
                                               f"be loaded; continuing from {fallback} (epoch {j})"), said
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    s = json.loads((exp / "summary.json").read_text())
    assert s["num_errored"] == 0 and s["num_completed"] == 1 and s["interrupted"] is False, s
    assert [row["status"] for row in pq.read_table(exp / "results.parquet").to_pylist()] == ["TERMINATED"]

    # the new attempt continued from epoch j: its first row is epoch j + 1 (epochs j+1..k recomputed), and
    # every row of it records the fallback
    new_dir = next(d for d in exp.glob("trial_fn_*") if d != old_dir)
    new = _rows(new_dir)
    assert [int(x["epoch"]) for x in new] == list(range(j + 1, 9))
    assert all(x["restored_from_epoch"] == j and x["skipped_checkpoints"].startswith(f"{bad} (RuntimeError: ")
               for x in new)
    hist = pq.read_table(exp / "history.parquet").to_pylist()
    assert [int(h["epoch"]) for h in hist] == list(range(1, 9))  # every epoch once
    assert [h["restored_from_epoch"] for h in hist] == [None] * j + [j] * (8 - j)

    # none loads: the trial fails, its error one line naming every file tried; no epoch is trained again
    r = subprocess.run(cli[:-3] + ["--name", "y", "--quiet", "--resume"], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((tmp_path / "runs" / "y" / "summary.json").read_text())
    assert s["num_errored"] == 1 and s["num_completed"] == 0, s
    (why,) = s["errors"].values()
    tried = [c.name for c in reversed(copies) if c.name <= latest.name]  # newest first, as tried
    assert "\n" not in why and why.startswith("SSLRayError: no checkpoint to continue can be loaded: "), why
    assert f"{copies[0].parent}/{{{','.join(tried)}}}/state.pt (RuntimeError: " in why, (why, tried)
    assert not [d for d in (tmp_path / "runs" / "y").glob("trial_fn_*") if d.name != old_dir.name
                and (d / "result.json").is_file() and (d / "result.json").read_text().strip()]


# ---- ssl-ray train --resume: the run folder's checkpoints ---------------------------------------------------
def test_train_resume_of_a_corrupt_only_checkpoint_is_one_line_and_touches_nothing(tmp_path):
    """The in-process path keeps one checkpoint (<output>/checkpoint): when it cannot be loaded there is nothing
    to fall back to, and --resume is refused in one line (exit 2) instead of training again from epoch 0 over
    the run's result.json."""
    out = tmp_path / "run"
    cli = [sys.executable, "-m", "ssl_ray.cli", "train", "supervised", "--labels", "20", "--set",
           "steps_per_epoch=2", "--output", str(out)]
    env = {**os.environ, "SSL_RAY_CACHE": str(tmp_path / "cache")}
    first = subprocess.run(cli + ["--epochs", "2"], capture_output=True, text=True, timeout=300, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    bad = _truncate(out / "checkpoint")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    r = subprocess.run(cli + ["--epochs", "3", "--resume"], capture_output=True, text=True, timeout=300, env=env)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
    assert lines[0].startswith(f"error: no checkpoint to continue can be loaded: {bad} (RuntimeError: "), lines
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_train_resume_falls_back_among_ray_trains_checkpoints(ckpts, tmp_path, capsys):
    """Ray Train's path keeps every checkpoint (<output>/ray_train/checkpoint_*): the newest written that loads
    is continued, the one passed over said in one line."""
    from ssl_ray.tuning.run_folder import RAY_RUN, latest_checkpoint

    out = tmp_path / "run"
    for e in (1, 2, 3):  # written in epoch order, as a run writes them
        shutil.copytree(ckpts[e], out / RAY_RUN / f"checkpoint_00000{e - 1}")
        os.utime(out / RAY_RUN / f"checkpoint_00000{e - 1}" / checkpoint.STATE_FILE, (1000 + e, 1000 + e))
    assert latest_checkpoint(out) == out / RAY_RUN / "checkpoint_000002" and capsys.readouterr().err == ""
    bad = _truncate(out / RAY_RUN / "checkpoint_000002")
    os.utime(bad, (1003, 1003))
    assert latest_checkpoint(out) == out / RAY_RUN / "checkpoint_000001"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"checkpoint {bad} (RuntimeError: ")
    assert err[0].endswith(f"continuing from {out / RAY_RUN / 'checkpoint_000001'} (epoch 2)")
    assert latest_checkpoint(tmp_path / "empty") is None



# ---- the record of a resumed trial that continued from an older checkpoint than the one named -------------------
def test_collect_keeps_the_epochs_an_attempt_that_fell_back_really_ran(tmp_path):
    """Attempt 1 ran epochs 1-4 (checkpoint at 4); the resume named epoch 4's checkpoint, which could not be loaded,
    so attempt 2 continued from epoch 2's (newest_loadable) and was itself interrupted after epoch 3. The history
    is attempt 1's epochs 1-2 and attempt 2's epoch 3: attempt 1's epoch 4 was run past and is not kept (it was,
    until the next resume, when only the record's from_epoch counted)."""
    from ssl_ray.tuning.experiment import collect

    def attempt(name: str, epochs: range) -> None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text("".join(
            json.dumps({"epoch": e, "val_error": 50.0 - e, "attempt": name, "checkpoint_dir_name":
                        f"checkpoint_{e:06d}", "time_total_s": float(e)}) + "\n" for e in epochs))
    attempt("a", range(1, 5))
    attempt("b", range(3, 4))
    doc = {"plan": [{"lr": 0.1}], "scheduler": {"max_epochs": 5}}
    records = {"a1": {"index": 0, "dir": "a", "status": "RUNNING"},
               "b1": {"index": 0, "dir": "b", "status": "RUNNING", "resume": {"from_epoch": 4}}}
    (entry,) = collect(str(tmp_path), doc, records)
    assert [(r["epoch"], r["attempt"]) for r in entry["history"]] == [(1, "a"), (2, "a"), (3, "b")]
    assert entry["status"] == "INTERRUPTED" and entry["checkpoint_epoch"] == 3
