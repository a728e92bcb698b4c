"""One driver per experiment (issue 30, tuning/lock.py): while a real `ssl-ray tune` search runs, a `--resume` of
it (and a fresh run of the same --name) is refused in one line naming the running driver's PID and host, and
changes nothing in the experiment; after that driver is killed with SIGKILL (its lock left behind, stale), a
`--resume` takes the lock over with a notice and finishes every trial, each epoch trained once. Plus the lock's
own rules, in-process: a live owner refused, a dead or reused PID taken over, another host's lock refused."""
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ssl_ray import processes
from ssl_ray.errors import SSLRayError
from ssl_ray.tuning import lock
from zombies import zombie

PLUGINS = str(Path(__file__).parent / "plugins")
CLI = [sys.executable, "-m", "ssl_ray.cli"]
SPACE = """\
method: faulty
dataset: {name: digits, labels: 30}
fixed: {batch_size: 16, steps_per_epoch: 20, marker: MARKER}
search:
  hold_after_epoch: {grid: [1, 0]}
scheduler: {name: fifo, max_epochs: 3}
num_samples: 1
"""
TUNE_SNAPSHOTS = ("experiment_state", "basic-variant-state", "search_gen_state")
"""Files Tune rewrites now and then while a search runs (the running driver's own writes, not the refused one's)."""


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "SSL_RAY_PLUGINS": "faulty_methods", "SSL_RAY_CACHE": str(tmp_path / "cache"),
            "PYTHONPATH": os.pathsep.join([PLUGINS, os.environ.get("PYTHONPATH", "")])}


def _epochs(marker: Path) -> list[int]:
    return [int(e) for e in marker.read_text().split()] if marker.exists() else []


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(TUNE_SNAPSHOTS)}


def _end_trial_workers(marker: Path) -> None:
    """The paused trial's Ray worker is in a process group of its own (Ray's), and outlives the driver for a
    while: ended here, by the PID it wrote itself (never a name lookup), before the pause is lifted; otherwise
    it would train one more epoch of the dead search."""
    pids = Path(str(marker) + ".pids")
    for pid in {int(p) for p in pids.read_text().split()} if pids.exists() else ():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists() or (processes.start_time(pid) or ("Z",))[0] == "Z":
                break
            time.sleep(0.1)


def _quiet(exp: Path, seconds: float = 120) -> dict[str, str]:
    """The experiment's files once they stay the same for 5 s (a paused search has written what it writes)."""
    deadline, last = time.time() + seconds, _hashes(exp)
    while time.time() < deadline:
        time.sleep(5)
        now = _hashes(exp)
        if now == last:
            return now
        last = now
    pytest.fail("the paused search kept writing files")


# what the paused owner's own Tune driver may still add to its trial folder (its loggers flush late on a loaded
# machine: CI saw them arrive after 5 quiet seconds); a refused command writes none of these
OWNER_LATE = ("params.json", "params.pkl", "progress.csv", "result.json")


def _changed_by_others(before: dict[str, str], after: dict[str, str]) -> dict[str, tuple]:
    """Files changed between the two snapshots, less the ones the paused owner adds late to an existing trial."""
    trials = {k.split("/")[0] for k in before if k.startswith("trial_fn_")}
    def owners(k: str) -> bool:
        top, _, rest = k.partition("/")
        return k not in before and top in trials and (rest in OWNER_LATE or rest.startswith("tensorboard/events."))
    return {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
            if before.get(k) != after.get(k) and not owners(k)}


