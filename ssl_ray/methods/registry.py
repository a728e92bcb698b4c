"""Methods by name. Adding a method = one file in ssl_ray/methods/ that decorates its class with @register.

Methods can also live outside the package: name their modules in $SSL_RAY_PLUGINS (comma-separated,
importable from PYTHONPATH) and they are registered like the built-in ones, in every Ray worker too.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import warnings
from typing import Any, TypeVar

from ..errors import ConfigError
from .base import Method

M = TypeVar("M", bound=type[Method[Any]])

METHODS: dict[str, type[Method[Any]]] = {}
_NOT_METHODS = {"base", "common", "registry"}
_loaded = False


def register(cls: M) -> M:
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        warnings.warn(f"method {cls.name!r} registered twice; the later definition wins", stacklevel=2)
    METHODS[cls.name] = cls
    return cls


def _load_all() -> None:
    """Import every module of ssl_ray.methods. A broken import fails loudly instead of hiding a method."""
    global _loaded
    if _loaded:
        return
    from . import __path__ as pkg_path

    for mod in sorted(pkgutil.iter_modules(pkg_path), key=lambda m: m.name):
        if mod.name not in _NOT_METHODS and not mod.name.startswith("_"):
            importlib.import_module(f"ssl_ray.methods.{mod.name}")
    for name in filter(None, (n.strip() for n in os.environ.get("SSL_RAY_PLUGINS", "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(f"cannot import plugin module {name!r} named in SSL_RAY_PLUGINS: {e}") from None
    _loaded = True


def get_method(name: str) -> type[Method[Any]]:
    _load_all()
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def list_methods() -> list[type[Method[Any]]]:
    _load_all()
    return [METHODS[k] for k in sorted(METHODS)]
