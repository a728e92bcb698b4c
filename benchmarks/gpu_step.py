"""GPU step time: I2GAN with CIFAR-10's conv nets (ImprovedGAN's CIFAR D, deconvolution G), bare loop vs
ssl_ray's Trainer vs `ssl-ray train` (Ray Train, one GPU worker), and GPU utilisation. Needs a CUDA GPU.

CIFAR-10 is replaced by a synthetic dataset in its official format (5 data batches of 10000 x 3 x 32 x 32
random uint8 + a test batch, written into a temporary --data-root), so no download is needed and the real
reader and memory-mapped cache are used. Step cost does not depend on the pixel values.

  bare   the method built with get_method("i2gan")(cfg, info, "cuda") and train_step on pre-made GPU batches,
         timed with torch.cuda.synchronize() around the loop, under the Trainer's CUDA settings
         (engine.loop.configure_cuda: cudnn.benchmark, TF32);
  loop   Trainer(device="cuda") in this process: train-only steps/s (the loop's samples_per_second / batch);
  ray    run_train(workers=1, gpus_per_worker=1, ray_train=True): the same figure from a Ray Train worker
         (a TorchTrainer with one GPU worker; without ray_train=True one worker trains in this process).
GPU utilisation is sampled from `nvidia-smi --query-gpu=utilization.gpu` every 0.2 s during each phase
(mean over the samples taken while that phase ran).

    python benchmarks/gpu_step.py [--quick] [--steps 300] [--epochs 3]
"""
from __future__ import annotations

import argparse
import json
import pickle
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from ssl_ray import config as C
from ssl_ray.data import BatchStream, DataSpec, load_splits
from ssl_ray.engine.loop import RunSpec, Trainer, configure_cuda
from ssl_ray.methods import get_method

CONFIG = {"batch_size": 200, "labeled_ratio": 0.5, "arch": "improvedgan", "gen_arch": "conv", "lr": 3e-4,
          "fm_norm": "l1"}  # search_spaces/i2gan-cifar10.yaml's fixed part (without the lr schedule)


def synthetic_cifar10(root: Path) -> None:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (10000, 3072), dtype=np.uint8),
             b"labels": rng.integers(0, 10, 10000).tolist()}
        with open(base / name, "wb") as f:
            pickle.dump(d, f)


class GpuUtil(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                      "-i", "0"], capture_output=True, text=True, timeout=5).stdout
                self.samples.append((time.time(), float(out.strip().splitlines()[0])))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                pass
            time.sleep(0.2)

    def mean(self, t0: float, t1: float) -> float | None:
        v = [u for t, u in self.samples if t0 <= t <= t1]
        return statistics.fmean(v) if v else None


def bare(data: DataSpec, steps: int) -> float:
    cls = get_method("i2gan")
    cfg = C.build(cls.Config, CONFIG)
    splits = load_splits(data, 0)
    stream = BatchStream(splits, cfg.batch_size, cfg.labelled_share, 0, "cuda", uses_labels=cls.uses_labels,
                         second_unlabelled=cls.second_unlabelled)
    batches = [stream.next() for _ in range(16)]
    torch.manual_seed(0)
    m = cls(cfg, splits.info, "cuda")
    m.train()
    for b in batches[:10]:
        m.train_step(b)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        m.train_step(batches[i % len(batches)])
    torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=300, help="steps per epoch (and for the bare loop)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_step.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    if a.quick:
        a.steps, a.epochs = 100, 2
    configure_cuda()  # as the Trainer does on a CUDA device
    res: dict = {"gpu": torch.cuda.get_device_name(0), "steps": a.steps, "epochs": a.epochs}
    util = GpuUtil()
    util.start()
    with tempfile.TemporaryDirectory() as tmp:
        import os

        os.environ["SSL_RAY_CACHE"] = f"{tmp}/cache"
        synthetic_cifar10(Path(tmp) / "data")
        data = DataSpec("cifar10", labels=4000, root=f"{tmp}/data")
        t0 = time.time()
        res["bare"] = bare(data, a.steps)
        res["bare_util"] = util.mean(t0, time.time())
        spec = RunSpec("i2gan", data, epochs=a.epochs, config={**CONFIG, "steps_per_epoch": a.steps})
        t0 = time.time()
        tr = Trainer(spec, device="cuda", progress=False)
        tr.fit()
        res["loop"] = statistics.median(h["samples_per_second"] for h in tr.history[1:] or tr.history) / 200
        res["loop_util"] = util.mean(t0, time.time())
        del tr
        torch.cuda.empty_cache()
        # the switches a user can turn on (ssl-ray train/tune --no-resident-data / --amp / --compile), each alone
        for name, sw in (("host_data", {"data_resident": False}), ("amp", {"amp": True}),
                         ("compile", {"compile": True})):
            t0 = time.time()
            tr = Trainer(RunSpec("i2gan", data, epochs=a.epochs, config={**CONFIG, "steps_per_epoch": a.steps}, **sw),
                         device="cuda", progress=False)
            tr.fit()
            res[name] = statistics.median(h["samples_per_second"] for h in tr.history[1:] or tr.history) / 200
            res[name + "_util"] = util.mean(t0, time.time())
            del tr
            torch.cuda.empty_cache()
        if not a.no_ray:
            from ssl_ray.tuning.train import run_train

            t0 = time.time()
            s = run_train(spec, output=f"{tmp}/ray", workers=1, gpus_per_worker=1, progress=False, ray_train=True)
            if s.get("path") != "ray-train":
                raise SystemExit(f"the ray phase ran on the {s.get('path')} path, not through Ray Train")
            res["ray_last_epoch"] = s["metrics"]["samples_per_second"] / 200
            res["ray_util"] = util.mean(t0, time.time())
            res["ray_wall_s"] = time.time() - t0
    util.stop.set()
    print(f"\ni2gan, CIFAR-10-shaped synthetic data, batch 200 (100 + 100), {res['gpu']}")
    for k in ("bare", "loop", "host_data", "amp", "compile", "ray_last_epoch"):
        if k in res:
            u = res.get(k + "_util", res.get(k.split("_")[0] + "_util"))
            ms = 1000 / res[k]
            print(f"{k:16s}{res[k]:8.1f} steps/s {ms:7.2f} ms/step  ratio {res[k] / res['bare']:.3f}  "
                  f"GPU util {u if u is None else round(u)}%")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