def _one_line(r: subprocess.CompletedProcess, *needles: str) -> None:
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-3000:]
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.ray
def test_resume_is_refused_while_the_search_runs_and_allowed_after_it_is_killed(tmp_path):
    marker, space = tmp_path / "epochs.log", tmp_path / "space.yaml"
    space.write_text(SPACE.replace("MARKER", str(marker)))
    runs, exp = tmp_path / "runs", tmp_path / "runs" / "x"
    fresh = CLI + ["tune", "faulty", "--space", str(space), "--storage", str(runs), "--name", "x", "--quiet",
                   "--max-concurrent", "1"]
    resume = CLI + ["tune", "faulty", "--storage", str(runs), "--name", "x", "--resume", "--quiet", "--json"]
    env = _env(tmp_path)
    proc = subprocess.Popen(fresh, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None:  # trial 0 paused after epoch 1, checkpointed
            if _epochs(marker) and list(exp.glob("trial_fn_*/checkpoint_000000")) and list(
                    exp.glob("trial_fn_*/ssl_ray_rows/*")):
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        owner = json.loads((exp / "ssl_ray.lock").read_text())
        assert owner["pid"] == proc.pid and owner["host"] == socket.gethostname()
        before = _quiet(exp)  # the paused search's own writes done (Tune copies a trial's files in a while later)
        folders = sorted(p.name for p in exp.iterdir() if p.is_dir())

        who = f"is being run by PID {proc.pid} on {socket.gethostname()} since {owner['started']}"
        refused = subprocess.run(resume, env=env, capture_output=True, text=True, timeout=300)
        _one_line(refused, who, "wait for it or end it")
        again = subprocess.run(fresh, env=env, capture_output=True, text=True, timeout=300)
        _one_line(again, who)
        after = _hashes(exp)  # nothing written by the refused commands, the lock still the owner's
        assert _changed_by_others(before, after) == {}
        assert sorted(p.name for p in exp.iterdir() if p.is_dir()) == folders
        assert proc.poll() is None and _epochs(marker) == [1]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver ends without a word
        proc.communicate(timeout=120)
        _end_trial_workers(marker)
    assert json.loads((exp / "ssl_ray.lock").read_text())["pid"] == proc.pid  # left behind: stale

    Path(str(marker) + ".go").touch()
    done = subprocess.run(resume, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"notice: taking over the lock of PID {proc.pid} on {socket.gethostname()}" in done.stderr
    s = json.loads(done.stdout.strip().splitlines()[-1])
    assert s["num_trials"] == 2 and s["num_completed"] == 2 and s["interrupted"] is False, s
    hist = pq.read_table(exp / "history.parquet").to_pylist()
    for row in pq.read_table(exp / "results.parquet").to_pylist():
        assert row["status"] == "TERMINATED"
        assert sorted(h["epoch"] for h in hist if h["trial_id"] == row["trial_id"]) == [1, 2, 3]
    # trial 0 continued from its epoch-1 checkpoint, trial 1 ran once: each epoch of each trial trained once
    assert Counter(_epochs(marker)) == {1: 2, 2: 2, 3: 2}, _epochs(marker)
    # one Tune trial per plan entry, plus trial 0's continuation; the killed attempt's record stays as the killed
    # driver left it (RUNNING: results.parquet reads the attempts together), no entry was trained twice
    records = json.loads((exp / "ssl_ray_trials.json").read_text())
    seen = sorted((r["index"], r["status"], (r.get("resume") or {}).get("from_epoch")) for r in records.values())
    assert seen == [(0, "RUNNING", None), (0, "TERMINATED", 1), (1, "TERMINATED", None)], records
    assert len(list(exp.glob("trial_fn_*"))) == 3
    assert not (exp / "ssl_ray.lock").exists()


# ---- the lock's rules, in-process (no Ray) ----------------------------------------------------------------
def _plant(exp: Path, **changes) -> dict:
    exp.mkdir(parents=True, exist_ok=True)
    owner = {**lock._me(), **changes}
    (exp / lock.LOCK_FILE).write_text(json.dumps(owner))
    return owner


def test_a_live_owner_is_refused_and_the_lock_is_released_on_every_exit(tmp_path):
    exp = tmp_path / "e"
    with lock.take(str(exp)) as held:
        assert json.loads((exp / lock.LOCK_FILE).read_text()) == held.owner
        with pytest.raises(SSLRayError, match=f"being run by PID {os.getpid()} on "):
            lock.take(str(exp))
        assert json.loads((exp / lock.LOCK_FILE).read_text()) == held.owner  # the refused take left it alone
    assert not exp.exists()  # released; the folder it made (left empty) removed too
    with pytest.raises(RuntimeError):
        with lock.take(str(exp)):
            (exp / "kept").write_text("x")
            raise RuntimeError("a failing search")
    assert sorted(p.name for p in exp.iterdir()) == ["kept"]  # released on an error; the folder kept


@pytest.mark.parametrize("case", ["dead pid", "reused pid", "zombie", "damaged"])
def test_a_stale_lock_is_taken_over_with_a_notice(tmp_path, case):
    exp = tmp_path / "e"
    with contextlib.ExitStack() as unreaped:
        if case == "dead pid":
            p = subprocess.Popen([sys.executable, "-c", "pass"])
            p.wait()
            _plant(exp, pid=p.pid)
        elif case == "reused pid":  # this very PID, but its start time is another process's
            _plant(exp, proc_start=(lock._me()["proc_start"] or 0) + 1)
        elif case == "zombie":
            _plant(exp, pid=unreaped.enter_context(zombie()), proc_start=None)
        else:
            exp.mkdir()
            (exp / lock.LOCK_FILE).write_text("")
        said: list[str] = []
        t0 = time.monotonic()
        with lock.take(str(exp), notice=said.append) as held:
            assert json.loads((exp / lock.LOCK_FILE).read_text())["pid"] == os.getpid() == held.owner["pid"]
        assert len(said) == 1 and said[0].startswith("notice: taking over the lock"), said
        assert time.monotonic() - t0 < (6 if case == "damaged" else 2)
        assert not (exp / lock.LOCK_FILE).exists() and not (exp / lock.TAKEOVER).exists()


def test_another_hosts_lock_is_refused_naming_it_and_the_file(tmp_path):
    exp = tmp_path / "e"
    owner = _plant(exp, host="node-7", pid=4242)
    with pytest.raises(SSLRayError) as e:
        lock.take(str(exp))
    msg = str(e.value)
    assert "PID 4242 on node-7" in msg and "another machine" in msg and str(exp / lock.LOCK_FILE) in msg
    assert json.loads((exp / lock.LOCK_FILE).read_text()) == owner


def test_two_drivers_racing_for_one_lock_get_it_once(tmp_path):
    """Eight processes take the lock of one experiment at the same moment (a stale lock there): exactly one
    holds it at a time (O_EXCL; the takeover serialised), the others are refused naming a live PID."""
    exp = tmp_path / "e"
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    _plant(exp, pid=p.pid)
    code = ("import sys, time\nfrom ssl_ray.tuning import lock\nfrom ssl_ray.errors import SSLRayError\n"
            "time.sleep(max(0, float(sys.argv[1]) - time.time()))\n"
            "try:\n    held = lock.take(sys.argv[2], notice=lambda s: None)\nexcept SSLRayError as e:\n"
            "    print('refused', e)\n    sys.exit(0)\nprint('took')\ntime.sleep(3)\nheld.release()\n")
    start = time.time() + 4
    procs = [subprocess.Popen([sys.executable, "-c", code, str(start), str(exp)], stdout=subprocess.PIPE, text=True)
             for _ in range(8)]
    outs = [q.communicate(timeout=120)[0] for q in procs]
    assert all(q.returncode == 0 for q in procs), outs
    assert sum(o.startswith("took") for o in outs) == 1, outs
    assert all("being run by PID" in o for o in outs if o.startswith("refused")), outs
    assert not (exp / lock.LOCK_FILE).exists()


def test_on_a_remote_filesystem_the_lock_is_best_effort_but_checked(tmp_path):
    """An object store (here fsspec's in-memory filesystem through pyarrow, as s3:// and gs:// are reached): the
    lock is written, read back, refused while its owner lives, taken over when stale, removed on release."""
    fsspec = pytest.importorskip("fsspec")
    import pyarrow.fs as pafs

    fs = pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem("memory")))
    base = f"/ssl-ray-test-{os.getpid()}-{tmp_path.name}"
    path = f"{base}/{lock.LOCK_FILE}"
    said: list[str] = []
    held = lock._take_remote("mem://e", fs, path, said.append)
    assert json.loads(fs.open_input_stream(path).read()) == held.owner and not said
    with pytest.raises(SSLRayError, match=f"being run by PID {os.getpid()}"):
        lock._take_remote("mem://e", fs, path, said.append)
    held.release()
    assert fs.get_file_info(path).type == pafs.FileType.NotFound
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    with fs.open_output_stream(path) as f:
        f.write(json.dumps({**lock._me(), "pid": p.pid}).encode())
    lock._take_remote("mem://e", fs, path, said.append).release()
    assert len(said) == 1 and f"taking over the lock of PID {p.pid}" in said[0], said
    with fs.open_output_stream(path) as f:
        f.write(json.dumps({**lock._me(), "host": "node-7"}).encode())
    with pytest.raises(SSLRayError, match="on node-7 .*another machine"):
        lock._take_remote("mem://e", fs, path, said.append)
