"""Search spaces are data: `search_spaces/<method>.yaml`, validated against the method's dataclass.

Format (docs/ADDING_A_METHOD.md)::

    method: i2gan
    description: quick start on digits
    dataset: {name: digits, labels: 50}
    fixed: {batch_size: 100}
    search:
      tau: {loguniform: [1.0, 10.0]}
      n_fake: {choice: [100, 200, 400]}
    scheduler: {name: asha, max_epochs: 20, grace_epochs: 2, reduction_factor: 3}
    num_samples: 12

`scheduler` (every key optional):

- ``name``: ``asha`` (default: stops poor trials early, each decision against the results so far), ``sha``
  (synchronous successive halving: the same rungs, but each waits until every trial has reached it, so no trial
  is promoted for lack of competition; tuning/schedulers/sha.py), ``fifo`` (every trial runs max_epochs) or ``pbt``
  (Population Based Training: poor trials continue from a good trial's checkpoint with mutated
  hyperparameters; tuning/schedulers/pbt.py);
- ``max_epochs`` (20): the epochs of a trial that is never stopped;
- ASHA and SHA only: ``grace_epochs`` (2), epochs before a trial can be stopped; ``reduction_factor`` (3), keep
  1/factor of the trials at each rung;
- PBT only: ``perturbation_interval`` (4), epochs between two exploit/explore decisions of a trial (trials
  checkpoint at each; below max_epochs); ``quantile_fraction`` (0.25), the bottom fraction of trials that
  clones the top fraction, in (0, 0.5]; ``resample_probability`` (0.25), the chance that a mutated value is
  drawn afresh from its distribution instead of perturbed; ``mutate`` (all), the searched hyperparameters PBT
  mutates: by default every searched one but ``grid`` ones (tuning/schedulers/pbt.py says how each distribution mutates);
  ``synch`` (false): Ray's synchronous PBT, every trial waits at each decision epoch and the whole population
  is ranked at once (false: each trial decides on its own against the others' latest scores).

Every error names the file, the line and the key, and says what is allowed; nothing starts before the
whole document is valid.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import config as C
from ..data import DataSpec
from ..data.files import load_yaml, read_yaml_text
from ..errors import ConfigError
from ..methods import Method, get_method
from . import schedulers
from .distributions import DISTRIBUTIONS, Param, parse_param

__all__ = ["DISTRIBUTIONS", "Param", "SearchSpace", "Scheduler", "apply_sets", "check_searched", "load_space",
           "parse_space", "space_contradiction"]

# A wheel (or any non-editable install) carries the spaces inside the package, at ssl_ray/search_spaces/
# (setup.py maps the top-level search_spaces/ folder there); a source checkout or an editable install reads
# the top-level folder itself.
_PACKAGED, _CHECKOUT = (Path(__file__).resolve().parents[1] / "search_spaces",
                        Path(__file__).resolve().parents[2] / "search_spaces")
SPACES_DIR = _PACKAGED if _PACKAGED.is_dir() else _CHECKOUT

TOP_KEYS = ("method", "description", "dataset", "fixed", "search", "scheduler", "num_samples", "searcher")
SCHEDULER_KEYS = {"name": str, "max_epochs": int, "grace_epochs": int, "reduction_factor": int,
                  "perturbation_interval": int, "quantile_fraction": float, "resample_probability": float,
                  "mutate": list, "synch": bool}
DATASET_KEYS = {f.name for f in dataclasses.fields(DataSpec)}


@dataclass
class Scheduler:
    """The `scheduler:` of a space (its keys are documented at the top of this file)."""

    name: str = schedulers.DEFAULT
    max_epochs: int = 20
    grace_epochs: int = 2
    reduction_factor: int = 3
    perturbation_interval: int = 4
    quantile_fraction: float = 0.25
    resample_probability: float = 0.25
    mutate: list[str] | None = None
    synch: bool = False


@dataclass
class SearchSpace:
    method: str
    source: str = "<defaults>"
    description: str = ""
    data: DataSpec = field(default_factory=DataSpec)
    fixed: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Param] = field(default_factory=dict)
    scheduler: Scheduler = field(default_factory=Scheduler)
    num_samples: int = 8
    searcher: str | None = None
    """random, optuna, hyperopt or bohb (tuning/searchers.py); None = Ray's random sampling."""

    def param_space(self) -> dict[str, Any]:
        return {k: p.to_tune() for k, p in self.search.items()}

    def grid_size(self) -> int:
        n = 1
        for p in self.search.values():
            if p.dist == "grid":
                n *= len(p.args)
        return n


