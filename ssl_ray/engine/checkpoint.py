"""Checkpoints: the whole training state in one file, written atomically and loaded safely.

`state.pt` holds every model, optimiser, scheduler, EMA weights / learned prior (the method's extra
state), the batch stream's position, every rank's RNG states and the epoch. It is written to a temporary file
and renamed, so a crash never leaves half a checkpoint, and loaded with `torch.load(weights_only=True)`,
so a checkpoint from someone else cannot run code.
"""
from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import SSLRayError
from ..processes import runs

STATE_FILE = "state.pt"
TEMP_PREFIX = "ssl_ray_ckpt_pid"
ORPHAN_AGE_S = 600.0
"""A temporary checkpoint folder whose process is gone is removed once it is this old (seconds): a process that
shares the temp folder from another PID namespace (a container) may look dead while it still uploads."""


def temporary_dir() -> str:
    """A new temporary folder for a checkpoint that is handed to Ray and removed after (Trainer.fit without a
    checkpoint_dir). Its name holds this process's id: a process killed before its removal (Ray ending a trial or a
    Ray Train worker while it reports, a SIGKILL) leaves it behind, and the next call removes such orphans."""
    remove_orphans()
    return tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}_")


def remove_orphans(tmp: str | os.PathLike | None = None, min_age_s: float = ORPHAN_AGE_S) -> list[Path]:
    """Remove the temporary checkpoint folders (:func:`temporary_dir`) in `tmp` (the temp folder) whose process no
    longer runs and which were last changed at least `min_age_s` ago; the folders removed."""
    removed = []
    for d in Path(tmp or tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*_*"):
        pid = d.name[len(TEMP_PREFIX):].split("_")[0]
        try:
            old = time.time() - d.stat().st_mtime >= min_age_s
        except OSError:  # removed meanwhile
            continue
        if pid.isdigit() and old and not runs(int(pid)):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def rng_state(device: torch.device | str = "cpu") -> dict[str, Any]:
    """This process's random state: torch's CPU generator, Python's `random`, and on a CUDA device that device's
    generator (only that one: a worker draws on its own GPU, and a list of every visible GPU's state cannot be
    restored where another number of GPUs is visible). Under data parallelism each rank has its own
    (see Trainer.state)."""
    s: dict[str, Any] = {"torch": torch.get_rng_state(), "python": _py_state()}
    device = torch.device(device)
    if device.type == "cuda":
        s["cuda"] = torch.cuda.get_rng_state(device)
    return s


def _py_state() -> list:
    v, internal, gauss = random.getstate()
    return [v, list(internal), gauss]


def set_rng_state(s: dict[str, Any], device: torch.device | str = "cpu") -> None:
    """Restore :func:`rng_state`. The CUDA state goes to `device` when it is a CUDA device (a CPU run resumed from a
    GPU run's checkpoint keeps its own); a checkpoint from before this format holds a list of every visible GPU's
    state (torch.cuda.get_rng_state_all): the entry of `device`'s index is used when there is one."""
    torch.set_rng_state(s["torch"])
    v, internal, gauss = s["python"]
    random.setstate((v, tuple(internal), gauss))
    device = torch.device(device)
    cuda = s.get("cuda")
    if cuda is None or device.type != "cuda":
        return
    if isinstance(cuda, (list, tuple)):
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= len(cuda):
            return
        cuda = cuda[index]
    torch.cuda.set_rng_state(cuda, device)


def save(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    """`state` into `directory`/state.pt through a temporary file renamed over it. A write that fails (a full disk,
    the file size limit) is one SSLRayError naming the file and the disk or limit, and leaves no temporary file
    (which would keep a full disk full)."""
    d = Path(directory)
    tmp = d / f".{STATE_FILE}.tmp{os.getpid()}"
    try:
        d.mkdir(parents=True, exist_ok=True)
        torch.save(state, tmp)
        os.replace(tmp, d / STATE_FILE)
    except (OSError, RuntimeError) as e:  # torch reports a full disk as RuntimeError "... unexpected pos ..."
        from ..data.files import write_failure

        raise SSLRayError(f"cannot write the checkpoint {d / STATE_FILE}: {write_failure(d, e)}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return d / STATE_FILE


class Unreadable(SSLRayError):
    """A checkpoint's state.pt that cannot be loaded (truncated, corrupt, not a torch file, a refused pickle
    payload, no training state in it): `path` names the file, `reason` says why in a few words."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"checkpoint {path} cannot be loaded safely: {reason}")
        self.path, self.reason = path, reason


def load_failure(e: BaseException) -> str:
    """Why torch.load(weights_only=True) failed, in one line: torch's weights_only refusal is a paragraph, of which
    the line that says what was refused is kept ("UnpicklingError: Trying to load unsupported GLOBAL posix.system
    ..."); of torch's "failed finding central directory. This is an internal miniz error. If you are seeing..."
    its first sentence."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()] or [type(e).__name__]
    first = next((ln for ln in lines if "GLOBAL" in ln or "WeightsUnpickler" in ln), lines[0])
    return f"{type(e).__name__}: {first.split('. ')[0][:200]}"


def load(directory: str | os.PathLike) -> dict[str, Any]:
    """The training state in `directory`/state.pt, read with weights_only (no code from the file runs).
    SSLRayError when there is none; Unreadable when it cannot be loaded or holds no training state."""
    p = Path(directory) / STATE_FILE
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SSLRayError(f"no checkpoint at {p}") from None
    except Exception as e:  # unpickling refusal or corrupt file: one line that names the file
        raise Unreadable(p, load_failure(e)) from None
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), (int, torch.Tensor)):
        raise Unreadable(p, f"no training state in it (a {type(state).__name__}"
                            f"{' without an epoch' if isinstance(state, dict) else ''})")
    return state
