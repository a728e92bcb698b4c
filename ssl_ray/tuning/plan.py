"""`ssl-ray tune --dry-run`: the validated trial plan, without starting Ray."""
from __future__ import annotations

import math
from typing import Any


def asha_rungs(max_epochs: int, grace: int, rf: int) -> list[int]:
    """The epochs at which ASHA decides (Ray's _Bracket with one bracket: grace * rf^k below max_epochs)."""
    n = int(math.log(max_epochs / grace) / math.log(rf) + 1)
    return [m for m in (grace * rf ** k for k in range(n)) if m < max_epochs]


def plan(space: Any, o: Any) -> dict[str, Any]:
    """What `ssl-ray tune` would run: trials, their searched and fixed values, scheduler rungs, resources and the
    epoch budget (worst case: no trial stopped; nominal: ASHA keeps exactly 1/reduction_factor at each rung; SHA
    keeps exactly ceil(alive / reduction_factor), so its nominal budget is exact unless trials fail)."""
    s = space.scheduler
    trials = space.num_samples * space.grid_size()
    halving = s.name in ("asha", "sha")
    rungs = asha_rungs(s.max_epochs, s.grace_epochs, s.reduction_factor) if halving else []
    worst = trials * s.max_epochs
    nominal, alive, last = 0.0, float(trials), 0
    for m in rungs + [s.max_epochs]:
        nominal += alive * (m - last)
        alive, last = (math.ceil(alive / s.reduction_factor) if s.name == "sha" else alive / s.reduction_factor), m
    return {
        "method": space.method, "space": space.source, "dataset": space.data.name, "labels": space.data.labels,
        "data_options": dict(space.data.options or {}),
        "searched": {k: {p.dist: p.args} for k, p in space.search.items()}, "fixed": dict(space.fixed),
        "searcher": space.searcher or "random", "num_samples": space.num_samples, "grid_size": space.grid_size(),
        "trials": trials, "scheduler": s.name, "max_epochs": s.max_epochs,
        "grace_epochs": s.grace_epochs if halving else None,
        "reduction_factor": s.reduction_factor if halving else None, "rungs": rungs,
        "perturbation_interval": s.perturbation_interval if s.name == "pbt" else None,
        "mutated": _mutated(space) if s.name == "pbt" else None,
        "epochs_worst_case": worst, "epochs_nominal": round(nominal if halving else worst, 1),
        "per_trial": {"workers": o.workers, "cpus": o.cpus_per_trial * o.workers,
                      "gpus": o.gpus_per_trial * o.workers},
        "max_concurrent": o.max_concurrent, "seed": o.seed, "confirm_seeds": o.confirm_seeds,
        "address": o.address or "a local Ray instance",
    }


def _mutated(space: Any) -> list[str]:
    from .pbt import mutable_keys

    return mutable_keys(space)


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
    at = ", ".join(map(str, p["rungs"])) or "(none: grace reaches max)"  # ASHA's and SHA's decision epochs
    if p["scheduler"] == "asha":
        lines.append(f"ASHA: up to {p['max_epochs']} epochs per trial, decisions at epochs {at}, "
                     f"keeping 1/{p['reduction_factor']}")
    elif p["scheduler"] == "sha":
        lines.append(f"SHA (synchronous): up to {p['max_epochs']} epochs per trial; at epochs {at} every trial waits "
                     f"for all the others, then the best 1/{p['reduction_factor']} (rounded up) go on")
    elif p["scheduler"] == "pbt":
        lines.append(f"PBT: {p['max_epochs']} epochs per trial; every {p['perturbation_interval']} epochs the worst "
                     f"trials continue from the best ones' checkpoints, mutating {', '.join(p['mutated'])}")
    elif p["scheduler"] == "bohb":
        lines.append(f"BOHB's HyperBand: up to {p['max_epochs']} epochs per trial, brackets chosen by TuneBOHB")
    else:
        lines.append(f"FIFO: every trial runs {p['max_epochs']} epochs")
    lines.append(f"epochs in all: {p['epochs_worst_case']} at worst (no trial stopped)" + (
        f", about {p['epochs_nominal']:g} if ASHA keeps exactly 1/{p['reduction_factor']} at each decision"
        if p["scheduler"] == "asha" else f", {p['epochs_nominal']:g} with SHA (unless trials fail)"
        if p["scheduler"] == "sha" else ""))
    r = p["per_trial"]
    lines.append(f"each trial: {r['workers']} worker(s), {r['cpus']:g} CPU, {r['gpus']:g} GPU; on {p['address']}"
                 + (f", at most {p['max_concurrent']} at once" if p["max_concurrent"] else ""))
    if p["confirm_seeds"]:
        lines.append(f"then {p['confirm_seeds']} confirmation runs of the best configuration ({p['max_epochs']} "
                     f"epochs each)")
    return "\n".join(lines)