def _lines(text: str) -> dict[tuple[str, ...], int]:
    """1-based line of every mapping key, by its path: {("search", "tau"): 7, ...}."""
    out: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = (*path, str(k.value))
                out[key] = k.start_mark.line + 1
                walk(v, key)

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return out
    if root is not None:
        walk(root, ())
    return out


class _Ctx:
    def __init__(self, source: str, lines: dict[tuple[str, ...], int]):
        self.source, self.lines = source, lines

    def err(self, path: tuple[str, ...], msg: str) -> ConfigError:
        line = None
        for i in range(len(path), 0, -1):
            line = self.lines.get(path[:i])
            if line:
                break
        where = f"{self.source}:{line}" if line else self.source
        key = ".".join(path)
        return ConfigError(f"{where}: {key + ': ' if key else ''}{msg}")


def default_space_path(method: str) -> Path:
    return SPACES_DIR / f"{method}.yaml"


def load_space(path: str | Path | None = None, *, method: str | None = None,
               sets: dict[str, Any] | None = None) -> SearchSpace:
    """Load and validate a search space (the method's default file when `path` is None)."""
    if path is None:
        if method is None:
            raise ConfigError("give a method or a search-space file")
        get_method(method)
        path = default_space_path(method)
        if not path.exists():
            raise ConfigError(f"no default search space for {method!r} (expected {path}); pass --space FILE")
    p = Path(path)
    text = read_yaml_text(p, "search space", ConfigError)  # a regular file of at most 1 MiB: not /dev/zero, a FIFO
    space = parse_space(text, source=str(p), method=method)
    if sets:
        apply_sets(space, sets)
    return space


def parse_space(text: str, *, source: str = "<string>", method: str | None = None) -> SearchSpace:
    try:
        doc = load_yaml(text, source, ConfigError)  # alias bombs and keys given twice refused
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: malformed YAML: nested too deeply") from None
    except ConfigError:
        raise
    except Exception as e:  # PyYAML's constructors raise ValueError, IndexError... on e.g. `!!float ''`
        raise ConfigError(f"{source}: malformed YAML: {type(e).__name__}: {e}") from None
    ctx = _Ctx(source, _lines(text))
    if doc is None:  # an empty file would run num_samples identical trials of the defaults
        raise ctx.err((), "empty search space: give at least `search:` (see docs/ADDING_A_METHOD.md)")
    if not isinstance(doc, dict):
        raise ctx.err((), f"a search space is a mapping with keys {', '.join(TOP_KEYS)}; got {type(doc).__name__}")
    for k in doc:
        if k not in TOP_KEYS:
            raise ctx.err((str(k),), f"unknown key; allowed: {', '.join(TOP_KEYS)}")
    name = doc.get("method", method)
    if method is not None and name != method:
        raise ctx.err(("method",), f"this space is for {name!r}, not {method!r}")
    if not isinstance(name, str):
        raise ctx.err(("method",), "missing or not a string: name the method this space is for")
    try:
        cls = get_method(name)
    except ConfigError as e:
        raise ctx.err(("method",), str(e)) from None
    desc = doc.get("description", "")
    if isinstance(desc, (list, dict)):
        raise ctx.err(("description",), f"must be text, got {type(desc).__name__}")
    space = SearchSpace(method=name, source=source, description=str(desc or ""))
    space.data = _parse_dataset(doc.get("dataset", {}), ctx)
    fixed = doc.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise ctx.err(("fixed",), "must be a mapping of hyperparameter: value")
    for k, v in fixed.items():
        try:
            space.fixed[str(k)] = C.check_value(cls.Config, str(k), v)
        except ConfigError as e:
            raise ctx.err(("fixed", str(k)), str(e)) from None
    search = doc.get("search") or {}
    if not isinstance(search, dict):
        raise ctx.err(("search",), "must be a mapping of hyperparameter: {distribution: arguments}")
    for k, v in search.items():
        k = str(k)
        if k in space.fixed:
            raise ctx.err(("search", k), "is both fixed and searched; keep one")
        space.search[k] = parse_param(cls.Config, k, v, ctx.err)
    space.scheduler = _parse_scheduler(doc.get("scheduler") or {}, ctx)
    schedulers.validate_space(space, ctx.err)
    ns = doc.get("num_samples", 8)
    if isinstance(ns, bool) or not isinstance(ns, int) or ns < 1:
        raise ctx.err(("num_samples",), f"must be a positive integer, got {ns!r}")
    space.num_samples = ns
    if doc.get("searcher") is not None:
        from .searchers import check_searcher

        try:
            space.searcher = check_searcher(doc["searcher"] if isinstance(doc["searcher"], str) else repr(
                doc["searcher"]), space)
        except ConfigError as e:
            raise ctx.err(("searcher",), str(e)) from None
    _check_defaults(cls, space, ctx)
    return space


