"""Trial schedulers by name, one file each (asha.py, sha.py, fifo.py, pbt.py, bohb.py), as Ray's own
tune/schedulers/ keeps them. Each file defines one `Kind` (base.py): how its `scheduler:` settings are checked,
which options it takes, how its Ray scheduler is built, how often its trials checkpoint and how many checkpoints
they keep, how many trials run at once, whether a search resumes and how its state is replayed, and what the dry
run says of it. Adding a scheduler is adding one file here; this registry is the only place that compares a
scheduler's name."""
from __future__ import annotations

import importlib
import pkgutil

from typing import Any

from ...errors import ConfigError
from .base import Fail, Kind

DEFAULT = "asha"
"""The scheduler of a space that names none."""
KINDS: dict[str, Kind] = {}
_NOT_KINDS = {"base"}


def _load() -> None:
    if KINDS:
        return
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name not in _NOT_KINDS:
            kind = importlib.import_module(f"{__name__}.{mod.name}").KIND
            KINDS[kind.name] = kind


def get(name: str) -> Kind:
    """The scheduler called `name` (ConfigError naming the known ones otherwise)."""
    _load()
    if name not in KINDS:
        raise ConfigError(f"unknown scheduler {name!r}; known: {', '.join(names())}")
    return KINDS[name]


def names(chosen_by_name: bool = True) -> list[str]:
    """The schedulers a space or --scheduler can name (chosen_by_name), or all of them (bohb comes with its
    searcher), in --help order."""
    _load()
    kinds = sorted(KINDS.values(), key=lambda k: k.order)
    return [k.name for k in kinds if k.chosen_by_name or not chosen_by_name]


def brought_by(searcher: str | None) -> Kind | None:
    """The scheduler a searcher brings with it (BOHB's HyperBand for bohb), replacing the space's; else None."""
    _load()
    return next((k for k in KINDS.values() if searcher and k.searcher == searcher), None)


def _fail(path: tuple[str, ...], message: str) -> Exception:
    return ConfigError(f"{'.'.join(path)}: {message}")


def validate(s: Any, fail: Fail | None = None) -> None:
    """The space's `scheduler:` settings `s` (spaces.Scheduler): its kind's checks, and a setting only another
    scheduler takes, set to other than its default, is refused. Each error made by `fail` (path, message)."""
    fail = fail or _fail
    kind = get(s.name)
    default = type(s)()
    for other in KINDS.values():
        for k in other.own_keys:
            if k not in kind.own_keys and getattr(s, k) != getattr(default, k):
                raise fail(("scheduler", k), f"a {other.name.upper()} setting, but the scheduler is {s.name}: add "
                                             f"name: {other.name}, or remove it")
    kind.validate(s, fail)


def validate_space(space: Any, fail: Fail | None = None) -> None:
    """The whole space against its scheduler (PBT needs searched hyperparameters to mutate)."""
    get(space.scheduler.name).validate_space(space, fail or _fail)
