"""GPU acceptance: what a researcher's first GPU run goes through, step by step, each with PASS / FAIL / SKIP.
At most 10 minutes on one H100 / H200 (each step has a time cap; the whole run a budget). BENCHMARKS.md
("GPU acceptance") states each step's expected outcome.

    python benchmarks/gpu_acceptance.py [--json out.json]          # on a machine with a CUDA GPU
    python benchmarks/gpu_acceptance.py --cpu-smoke                 # anywhere: the same steps on the CPU, cut down

Steps:
  env        torch, CUDA, GPU name, Ray version
  methods    every registered method (the registry: new methods are covered), on 2-D points and on digits (and
             improvedgan without its data init): one short epoch with evaluation and pictures, a checkpoint
             written, restored into a fresh trainer, one more epoch; then every parameter and buffer of every
             module the method uses (EMA copies, teachers) must be on the device
  syncs      host syncs per training step of each method (the loop's batch, its augmentation, train_step),
             counted as the warnings of torch.cuda.set_sync_debug_mode("warn") over 5 steps after 2 warm-up
             steps; where they come from (file:line) when there are any
  precision  VAT's adversarial direction (a finite difference with a 1e-6 probe) under the Trainer's CUDA settings
             (TF32 on) against exact float32: mean cosine > 0.99 for an MLP and a conv net
  refusal    `ssl-ray train supervised --workers <GPUs + 1>`: refused in one line (exit 2), not trained on the CPU
  ray_train  `ssl-ray train supervised --workers 1 --ray-train --gpus-per-worker 1`: Ray Train on the GPU
  tune       `ssl-ray tune supervised --gpus-per-trial 0.5 --num-samples 2`: both trials run, at the same time
  gpu_step   benchmarks/gpu_step.py --quick: steps/s of the bare loop, the Trainer, host data, --amp,
             --compile and Ray Train, with GPU utilisation

--cpu-smoke runs the steps on the CPU with tiny budgets (syncs and gpu_step need CUDA: SKIP; the refusal
asks for a GPU the CPU machine does not have; the tune step asks for no GPU), so that a test can check the
script itself; --only and --methods cut it down further.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import torch

from ssl_ray.data import DataSpec
from ssl_ray.engine import checkpoint
from ssl_ray.engine.loop import RunSpec, Trainer
from ssl_ray.methods import list_methods

STEPS = ("env", "methods", "syncs", "precision", "refusal", "ray_train", "tune", "gpu_step")
CAPS = {"env": 10, "methods": 120, "syncs": 60, "precision": 30, "refusal": 60, "ray_train": 100, "tune": 150,
        "gpu_step": 200}
"""Seconds each step may take on the GPU machine (together 730 > 590: the budget cuts the last ones short)."""
BUDGET = 590.0
HERE = Path(__file__).resolve().parent


class Step:
    """One step's outcome: PASS, FAIL or SKIP, with a one-line detail and any figures."""

    def __init__(self, name: str):
        self.name, self.status, self.detail = name, "SKIP", ""
        self.figures: dict[str, object] = {}
        self.seconds = 0.0

    def done(self, status: str, detail: str = "", **figures) -> "Step":
        self.status, self.detail = status, detail
        self.figures.update(figures)
        return self


