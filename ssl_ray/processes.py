"""Whether a process of this machine still runs, and whether it is the one meant: shared by the experiment lock
(tuning/lock.py: the driver that holds a search) and the temporary checkpoint folders (engine/checkpoint.py: the
process that wrote one). Linux's /proc tells a zombie and a PID given again; where there is no /proc, the
process's existence is all that is checked."""
from __future__ import annotations

import os


def start_time(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of process `pid`, from /proc/PID/stat (fields 3 and 22);
    None where there is no such process or no /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()  # the name, in parentheses, may hold spaces
        return rest[0], int(rest[19])
    except (OSError, IndexError, ValueError):
        return None


def boot_id() -> str | None:
    """The kernel's id of this boot (None without /proc): a PID recorded under another boot is another process."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def runs(pid: int, started: int | None = None) -> bool:
    """Whether process `pid` of this machine runs. False for no such process, an id beyond any process's, a zombie
    (killed, not yet reaped by its parent) and, when `started` (its start_time, in ticks) is given, another process
    that got the PID since. Another user's process runs (we may not signal it, but it exists)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        pass
    st = start_time(pid)
    if st is None:
        return True  # no /proc to tell more
    if st[0] in ("Z", "X"):
        return False
    return started is None or st[1] == started
