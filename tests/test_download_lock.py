"""`--download` on a fresh node: trials that start together take turns on the dataset root's lock file, so
only one fetches; the others find the files (the race of issue 17). Two real processes, no network."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

# One "trial": downloads into ROOT unless the file is there (what torchvision does), logging when it held
# the lock. Each process says it is about to download (a ready file); the fetch waits until both are, and
# 1 s more, so that without the lock the other process would be fetching at the same time.
TRIAL = r"""
import os, sys, time
from pathlib import Path
from ssl_ray.data import vision
root, log, tmp = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
def fetch():
    t0 = time.time()
    target = root / "archive.bin"
    fetched = not target.exists()
    if fetched:
        while len(list(tmp.glob("ready-*"))) < 2 and time.time() < t0 + 60:
            time.sleep(0.01)
        time.sleep(1.0)
        target.write_bytes(b"x" * 1000)
    with open(log, "a") as f:
        f.write(f"{os.getpid()} {t0} {time.time()} {int(fetched)}\n")
(tmp / f"ready-{os.getpid()}").touch()
vision._download("toy", fetch, root)
"""

def test_two_processes_downloading_into_one_root_take_turns(tmp_path):
    root, log = tmp_path / "data", tmp_path / "log.txt"
    procs = [subprocess.Popen([sys.executable, "-c", TRIAL, str(root), str(log), str(tmp_path)]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    rows = sorted(tuple(float(x) for x in line.split()[1:]) for line in log.read_text().splitlines())
    assert len(rows) == 2
    (a0, a1, a_fetched), (b0, b1, b_fetched) = rows
    assert b0 >= a1, f"the two fetches overlapped: {rows}"
    assert (a_fetched, b_fetched) == (1.0, 0.0)  # the second found the first one's file
    assert (root / "archive.bin").stat().st_size == 1000
    assert (root / ".ssl_ray_download.lock").exists()
    assert a1 - a0 >= 1.0
