"""Search algorithms for `ssl-ray tune --search NAME` (or `searcher: NAME` in a search-space YAML).

- ``random`` (default): Ray Tune's random/grid sampling (BasicVariantGenerator), seeded with --seed.
- ``optuna``: Optuna's TPE sampler through ``ray.tune.search.optuna.OptunaSearch`` (pip install "ssl-ray[optuna]").
- ``hyperopt``: HyperOpt's TPE through ``ray.tune.search.hyperopt.HyperOptSearch`` ("ssl-ray[hyperopt]").
- ``bohb``: TuneBOHB with its HyperBandForBOHB scheduler (replaces ASHA; "ssl-ray[bohb]").

The model-based searchers suggest one configuration at a time from the results so far; ASHA still stops
poor trials early (BOHB brings its own HyperBand). Grid dimensions exist only for ``random``.
The Ray-specific lines are numbered [1]..[4].
"""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError, SSLRayError

SEARCHERS = ("random", "optuna", "hyperopt", "bohb")
EXTRAS = {"optuna": "optuna", "hyperopt": "hyperopt", "bohb": "bohb"}


def check_searcher(name: str | None, space: Any) -> str:
    """Validate a searcher name against the space (before Ray starts); returns the name to use."""
    name = name or "random"
    if name not in SEARCHERS:
        raise ConfigError(f"unknown searcher {name!r}; allowed: {', '.join(SEARCHERS)}")
    if name != "random":
        grid = [k for k, p in space.search.items() if p.dist == "grid"]
        if grid:
            raise ConfigError(f"searcher {name} cannot take grid dimensions ({', '.join(grid)}); use choice, "
                              f"or --search random")
        if not space.search:
            raise ConfigError(f"searcher {name} needs at least one searched hyperparameter")
    return name


def _need(module: str, name: str) -> None:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise SSLRayError(f"--search {name} needs the {module!r} package: pip install \"ssl-ray[{EXTRAS[name]}]\""
                          ) from None


def build_searcher(name: str | None, *, metric: str, mode: str, seed: int, max_concurrent: int) -> Any:
    """The search_alg for tune.TuneConfig; None = Ray's default sampling (unseeded random, as before)."""
    if name is None:
        return None
    if name == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(max_concurrent=max_concurrent, random_state=seed)  # [1]
    if name == "optuna":
        _need("optuna", name)
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(metric=metric, mode=mode, sampler=optuna.samplers.TPESampler(seed=seed))  # [2]
    if name == "hyperopt":
        _need("hyperopt", name)
        from ray.tune.search.hyperopt import HyperOptSearch

        return HyperOptSearch(metric=metric, mode=mode, random_state_seed=seed)  # [3]
    if name == "bohb":
        _need("hpbandster", name)
        _need("ConfigSpace", name)
        from ray.tune.search.bohb import TuneBOHB

        return TuneBOHB(metric=metric, mode=mode, seed=seed)  # [4]
    raise ConfigError(f"unknown searcher {name!r}; allowed: {', '.join(SEARCHERS)}")


def bohb_scheduler(time_attr: str, max_t: int, reduction_factor: int) -> Any:
    """BOHB's own HyperBand variant (it must be paired with TuneBOHB)."""
    from ray.tune.schedulers.hb_bohb import HyperBandForBOHB

    return HyperBandForBOHB(time_attr=time_attr, max_t=max_t, reduction_factor=reduction_factor)

