"""The adversarial list of docs/RELIABILITY.md, provoked for real: bad files and options get one line and exit 2
(no traceback), `--resume` takes the experiment's own settings and refuses contradictions without touching a
file, nothing under --storage is unpickled on resume, Ctrl-C on `tune` is told truly and can be resumed, and
`ssl-ray tensorboard` stays inside its folder and cleans up after SIGTERM."""
import gzip
import hashlib
import json
import os
import pickle
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from ssl_ray.cli import main
from trial_rows import rows_per_trial


def _one_line_error(r, needle):
    """exit 2, no traceback, and the error is a single line containing `needle`."""
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit), r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert needle in lines[0], r.output


# ---- bad files and options: one line, exit 2 --------------------------------------------------------------
def _idx(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def _mnist(root: Path, labels_max: int = 9, corrupt_gz: bool = False) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 200), ("t10k", 50)):
        x = rng.integers(0, 255, (n, 28, 28))
        y = np.arange(n) % (labels_max + 1)
        (raw / f"{split}-images-idx3-ubyte").write_bytes(_idx(x))
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(_idx(y))
    if corrupt_gz:  # a valid gzip header, a deflate body cut to garbage: zlib.error, not OSError
        f = raw / "train-images-idx3-ubyte"
        data = bytearray(gzip.compress(f.read_bytes()))
        data[20:60] = b"\xff" * 40
        (raw / "train-images-idx3-ubyte.gz").write_bytes(bytes(data))
        f.unlink()
    return root


def test_corrupt_deflate_body_is_one_line(tmp_path):
    root = _mnist(tmp_path / "d", corrupt_gz=True)
    r = CliRunner().invoke(main, ["train", "supervised", "--dataset", "mnist", "--data-root", str(root)])
    _one_line_error(r, "corrupt dataset file")


def test_mnist_labels_outside_0_9_are_refused(tmp_path):
    root = _mnist(tmp_path / "d", labels_max=12)
    r = CliRunner().invoke(main, ["train", "supervised", "--dataset", "mnist", "--data-root", str(root)])
    _one_line_error(r, "labels outside 0..9 (found 12)")


@pytest.mark.parametrize("content, needle", [
    (b"method: supervised\nsearch:\n  lr: {grid: [0.001]}\n# \xff\xfe latin-1 \xe9\n", "not UTF-8 text"),
    (b"", "empty search space"),
    (b"# only a comment\n", "empty search space"),
])
def test_bad_space_files(tmp_path, content, needle):
    f = tmp_path / "space.yaml"
    f.write_bytes(content)
    _one_line_error(CliRunner().invoke(main, ["tune", "supervised", "--space", str(f)]), needle)


@pytest.mark.parametrize("args, needle", [
    (["train", "supervised", "--epochs", "1", "--address", "foo"], "give host:port"),
    (["tune", "supervised", "--address", "foo"], "give host:port"),
    (["tune", "supervised", "--address", "http://x:1"], "give host:port"),
    (["tune", "supervised", "--storage", "foo://bar"], "unknown scheme 'foo'"),
    (["tune", "supervised", "--name", "../../x"], "plain folder name inside --storage"),
    (["tune", "supervised", "--name", "/abs"], "plain folder name inside --storage"),
    # config x dataset, found by building the method before Ray starts (not inside a Ray worker)
    (["train", "entropy", "--dataset", "circles", "--labels", "8", "--set", "gamma=1.0"], "gamma: 1 > 0 needs"),
    (["tune", "entropy", "--dataset", "circles", "--labels", "8", "--set", "gamma=1.0"], "gamma: 1 > 0 needs"),
    (["tune", "supervised", "--name", "x", "--resume", "--storage", "/nonexistent/s"], "nothing to resume"),
])
def test_bad_options_are_one_line(tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    before = set(Path(tmp_path).rglob("*"))
    _one_line_error(CliRunner().invoke(main, args), needle)
    assert not (tmp_path.parent.parent / "x").exists()
    assert {p for p in Path(tmp_path).rglob("*") if ".ssl_ray_write_test" not in p.name} - before <= {
        tmp_path / "ssl_ray_runs", tmp_path / "ssl_ray_runs" / "tune"}


def test_report_on_damaged_experiments(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "results.parquet").write_bytes(b"PAR1 not really parquet")
    _one_line_error(CliRunner().invoke(main, ["report", str(exp)]), "results.parquet is damaged")
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist([{"trial_id": "a", "status": "TERMINATED"}]), exp / "results.parquet")
    (exp / "summary.json").write_bytes(b"{\"best\": ")
    _one_line_error(CliRunner().invoke(main, ["report", str(exp)]), "summary.json is damaged")
    (exp / "summary.json").write_text("{}")
    r = CliRunner().invoke(main, ["report", str(exp), "--output", str(tmp_path / "missing" / "t.md")])
    _one_line_error(r, "does not exist")
    assert CliRunner().invoke(main, ["report", str(exp), "--output", str(tmp_path / "t.md")]).exit_code == 0


