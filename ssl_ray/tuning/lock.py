"""How a run ends when it is told to, and what it holds while it runs: SIGTERM taken as Ctrl-C (Terminated), and
the experiment's lock (one driver per experiment, for a fresh search and for `--resume` alike).

SIGTERM (what `kill PID`, batch schedulers and Kubernetes send) raises Terminated, a KeyboardInterrupt: every
`except KeyboardInterrupt` that records a run as interrupted (result.json, summary.json) records it the same way,
and the CLI exits 128 + 15 = 143 instead of Ctrl-C's 130 (cli/__init__.py). `ray.init` replaces the handler
with its own (sys.exit, which makes a running Tune abort): catch_sigterm() is called again after it. During a
search (stop_on_signals) the first Ctrl-C or SIGTERM stops the trials, which keep their checkpoints, and the
search is summarised; a second one quits at once.

The lock: <experiment>/ssl_ray.lock, JSON {host, pid, started, proc_start, boot_id, command}; `proc_start` is the
PID's start time in clock ticks since boot (/proc/PID/stat, field 22), `boot_id` the kernel's. On local storage
(and a shared mount) it is created with O_CREAT|O_EXCL, so of two drivers exactly one gets it, and it is removed on
every way out the driver sees (return, error, Ctrl-C, SIGTERM). A SIGKILL, an out-of-memory kill or a machine
that went down leave it behind: a lock of this host whose PID is gone (or a zombie, or another process since:
another start time or boot) is stale, and taken over with a one-line notice; removing a stale lock is serialised
by a second file (ssl_ray.lock.takeover) so that two drivers taking it over at once cannot remove each other's
new lock. A lock of another host cannot be checked from here: refused, naming the host and the file to delete
once that run is over. Remote storage (s3://, gs://, ... through pyarrow): best effort only - the lock is
read, written when absent and read back to check that it is ours, but object stores give no exclusive create
here, so two drivers starting within the same second could both pass."""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..errors import SSLRayError
from ..processes import boot_id, runs, start_time

__all__ = ["LOCK_FILE", "TERMINATED", "ExperimentLock", "Terminated", "catch_sigterm", "restore_sigterm",
           "stop_on_signals", "take"]

LOCK_FILE = "ssl_ray.lock"
TAKEOVER = LOCK_FILE + ".takeover"
TAKEOVER_STALE_S = 30.0
"""A takeover file older than this was left by a driver killed in the milliseconds it holds one."""


# ---- SIGTERM, as Ctrl-C ------------------------------------------------------------------------------------
class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt; the CLI exits with EXIT_CODE."""

    EXIT_CODE = 128 + signal.SIGTERM


TERMINATED = threading.Event()
"""Set by the SIGTERM handlers: the CLI exits 143 for a run recorded as interrupted (not 130)."""


def _on_sigterm(signum, frame) -> None:
    TERMINATED.set()
    raise Terminated()


def catch_sigterm() -> Any:
    """SIGTERM raises Terminated in the main thread from now on; returns the handler it replaced (None when not
    called from the main thread, where no handler can be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _on_sigterm)


def restore_sigterm(previous: Any) -> None:
    """The handler catch_sigterm returned, back in place."""
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """While inside (a search running): the first Ctrl-C or SIGTERM sets `stop` (the trials stop and keep their
    checkpoints, and the caller summarises the search); a second one raises KeyboardInterrupt or Terminated at
    once. The previous handlers are back afterwards. Outside the main thread nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame) -> None:
        term = signum == signal.SIGTERM
        if term:
            TERMINATED.set()
        if stop.is_set():
            raise Terminated() if term else KeyboardInterrupt  # the second one: quit at once
        stop.set()
        again = "SIGTERM or Ctrl-C" if term else "Ctrl-C"
        print(f"\n{'SIGTERM' if term else 'interrupt'}: stopping the trials (their checkpoints stay); {again} "
              f"again to quit at once", file=sys.stderr, flush=True)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def stopped_by() -> type[KeyboardInterrupt]:
    """The exception to raise for a run that was stopped by a signal: Terminated after a SIGTERM."""
    return Terminated if TERMINATED.is_set() else KeyboardInterrupt


# ---- the experiment's lock ---------------------------------------------------------------------------------
def _me() -> dict[str, Any]:
    st = start_time(os.getpid())
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "proc_start": st[1] if st else None, "boot_id": boot_id(), "command": shlex.join(sys.argv)}


def alive(owner: dict[str, Any]) -> bool | None:
    """Whether the driver that wrote lock `owner` still runs: None when it is another host's (not checkable)."""
    if owner.get("host") != socket.gethostname():
        return None
    if owner.get("boot_id") and boot_id() and owner["boot_id"] != boot_id():
        return False  # written before this machine last booted
    pid = owner.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return False
    return runs(pid, owner.get("proc_start"))  # a zombie, or the PID given again since, is gone


def _parse(text: str | None) -> dict[str, Any] | None:
    try:
        doc = json.loads(text) if text else None
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


