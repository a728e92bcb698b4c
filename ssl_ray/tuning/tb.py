"""Readable TensorBoard run names for one or several experiments: <experiment>/<trial>_<key=value...>."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..errors import SSLRayError


def _clean(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+\-/]", "_", s)


def _short(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def runs(path: str) -> list[tuple[str, str]]:
    """(run name, event-file directory) for an experiment (trials) or a train run."""
    p = Path(path)
    exp = p.name or p.resolve().name
    if (p / "tensorboard").is_dir():  # an `ssl-ray train` output directory
        return [(exp, str((p / "tensorboard").resolve()))]
    searched: list[str] = []
    meta = p / "ssl_ray_space.json"
    if meta.exists():
        searched = list(json.loads(meta.read_text()).get("search", {}))
    out = []
    for t in sorted(p.glob("*/tensorboard")):
        trial = t.parent
        label = trial.name.split("_")[0:2]
        name = "_".join(label)
        params = trial / "params.json"
        if params.exists() and searched:
            cfg = json.loads(params.read_text())
            name += "_" + ",".join(f"{k}={_short(cfg[k])}" for k in searched if k in cfg)
        out.append((f"{exp}/{name}", str(t.resolve())))
    if not out:
        raise SSLRayError(f"no TensorBoard files under {path} (expected <trial>/tensorboard/ or tensorboard/)")
    return out


def logdir_spec(paths: list[str]) -> str:
    items = []
    for path in paths:
        if not os.path.exists(path):
            raise SSLRayError(f"no such experiment or run directory: {path}")
        items += runs(path)
    return ",".join(f"{_clean(n).replace(':', '_')}:{d}" for n, d in items)