def test_bad_checkpoint_error_is_one_line_naming_the_file(tmp_path):
    from ssl_ray.engine import checkpoint
    from ssl_ray.errors import SSLRayError

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"x": Evil()}, tmp_path / "state.pt")
    with pytest.raises(SSLRayError) as e:
        checkpoint.load(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "state.pt") in msg and "system" in msg
    assert not (tmp_path / "pwned").exists()


# ---- ssl-ray tensorboard ----------------------------------------------------------------------------------
def _fake_experiment(root: Path, value) -> Path:
    exp = root / "exp"
    trial = exp / "trial_fn_abc_0"
    (trial / "tensorboard").mkdir(parents=True)
    (trial / "tensorboard" / "events.out.tfevents.1.host").write_bytes(b"")
    (exp / "ssl_ray_space.json").write_text(json.dumps({"search": {"lr": {"grid": [1]}}}))
    (trial / "params.json").write_text(json.dumps({"lr": value}))
    return exp


@pytest.mark.parametrize("value", ["../../../../../../../tmp/escaped", "/etc/x", ".."])
def test_tensorboard_run_names_stay_inside_its_folder(tmp_path, value):
    exp = _fake_experiment(tmp_path, value)
    r = CliRunner().invoke(main, ["tensorboard", str(exp), "--print-only"])
    assert r.exit_code == 0, r.output
    logdir = Path(r.output.split("--logdir ")[1].split()[0])
    try:
        links = [p for p in logdir.rglob("*") if p.is_symlink()]
        assert len(links) == 1
        assert os.path.realpath(links[0].parent).startswith(os.path.realpath(logdir) + os.sep)
    finally:
        import shutil

        shutil.rmtree(logdir)


