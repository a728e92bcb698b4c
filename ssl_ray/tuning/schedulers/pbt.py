"""Population Based Training (`scheduler: {name: pbt}`, `ssl-ray tune --scheduler pbt`): Ray Tune's
PopulationBasedTraining over our plan, its mutations built from the search space.

Every `perturbation_interval` epochs a trial is ranked against the running population by val_error: one in
the bottom `quantile_fraction` continues from the checkpoint of one in the top fraction (its weights and
optimiser moments: "exploit") with that trial's hyperparameters mutated ("explore"); the Trainer then
re-applies the new hyperparameters to the restored optimisers (Method.apply_hparams). Time is our own `epoch`;
no decision is taken at a trial's last epoch (PlanPBT). Trials checkpoint every `perturbation_interval`
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
folder. A PBT experiment cannot be resumed (`not_resumable` says why).
"""
from __future__ import annotations

import math
from typing import Any

from ray.tune.schedulers import PopulationBasedTraining

from ...errors import ConfigError, SSLRayError
from .. import ray_internals as RI
from ..options import SPEC_KEY, hparams
from ..storage import fs_of, write_json
from .base import TIME_ATTR, Fail, Kind

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


class PlanPBT(RI.ExploitHook, PopulationBasedTraining):
    """Ray's PBT over plan entries. Ray's exploit copies the whole config of the trial it clones, our SPEC_KEY meta
    with its plan index included: the exploiting trial keeps its own meta (so its own plan entry, folder and
    records), takes the clone's hyperparameters mutated and clipped into their distributions (clip), and every
    exploit is appended to <experiment>/ssl_ray_pbt.json."""

    def __init__(self, *, space, exp: str, **kw):
        super().__init__(hyperparam_mutations=hyperparam_mutations(space), **kw)
        self.space, self.exp = space, exp
        self.exploits: list[dict[str, Any]] = []

    def on_trial_result(self, tc, trial, result):
        # No decision at a trial's last epoch: Ray's PBT would still clone another trial into it (the config it
        # "ended with" then never trained) and, synchronous, wait there for the others.
        if result.get(TIME_ATTR, 0) >= self.space.scheduler.max_epochs:
            return self.CONTINUE
        return super().on_trial_result(tc, trial, result)

    def on_trial_add(self, tc, trial):
        # Ray's PBT refuses every search algorithm, since a model-based one would learn from configs PBT changes
        # under it. PlanSearcher only hands out the fixed random plan (PBT.check refuses the others), so PBT is
        # shown the controller without it.
        super().on_trial_add(RI.without_search(tc), trial)

    def exploited(self, trial, clone, new: dict[str, Any], ops: dict[str, Any], mine: dict[str, Any],
                  donor: dict[str, Any]) -> dict[str, Any]:
        """The config `trial` continues with after cloning `clone` (`new`: Ray's mutation of the clone's config;
        `mine`, `donor`: their results at this decision); the exploit is recorded."""
        new = {**clip(self.space, new), SPEC_KEY: trial.config[SPEC_KEY]}
        self.exploits.append({
            "index": trial.config[SPEC_KEY]["index"], "epoch": mine.get("epoch"),
            "clone_of": clone.config[SPEC_KEY]["index"], "clone_epoch": donor.get("epoch"),
            "config_before": hparams(trial.config), "clone_config": hparams(clone.config),
            "config": hparams(new), "operations": {k: str(v) for k, v in ops.items()}})
        fs, base = fs_of(self.exp)
        write_json(fs, f"{base}/{PBT_FILE}", self.exploits)
        return new


class PBT(Kind):
    name, order = "pbt", 3
    in_compare = False
    final_configs = "PBT: the final values"
    own_keys = ("perturbation_interval", "quantile_fraction", "resample_probability", "mutate", "synch")
    resumable = False
    not_resumable = ("a PBT search, which cannot be resumed: Ray does not save PBT's population state (scores, "
                     "decision epochs, which checkpoint each trial cloned), so its trials could not go on as PBT "
                     "would; its results so far stay there; start a new experiment")
    keep_checkpoints = None  # PBT may clone any trial's checkpoint of its last decision: keep them all

    def validate(self, s: Any, fail: Fail) -> None:
        if s.perturbation_interval >= s.max_epochs:
            raise fail(("scheduler", "perturbation_interval"), f"{s.perturbation_interval} must be below "
                       f"max_epochs {s.max_epochs}: PBT decides every perturbation_interval epochs")
        if not 0 < s.quantile_fraction <= 0.5:
            raise fail(("scheduler", "quantile_fraction"), f"must be in (0, 0.5], got {s.quantile_fraction}")
        if not 0 <= s.resample_probability <= 1:
            raise fail(("scheduler", "resample_probability"), f"must be in [0, 1], got {s.resample_probability}")

    def validate_space(self, space: Any, fail: Fail) -> None:
        """A PBT space needs searched hyperparameters to mutate; `mutate` names only searched, non-grid ones."""
        try:
            mutable_keys(space)
        except ConfigError as e:
            raise fail(("scheduler", "mutate") if space.scheduler.mutate else ("scheduler", "name"), str(e)) from None

    def check(self, space: Any, o: Any) -> None:
        if o.workers > 1:
            raise SSLRayError("--scheduler pbt runs single-worker trials: a data-parallel trial's TorchTrainer would "
                              "not load the checkpoint PBT clones into it; drop --workers")
        if space.searcher not in (None, "random"):
            raise SSLRayError(f"--scheduler pbt explores by mutating its population; it takes the random plan, not "
                              f"searcher {space.searcher}")

    def build(self, space: Any, exp: str, n_trials: int) -> Any:
        s = space.scheduler
        return PlanPBT(space=space, exp=exp, time_attr=TIME_ATTR, perturbation_interval=s.perturbation_interval,
                       quantile_fraction=s.quantile_fraction, resample_probability=s.resample_probability,
                       perturbation_factors=(1.2, 0.8), synch=s.synch)

    def checkpoint_every(self, s: Any) -> int:
        return s.perturbation_interval  # PBT clones a trial's checkpoint at its decision epochs

    def summary(self, scheduler: Any, exp: str) -> dict[str, Any] | None:
        return {"exploits": len(scheduler.exploits), "log": f"{exp}/{PBT_FILE}", "policy_log": f"{exp}/pbt_global.txt"}

    def plan_fields(self, space: Any) -> dict[str, Any]:
        return {"perturbation_interval": space.scheduler.perturbation_interval, "mutated": mutable_keys(space)}

    def plan_line(self, p: dict[str, Any]) -> str:
        return (f"PBT: {p['max_epochs']} epochs per trial; every {p['perturbation_interval']} epochs the worst "
                f"trials continue from the best ones' checkpoints, mutating {', '.join(p['mutated'])}")


KIND = PBT()