def _parse_dataset(d: Any, ctx: _Ctx) -> DataSpec:
    if isinstance(d, str):
        d = {"name": d}
    if not isinstance(d, dict):
        raise ctx.err(("dataset",), "must be a dataset name or a mapping like {name: digits, labels: 50}")
    for k in d:
        if k not in DATASET_KEYS:
            raise ctx.err(("dataset", str(k)), f"unknown key; allowed: {', '.join(sorted(DATASET_KEYS))}")
    spec = DataSpec(**{k: v for k, v in d.items()})
    if spec.options is None:
        spec.options = {}
    if not isinstance(spec.name, str):
        raise ctx.err(("dataset", "name"), f"must be a dataset name, got {spec.name!r}")
    if not isinstance(spec.options, dict):
        raise ctx.err(("dataset", "options"), f"must be a mapping of option: value, got {spec.options!r}")
    if spec.val_size is not None and (isinstance(spec.val_size, bool) or not isinstance(spec.val_size, int)
                                      or spec.val_size < 0):
        raise ctx.err(("dataset", "val_size"), f"must be a non-negative integer, got {spec.val_size!r}")
    if spec.val_per_label is not None and (isinstance(spec.val_per_label, bool)
                                           or not isinstance(spec.val_per_label, (int, float))
                                           or not spec.val_per_label > 0):
        raise ctx.err(("dataset", "val_per_label"), f"must be a number > 0, got {spec.val_per_label!r}")
    if spec.root is not None and not isinstance(spec.root, str):
        raise ctx.err(("dataset", "root"), f"must be a folder path, got {spec.root!r}")
    if not isinstance(spec.download, bool):
        raise ctx.err(("dataset", "download"), f"must be true or false, got {spec.download!r}")
    from ..data import get_entry
    from ..data.registry import check_options
    from ..errors import DataError

    try:
        check_options(get_entry(spec.name), dict(spec.options or {}))
    except DataError as e:
        raise ctx.err(("dataset",), str(e)) from None
    if isinstance(spec.labels, bool) or not isinstance(spec.labels, int) or spec.labels < 1:
        raise ctx.err(("dataset", "labels"), f"must be a positive integer, got {spec.labels!r}")
    return spec


