"""Issue 30's adversarial pass, re-run: the same families of bad input (CLI options, search spaces, own data,
report, resume, export, predict, a full disk), each as a real `python -m ssl_ray.cli` subprocess under a
virtual-memory cap (`ulimit -v`; not the one accepted resume, which starts Ray: its object store maps a share of
the RAM) and a timeout, and counted:

- traceback: "Traceback (most recent call last)" in the output, or an exit status other than 0 and 2
  (a signal, Ray's abort, click's "Aborted!");
- hang: the timeout reached (the process group is killed);
- silent accept: exit 0 where the input cannot mean what it says (a refusal is expected);
- not one line: exit 2, but the refusal is not one `error:` line (click's own usage errors count as one; a run's
  progress lines before its failure, `[method/dataset seed=S] epoch ...`, are not counted);
- wrong refusal: one line, but not the reason expected (a `--resume --space` that was accepted and then failed to
  start Ray under the cap is a silent accept, not a refusal);
- false refusal: a documented accept (e.g. an existing --output file replaced) refused;
- code executed: a payload (a pickle, a YAML tag) meant to create a marker file, and the file exists;
- left behind: a case's own check after it ran (no temporary file after a failed write, the experiment's files
  unchanged by a refused resume).

Fixtures made first (each must exit 0): one `ssl-ray train supervised` run on digits and its export, and one
finished 2-trial `ssl-ray tune` search. Every case gets its own folder under the work folder.

    python benchmarks/adversarial_rerun.py [--work DIR] [--vmem-gib 6] [--timeout 120] [--json OUT]

Prints one line per case and a summary (the counts above, and the time and peak memory of `--space /dev/zero` and
the alias bomb, which must be refused in under 5 s and 500 MB)."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickled, it runs `touch MARKER` (what a hostile pickle does): the marker says code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@dataclass
class Case:
    family: str
    name: str
    argv: list[str]
    expect: str = "refuse"  # or "accept": a documented behaviour that exits 0
    marker: Path | None = None  # a payload's marker: must not exist afterwards
    check: Callable[[], str | None] | None = None  # afterwards: None, or what is wrong
    fsize: int | None = None  # RLIMIT_FSIZE of the child (a full disk)
    needle: str | None = None  # a refusal must say this (else it was refused for another reason: "wrong refusal")
    ray: bool = False  # an accept that starts Ray: no virtual-memory cap (its object store maps a share of RAM)
    timeout: float | None = None
    result: dict = field(default_factory=dict)


SPACE = """method: supervised
dataset: {{name: digits, labels: {labels}}}
fixed: {{batch_size: 16, steps_per_epoch: 2}}
search:
  lr: {{loguniform: [0.001, 0.01]}}
scheduler: {{name: {sched}, max_epochs: 2, grace_epochs: 1}}
num_samples: 2
"""


def _limits(vmem: int | None, fsize: int | None):
    def apply():
        os.setsid()
        if vmem is not None:
            resource.setrlimit(resource.RLIMIT_AS, (vmem, vmem))
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    return apply


HWM = """import atexit, runpy, sys
PATH = sys.argv[1]
def peak():  # this process's own peak resident memory (kB), counted from its exec, not its parent's pages at fork
    with open("/proc/self/status") as f, open(PATH, "w") as out:
        out.write(next(ln.split()[1] for ln in f if ln.startswith("VmHWM:")))
