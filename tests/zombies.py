"""A zombie process for the tests of "does this process still run" (ssl_ray.processes.runs, the experiment lock,
the temporary checkpoint folders): a child that has exited and that its parent, this test, has not reaped yet."""
from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from typing import Iterator

from ssl_ray import processes


@contextlib.contextmanager
def zombie(timeout_s: float = 30) -> Iterator[int]:
    """The PID of a child that has exited and is not reaped while the block runs; reaped after it."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + timeout_s
        while (processes.start_time(child.pid) or ("Z",))[0] != "Z":
            assert time.monotonic() < deadline, f"the child {child.pid} did not exit in {timeout_s} s"
            time.sleep(0.05)
        yield child.pid
    finally:
        child.wait()
