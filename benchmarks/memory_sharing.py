"""Memory of K concurrent trials on one node reading the same file dataset.

A synthetic MNIST-format dataset (idx files: 60000 x 28 x 28 and 10000 x 28 x 28 random uint8) is written
into a temporary data root and loaded as `mnist`, so the real reader and the .npy cache (memory-mapped,
ssl_ray/data/registry.py) are exercised. The cache is built once by this driver; then `run_tune` runs K
trials at once. While they run, every process that maps a file of the cache is sampled from
/proc/<pid>/smaps_rollup (RSS, PSS, USS = private clean + private dirty) and /proc/<pid>/smaps (the same for
the cache files alone) every 0.5 s. The table shows every trial process in the last sample where all K
were running at once (the JSON also has each process's peaks).

If the dataset were held K times, each trial's USS would include the 45 MiB training array; memory-mapped,
the cache files' PSS per trial is (their resident size) / K. The script also prints the size of the unlabelled
pool, which BatchStream used to copy privately per trial on CPU (it now gathers batches from the shared map).

    python benchmarks/memory_sharing.py [--quick] [--trials 4]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

MB = 1024 * 1024


def write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def synthetic_mnist(root: Path, n_train: int = 60000, n_test: int = 10000) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8))
    write_idx(raw / "train-labels-idx1-ubyte", rng.integers(0, 10, n_train, dtype=np.uint8))
    write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8))
    write_idx(raw / "t10k-labels-idx1-ubyte", rng.integers(0, 10, n_test, dtype=np.uint8))


def _kb_fields(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[-1] == "kB":
            out[parts[0].rstrip(":")] = out.get(parts[0].rstrip(":"), 0) + int(parts[1])
    return out


def sample(pid: int, cache: str) -> dict[str, float] | None:
    try:
        roll = _kb_fields(Path(f"/proc/{pid}/smaps_rollup").read_text())
        smaps = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return None
    file_rss = file_pss = 0
    inside = False
    for line in smaps.splitlines():
        first = line.split(maxsplit=1)[0]
        if "-" in first and not first.endswith(":"):  # a mapping header line: addr-addr perms offset dev inode path
            inside = cache in line
        elif inside and first == "Rss:":
            file_rss += int(line.split()[1])
        elif inside and first == "Pss:":
            file_pss += int(line.split()[1])
    uss = roll.get("Private_Clean", 0) + roll.get("Private_Dirty", 0)
    return {"rss": roll.get("Rss", 0) / 1024, "pss": roll.get("Pss", 0) / 1024, "uss": uss / 1024,
            "cache_rss": file_rss / 1024, "cache_pss": file_pss / 1024}


class Sampler(threading.Thread):
    """Peak figures of every process (other than this one) mapping a file under `cache`."""

    def __init__(self, cache: str):
        super().__init__(daemon=True)
        self.cache, self.peak = cache, {}
        self.max_together = 0
        self.snapshot: list[dict[str, float]] = []  # the last round with the most processes at once
        self.stop = threading.Event()

    def pids(self) -> list[int]:
        out = []
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) == os.getpid():
                continue
            try:
                if self.cache in Path(f"/proc/{d}/maps").read_text():
                    out.append(int(d))
            except OSError:
                pass
        return out

    def run(self) -> None:
        while not self.stop.is_set():
            pids = self.pids()
            round_ = []
            for pid in pids:
                s = sample(pid, self.cache)
                if s:
                    round_.append(s)
                    p = self.peak.setdefault(pid, s)
                    for k, v in s.items():
                        p[k] = max(p[k], v)
            if round_ and len(round_) >= self.max_together:
                self.max_together, self.snapshot = len(round_), round_
            time.sleep(0.5)


def run_k(k: int, root: Path, cache: Path, tmp: str, epochs: int, steps: int) -> dict:
    from ssl_ray.tuning.spaces import parse_space
    from ssl_ray.tuning.tune import TuneOptions, run_tune

    space = parse_space(f"""