class Acceptance:
    def __init__(self, a: argparse.Namespace):
        self.smoke = a.cpu_smoke
        self.cuda = torch.cuda.is_available() and not self.smoke
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.gpus = torch.cuda.device_count() if self.cuda else 0
        self.methods = [m.name for m in list_methods() if not a.methods or m.name in a.methods.split(",")]
        self.t0 = time.monotonic()
        self.budget = a.budget
        self.work = Path(tempfile.mkdtemp(prefix="ssl_ray_acceptance_"))
        self.trainers: dict[str, Trainer] = {}  # from `methods`, for `syncs`

    def left(self, name: str) -> float:
        return max(5.0, min(CAPS[name] * (0.5 if self.smoke else 1), self.budget - (time.monotonic() - self.t0)))

    # ---- helpers ----------------------------------------------------------------------------------------
    def cli(self, args: list[str], name: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, SSL_RAY_RUNS=str(self.work / "runs"))
        return subprocess.run([sys.executable, "-m", "ssl_ray.cli", *args], capture_output=True, text=True,
                              timeout=self.left(name), env=env)

    def config(self) -> dict:
        # the methods' own batch sizes on the GPU; tiny ones on the CPU
        return {"steps_per_epoch": 5} if self.cuda else {"batch_size": 16, "steps_per_epoch": 2}

    def cases(self) -> list[tuple[str, str, dict]]:
        out: list[tuple[str, str, dict]] = []
        for m in self.methods:
            out.append((m, "digits", {}))
            out.append((m, "points", {}))
        if "improvedgan" in self.methods:
            out.append(("improvedgan", "digits", {"data_init": False}))
        return out

    @staticmethod
    def data(method: str, kind: str) -> DataSpec:
        cls = next(m for m in list_methods() if m.name == method)
        if kind == "digits":
            return DataSpec("digits", labels=50, val_size=200)
        name = "circles" if cls.uses_labels else "gaussians"
        return DataSpec(name, labels=8, val_size=200, options={"n_train": 1000, "n_test": 400})

    # ---- steps ----------------------------------------------------------------------------------------
    def env(self, s: Step) -> Step:
        import ray

        name = torch.cuda.get_device_name(0) if self.cuda else "none"
        f = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": name, "gpus": self.gpus,
             "ray": ray.__version__, "python": sys.version.split()[0]}
        ok = self.cuda or self.smoke
        return s.done("PASS" if ok else "FAIL", ", ".join(f"{k} {v}" for k, v in f.items())
                      + ("" if ok else ": no CUDA device (use --cpu-smoke off a GPU machine)"), **f)

    def methods_step(self, s: Step) -> Step:
        failed, placed = [], 0
        for method, kind, extra in self.cases():
            label = f"{method}/{kind}" + "".join(f" {k}={v}" for k, v in extra.items())
            try:
                def spec(epochs: int) -> RunSpec:
                    return RunSpec(method, self.data(method, kind), epochs=epochs, seed=1,
                                   config={**self.config(), **extra})
                folder = self.work / "methods" / label.replace("/", "_").replace(" ", "_")
                first = Trainer(spec(1), device=self.device, progress=False)  # pictures: in the restored run
                first.fit(checkpoint_dir=str(folder / "ckpt"))
                again = Trainer(spec(2), device=self.device, log_dir=str(folder / "tb"), progress=False)
                again.restore(checkpoint.load(folder / "ckpt"))
                again.fit()
                off = [f"{type(mod).__name__}.{n}" for mod in again.method.all_modules()
                       for n, t in list(mod.named_parameters()) + list(mod.named_buffers())
                       if t.device.type != self.device.type]
                if off:
                    failed.append(f"{label}: {len(off)} tensors off {self.device.type} ({off[0]})")
                else:
                    placed += 1
                if not extra:
                    self.trainers.setdefault(method, again)
            except Exception as e:  # noqa: BLE001 - reported, the other methods still run
                failed.append(f"{label}: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")
        detail = f"{placed}/{len(self.cases())} cases trained, restored and placed on {self.device.type}"
        return s.done("FAIL" if failed else "PASS", detail + ("; " + " | ".join(failed) if failed else ""),
                      failures=failed)

    def syncs(self, s: Step, warm: int = 2, steps: int = 5) -> Step:
        if not self.cuda:
            return s.done("SKIP", "needs CUDA (torch.cuda.set_sync_debug_mode)")
        if not self.trainers:
            return s.done("SKIP", "no trainer from the methods step")
        per, where = {}, {}
        for method, tr in self.trainers.items():
            step = tr.global_step
            for _ in range(warm):
                self._train_step(tr, step)
                step += 1
            torch.cuda.synchronize()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    for _ in range(steps):
                        self._train_step(tr, step)
                        step += 1
                finally:
                    torch.cuda.set_sync_debug_mode(0)
            syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
            per[method] = len(syncs) / steps
            where[method] = Counter(f"{Path(w.filename).name}:{w.lineno}" for w in syncs).most_common(3)
        bad = {m: v for m, v in per.items() if v > 0}
        detail = ", ".join(f"{m} {v:g}" for m, v in per.items()) + " syncs/step"
        if bad:
            detail += "; from " + "; ".join(f"{m}: {where[m]}" for m in bad)
        return s.done("FAIL" if bad else "PASS", detail, per_step=per, where=where)

    @staticmethod
    def _train_step(tr: Trainer, step: int) -> None:
        batch = tr._augmented(tr.stream.next(), step)
        with tr._autocast():
            tr.method.train_step(batch)

    def precision(self, s: Step) -> Step:
        from ssl_ray import config as C
        from ssl_ray.data import load_splits, to_float
        from ssl_ray.engine.loop import configure_cuda
        from ssl_ray.methods import get_method
        from ssl_ray.nn.modes import full_precision

        if self.cuda:
            configure_cuda()  # what every Trainer on a GPU sets
        splits = load_splits(DataSpec("digits", labels=50, val_size=200), 0)
        x = to_float(torch.as_tensor(splits.raw.x_train[:256])).to(self.device)
        cos, zero = {}, {}
        for arch in ("mlp", "conv_small"):
            torch.manual_seed(0)
            vat = get_method("vat")(C.build(get_method("vat").Config, {"arch": arch, "eps": 1.0}), splits.info,
                                    self.device)
            torch.manual_seed(1)
            r = vat.adversarial(x) - x
            with full_precision(self.device):
                torch.manual_seed(1)  # the same random start d
                ref = vat.adversarial(x) - x
            r, ref = r.flatten(1).double(), ref.flatten(1).double()
            some = ref.norm(dim=1) > 0  # float32 itself finds no direction for a few samples (a zero gradient)
            cos[arch] = float(torch.nn.functional.cosine_similarity(r[some], ref[some], dim=1).mean())
            zero[arch] = int((~some).sum())
        ok = all(c > 0.99 for c in cos.values())
        return s.done("PASS" if ok else "FAIL", "mean cosine of VAT's direction to exact float32: "
                      + ", ".join(f"{k} {v:.4f} ({zero[k]} of {len(x)} zero in float32)" for k, v in cos.items())
                      + ("" if ok else " (vat.py must run its clean pass and power iteration in nn.modes.full_precision)"),
                      cosine=cos, zero_in_float32=zero)

    def refusal(self, s: Step) -> Step:
        workers = self.gpus + 1 if self.cuda else 2
        args = ["train", "supervised", "--epochs", "1", "--workers", str(workers),
                "--output", str(self.work / "refused")]
        if not self.cuda:
            args += ["--gpus-per-worker", "1"]
        r = self.cli(args, "refusal")
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        ok = r.returncode == 2 and len(lines) == 1 and "GPU" in lines[0]
        return s.done("PASS" if ok else "FAIL", f"exit {r.returncode}: " + " / ".join(lines[-3:])[:400])

    def ray_train(self, s: Step) -> Step:
        out = self.work / "ray_train"
        r = self.cli(["train", "supervised", "--epochs", "2", "--workers", "1", "--ray-train", "--gpus-per-worker",
                      "1" if self.cuda else "0", "--output", str(out), "--json"], "ray_train")
        if r.returncode != 0:
            return s.done("FAIL", f"exit {r.returncode}: {_tail(r.stderr)}")
        summary = json.loads(r.stdout.strip().splitlines()[-1])
        ok = summary.get("path") == "ray-train" and summary.get("epochs") == 2
        return s.done("PASS" if ok else "FAIL", f"path {summary.get('path')}, {summary.get('epochs')} epochs, test "
                      f"error {summary.get('test_error'):.2f} %, {summary.get('seconds')} s", seconds=summary.get("seconds"))

    def tune(self, s: Step) -> Step:
        storage = self.work / "tune"
        gpus = "0.5" if self.cuda else "0"
        r = self.cli(["tune", "supervised", "--dataset", "digits", "--num-samples", "2", "--max-epochs", "2",
                      "--scheduler", "fifo", "--gpus-per-trial", gpus, "--cpus-per-trial", "1",
                      "--storage", str(storage), "--name", "fractional", "--json"], "tune")
        if r.returncode != 0:
            return s.done("FAIL", f"exit {r.returncode}: {_tail(r.stderr)}")
        summary = json.loads(r.stdout.strip().splitlines()[-1])
        spans = []
        for p in sorted(storage.rglob("progress.csv")):
            rows = list(csv.DictReader(p.open()))
            if rows:
                end = float(rows[-1]["timestamp"])
                spans.append((end - float(rows[-1]["time_total_s"]), end))
        overlap = len(spans) == 2 and max(a for a, _ in spans) < min(b for _, b in spans)
        ok = summary.get("num_trials") == 2 and len(spans) == 2 and overlap
        return s.done("PASS" if ok else "FAIL", f"{summary.get('num_trials')} trials at {gpus} GPU each, "
                      f"{len(spans)} with results, ran at the same time: {overlap}", overlap=overlap)

    def gpu_step(self, s: Step) -> Step:
        if not self.cuda:
            return s.done("SKIP", "needs CUDA")
        out = self.work / "gpu_step.json"
        r = subprocess.run([sys.executable, str(HERE / "gpu_step.py"), "--quick", "--json", str(out)],
                           capture_output=True, text=True, timeout=self.left("gpu_step"))
        if r.returncode != 0 or not out.exists():
            return s.done("FAIL", f"exit {r.returncode}: {_tail(r.stderr)}")
        res = json.loads(out.read_text())
        print(r.stdout.strip())
        keys = ("bare", "loop", "host_data", "amp", "compile", "ray_last_epoch")
        missing = [k for k in keys if k not in res]
        return s.done("FAIL" if missing else "PASS", ", ".join(f"{k} {res[k]:.1f}" for k in keys if k in res)
                      + " steps/s" + (f"; missing {missing}" if missing else ""), **res)


