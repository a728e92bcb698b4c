"""Search algorithms for `ssl-ray tune --search NAME` (or `searcher: NAME` in a search-space YAML).

- ``random`` (default, also when no searcher is named): not built here. Every trial's values are drawn before
  the search starts (experiment.make_plan: Ray's variant generator with NumPy's RandomState(--seed), default seed
  0), saved as the plan in ssl_ray_space.json and fed to Tune in that order (hooks.PlanSearcher). So the same
  space, --seed and --num-samples draw the same configurations, and a larger --num-samples extends the plan.
- ``optuna``: Optuna's TPE sampler through ``ray.tune.search.optuna.OptunaSearch`` (pip install "ssl-ray[optuna]").
- ``hyperopt``: HyperOpt's TPE through ``ray.tune.search.hyperopt.HyperOptSearch`` ("ssl-ray[hyperopt]").
- ``bohb``: TuneBOHB with its HyperBandForBOHB scheduler (replaces ASHA; "ssl-ray[bohb]").

The model-based searchers suggest one configuration at a time from the results so far; ASHA still stops
poor trials early (BOHB brings its own HyperBand). Grid dimensions exist only for ``random``.
A searcher whose package is missing is refused by check_packages, which the CLI's tune (also under --dry-run and
--resume) and compare call before Ray starts and before anything is written, and build_searcher again. (Not
check_searcher: the space parser calls it, and a resume takes any error of the saved space's parse for damage.)

Optuna keeps its study in an SQLite file in the experiment folder (EXPERIMENT/optuna.db, study named after the
experiment) unless --optuna-storage gives another URL (e.g. postgresql://...); `optuna.load_study(study_name=NAME,
storage="sqlite:///EXPERIMENT/optuna.db")` or `optuna-dashboard sqlite:///EXPERIMENT/optuna.db` opens it, and a
resumed search continues the same study (Ray's OptunaSearch loads it: load_if_exists). Where the study is, is
written in EXPERIMENT/optuna_study.json (STUDY_FILE) when the searcher is built, so `--resume` finds it without
--optuna-storage typed again (another URL with --resume is refused: it would start another study). The URL is
kept as typed, a password in it too. An experiment in a bucket (s3://, gs://) keeps it in memory unless
--optuna-storage is given (SQLite needs a local file), and then has no STUDY_FILE: give it again with --resume.
The Ray-specific lines are numbered [1]..[4].
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Iterator

from ..errors import ConfigError, SSLRayError

SEARCHERS = ("random", "optuna", "hyperopt", "bohb")
EXTRAS = {"optuna": "optuna", "hyperopt": "hyperopt", "bohb": "bohb"}
PACKAGES = {"optuna": ("optuna",), "hyperopt": ("hyperopt",), "bohb": ("hpbandster", "ConfigSpace")}
OPTUNA_DB = "optuna.db"
STUDY_FILE = "optuna_study.json"
_STUDY: dict[str, str | None] = {}  # optuna_study(): where build_searcher puts the study when not told


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


def check_packages(name: str | None) -> None:
    """The searcher's packages import; the missing ones are named in one line, with the extra to install."""
    import importlib

    missing = []
    for module in PACKAGES.get(name or "random", ()):
        try:
            importlib.import_module(module)
        except ImportError:  # also a package blocked as None in sys.modules, or one whose own imports fail
            missing.append(repr(module))
    if missing:
        raise SSLRayError(f"--search {name} needs the {' and '.join(missing)} package{'s' if len(missing) > 1 else ''}"
                          f": pip install \"ssl-ray[{EXTRAS[name]}]\"")  # type: ignore[index]


def optuna_storage(experiment: str, storage: str | None = None) -> str | None:
    """The URL of an Optuna search's study: `storage` (--optuna-storage), else sqlite:///EXPERIMENT/optuna.db for
    a local experiment; None (in memory) for one in a bucket."""
    if storage:
        return storage
    if "://" in experiment:
        return None
    return "sqlite:///" + os.path.join(os.path.abspath(os.path.expanduser(experiment)), OPTUNA_DB)


def saved_study(experiment: str) -> dict[str, Any] | None:
    """{"study_name", "storage"} of a local experiment's Optuna study (its STUDY_FILE); None when there is none."""
    if "://" in experiment:
        return None
    try:
        with open(os.path.join(experiment, STUDY_FILE), encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise SSLRayError(f"{os.path.join(experiment, STUDY_FILE)} is unreadable ({type(e).__name__}): where the "
                          f"experiment's Optuna study is kept is lost; give --optuna-storage URL") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("storage"), str):
        raise SSLRayError(f"{os.path.join(experiment, STUDY_FILE)} names no study storage; give --optuna-storage URL")
    return doc


