"""The distributions of a search space's `search:` entries (`key: {distribution: arguments}`): which exist, what
values each gives, how an entry is checked against the method's config (parse_param) and how it becomes Ray
Tune's search domain (Param.to_tune)."""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, Callable

from .. import config as C
from ..errors import ConfigError

Err = Callable[[tuple[str, ...], str], ConfigError]
"""Makes the error for a key of the space (path, message): spaces.py names the file and line."""

# distribution -> (number of arguments or None for a list, value types it can produce)
DISTRIBUTIONS: dict[str, tuple[int | None, tuple[type, ...]]] = {
    "uniform": (2, (float,)), "loguniform": (2, (float,)), "quniform": (3, (float,)),
    "qloguniform": (3, (float,)), "randint": (2, (int,)), "qrandint": (3, (int,)),
    "choice": (None, (int, float, str, bool)), "grid": (None, (int, float, str, bool)),
}

@dataclass
class Param:
    name: str
    dist: str
    args: list[Any]

    def to_tune(self) -> Any:
        from ray import tune

        a = self.args
        return {"uniform": lambda: tune.uniform(*a), "loguniform": lambda: tune.loguniform(*a),
                "quniform": lambda: tune.quniform(*a), "qloguniform": lambda: tune.qloguniform(*a),
                "randint": lambda: tune.randint(*a), "qrandint": lambda: tune.qrandint(*a),
                "choice": lambda: tune.choice(a), "grid": lambda: tune.grid_search(a)}[self.dist]()

    def describe(self) -> str:
        return f"{self.dist}{self.args}"


def _field_type(cls: type, key: str) -> Any:
    return typing.get_type_hints(cls)[key]


def parse_param(cfg_cls: type, key: str, v: Any, err: Err) -> Param:
    """The search entry `key: {distribution: arguments}` of a space, checked against the method's config class
    `cfg_cls` (the key exists, the distribution gives values of its type inside its allowed range; Ray Tune's rules
    for steps q); each error made by `err(path, message)`."""
    names = {f.name for f in dataclasses.fields(cfg_cls)}
    path = ("search", key)
    if key not in names:
        raise err(path, f"unknown hyperparameter for {cfg_cls.__name__}; valid: {', '.join(sorted(names))}")
    if not isinstance(v, dict) or len(v) != 1:
        raise err(path, "must be one {distribution: arguments}, e.g. {loguniform: [1e-4, 1e-2]}; "
                      f"distributions: {', '.join(DISTRIBUTIONS)}")
    dist, args = next(iter(v.items()))
    if dist not in DISTRIBUTIONS:
        raise err(path, f"unknown distribution {dist!r}; allowed: {', '.join(DISTRIBUTIONS)}")
    nargs, produces = DISTRIBUTIONS[dist]
    tp = _field_type(cfg_cls, key)
    if not isinstance(args, list):
        raise err(path, f"{dist} takes a list of arguments, got {args!r}")
    if nargs is None:
        if not args:
            raise err(path, f"{dist} needs a non-empty list of values")
        try:
            vals = [C.check_value(cfg_cls, key, a) for a in args]
        except ConfigError as e:
            raise err(path, str(e)) from None
        return Param(key, dist, vals)
    if tp not in produces and not (tp is float and int in produces):
        allowed = [d for d, (_, pr) in DISTRIBUTIONS.items() if tp in pr or (tp is float and int in pr)]
        raise err(path, f"{dist} gives {produces[0].__name__} values but {key} is {C.type_name(tp)}; "
                      f"use one of {', '.join(allowed)}")
    if len(args) != nargs:
        form = "[low, high]" if nargs == 2 else "[low, high, q]"
        raise err(path, f"{dist} takes {form}, got {args!r}")
    if any(isinstance(a, bool) or not isinstance(a, (int, float)) for a in args):
        raise err(path, f"{dist} arguments must be numbers, got {args!r}")
    if not all(abs(a) < C.INT_LIMIT if isinstance(a, int) else math.isfinite(a) for a in args):
        raise err(path, f"{dist} arguments must be finite (integers within 64 bits), got {args!r}")
    if int in produces and any(isinstance(a, float) and not a.is_integer() for a in args):
        raise err(path, f"{dist} arguments must be integers, got {args!r}")
    lo, hi = args[0], args[1]
    if lo >= hi:
        raise err(path, f"empty or inverted range [{lo}, {hi}]: low must be below high")
    if dist in ("loguniform", "qloguniform") and lo <= 0:
        raise err(path, f"{dist} needs low > 0, got {lo}")
    if nargs == 3 and not args[2] > 0:
        raise err(path, f"{dist} needs a positive step q, got {args[2]}")
    if nargs == 3:
        _check_step(dist, lo, hi, args[2], lambda msg: err(path, msg))
    top = hi - 1 if dist == "randint" else hi  # randint's high is exclusive, as in Ray Tune
    try:
        C.check_value(cfg_cls, key, lo)
        C.check_value(cfg_cls, key, top)
    except ConfigError as e:
        raise err(path, f"range {args!r} leaves the allowed values: {e}") from None
    cast = int if int in produces else float
    return Param(key, dist, [cast(a) for a in args[:2]] + ([cast(args[2])] if nargs == 3 else []))


def _check_step(dist: str, lo: float, hi: float, q: float, err) -> None:
    """Ray Tune refuses float bounds that are not multiples of q, and a qrandint with no multiple of q inside."""
    if dist == "qrandint":
        if math.ceil(lo / q) * q > hi:
            raise err(f"no multiple of q={q} in [{lo}, {hi}]: nothing to sample")
        return
    for b in (lo, hi):
        if not math.isclose(b / q, round(b / q)):
            raise err(f"bounds must be multiples of q (Ray Tune requires it): {b} is not a multiple of {q}")
