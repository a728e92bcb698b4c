"""What `ssl-ray train` and `ssl-ray tune` run on: the resource decisions, as plain functions of the cluster's
state (no Ray call here, so each rule is tested with the state as input; tuning/cluster.py reads the state).

The rules, the same for both commands:
- GPUs by default: 1 per worker when the cluster has GPUs, or can add nodes that have them; else 0. A cluster
  that can add nodes of kinds nobody can read (no launcher config on this node) and has no GPU up now gets no
  guess: the command asks for --gpus-per-worker / --gpus-per-trial.
- GPUs asked for must be usable: a worker count the GPUs cannot serve one each is refused, never trained on the
  CPU instead; a fraction of a GPU per worker with several workers is refused (Ray Train's NCCL ranks would
  share a GPU: "Duplicate GPU detected"); above 1, GPUs per worker are whole (Ray's own rule).
- What does not fit now: refused on a cluster that cannot grow (a local instance, a `ray start` cluster);
  submitted to wait on one that can (an autoscaler adds nodes for the pending work: Tune leaves trials
  PENDING, Train's worker group waits and retries), unless it exceeds what the cluster can grow to.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from ..errors import SSLRayError

GPU_RULE = "1 GPU per worker when the cluster has GPUs or can add them, else 0"


@dataclass(frozen=True)
class ClusterState:
    """CPUs and GPUs up now; whether nodes can be added; what it can grow to, where known (None: unknown)."""

    now: dict[str, float]
    grows: bool = False
    most: dict[str, float] | None = None
    where: str = "the cluster"
    why: str = ""  # how `grows` was decided, for the messages

    def has(self, key: str) -> float:
        return float(self.now.get(key, 0))


def local_state(num_cpus: int | None = None) -> ClusterState:
    """This machine, as a local Ray instance started by ssl-ray sees it: its CPUs, and the GPUs torch can use
    (the same count is given to ray.init, so the check before start-up and the instance agree)."""
    return ClusterState({"CPU": float(num_cpus or os.cpu_count() or 1), "GPU": float(local_gpus())},
                        grows=False, where="this machine", why="a local instance cannot add nodes")


def local_gpus() -> int:
    """GPUs torch can use on this machine (respects CUDA_VISIBLE_DEVICES); 0 on a CPU-only torch build."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_gpus(c: ClusterState, flag: str) -> float:
    """GPUs per worker when the command line does not say (GPU_RULE)."""
    if c.has("GPU") > 0:
        return 1.0
    if not c.grows:
        return 0.0
    if c.most is not None:
        return 1.0 if c.most.get("GPU", 0) > 0 else 0.0
    raise SSLRayError(f"{c.where} has no GPU now and can add nodes whose kinds this node cannot read ({c.why}): "
                      f"give {flag} 1 to wait for GPU nodes, or {flag} 0 to train on CPUs")


def check_gpu_split(workers: int, gpus: float, flag: str) -> None:
    """GPUs per worker that Ray Train and NCCL can use: whole GPUs with several workers, whole above 1."""
    if gpus > 1 and gpus != int(gpus):
        raise SSLRayError(f"{flag} {gpus:g}: above 1, GPUs per worker must be whole (Ray gives a worker either a "
                          f"share of one GPU or whole GPUs)")
    if workers > 1 and 0 < gpus < 1:
        raise SSLRayError(f"{flag} {gpus:g} with {workers} workers: data-parallel workers would share a GPU, which "
                          f"NCCL refuses ('Duplicate GPU detected'); give each worker a whole GPU ({flag} 1), or "
                          f"use one worker")


def _fits(need: dict[str, float], have: dict[str, float]) -> bool:
    return all(v <= have.get(k, 0) + 1e-9 for k, v in need.items())


def _amounts(d: dict[str, float]) -> str:
    return f"{d.get('CPU', 0):g} CPUs and {d.get('GPU', 0):g} GPUs"


def check_fits(workers: int, cpus: float, gpus: float, c: ClusterState, *, unit: str = "worker(s)",
               hint: str = "lower --workers or --cpus-per-worker") -> str | None:
    """`workers` x (cpus, gpus) must fit `c` now, or in what it can grow to. Returns None when it fits now,
    a one-line notice when the work is submitted to wait for nodes; raises SSLRayError when it never can."""
    need = {"CPU": workers * cpus, "GPU": workers * gpus}
    if _fits(need, c.now):
        return None
    head = f"{workers} {unit} need {_amounts(need)} but {c.where} has {_amounts(c.now)}"
    if not c.grows:
        return _refuse(f"{head}{' (' + c.why + ')' if c.why else ''}; {hint}")
    if c.most is not None and not _fits(need, c.most):
        return _refuse(f"{head} and can grow to at most {_amounts(c.most)}; {hint}")
    grow = f"up to {_amounts(c.most)}" if c.most is not None else "to a size ssl-ray cannot read"
    return f"waiting for nodes: {head} now and can grow {grow} ({c.why}); the work is submitted and starts when " \
           f"the nodes are up (Ctrl-C to stop)"


def _refuse(msg: str) -> Any:
    raise SSLRayError(msg)


def concurrency(workers: int, cpus: float, gpus: float, c: ClusterState, *, max_concurrent: int | None,
                n_trials: int) -> int:
    """Trials to run at once: as many as fit in what the cluster has (or can grow to), at most --max-concurrent.
    On a cluster that grows to an unknown size, every trial is submitted (the ones that do not fit wait)."""
    have = c.most if c.grows and c.most is not None else None if c.grows else c.now
    fit = max(1, n_trials)
    if have is not None:
        room = math.inf
        if cpus * workers > 0:
            room = have.get("CPU", 0) // (cpus * workers)
        if gpus > 0:
            room = min(room, have.get("GPU", 0) // (gpus * workers))
        fit = fit if room == math.inf else max(1, int(room))
    return max(1, min(fit, max_concurrent or fit))


def launcher_max(config: dict[str, Any]) -> dict[str, float] | None:
    """What a cluster launcher config (`ray up`'s YAML, as the head keeps it in ~/ray_bootstrap_config.yaml) can
    grow to: the head's resources plus, per resource, the most the worker types give within max_workers. None
    when a node type leaves its resources to be detected at start (`resources: {}`, as on the local provider)."""
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    if not types or any(not t.get("resources") for t in types.values()):
        return None
    total = dict((types.get(head) or {}).get("resources") or {})
    cap = config.get("max_workers")
    workers = [(int(t.get("max_workers", cap or 0)), dict(t.get("resources") or {}))
               for name, t in types.items() if name != head]
    for key in {k for _, r in workers for k in r}:
        left = cap if cap is not None else sum(n for n, _ in workers)
        amount = 0.0
        for n, r in sorted(workers, key=lambda w: -float(w[1].get(key, 0))):  # the richest node types first
            take = min(n, left)
            amount, left = amount + take * float(r.get(key, 0)), left - take
        total[key] = float(total.get(key, 0)) + amount
    return {k: float(v) for k, v in total.items()}
