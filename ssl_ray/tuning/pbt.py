"""Population Based Training (`scheduler: {name: pbt}`, `ssl-ray tune --scheduler pbt`): Ray Tune's
PopulationBasedTraining over our plan, its mutations built from the search space.

Every `perturbation_interval` epochs a trial is ranked against the running population by val_error: one in
the bottom `quantile_fraction` continues from the checkpoint of one in the top fraction (its weights and
optimiser moments: "exploit") with that trial's hyperparameters mutated ("explore"); the Trainer then
re-applies the new hyperparameters to the restored optimisers (Method.apply_hparams). Time is our own `epoch`;
no decision is taken at a trial's last epoch (hooks.PlanPBT). Trials checkpoint every `perturbation_interval`
epochs (and at the last), and all their checkpoints are kept, since PBT may clone any trial's last decision
checkpoint. With `synch: true` (Ray's synchronous PBT) trials wait for each other at every decision epoch; Ray
ranks the trials Tune has created so far (measured: with 3 trials and room for 2, the first decision ranked
the first two; Tune creates a trial only when it can run, under --max-concurrent).

Mutations (`hyperparam_mutations`), for the searched hyperparameters listed in `mutate` (default: every
searched one but `grid` ones; fixed ones are never touched):

- uniform, loguniform, quniform, qloguniform, randint, qrandint: with probability `resample_probability` a fresh
  draw from the distribution, else the value times 0.8 or 1.2 (Ray's perturbation), then clipped to the
  distribution's bounds and rounded to its step q (integers to integers);
- choice: with probability `resample_probability` a fresh draw from the list, else the value next to it in the
  list (left or right; Ray's rule for lists).

What PBT did is kept in the experiment: ssl_ray_pbt.json lists every exploit (which plan entry cloned which, at
which epochs, the config before and after); ssl_ray_trials.json and results.parquet hold the config each
trial ended with; Ray's own policy log is pbt_global.txt (and pbt_policy_<trial id>.txt) in the experiment
folder. A PBT experiment cannot be resumed (experiment.resume_setup says why).
"""
from __future__ import annotations

import math
from typing import Any

from ..errors import ConfigError

PERTURBED = ("uniform", "loguniform", "quniform", "qloguniform", "randint", "qrandint")
RESAMPLED = ("choice",)
PBT_FILE = "ssl_ray_pbt.json"


def mutable_keys(space) -> list[str]:
    """The searched hyperparameters PBT mutates: `scheduler.mutate`, else every searched non-grid one."""
    allowed = [k for k, p in space.search.items() if p.dist in PERTURBED + RESAMPLED]
    keys = space.scheduler.mutate
    if keys is None:
        if not allowed:
            raise ConfigError("pbt mutates searched hyperparameters, and this space searches none (grid values "
                              "are not mutated): add one under `search:`")
        return allowed
    for k in keys:
        if k not in space.search:
            raise ConfigError(f"{k!r} is not searched; PBT mutates searched hyperparameters: "
                              f"{', '.join(allowed) or 'none here'}")
        if k not in allowed:
            raise ConfigError(f"{k!r} is searched with grid, which PBT does not mutate; use choice")
    return list(dict.fromkeys(keys))


def hyperparam_mutations(space) -> dict[str, Any]:
    """Ray's `hyperparam_mutations` for this space: a Tune domain per perturbed key, the list per choice key."""
    out: dict[str, Any] = {}
    for k in mutable_keys(space):
        p = space.search[k]
        out[k] = list(p.args) if p.dist in RESAMPLED else p.to_tune()
    return out


def clip(space, config: dict[str, Any]) -> dict[str, Any]:
    """`config` with every perturbed value put back inside its distribution: clipped to [low, high] (randint's
    high is exclusive), rounded to the step q, integers kept integers. Other keys are returned as they are."""
    out = dict(config)
    for k in mutable_keys(space):
        p = space.search[k]
        if p.dist not in PERTURBED or k not in out:
            continue
        lo, hi = p.args[0], p.args[1]
        v = out[k]
        if p.dist in ("quniform", "qloguniform", "qrandint"):
            q = p.args[2]
            v = round(v / q) * q
            lo, hi = math.ceil(lo / q - 1e-9) * q, math.floor(hi / q + 1e-9) * q
        if p.dist == "randint":
            hi = hi - 1
        v = min(max(v, lo), hi)
        out[k] = int(round(v)) if p.dist in ("randint", "qrandint") else float(v)
    return out
