"""Checkpoints: the whole training state in one file, written atomically and loaded safely.

`state.pt` holds every model, optimiser, scheduler, EMA weights / learned prior (the method's extra
state), the batch stream's position, all RNG states and the epoch. It is written to a temporary file
and renamed, so a crash never leaves half a checkpoint, and loaded with `torch.load(weights_only=True)`,
so a checkpoint from someone else cannot run code.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import torch

from ..errors import SSLRayError

STATE_FILE = "state.pt"


def rng_state() -> dict[str, Any]:
    s: dict[str, Any] = {"torch": torch.get_rng_state(), "python": _py_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def _py_state() -> list:
    v, internal, gauss = random.getstate()
    return [v, list(internal), gauss]


def set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    v, internal, gauss = s["python"]
    random.setstate((v, tuple(internal), gauss))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def save(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{STATE_FILE}.tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, d / STATE_FILE)
    return d / STATE_FILE


def load(directory: str | os.PathLike) -> dict[str, Any]:
    p = Path(directory) / STATE_FILE
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SSLRayError(f"no checkpoint at {p}") from None
    except Exception as e:  # unpickling refusal or corrupt file: one line that names the file
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()] or [type(e).__name__]
        # torch's weights_only refusal is a paragraph: keep the line that says what was refused
        first = next((ln for ln in lines if "GLOBAL" in ln or "WeightsUnpickler" in ln), lines[0])[:300]
        raise SSLRayError(f"checkpoint {p} cannot be loaded safely: {type(e).__name__}: {first}") from None