def _record_study(experiment: str | None, url: str, name: str) -> None:
    """Write where a local experiment's study is (STUDY_FILE), for --resume."""
    if not experiment or "://" in experiment or saved_study(experiment) is not None:
        return
    os.makedirs(experiment, exist_ok=True)
    tmp = os.path.join(experiment, STUDY_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"study_name": name, "storage": url}, f)
    os.replace(tmp, os.path.join(experiment, STUDY_FILE))


@contextlib.contextmanager
def optuna_study(experiment: str, storage: str | None = None) -> Iterator[str | None]:
    """While it lasts, build_searcher("optuna") called without `experiment` keeps its study for `experiment`
    (the CLI wraps run_tune in it; run_tune does not pass the experiment folder to build_searcher). Without
    `storage`, the one the experiment saved (a --resume); another one than it saved is refused."""
    saved = saved_study(experiment)
    if saved is not None and storage and storage != saved["storage"]:
        raise SSLRayError(f"--optuna-storage {storage}: the experiment at {experiment} keeps its Optuna study in "
                          f"{saved['storage']} (a --resume continues that one): drop --optuna-storage")
    storage = storage or (saved or {}).get("storage")
    previous = dict(_STUDY)
    _STUDY.update(experiment=experiment, storage=storage)
    try:
        yield optuna_storage(experiment, storage)
    finally:
        _STUDY.clear()
        _STUDY.update(previous)


def _optuna_storage_object(url: str, experiment: str | None) -> Any:
    import optuna

    if url.startswith("sqlite:///") and experiment and "://" not in experiment:
        os.makedirs(os.path.dirname(url[len("sqlite:///"):]) or ".", exist_ok=True)
    try:
        return optuna.storages.get_storage(url)
    except Exception as e:  # noqa: BLE001 - a bad URL, a missing driver, an unreachable database: one line
        raise SSLRayError(f"--optuna-storage {url}: Optuna cannot open it: {type(e).__name__}: {e}") from None


def build_searcher(name: str | None, *, metric: str, mode: str, seed: int, max_concurrent: int,
                   experiment: str | None = None, storage: str | None = None) -> Any:
    """The search_alg for tune.TuneConfig of a model-based searcher (tune.py builds none for random search: its
    plan is drawn with --seed beforehand, module docstring); None for None; "random": Ray's seeded sampler.
    Optuna: its study is named after `experiment` (its folder or URL) and kept at optuna_storage(experiment,
    storage); without `experiment`, the one optuna_study() set, else in memory."""
    if name is None:
        return None
    if name == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(max_concurrent=max_concurrent, random_state=seed)  # [1]
    if name == "optuna":
        check_packages(name)
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        if experiment is None and _STUDY.get("experiment"):
            experiment, storage = _STUDY["experiment"], storage or _STUDY.get("storage")
        url = optuna_storage(experiment, storage) if experiment else storage
        kw: dict[str, Any] = {}
        if url:
            kw = {"storage": _optuna_storage_object(url, experiment),
                  "study_name": os.path.basename(experiment.rstrip("/")) if experiment else "ssl-ray"}
            _record_study(experiment, url, kw["study_name"])
        return OptunaSearch(metric=metric, mode=mode, sampler=optuna.samplers.TPESampler(seed=seed), **kw)  # [2]
    if name == "hyperopt":
        check_packages(name)
        from ray.tune.search.hyperopt import HyperOptSearch

        return HyperOptSearch(metric=metric, mode=mode, random_state_seed=seed)  # [3]
    if name == "bohb":
        check_packages(name)
        from ray.tune.search.bohb import TuneBOHB

        return TuneBOHB(metric=metric, mode=mode, seed=seed)  # [4]
    raise ConfigError(f"unknown searcher {name!r}; allowed: {', '.join(SEARCHERS)}")


def bohb_scheduler(time_attr: str, max_t: int, reduction_factor: int) -> Any:
    """BOHB's own HyperBand variant (it must be paired with TuneBOHB)."""
    from ray.tune.schedulers.hb_bohb import HyperBandForBOHB

    return HyperBandForBOHB(time_attr=time_attr, max_t=max_t, reduction_factor=reduction_factor)

