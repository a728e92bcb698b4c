"""Issue 30, first item: a trial worker SIGKILLed before its trial's first result must cost that trial a retry
(--max-failures) or, with no retries left, an ERROR with a one-line reason, and nothing else: every other trial
finishes and results.parquet and summary.json are written.

The trial holds at a chosen point (in its method's build, before any step; or at its first step, inside the
first epoch) after writing its PID, so the kill lands before the first report however fast the machine. The
victim is that PID, checked to be a descendant of the search this test started and a Tune trial worker
(ray::ImplicitFunc) before it is killed: never a process found by name."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

PLUGIN = '''
"""Test plugin: the supervised baseline that, in trial `hold_slot`, writes its PID and waits for a go file."""
import os
import time
from dataclasses import dataclass

from ssl_ray.config import hp
from ssl_ray.methods.registry import register
from ssl_ray.methods.supervised import Supervised, SupervisedConfig


@dataclass
class HeldConfig(SupervisedConfig):
    slot: int = hp(0, "which trial of the test this is", low=0)
    hold_slot: int = hp(0, "the trial that holds; 0 = none", low=0)
    hold_at: str = hp("build", "where it holds: build (before any step) or step (its first step)")
    hold_dir: str = hp("", "where it writes its PID and waits for the file go")


@register
class Held(Supervised):
    name = "held"
    Config = HeldConfig
    paper = "test plugin"

    def _hold(self, where):
        import ray

        c = self.cfg
        # the driver builds the method too (its pre-flight check): only a trial's worker, a Ray actor, holds
        in_actor = ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None
        if c.hold_at != where or not c.hold_dir or not in_actor:
            return
        with open(os.path.join(c.hold_dir, f"ran.{c.slot}"), "a") as f:  # every attempt of every trial
            f.write(f"{os.getpid()}\\n")
        go = os.path.join(c.hold_dir, "go")
        if c.slot != c.hold_slot or os.path.exists(go):
            return
        tmp = os.path.join(c.hold_dir, f".pid.{c.slot}")
        with open(tmp, "w") as f:
            f.write(str(os.getpid()))
        os.replace(tmp, os.path.join(c.hold_dir, f"pid.{c.slot}"))
        deadline = time.time() + 120
        while not os.path.exists(go) and time.time() < deadline:
            time.sleep(0.02)

    def build(self):
        super().build()
        self._hold("build")
        self.first_step_done = False

    def train_step(self, batch):
        if not self.first_step_done:
            self.first_step_done = True
            self._hold("step")
        return super().train_step(batch)
'''

SPACE = """\
method: held
dataset: {name: digits, labels: 30}
fixed: {batch_size: 32, steps_per_epoch: 5, hold_slot: 3, hold_at: WHERE, hold_dir: DIR}
search:
  slot: {grid: [1, 2, 3, 4]}
scheduler: {name: fifo, max_epochs: 2}
num_samples: 1
"""


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _descends_from(pid: int, root: int) -> bool:
    while pid > 1:
        if pid == root:
            return True
        pid = _parent(pid)
    return False


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode(errors="replace")


def _search(tmp_path: Path, where: str, max_failures: int):
    """Run the search, SIGKILL trial 3's worker while it holds; (completed process, its trials' run log)."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "held_method.py").write_text(PLUGIN)
    hold = tmp_path / "hold"
    hold.mkdir()
    space = tmp_path / "s.yaml"
    space.write_text(SPACE.replace("WHERE", where).replace("DIR", str(hold)))
    env = {**os.environ, "SSL_RAY_PLUGINS": "held_method", "SSL_RAY_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "plugins"), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-m", "ssl_ray.cli", "tune", "held", "--space", str(space), "--storage",
            str(tmp_path / "runs"), "--name", "f5", "--max-concurrent", "1", "--max-failures", str(max_failures),
            "--json", "--quiet"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    victim = None
    try:
        deadline = time.time() + 240
        while proc.poll() is None and time.time() < deadline and victim is None:
            pid_file = hold / "pid.3"
            if pid_file.exists():
                victim = int(pid_file.read_text())
                # only a Tune trial worker of the search started here is killed
                assert _descends_from(victim, proc.pid), (victim, proc.pid)
                assert "ImplicitFunc" in _cmdline(victim), _cmdline(victim)
                os.kill(victim, signal.SIGKILL)
                (hold / "go").touch()  # the retry runs through
            time.sleep(0.05)
        out, err = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert victim is not None, "trial 3 never held: " + err[-3000:]
    ran = {int(p.name.split(".")[1]): [int(x) for x in p.read_text().split()] for p in hold.glob("ran.*")}
    return proc, out, err, victim, ran


@pytest.mark.ray
@pytest.mark.parametrize("where", ["build", "step"])
def test_worker_killed_before_the_first_result_is_retried(tmp_path, where):
    """`build`: the trial started, nothing trained; `step`: inside the first epoch. --max-failures 1."""
    proc, out, err, victim, ran = _search(tmp_path, where, max_failures=1)
    assert proc.returncode == 0, err[-4000:]
    assert "FileNotFoundError" not in err, err[-4000:]
    s = json.loads(out.strip().splitlines()[-1])
    assert (s["num_trials"], s["num_completed"], s["num_errored"], s["num_interrupted"]) == (4, 4, 0, 0), s
    exp = Path(s["experiment"])
    assert json.loads((exp / "summary.json").read_text())["num_completed"] == 4
    rows = pq.read_table(exp / "results.parquet").to_pylist()
    assert sorted(r["config/slot"] for r in rows) == [1, 2, 3, 4]
    assert all(r["status"] == "TERMINATED" and r["epochs"] == 2 for r in rows), rows
    # trial 3 ran twice: the killed attempt, then the retry in another process; the others once
    assert len(ran[3]) == 2 and ran[3][0] == victim and ran[3][1] != victim, ran
    assert all(len(ran[k]) == 1 for k in (1, 2, 4)), ran


@pytest.mark.ray
def test_worker_killed_with_no_retry_left_is_an_error_with_a_reason(tmp_path):
    proc, out, err, victim, ran = _search(tmp_path, "build", max_failures=0)
    assert proc.returncode == 0, err[-4000:]
    assert "FileNotFoundError" not in err, err[-4000:]
    s = json.loads(out.strip().splitlines()[-1])
    assert (s["num_trials"], s["num_completed"], s["num_errored"]) == (4, 3, 1), s
    (reason,) = s["errors"].values()
    assert "\n" not in reason and 0 < len(reason) <= 300 and f"(pid {victim}) died" in reason, reason
    exp = Path(s["experiment"])
    assert (exp / "summary.json").is_file()
    rows = {r["config/slot"]: r for r in pq.read_table(exp / "results.parquet").to_pylist()}
    assert rows[3]["status"] == "ERROR" and rows[3]["error"] == reason, rows[3]
    assert all(rows[k]["status"] == "TERMINATED" and rows[k]["epochs"] == 2 for k in (1, 2, 4)), rows
    assert ran[3] == [victim], ran  # not retried
