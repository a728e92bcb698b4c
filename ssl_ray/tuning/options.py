"""What a search runs with, shared by the driver (tune.py), its Ray hooks (hooks.py) and `--resume`
(experiment.py): the options of `ssl-ray tune`, the key of a trial's meta in its config, a plan entry's key, and
where the experiment lives. Plain Python: importing it starts nothing."""
from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SSLRayError

SPEC_KEY = "_ssl_ray"
"""The key, in a trial's config, of the non-hyperparameter part (method, data, budget, resources: tune.trial_meta)."""


def plan_key(index: int) -> str:
    """A plan entry's key: what ASHA's rungs know a trial by (schedulers/asha), whichever Tune trial runs it."""
    return f"plan{index:05d}"


def hparams(config: dict[str, Any]) -> dict[str, Any]:
    """A trial config's hyperparameters: everything but the SPEC_KEY part."""
    return {k: v for k, v in config.items() if k != SPEC_KEY}


@dataclass
class TuneOptions:
    num_samples: int | None = None
    max_epochs: int | None = None
    grace_epochs: int | None = None
    reduction_factor: int | None = None
    scheduler: str | None = None
    perturbation_interval: int | None = None  # PBT: epochs between decisions (tuning/schedulers/pbt.py)
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None  # None: 1 per worker when the cluster has or can add GPUs, else 0
    wait_for_resources: bool | None = None  # None: wait on a joined cluster that can grow (cluster.cluster_state)
    workers: int = 1
    address: str | None = None
    storage: str | None = None
    name: str | None = None
    resume: bool = False
    confirm_seeds: int = 0
    max_failures: int = 0
    seed: int = 0
    progress: bool = True
    amp: bool = False
    compile: bool = False
    data_resident: bool = True
    search: str | None = None  # searcher (searchers.py); None = the space's `searcher`, else Ray's random sampling
    mlflow: str | None = None  # MLflow tracking URI (trackers.py)
    wandb: str | None = None  # W&B project (trackers.py)


def storage_root(storage: str | None) -> str:
    """--storage, or $SSL_RAY_RUNS/tune (default ./ssl_ray_runs/tune); a local folder as an absolute path."""
    root = storage or os.environ.get("SSL_RAY_RUNS", "ssl_ray_runs") + "/tune"
    return root if "://" in root else str(Path(root).resolve())


NAME_MAX = 255
"""The longest file name, in bytes, that Linux's and macOS's file systems take (NAME_MAX): a longer --name was an
OSError 36 traceback once the search had started."""


def check_name(name: str) -> None:
    """An experiment name is one folder inside --storage: `../x`, `a/b`, `/abs` would write elsewhere; a control
    character (a newline, a tab, an escape) makes a folder no listing or shell shows as typed; longer than
    NAME_MAX bytes, no file system takes it. One line each, before anything is written."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name or name.startswith("."):
        raise SSLRayError(f"--name {name[:80]!r} must be a plain folder name inside --storage (no '/', '..' or "
                          f"leading '.')")
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None)
    if bad is not None:
        raise SSLRayError(f"--name {name[:80]!r} holds the control character {bad!r}: give a name of printable "
                          f"characters")
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > NAME_MAX:
        raise SSLRayError(f"--name is {size} bytes long ({name[:40]!r}...): a folder name takes at most {NAME_MAX} "
                          f"bytes")