method: supervised
dataset: {{name: mnist, labels: 100, root: "{root}"}}
fixed: {{batch_size: 64, steps_per_epoch: {steps}, arch: mlp}}
search:
  lr: {{grid: [{", ".join(str(1e-3 * (i + 1)) for i in range(k))}]}}
scheduler: {{name: fifo, max_epochs: {epochs}}}
num_samples: 1
""")
    sampler = Sampler(str(cache))
    sampler.start()
    run_tune(space, TuneOptions(cpus_per_trial=2 / k, max_concurrent=k, storage=tmp, name=f"k{k}", progress=False))
    sampler.stop.set()
    sampler.join()
    peaks = list(sampler.peak.values())
    med = {key: statistics.median(p[key] for p in peaks) for key in peaks[0]} if peaks else {}
    snap = sampler.snapshot
    return {"k": k, "processes": len(peaks), "max_together": sampler.max_together, "median_peak_mb": med,
            "snapshot_mb": snap, "snapshot_sum_pss_mb": sum(p["pss"] for p in snap),
            "snapshot_sum_cache_pss_mb": sum(p["cache_pss"] for p in snap), "per_process_peak": peaks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="K = 2 only, fewer epochs")
    ap.add_argument("--trials", type=int, default=4, help="K: concurrent trials (2 CPUs / K each)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--steps-per-epoch", type=int, default=40)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    ks = [2] if a.quick else [1, a.trials]
    if a.quick:
        a.epochs = 4
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "data", Path(tmp) / "cache"
        os.environ["SSL_RAY_CACHE"] = str(cache)  # before init_ray: passed on to the trials' processes
        synthetic_mnist(root)
        from ssl_ray.data import DataSpec, load_splits

        splits = load_splits(DataSpec("mnist", labels=100, root=str(root)), 0)  # builds the .npy cache once
        files = {f.name: f.stat().st_size / MB for f in cache.rglob("*.npy")}
        unl_copy = len(splits.unl_idx) * int(np.prod(splits.info.input_shape)) / MB
        del splits
        import gc

        gc.collect()
        from ssl_ray.tuning.cluster import init_ray

        init_ray(None, num_cpus=2)
        runs = [run_k(k, root, cache, tmp, a.epochs, a.steps_per_epoch) for k in ks]
        import ray

        ray.shutdown()
    print(f"\ncache files (MB): {', '.join(f'{n} {s:.1f}' for n, s in sorted(files.items()))}; "
          f"unlabelled pool {unl_copy:.1f} MB (gathered per batch from the shared map on CPU since 2026-11-21; "
          f"before that, a private copy per trial)")
    print("K trials at once: figures (MB) of every trial process in the last sample where all K were running")
    print(f"{'K':>3s}{'procs':>6s}{'RSS':>8s}{'PSS':>8s}{'USS':>8s}{'cache RSS':>11s}{'cache PSS':>11s}"
          f"{'sum PSS':>9s}{'sum cache PSS':>15s}   (per-trial: median over the K processes)")
    for r in runs:
        snap = r["snapshot_mb"]
        if not snap:
            print(f"{r['k']:3d}  no trial process seen")
            continue
        m = {key: statistics.median(p[key] for p in snap) for key in snap[0]}
        print(f"{r['k']:3d}{len(snap):6d}{m['rss']:8.1f}{m['pss']:8.1f}{m['uss']:8.1f}{m['cache_rss']:11.1f}"
              f"{m['cache_pss']:11.1f}{r['snapshot_sum_pss_mb']:9.1f}{r['snapshot_sum_cache_pss_mb']:15.1f}")
    print(f"load average at the end (1/5/15 min): {os.getloadavg()} on {os.cpu_count()} CPUs")
    if a.json:
        Path(a.json).write_text(json.dumps({"files_mb": files, "unlabelled_copy_mb": unl_copy, "runs": runs},
                                           indent=2))


if __name__ == "__main__":
    main()