def _ppid(stat_file: Path) -> int | None:
    try:
        return int(stat_file.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def test_tensorboard_sigterm_ends_child_and_removes_folder(tmp_path):
    exp = _fake_experiment(tmp_path, 0.1)
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "ssl_ray.cli", "tensorboard", str(exp), "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline, child = time.time() + 120, None
    while time.time() < deadline and child is None:  # the child the command started (by parent PID, no names)
        child = next((int(p.parent.name) for p in Path("/proc").glob("[0-9]*/stat")
                      if _ppid(p) == proc.pid), None)
        time.sleep(0.2)
    assert child, "no TensorBoard child started"
    assert list((tmp_path / "tmp").glob("ssl_ray_tb_*"))
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    assert proc.returncode == 128 + signal.SIGTERM
    for _ in range(100):
        if not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the TensorBoard child outlived SIGTERM")
    assert not list((tmp_path / "tmp").glob("ssl_ray_tb_*"))


# ---- tune: Ctrl-C, --resume from the experiment's own files, no pickle from the storage --------------------
SPACE = """\
method: supervised
dataset: {name: digits, labels: 30}
fixed: {batch_size: 16, steps_per_epoch: 600}
search:
  lr: {grid: [0.001, 0.002, 0.003]}
scheduler: {name: fifo, max_epochs: 3}
num_samples: 1
"""


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


class _Planted:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A 3-trial search stopped by SIGINT (a real Ctrl-C: the signal to the driver's process group) after
    trial 0 finished and while trial 1 runs. Epochs of ~0.5 s (600 steps; 0.05 s with 40 steps let a fast
    machine finish the whole search between the check below and the signal: CI of 2026-12-01)."""
    root = tmp_path_factory.mktemp("sigint")
    (root / "space.yaml").write_text(SPACE)
    env = {**os.environ, "SSL_RAY_CACHE": str(root / "cache")}
    args = [sys.executable, "-m", "ssl_ray.cli", "tune", "supervised", "--space", str(root / "space.yaml"),
            "--storage", str(root / "runs"), "--name", "x", "--quiet", "--max-concurrent", "1"]
    exp = root / "runs" / "x"
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        lens = sorted(rows_per_trial(exp).values())
        if len(lens) >= 2 and lens[-1] >= 3 and lens[0] >= 1:
            break
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    return root, exp, args, env, proc.returncode, out, err


@pytest.mark.ray
def test_ctrl_c_on_tune_is_told_truly(interrupted):
    root, exp, args, env, rc, out, err = interrupted
    assert rc == 130, err[-3000:]
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    s = json.loads((exp / "summary.json").read_text())
    assert s["interrupted"] is True and s["num_stopped_early"] == 0
    # trial 0 had finished; trial 1 may finish between the check and the signal on a slow machine
    assert s["num_completed"] >= 1 and s["num_interrupted"] >= 1 and s["num_completed"] + s["num_interrupted"] == 3
    rows = pq.read_table(exp / "results.parquet").to_pylist()
    assert sorted(r["status"] for r in rows) == sorted(["TERMINATED"] * s["num_completed"]
                                                       + ["INTERRUPTED"] * s["num_interrupted"])
    assert not any(r["stopped_early"] for r in rows)


@pytest.mark.ray
@pytest.mark.parametrize("extra, needle", [
    (["--num-samples", "1"], None),  # placeholder replaced below (method mismatch)
    (["--dataset", "circles"], "--dataset circles contradicts"),
    (["--labels", "50"], "--labels 50 contradicts"),
    (["--set", "lr=0.1"], "--set lr=0.1 contradicts"),
    (["--max-epochs", "9"], "--max-epochs 9 contradicts"),
    (["--scheduler", "asha"], "--scheduler asha contradicts"),
    (["--seed", "3"], "--seed 3 contradicts"),
    (["--space", "OTHER"], "--space"),
])
def test_resume_refuses_contradictions_and_touches_nothing(interrupted, extra, needle):
    root, exp, args, env, *_ = interrupted
    other = root / "other.yaml"
    other.write_text(SPACE.replace("0.003]", "0.004]"))
    before = _hashes(exp)
    argv = ["tune", "supervised", "--storage", str(root / "runs"), "--name", "x", "--resume"]
    if needle is None:  # another method than the experiment's
        argv[1], needle, extra = "vat", "is a supervised search, not vat", []
    extra = [str(other) if e == "OTHER" else e for e in extra]
    _one_line_error(CliRunner().invoke(main, argv + extra), needle)
    assert _hashes(exp) == before


@pytest.mark.ray
def test_resume_continues_without_unpickling_anything(interrupted):
    root, exp, args, env, *_ = interrupted
    marker = root / "PWNED"
    planted = [exp / "tuner.pkl"] + list(exp.glob("*/params.pkl")) + [exp / "trial_x" / "error.pkl"]
    for p in planted:  # every pickle Ray could read back on a restore
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(pickle.dumps(_Planted(marker)))
    for p in exp.glob("experiment_state-*.json"):
        p.write_text("not even JSON")
    finished = {d.name: (d / "result.json").read_text() for d in exp.glob("trial_fn_*")
                if len((d / "result.json").read_text().splitlines()) >= 3}
    assert 1 <= len(finished) <= 2
    rows_before = {r["trial_id"]: r for r in pq.read_table(exp / "results.parquet").to_pylist()}
    # a resume may add samples (an extension): 2 x 3 grid points, the first 3 are the interrupted plan
    r = subprocess.run(args + ["--resume", "--json", "--num-samples", "2"], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not marker.exists(), "a pickle under --storage was loaded"
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["interrupted"] is False and s["num_trials"] == 6 and s["num_completed"] == 6
    rows = pq.read_table(exp / "results.parquet").to_pylist()
    hist = pq.read_table(exp / "history.parquet").to_pylist()
    for row in rows:  # each epoch reported once: the interrupted trial continued, nothing ran twice
        assert sorted(h["epoch"] for h in hist if h["trial_id"] == row["trial_id"]) == [1, 2, 3]
    for d, text in finished.items():  # the finished trial was not run again, its results kept as they were
        assert (exp / d / "result.json").read_text() == text
    done = [t for t, row in rows_before.items() if row["status"] == "TERMINATED"]
    after = {r["trial_id"]: r for r in rows}
    for t in done:
        assert after[t] == rows_before[t]
    assert sorted(r["config/lr"] for r in rows) == [0.001, 0.001, 0.002, 0.002, 0.003, 0.003]


# ---- exposure: a local instance listens on loopback only, its token is private ---------------------------
def _descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    parents = {}
    for st in Path("/proc").glob("[0-9]*/stat"):
        pp = _ppid(st)
        if pp is not None:
            parents.setdefault(pp, []).append(int(st.parent.name))
    while todo:
        p = todo.pop()
        for c in parents.get(p, []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out | {pid}


@pytest.mark.ray
def test_local_instance_listens_on_loopback_only_and_its_token_is_private(ray_local):
    import shutil

    from ssl_ray.tuning.cluster import token_path

    if not shutil.which("ss"):
        pytest.skip("needs ss (iproute2) to list listening sockets")

    @ray_local.remote
    def ping():
        return os.getpid()

    worker = ray_local.get(ping.remote())  # a worker process is up too
    mine = _descendants(os.getpid())
    assert worker in mine
    lines = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines()
    ours = [ln.split()[3] for ln in lines if any(f"pid={p}," in ln for p in mine)]
    assert len(ours) >= 5, lines  # GCS, raylet, agents, dashboard, workers...
    loopback = ("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")
    assert all(a.startswith(loopback) for a in ours), ours
    assert stat.S_IMODE(os.stat(token_path()).st_mode) == 0o600
