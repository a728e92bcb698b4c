"""The temporary checkpoint folder Trainer.fit hands to Ray's report (no checkpoint_dir of its own) is removed after
the report; a process killed inside the report (Ray ending a trial or a Ray Train worker, a SIGKILL) cannot remove
it, and the next fit removes such orphans: folders of a process that no longer runs, last changed long enough
ago. Real processes and a real SIGKILL, in a temp folder of the test's own."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ssl_ray import processes
from ssl_ray.data import DataSpec
from ssl_ray.engine import checkpoint
from ssl_ray.engine.loop import Trainer
from ssl_ray.engine.spec import RunSpec
from zombies import zombie

# a run whose report blocks, as Ray's does while the driver takes the checkpoint
_BLOCKED_IN_REPORT = """
import sys, time
from pathlib import Path
from ssl_ray.data import DataSpec
from ssl_ray.engine.loop import Trainer
from ssl_ray.engine.spec import RunSpec
def report(metrics, ckpt):
    Path(sys.argv[1]).write_text(ckpt)
    time.sleep(600)
Trainer(RunSpec("supervised", DataSpec("digits", labels=20, val_size=100), epochs=1, seed=0,
                config={"steps_per_epoch": 1}), progress=False).fit(report=report)
"""


def _old(d: Path, seconds: float = 2 * checkpoint.ORPHAN_AGE_S) -> None:
    t = time.time() - seconds
    os.utime(d, (t, t))


def test_a_process_killed_in_its_report_leaves_a_folder_the_next_fit_removes(tmp_path, monkeypatch):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    said = tmp_path / "ckpt.txt"
    env = {**os.environ, "TMPDIR": str(tmp), "SSL_RAY_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-c", _BLOCKED_IN_REPORT, str(said)], env=env,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not said.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert said.exists(), proc.stderr.read() if proc.poll() is not None else "no report within 120 s"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    orphan = Path(said.read_text())
    assert orphan.parent == tmp and orphan.name.startswith(f"{checkpoint.TEMP_PREFIX}{proc.pid}_")
    assert (orphan / checkpoint.STATE_FILE).is_file()  # the killed process could not remove it

    young = tmp / f"{checkpoint.TEMP_PREFIX}{proc.pid}_young"  # the same dead process, changed just now
    young.mkdir()
    mine = tmp / f"{checkpoint.TEMP_PREFIX}{os.getpid()}_mine"  # a process that runs (this one)
    mine.mkdir()
    other = tmp / "ssl_ray_ckpt_abc123"  # not of this scheme: never touched
    other.mkdir()
    for d in (orphan, mine, other):
        _old(d)

    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("SSL_RAY_CACHE", str(tmp_path / "cache"))
    handed = []
    trainer = Trainer(RunSpec("supervised", DataSpec("digits", labels=20, val_size=100), epochs=1, seed=0,
                              config={"steps_per_epoch": 1}), progress=False)
    trainer.fit(report=lambda m, ckpt: handed.append((ckpt, (Path(ckpt) / checkpoint.STATE_FILE).is_file())))

    assert len(handed) == 1 and handed[0][1]  # the report got a checkpoint ...
    assert not Path(handed[0][0]).exists()  # ... removed after it
    assert not orphan.exists()
    assert sorted(p.name for p in tmp.glob("ssl_ray_ckpt*")) == sorted([young.name, mine.name, other.name])


def test_only_old_folders_of_processes_that_are_gone_are_removed(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)
    names = {"dead_old": f"{checkpoint.TEMP_PREFIX}{dead}_a", "dead_young": f"{checkpoint.TEMP_PREFIX}{dead}_b",
             "alive_old": f"{checkpoint.TEMP_PREFIX}{os.getpid()}_c", "huge_pid": f"{checkpoint.TEMP_PREFIX}9{'9' * 30}_d",
             "no_pid": f"{checkpoint.TEMP_PREFIX}x_e"}
    for key, name in names.items():
        (tmp_path / name).mkdir()
        if key != "dead_young":
            _old(tmp_path / name)
    removed = checkpoint.remove_orphans(tmp_path)
    assert sorted(p.name for p in removed) == sorted([names["dead_old"], names["huge_pid"]])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([names["dead_young"], names["alive_old"],
                                                                names["no_pid"]])
    assert checkpoint.remove_orphans(tmp_path, min_age_s=0) == [tmp_path / names["dead_young"]]


def test_a_killed_process_not_yet_reaped_counts_as_gone():
    """A zombie (killed, its parent not yet waited for it) still answers os.kill(pid, 0); its folder is an orphan all
    the same. The PID given again to another process (another start time) is gone too: the rule the experiment lock
    uses (processes.runs)."""
    with zombie() as pid:
        os.kill(pid, 0)  # still there for the kernel
        assert not processes.runs(pid)
    me = processes.start_time(os.getpid())
    assert me is not None and me[0] in ("R", "S")
    assert processes.runs(os.getpid()) and processes.runs(os.getpid(), me[1])
    assert not processes.runs(os.getpid(), me[1] + 1)  # this PID, but another process's start time
    assert not processes.runs(0) and not processes.runs(-1) and not processes.runs(10 ** 30)


def test_a_zombies_old_folder_is_removed(tmp_path):
    with zombie() as pid:
        d = tmp_path / f"{checkpoint.TEMP_PREFIX}{pid}_z"
        d.mkdir()
        _old(d)
        assert checkpoint.remove_orphans(tmp_path) == [d] and not d.exists()