atexit.register(peak)
sys.argv = ["ssl-ray", *sys.argv[2:]]
runpy.run_module("ssl_ray.cli", run_name="__main__", alter_sys=True)
"""


def run_cli(argv: list[str], env: dict, vmem: int | None, timeout: float, fsize: int | None = None, cwd=None) -> dict:
    """One CLI subprocess (`python -m ssl_ray.cli`, through HWM): exit status, output, seconds, its own peak
    resident memory (MiB, VmHWM at its exit; None when it did not exit normally), timed out or not (then its
    process group is killed)."""
    t0 = time.monotonic()
    fd, hwm = tempfile.mkstemp(prefix="hwm")
    os.close(fd)
    proc = subprocess.Popen([sys.executable, "-c", HWM, hwm, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=cwd, preexec_fn=_limits(vmem, fsize))
    got: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda k=k, s=s: got.__setitem__(k, s.read()), daemon=True)
               for k, s in (("out", proc.stdout), ("err", proc.stderr))]
    for t in readers:
        t.start()
    hung = threading.Event()

    def kill() -> None:
        hung.set()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    timer = threading.Timer(timeout, kill)
    timer.start()
    _, status = os.waitpid(proc.pid, 0)
    timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    for t in readers:
        t.join(30)
    text = {k: got.get(k, b"").decode("utf-8", "replace") for k in ("out", "err")}
    peak = Path(hwm).read_text().strip()
    os.unlink(hwm)
    return {"rc": proc.returncode, **text, "seconds": round(time.monotonic() - t0, 2), "hung": hung.is_set(),
            "peak_mib": round(int(peak) / 1024) if peak else None}


def classify(c: Case, r: dict) -> list[str]:
    text = r["out"] + r["err"]
    problems = []
    if r["hung"]:
        problems.append("hang")
    elif "Traceback (most recent call last)" in text or r["rc"] not in (0, 2):
        problems.append("traceback")
    elif c.expect == "refuse" and r["rc"] == 0:
        problems.append("silent accept")
    elif c.expect == "refuse":
        lines = [ln for ln in r["err"].splitlines()  # a run's own progress lines ("[method/data seed] epoch ...")
                 if ln.strip() and not ln.startswith(("Usage:", "Try '", "["))]  # before its failure are not the refusal
        if len(lines) != 1 or not lines[0].startswith(("error: ", "Error: ")):
            problems.append("not one line")
        elif c.needle is not None and c.needle not in lines[0]:
            problems.append("wrong refusal")
    elif c.expect == "accept" and r["rc"] != 0:
        problems.append("false refusal")
    if c.marker is not None and c.marker.exists():
        problems.append("code executed")
    if c.check is not None:
        why = c.check()
        if why:
            problems.append(f"left behind: {why}")
    return problems


# ---- fixtures ----------------------------------------------------------------------------------------------
def fixtures(w: Path, env: dict, runs: bool = True) -> dict:
    space = w / "space.yaml"
    space.write_text(SPACE.format(labels=30, sched="asha"))
    (w / "tiny.yaml").write_text(SPACE.format(labels=30, sched="fifo").replace("num_samples: 2", "num_samples: 1"))
    steps = [["train", "supervised", "--epochs", "2", "--set", "steps_per_epoch=2", "--output", str(w / "run")],
             ["export", str(w / "run"), "--output", str(w / "model"), "--no-torchscript"],
             ["tune", "supervised", "--space", str(space), "--storage", str(w / "runs"), "--name", "exp", "--quiet",
              "--max-concurrent", "1"]]
    for argv in steps if runs else []:
        r = run_cli(argv, env, None, 900)  # the fixtures are not under test: no cap (Ray's object store maps RAM)
        if r["rc"] != 0:
            sys.exit(f"fixture failed: {' '.join(argv)}\n{r['err'][-3000:]}")
    return {"space": space, "tiny": w / "tiny.yaml", "run": w / "run", "model": w / "model",
            "storage": w / "runs", "exp": w / "runs" / "exp"}


def _png(path: Path, width: int, height: int) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4 * width))
                     + chunk(b"IEND", b""))
    return path


def _npz_declaring(path: Path, shape) -> Path:
    import zipfile

    head = repr({"descr": "<f8", "fortran_order": False, "shape": tuple(shape)}).encode()
    head += b" " * (63 - (len(head) + 10) % 64) + b"\n"
    with zipfile.ZipFile(path, "w") as z:
        for m in ("x", "y"):
            z.writestr(f"{m}.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head + b"\0" * 16)
    return path


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---- the cases, by family --------------------------------------------------------------------------------------
def cli_cases(w: Path, f: dict) -> list[Case]:
    tune = ["tune", "supervised", "--space", str(f["tiny"]), "--storage", str(w / "st")]
    train = ["train", "supervised", "--epochs", "1", "--output", str(w / "t")]
    return [Case("cli", "--name of 300 characters", [*tune, "--name", "a" * 300]),
            Case("cli", "--name with a newline", [*tune, "--name", "a\nb"]),
            Case("cli", "--name ../../x", [*tune, "--name", "../../x"]),
            Case("cli", "train --address ''", [*train, "--address", ""]),
            Case("cli", "tune --address ''", [*tune, "--address", "", "--name", "e"]),
            Case("cli", "--address foo", [*train, "--address", "foo"]),
            Case("cli", "--storage foo://bar", [*tune, "--storage", "foo://bar"]),
            Case("cli", "--val-size 100000", [*train, "--val-size", "100000"]),
            Case("cli", "--val-size 500 (digits holds out at most 260)", [*train, "--val-size", "500"]),
            Case("cli", "--val-per-label 100", [*train, "--val-per-label", "100"]),
            Case("cli", "tensorboard --port 99999", ["tensorboard", str(f["run"]), "--port", "99999", "--print-only"]),
            Case("cli", "--epochs 0", ["train", "supervised", "--epochs", "0"]),
            Case("cli", "--seed -1", [*train, "--seed", "-1"]),
            Case("cli", "--cpus-per-worker nan", [*train, "--cpus-per-worker", "nan"]),
            Case("cli", "--set lr=nan", [*train, "--set", "lr=nan"]),
            Case("cli", "--labels 0", [*train, "--labels", "0"]),
            Case("cli", "--labels 100000", [*train, "--labels", "100000"]),
            Case("cli", "--workers 0", [*train, "--workers", "0"]),
            Case("cli", "--output with a tab", ["train", "supervised", "--epochs", "1", "--output", str(w / "a\tb")])]


def space_cases(w: Path, f: dict) -> list[Case]:
    d = w / "spaces"
    d.mkdir()
    marker = d / "YAML_RAN"
    files = {
        "alias bomb (9 x 10 under fixed:)": "method: i2gan\nsearch: {tau: {uniform: [2.5, 3.0]}}\nfixed:\n"
        "  b0: &a0 [x,x,x,x,x,x,x,x,x,x]\n" + "".join(f"  b{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]\n"
                                                     for i in range(1, 9)),
        "a key given twice": "method: i2gan\nsearch:\n  tau: {uniform: [1, 2]}\n  tau: {uniform: [3, 4]}\n",
        "search: {}": "method: supervised\nsearch: {}\n",
        "empty file": "",
        "only a comment": "# nothing\n",
        "!!python/object/apply payload": f"method: supervised\nfixed: !!python/object/apply:os.system ['touch {marker}']\n",
        "unknown top key": "method: supervised\nsearhc: {lr: {uniform: [0.1, 0.2]}}\n",
        "nested 100,000 deep": "method: supervised\nfixed: " + "[" * 100_000 + "]" * 100_000 + "\n",
        "a 2 MB space": "method: supervised\n#" + "x" * 2 * 2 ** 20 + "\n",
        "lr: {uniform: [nan, 1]}": "method: supervised\nsearch: {lr: {uniform: [.nan, 1]}}\n",
    }
    cases = [Case("spaces", "--space /dev/zero", ["tune", "i2gan", "--space", "/dev/zero", "--dry-run"], timeout=30)]
    for i, (name, text) in enumerate(files.items()):
        p = d / f"s{i}.yaml"
        p.write_text(text)
        method = "i2gan" if text.startswith("method: i2gan") else "supervised"
        cases.append(Case("spaces", name, ["tune", method, "--space", str(p), "--dry-run"], marker=marker,
                          timeout=30 if "bomb" in name else None))
    (d / "latin1.yaml").write_bytes(b"method: supervised\ndescription: caf\xe9\n")
    os.mkfifo(d / "fifo.yaml")
    cases += [Case("spaces", "not UTF-8", ["tune", "supervised", "--space", str(d / "latin1.yaml"), "--dry-run"]),
              Case("spaces", "a FIFO", ["tune", "supervised", "--space", str(d / "fifo.yaml"), "--dry-run"])]
    return cases


def data_cases(w: Path, f: dict) -> list[Case]:
    import pandas as pd

    d = w / "own"
    d.mkdir()
    marker = d / "NPZ_RAN"
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(150, 4)).astype(np.float32), np.arange(150) % 3
    np.savez(d / "good.npz", x=x, y=y)
    (d / "truncated.npz").write_bytes((d / "good.npz").read_bytes()[:600])
    (d / "empty.npz").write_bytes(b"")
    os.mkfifo(d / "fifo.csv")
    np.savez(d / "nofeatures.npz", x=np.zeros((150, 0), np.float32), y=y)
    np.savez(d / "payload.npz", x=x, y=np.array([Payload(marker)] * 150, dtype=object))
    _npz_declaring(d / "huge.npz", (2 ** 31,))
    np.savez(d / "nan_labels.npz", x=x, y=np.where(np.arange(150) == 7, np.nan, y))
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "label": np.array(["b", " b", "b ", "a", "a\t"] * 30)}).to_csv(
        d / "spaces.csv", index=False)

    def train(name, path, dataset="npz", expect="refuse", extra=()):
        return Case("own data", name, ["train", "supervised", "--dataset", dataset, "--data-opt", f"path={path}",
                                       "--labels", "9", "--epochs", "1", "--set", "steps_per_epoch=2", "--output",
                                       str(d / f"out-{len(name)}"), *extra], expect=expect, marker=marker)
    return [train("a truncated .npz", d / "truncated.npz"), train("an empty .npz", d / "empty.npz"),
            train("a FIFO csv", d / "fifo.csv", "csv"), train("x of shape (150, 0)", d / "nofeatures.npz"),
            train("pickled labels with a payload", d / "payload.npz"),
            train("a member declaring 17 GB", d / "huge.npz"), train("a NaN label", d / "nan_labels.npz"),
            train("path=/dev/zero", "/dev/zero"), train("path= a folder", d, "csv"),
            train("labels 'b', ' b', 'b ' (documented: one class b)", d / "spaces.csv", "csv", "accept",
                  ["--labels", "4"])]


def report_cases(w: Path, f: dict) -> list[Case]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = w / "report"

    def exp(name: str, summary: bytes | None, table=None) -> str:
        e = d / name
        e.mkdir(parents=True)
        pq.write_table(table if table is not None else pa.Table.from_pylist(
            [{"trial_id": "a", "status": "TERMINATED", "stopped_early": False, "best_val_error": 10.0}]),
            e / "results.parquet")
        if summary is not None:
            (e / "summary.json").write_bytes(summary)
        return str(e)
    deep = exp("deep", b"[" * 200_000 + b"]" * 200_000)
    damaged = exp("damaged", b"{}")
    (Path(damaged) / "results.parquet").write_bytes(b"PAR1 not really")
    (d / "existing.md").write_text("old\n")
    (d / "folder").mkdir()
    real = str(f["exp"])
    return [Case("report", "summary.json nested 200,000 deep", ["report", deep]),
            Case("report", 'summary.json with "best": "x"', ["report", exp("best", b'{"best": "x"}')]),
            Case("report", "a Parquet file of another schema",
                 ["report", exp("other", b"{}", pa.Table.from_pylist([{"a": 1, "b": 2.0}] * 3))]),
            Case("report", "a damaged results.parquet", ["report", damaged]),
            Case("report", "--output into /proc", ["report", real, "--output", "/proc/x.md"]),
            Case("report", "--output onto a folder", ["report", real, "--output", str(d / "folder")]),
            Case("report", "--format parquet --output onto a folder",
                 ["report", real, "--format", "parquet", "--output", str(d / "folder")]),
            Case("report", "--output onto an existing file (documented: replaced)",
                 ["report", real, "--output", str(d / "existing.md")], expect="accept")]


def resume_cases(w: Path, f: dict) -> list[Case]:
    d = w / "resume"
    d.mkdir()
    (d / "labels.yaml").write_text(SPACE.format(labels=40, sched="asha"))
    (d / "fifo.yaml").write_text(SPACE.format(labels=30, sched="fifo"))
    before = _hashes(f["exp"])

    def unchanged() -> str | None:
        return None if _hashes(f["exp"]) == before else "the experiment's files changed"
    base = ["tune", "supervised", "--storage", str(f["storage"]), "--name", "exp", "--resume"]
    cases = [Case("resume", "--labels 50", [*base, "--labels", "50"], check=unchanged, needle="contradicts"),
             Case("resume", "--space with another labels", [*base, "--space", str(d / "labels.yaml")], check=unchanged,
                  needle="contradicts"),
             Case("resume", "--space with another scheduler", [*base, "--space", str(d / "fifo.yaml")],
                  check=unchanged, needle="contradicts"),
             Case("resume", "--scheduler fifo", [*base, "--scheduler", "fifo"], check=unchanged, needle="contradicts"),
             Case("resume", "--set lr=0.1", [*base, "--set", "lr=0.1"], check=unchanged, needle="contradicts"),
             Case("resume", "another method", ["tune", "vat", *base[2:]], check=unchanged,
                  needle="is a supervised search, not vat"),
             Case("resume", "nothing started there", ["tune", "supervised", "--storage", str(d), "--name", "none",
                                                      "--resume"], needle="nothing to resume")]
    marker = d / "PICKLE_RAN"
    copy = d / "runs"
    shutil.copytree(f["storage"], copy)
    for p in [copy / "exp" / "tuner.pkl", *(copy / "exp").glob("*/params.pkl")]:
        p.write_bytes(__import__("pickle").dumps(Payload(marker)))
    cases.append(Case("resume", "planted tuner.pkl/params.pkl (documented: never unpickled)",
                      ["tune", "supervised", "--storage", str(copy), "--name", "exp", "--resume", "--quiet"],
                      expect="accept", marker=marker, timeout=600, ray=True))
    return cases


def export_cases(w: Path, f: dict) -> list[Case]:
    import torch

    d = w / "export"
    d.mkdir()
    marker = d / "STATE_RAN"
    copy = d / "copy"
    shutil.copytree(f["run"], copy)  # result.json keeps the original's absolute checkpoint path
    escape = d / "escape"
    shutil.copytree(f["run"], escape)
    doc = json.loads((escape / "result.json").read_text())
    doc["checkpoint"] = "../../run/checkpoint"  # the original run's checkpoint, outside the copy
    (escape / "result.json").write_text(json.dumps(doc))
    bad = d / "payload"
    shutil.copytree(f["run"], bad)
    for st in bad.rglob("state.pt"):
        torch.save({"x": Payload(marker)}, st)
    (d / "afile").write_text("x")
    return [Case("export", "a copied run (documented: its own checkpoint)", ["export", str(copy), "--output",
                                                                              str(d / "out1"), "--no-torchscript"],
                 expect="accept"),
            Case("export", "a stored checkpoint path leaving the folder", ["export", str(escape), "--output",
                                                                           str(d / "out2")]),
            Case("export", "a state.pt whose pickle runs a command", ["export", str(bad), "--output", str(d / "out3")],
                 marker=marker),
            Case("export", "--output onto a file", ["export", str(f["run"]), "--output", str(d / "afile")]),
            Case("export", "--output into /proc", ["export", str(f["run"]), "--output", "/proc/x"])]


def predict_cases(w: Path, f: dict) -> list[Case]:
    import torch

    d = w / "predict"
    d.mkdir()
    marker = d / "NPY_RAN"
    model = str(f["model"])
    np.save(d / "payload.npy", np.array([Payload(marker)], dtype=object), allow_pickle=True)
    (d / "pickled.npy").write_bytes(__import__("pickle").dumps(Payload(marker)))
    _png(d / "bomb.png", 20000, 20000)
    a = np.zeros((4, 1, 8, 8), np.float32)
    a[2, 0, 3, 3] = np.nan
    np.save(d / "nan.npy", a)
    np.save(d / "empty.npy", np.zeros((0, 1, 8, 8), np.uint8))
    np.save(d / "ok.npy", np.zeros((2, 1, 8, 8), np.float32))
    os.mkfifo(d / "fifo.npy")
    (d / "folder").mkdir()
    (d / "existing.txt").write_text("old\n")
    bad_model = d / "badmodel"
    shutil.copytree(f["model"], bad_model)
    torch.save({"x": Payload(marker)}, bad_model / "model.pt")
    ok = str(d / "ok.npy")
    return [Case("predict", "an object .npy whose pickle runs a command", ["predict", model, str(d / "payload.npy")],
                 marker=marker),
            Case("predict", "a pickle named .npy", ["predict", model, str(d / "pickled.npy")], marker=marker),
            Case("predict", "a 20000 x 20000 PNG", ["predict", model, str(d / "bomb.png")]),
            Case("predict", "NaN inputs", ["predict", model, str(d / "nan.npy")]),
            Case("predict", "0 samples", ["predict", model, str(d / "empty.npy")]),
            Case("predict", "a FIFO", ["predict", model, str(d / "fifo.npy")]),
            Case("predict", "--output into /proc", ["predict", model, ok, "--output", "/proc/x.txt"]),
            Case("predict", "--output onto a folder", ["predict", model, ok, "--output", str(d / "folder")]),
            Case("predict", "a model.pt whose pickle runs a command", ["predict", str(bad_model), ok], marker=marker),
            Case("predict", "--output onto an existing file (documented: replaced)",
                 ["predict", model, ok, "--output", str(d / "existing.txt")], expect="accept")]


def disk_cases(w: Path, f: dict) -> list[Case]:
    def no_temp(out: Path) -> Callable[[], str | None]:
        def check() -> str | None:
            left = [str(p) for p in out.rglob("*") if ".tmp" in p.name]
            return f"{len(left)} temporary file(s): {left[:2]}" if left else None
        return check
    cases = []
    for what, limit in (("whose checkpoint does not fit (ulimit -f 100 KiB)", 100 * 1024),
                        ("on a disk full from the start (ulimit -f 1 KiB)", 1024)):
        out = w / "disk" / str(limit)
        cases.append(Case("full disk", f"a fresh train {what}", ["train", "supervised", "--epochs", "2", "--set",
                                                                 "steps_per_epoch=2", "--output", str(out)],
                          check=no_temp(out), fsize=limit, needle="cannot write"))
    return cases


FAMILIES = {"cli": cli_cases, "spaces": space_cases, "own data": data_cases, "report": report_cases,
            "resume": resume_cases, "export": export_cases, "predict": predict_cases, "full disk": disk_cases}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=None, help="work folder (default: a new temporary one, removed at the end)")
    ap.add_argument("--vmem-gib", type=float, default=6.0, help="ulimit -v of every case (torch maps ~3.4 GiB)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds before a case counts as a hang")
    ap.add_argument("--json", default=None, help="also write every case's result here")
    ap.add_argument("--families", default=None, help="only these families, comma-separated (cli, spaces, own data, "
                    "report, resume, export, predict, full disk); the trained fixtures only when one needs them")
    args = ap.parse_args()
    w = Path(args.work or tempfile.mkdtemp(prefix="ssl_ray_adv_"))
    w.mkdir(parents=True, exist_ok=True)
    vmem = int(args.vmem_gib * 2 ** 30)
    env = {**os.environ, "SSL_RAY_CACHE": str(w / "cache"), "SSL_RAY_RUNS": str(w / "ssl_ray_runs"),
           "PYTHONDONTWRITEBYTECODE": "1"}
    t0 = time.time()
    chosen = None if args.families is None else {x.strip() for x in args.families.split(",")}
    unknown = (chosen or set()) - set(FAMILIES)
    if unknown:
        sys.exit(f"unknown families {sorted(unknown)}; known: {', '.join(FAMILIES)}")
    families = [fam for name, fam in FAMILIES.items() if chosen is None or name in chosen]
    f = fixtures(w, env, runs=any(fam in (report_cases, resume_cases, export_cases, predict_cases)
                                        for fam in families))
    cases = [c for family in families for c in family(w, f)]
    counts: dict[str, int] = {}
    for c in cases:
        r = run_cli(c.argv, env, None if c.ray else vmem, c.timeout or args.timeout, c.fsize, cwd=w)
        c.result = {"rc": r["rc"], "seconds": r["seconds"], "peak_mib": r["peak_mib"],
                    "problems": classify(c, r), "last_line": (r["err"].strip().splitlines() or [""])[-1][:240]}
        for p in c.result["problems"]:
            counts[p.split(":")[0]] = counts.get(p.split(":")[0], 0) + 1
        mark = "ok  " if not c.result["problems"] else "FAIL"
        print(f"{mark} [{c.family}] {c.name}: exit {r['rc']} in {r['seconds']:.1f}s, {r['peak_mib']} MiB"
              f"{'; ' + ', '.join(c.result['problems']) if c.result['problems'] else ''}\n      {c.result['last_line']}",
              flush=True)
    summary = {"cases": len(cases), "ok": sum(not c.result["problems"] for c in cases),
               "counts": {k: counts.get(k, 0) for k in ("traceback", "hang", "silent accept", "not one line",
                                                        "wrong refusal", "false refusal", "code executed",
                                                        "left behind")},
               "families": sorted({c.family for c in cases}), "seconds": round(time.time() - t0),
               "memory_caps": {c.name: c.result for c in cases if c.name in ("--space /dev/zero",
                                                                             "alias bomb (9 x 10 under fixed:)")},
               "vmem_gib": args.vmem_gib, "load": os.getloadavg()}
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "cases": [
            {"family": c.family, "name": c.name, "argv": c.argv, "expect": c.expect, **c.result} for c in cases]},
            indent=1, default=str))
    if not args.work:
        shutil.rmtree(w, ignore_errors=True)


if __name__ == "__main__":
    main()
