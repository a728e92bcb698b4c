"""Readable TensorBoard run names for one or several experiments: <experiment>/<trial>_<key=value...>."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..errors import SSLRayError


def _clean(s: str) -> str:
    """A run name as a relative path inside the log dir: safe characters only, no `..`, no leading `/`."""
    parts = [re.sub(r"[^A-Za-z0-9_.=+\-]", "_", p) for p in s.split("/")]
    return "/".join("_" if p in ("", ".", "..") else p for p in parts)


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
        try:
            searched = [str(k) for k in json.loads(meta.read_text(encoding="utf-8")).get("search", {})]
        except (ValueError, OSError, AttributeError):
            searched = []
    out = []
    for t in sorted(p.glob("*/tensorboard")):
        trial = t.parent
        parts = trial.name.split("_")  # trial_fn_<trial id>_<plan index> (tune.py's trial_dirname)
        name = f"trial{parts[3]}" if len(parts) > 3 and parts[3].isdigit() else trial.name[:40]
        params = trial / "params.json"
        if params.exists() and searched:
            try:
                cfg = json.loads(params.read_text(encoding="utf-8"))
            except (ValueError, OSError):
                cfg = {}  # an unreadable params.json only costs the run its readable name
            cfg = cfg if isinstance(cfg, dict) else {}
            name += "_" + ",".join(f"{k}={_short(cfg[k])}".replace("/", "_") for k in searched if k in cfg)
        out.append((f"{exp}/{name}", str(t.resolve())))
    if not out:
        raise SSLRayError(f"no TensorBoard files under {path} (expected <trial>/tensorboard/ or tensorboard/)")
    return out


def build_logdir(paths: list[str], root: str) -> str:
    """A TensorBoard log directory under `root` with one readable folder per run (<experiment>/<trial>_<k=v>),
    holding symbolic links to the runs' event files (Tune's trial folders have commas in their names, which
    --logdir_spec cannot take). Returns `root`."""
    items = []
    for path in paths:
        if not os.path.exists(path):
            raise SSLRayError(f"no such experiment or run directory: {path}")
        items += runs(path)
    top = os.path.realpath(root)
    for name, d in items:
        target = Path(root) / _clean(name)
        if not os.path.realpath(target).startswith(top + os.sep):  # belt and braces: never outside `root`
            raise SSLRayError(f"refusing run name {name!r}: it would leave the TensorBoard folder")
        for f in Path(d).rglob("events.out.tfevents.*"):
            link = target / f.relative_to(d)
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(f.resolve())
    return root