def _tail(text: str, n: int = 3) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return " / ".join(lines[-n:])[:500]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="run on the CPU with tiny budgets (tests)")
    ap.add_argument("--only", default=None, help=f"comma-separated steps out of {','.join(STEPS)}")
    ap.add_argument("--methods", default=None, help="comma-separated methods (default: every registered one)")
    ap.add_argument("--budget", type=float, default=BUDGET, help="seconds for the whole run")
    ap.add_argument("--json", default=None, help="write every step's outcome and figures here")
    a = ap.parse_args()
    only = a.only.split(",") if a.only else list(STEPS)
    unknown = set(only) - set(STEPS)
    if unknown:
        ap.error(f"unknown steps {sorted(unknown)}; choose from {', '.join(STEPS)}")
    acc = Acceptance(a)
    run = {"env": acc.env, "methods": acc.methods_step, "syncs": acc.syncs, "precision": acc.precision,
           "refusal": acc.refusal,
           "ray_train": acc.ray_train, "tune": acc.tune, "gpu_step": acc.gpu_step}
    results = []
    print(f"GPU acceptance ({'CPU smoke' if a.cpu_smoke else acc.device}), budget {a.budget:.0f} s", flush=True)
    try:
        for i, name in enumerate(n for n in STEPS if n in only):
            s = Step(name)
            t = time.monotonic()
            if time.monotonic() - acc.t0 > a.budget:
                s.done("FAIL", "not run: the time budget is spent")
            else:
                try:
                    run[name](s)
                except subprocess.TimeoutExpired as e:
                    s.done("FAIL", f"timed out after {e.timeout:.0f} s")
                except Exception as e:  # noqa: BLE001 - one step's failure is reported, the next step runs
                    s.done("FAIL", f"{type(e).__name__}: {e}"[:500])
                    traceback.print_exc()
            s.seconds = time.monotonic() - t
            results.append(s)
            print(f"[{i + 1}] {name:10s} {s.status}  ({s.seconds:.1f} s)  {s.detail}", flush=True)
    finally:
        shutil.rmtree(acc.work, ignore_errors=True)
    total = time.monotonic() - acc.t0
    fails = [s.name for s in results if s.status == "FAIL"]
    print(f"{'FAIL' if fails else 'PASS'}: {len(results) - len(fails)} of {len(results)} steps passed or skipped "
          f"in {total:.0f} s" + (f"; failed: {', '.join(fails)}" if fails else ""), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"device": str(acc.device), "seconds": total, "steps": [
            {"name": s.name, "status": s.status, "detail": s.detail, "seconds": s.seconds, "figures": s.figures}
            for s in results]}, indent=2, default=str))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