def _parse_scheduler(d: Any, ctx: _Ctx) -> Scheduler:
    if isinstance(d, str):
        d = {"name": d}
    if not isinstance(d, dict):
        raise ctx.err(("scheduler",), "must be a mapping like {name: asha, max_epochs: 20, grace_epochs: 2}")
    s = Scheduler()
    for k, v in d.items():
        if k not in SCHEDULER_KEYS:
            raise ctx.err(("scheduler", str(k)), f"unknown key; allowed: {', '.join(SCHEDULER_KEYS)}")
        want = SCHEDULER_KEYS[k]
        if k == "mutate" and v is None:  # the default (every searched hyperparameter), as saved by a search
            continue
        if want is int and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ctx.err(("scheduler", k), f"must be a positive integer, got {v!r}")
        if want is float and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise ctx.err(("scheduler", k), f"must be a number, got {v!r}")
        if want is list and (not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v)):
            raise ctx.err(("scheduler", k), f"must be a non-empty list of searched hyperparameters, got {v!r}")
        if want is bool and not isinstance(v, bool):
            raise ctx.err(("scheduler", k), f"must be true or false, got {v!r}")
        known = schedulers.names()
        if want is str and v not in known:
            raise ctx.err(("scheduler", k), f"must be {', '.join(known[:-1])} or {known[-1]}, got {v!r}")
        setattr(s, k, float(v) if want is float else v)
    schedulers.validate(s, ctx.err)
    return s


def _check_defaults(cls: type[Method], space: SearchSpace, ctx: _Ctx) -> None:
    """The fixed values with one sample of every searched value must build a valid config."""
    probe = dict(space.fixed)
    for k, p in space.search.items():
        probe[k] = p.args[0]
    try:
        C.build(cls.Config, probe)
    except ConfigError as e:
        raise ctx.err(("search",), f"the space's values do not make a valid configuration: {e}") from None


def check_searched(space: SearchSpace, num_samples: int | None = None) -> None:
    """A space that searches nothing (`search: {}`, no `search:`, or every searched key fixed by --set) would run
    its num_samples trials with one and the same configuration: refused unless it asks for one trial."""
    n = num_samples or space.num_samples
    if not space.search and n > 1:
        raise ConfigError(f"{space.source}: nothing is searched (`search:` is empty, or --set fixed every searched "
                          f"key), so its {n} trials would be identical: add hyperparameters under `search:`, or "
                          f"run one configuration (num_samples: 1, --num-samples 1, or `ssl-ray train`)")


def _meaning(space: SearchSpace) -> dict[str, Any]:
    """What makes a search the search it is: the data (not where its files live), the fixed and searched
    hyperparameters, the scheduler with every setting, num_samples and the searcher."""
    d = space.data
    options = dict(d.options or {})
    path = options.get("path")
    if isinstance(path, str) and path and "://" not in path:
        options["path"] = str(Path(path).expanduser().absolute())
    out: dict[str, Any] = {"method": space.method, "dataset": d.name, "dataset labels": d.labels,
                           "dataset val_size": d.val_size, "dataset val_per_label": d.val_per_label,
                           "dataset options": options, "fixed": dict(space.fixed),
                           "search": {k: {p.dist: list(p.args)} for k, p in space.search.items()},
                           "num_samples": space.num_samples, "searcher": space.searcher or "random"}
    out.update({f"scheduler {f.name}": getattr(space.scheduler, f.name) for f in dataclasses.fields(Scheduler)})
    return out


def space_contradiction(saved: SearchSpace, other: SearchSpace) -> str | None:
    """None when `other` (a space file typed with --resume) describes the search `saved` is, else what differs
    first, in words: "scheduler name 'asha', where the file has 'fifo'". Every part that changes what the
    experiment means is compared, not only `search` and `fixed`."""
    mine, theirs = _meaning(saved), _meaning(other)
    for k, v in mine.items():
        if theirs[k] != v:
            return f"{k} {_short(v)}, where the file has {_short(theirs[k])}"
    return None


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 200 else text[:200] + "..."


def apply_sets(space: SearchSpace, sets: dict[str, Any]) -> None:
    """--set key=value fixes a hyperparameter on top of the file (and stops searching it)."""
    cls = get_method(space.method)
    for k, v in sets.items():
        try:
            space.fixed[k] = C.check_value(cls.Config, k, v)
        except ConfigError as e:
            raise ConfigError(f"--set {k}: {e}") from None
        space.search.pop(k, None)
    C.build(cls.Config, {**space.fixed, **{k: p.args[0] for k, p in space.search.items()}}, source="--set")