@dataclass
class ExperimentLock:
    """A lock this driver holds on the experiment `exp` (its file `path` in filesystem `fs`); release() on every
    way out. `made` is the experiment folder when taking the lock created it (removed again if left empty)."""

    exp: str
    fs: Any
    path: str
    owner: dict[str, Any]
    made: str | None = None
    held: bool = field(default=True)

    def release(self) -> None:
        """Remove the lock if it is still this driver's (a lock taken over meanwhile stays)."""
        if not self.held:
            return
        self.held = False
        if _parse(_read(self.fs, self.path)) == self.owner:
            with contextlib.suppress(OSError):
                self.fs.delete_file(self.path)
        if self.made is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self.made)  # only when empty: nothing else was written

    def __enter__(self) -> ExperimentLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read(fs, path: str) -> str | None:
    from .storage import read_text

    try:
        return read_text(fs, path)
    except (SSLRayError, OSError):
        return ""


def _refuse(exp: str, path: str, owner: dict[str, Any], live: bool | None) -> SSLRayError:
    who = f"PID {owner.get('pid')} on {owner.get('host')} since {owner.get('started')}"
    if live is None:
        return SSLRayError(f"the experiment at {exp} is locked by {who}, another machine (not checkable from "
                           f"here); if that run is over, delete {path} and try again")
    return SSLRayError(f"the experiment at {exp} is being run by {who}; wait for it or end it (kill "
                       f"{owner.get('pid')}), then --resume it")


def _judge(exp: str, path: str, text: str | None, waited: float) -> dict[str, Any] | None:
    """The lock found at `path`: refused (SSLRayError) while its driver lives; the stale owner to remove (its
    content: {} for a file that is empty or damaged for more than a few seconds); None to look again."""
    owner = _parse(text)
    if owner is None:
        return {} if waited > 3.0 else None  # being written now, or left half-written by a killed driver
    live = alive(owner)
    if live is not False:
        raise _refuse(exp, path, owner, live)
    return owner


def _remove_stale(fs, base: str, path: str, text: str | None, owner: dict[str, Any], notice: Callable) -> None:
    """Remove the stale lock whose content was `text`, if it still is (under the takeover file)."""
    guard = f"{base}/{TAKEOVER}"
    try:
        fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        with contextlib.suppress(OSError):
            if time.time() - os.path.getmtime(guard) > TAKEOVER_STALE_S:
                os.unlink(guard)
        time.sleep(0.2)
        return  # another driver is taking over: look again
    try:
        if _read(fs, path) == text:
            fs.delete_file(path)
            notice(f"notice: taking over the lock of PID {owner.get('pid')} on {owner.get('host')} since "
                   f"{owner.get('started')}: that run is no longer running" if owner else
                   f"notice: taking over the lock {path}: damaged (empty or not JSON), left by a driver killed as "
                   f"it wrote it")
    finally:
        os.close(fd)
        os.unlink(guard)


def take(exp: str, notice: Callable[[str], None] | None = None) -> ExperimentLock:
    """Take the lock of experiment `exp` (a local folder or a URI), creating its folder; SSLRayError (one line)
    while another driver holds it. A stale lock is taken over, `notice` (default: stderr) told in one line."""
    from .storage import fs_of

    fs, base = fs_of(exp)
    tell = notice or (lambda s: print(s, file=sys.stderr, flush=True))
    path = f"{base}/{LOCK_FILE}"
    import pyarrow.fs as pafs

    if not isinstance(fs, pafs.LocalFileSystem):  # file:// is local: O_EXCL there too
        return _take_remote(exp, fs, path, tell)
    made = None if os.path.isdir(base) else base
    try:
        os.makedirs(base, exist_ok=True)
    except OSError as e:
        raise SSLRayError(f"cannot create the experiment folder {base}: {e.strerror}") from None
    me, t0 = _me(), time.monotonic()
    while time.monotonic() - t0 < 30:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            text = _read(fs, path)
            if text is None:
                continue  # removed meanwhile
            owner = _judge(exp, path, text, time.monotonic() - t0)
            if owner is None:
                time.sleep(0.2)
            else:
                _remove_stale(fs, base, path, text, owner, tell)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me))
        return ExperimentLock(exp, fs, path, me, made)
    raise SSLRayError(f"could not take the lock {path} in 30 s (other drivers keep taking it over): try again")


def _take_remote(exp: str, fs, path: str, tell: Callable[[str], None]) -> ExperimentLock:
    """Best effort on an object store: read, write when absent or stale, read back."""
    from .storage import make_dirs

    text = _read(fs, path)
    if text is not None:
        owner = _judge(exp, path, text, waited=10.0)
        if owner is not None:
            tell(f"notice: taking over the lock of PID {owner.get('pid')} on {owner.get('host')}: that run is no "
                 f"longer running")
    me = _me()
    make_dirs(fs, path.rsplit("/", 1)[0])
    with fs.open_output_stream(path) as f:
        f.write(json.dumps(me).encode())
    back = _parse(_read(fs, path))
    if back != me:
        raise _refuse(exp, path, back or {}, alive(back or {}))
    return ExperimentLock(exp, fs, path, me)
