"""`ssl-ray tune --dry-run`: the validated trial plan, without starting Ray."""
from __future__ import annotations

from typing import Any

from . import schedulers
from .schedulers.base import asha_rungs

__all__ = ["asha_rungs", "plan", "plan_text"]  # asha_rungs: figures.py reads it here


def plan(space: Any, o: Any) -> dict[str, Any]:
    """What `ssl-ray tune` would run: trials, their searched and fixed values, scheduler rungs, resources and the
    epoch budget (worst case: no trial stopped; nominal: ASHA keeps exactly 1/reduction_factor at each rung; SHA
    keeps exactly ceil(alive / reduction_factor), so its nominal budget is exact unless trials fail)."""
    s = space.scheduler
    kind = schedulers.get(s.name)
    trials = space.num_samples * space.grid_size()
    return {
        "method": space.method, "space": space.source, "dataset": space.data.name, "labels": space.data.labels,
        "data_options": dict(space.data.options or {}),
        "searched": {k: {p.dist: p.args} for k, p in space.search.items()}, "fixed": dict(space.fixed),
        "searcher": space.searcher or "random", "num_samples": space.num_samples, "grid_size": space.grid_size(),
        "trials": trials, "scheduler": s.name, "max_epochs": s.max_epochs,
        "grace_epochs": None, "reduction_factor": None, "perturbation_interval": None, "mutated": None,
        **kind.plan_fields(space), "rungs": kind.rungs(s),
        "epochs_worst_case": trials * s.max_epochs, "epochs_nominal": round(kind.nominal_epochs(s, trials), 1),
        "per_trial": {"workers": o.workers, "cpus": o.cpus_per_trial * o.workers,
                      "gpus": o.gpus_per_trial * o.workers},
        "max_concurrent": o.max_concurrent, "seed": o.seed, "confirm_seeds": o.confirm_seeds,
        "address": o.address or "a local Ray instance",
    }


def plan_text(p: dict[str, Any]) -> str:
    def dist(d: dict) -> str:
        (k, v), = d.items()
        return f"{k}{v}"

    lines = [f"dry run (nothing started): {p['method']} on {p['dataset']} ({p['labels']} labels), space {p['space']}",
             f"searcher {p['searcher']}: {p['trials']} trials ({p['num_samples']} samples"
             + (f" x {p['grid_size']} grid points" if p["grid_size"] > 1 else "") + ")"]
    lines += [f"  searched {k}: {dist(d)}" for k, d in p["searched"].items()]
    if p["fixed"]:
        lines.append("  fixed: " + ", ".join(f"{k}={v}" for k, v in p["fixed"].items()))
    kind = schedulers.get(p["scheduler"])
    lines.append(kind.plan_line(p))
    lines.append(f"epochs in all: {p['epochs_worst_case']} at worst (no trial stopped)" + kind.budget_note(p))
    r = p["per_trial"]
    lines.append(f"each trial: {r['workers']} worker(s), {r['cpus']:g} CPU, {r['gpus']:g} GPU; on {p['address']}"
                 + (f", at most {p['max_concurrent']} at once" if p["max_concurrent"] else ""))
    if p["confirm_seeds"]:
        lines.append(f"then {p['confirm_seeds']} confirmation runs of the best configuration ({p['max_epochs']} "
                     f"epochs each)")
    return "\n".join(lines)
