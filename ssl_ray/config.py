"""Hyperparameters as documented dataclasses: the single source of truth for names, types, ranges and docs.

A method's config is a dataclass whose fields are declared with :func:`hp`::

    @dataclass
    class VATConfig(LabelledConfig):  # BaseConfig for methods that use no labels
        eps: float = hp(1.0, "norm of the virtual adversarial perturbation", low=0, low_open=True)

The same metadata drives ``--set key=value``, ``ssl-ray methods``, the search-space validator and the
TensorBoard HParams entries.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError


def hp(default: Any, doc: str, *, low: float | None = None, high: float | None = None,
       low_open: bool = False, high_open: bool = False, choices: tuple | None = None) -> Any:
    """A documented hyperparameter with an optional range ``[low, high]`` (ends open when asked) or choices."""
    meta = {"doc": doc, "low": low, "high": high, "low_open": low_open, "high_open": high_open,
            "choices": tuple(choices) if choices is not None else None}
    return field(default=default, metadata=meta)


@dataclass
class BaseConfig:
    """Hyperparameters every method shares: the batch size and the epoch's length in steps."""

    batch_size: int = hp(100, "T: samples per training batch, labelled and unlabelled together", low=1)
    steps_per_epoch: int = hp(0, "optimiser steps per epoch; 0 = one pass over the unlabelled pool", low=0)

    def check(self) -> None:
        """Cross-field checks; methods extend this. Raise ConfigError with the key's name."""

    @property
    def labelled_share(self) -> float:
        """R/T, the labelled share of each batch: 0 for methods that train on unlabelled data only
        (`Method.uses_labels = False`), whose configs have no `labeled_ratio` knob."""
        return 0.0


@dataclass
class LabelledConfig(BaseConfig):
    """Hyperparameters of methods that train on labelled data: the batch's labelled share R/T besides."""

    labeled_ratio: float = hp(0.5, "R/T: the labelled share of each batch (R = round(T * R/T), at least 1)",
                              low=0, high=1, low_open=True)

    @property
    def labelled_share(self) -> float:
        return self.labeled_ratio


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def describe(cls: type) -> list[dict[str, Any]]:
    """One dict per hyperparameter: name, type, default, doc, range/choices."""
    out = []
    types = _field_types(cls)
    for f in dataclasses.fields(cls):
        m = f.metadata
        out.append({"name": f.name, "type": type_name(types[f.name]), "default": f.default,
                    "doc": m.get("doc", ""), "low": m.get("low"), "high": m.get("high"),
                    "low_open": m.get("low_open", False), "high_open": m.get("high_open", False),
                    "choices": list(m["choices"]) if m.get("choices") else None})
    return out


def range_text(info: dict[str, Any]) -> str:
    if info.get("choices"):
        return "one of " + ", ".join(map(str, info["choices"]))
    lo, hi = info.get("low"), info.get("high")
    if lo is None and hi is None:
        return ""
    left = ("(" if info.get("low_open") else "[") + ("-inf" if lo is None else f"{lo:g}")
    right = ("inf" if hi is None else f"{hi:g}") + (")" if info.get("high_open") else "]")
    return f"in {left}, {right}"


def coerce(tp: Any, value: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the field's type, or raise ConfigError naming the key."""
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
                return False
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError
        if tp is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                return int(value)
            return int(str(value).strip())
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            v = float(value)
            if math.isnan(v):
                raise ValueError
            return v
        if tp is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            return str(value)
    except (TypeError, ValueError, OverflowError):  # float(10**400) overflows
        raise ConfigError(f"{key}: expected {type_name(tp)}, got {value!r}") from None
    raise ConfigError(f"{key}: unsupported field type {tp}")


INT_LIMIT = 2 ** 63  # integer hyperparameters end up in torch / NumPy int64


def check_value(cls: type, key: str, value: Any) -> Any:
    """Validate one hyperparameter value (type and range); returns the coerced value."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if key not in fields:
        raise ConfigError(f"unknown hyperparameter {key!r} for {cls.__name__}; valid: {', '.join(sorted(fields))}")
    tp = _field_types(cls)[key]
    v = coerce(tp, value, key)
    m = fields[key].metadata
    if m.get("choices") and v not in m["choices"]:
        raise ConfigError(f"{key}: {v!r} is not allowed; {range_text(describe_field(cls, key))}")
    lo, hi = m.get("low"), m.get("high")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{key}: {v!r} is not finite")
        if isinstance(v, int) and abs(v) >= INT_LIMIT:
            raise ConfigError(f"{key}: {v!r} is too large (integers must fit in 64 bits)")
        bad_lo = lo is not None and (v < lo or (m.get("low_open") and v == lo))
        bad_hi = hi is not None and (v > hi or (m.get("high_open") and v == hi))
        if bad_lo or bad_hi:
            raise ConfigError(f"{key}: {v!r} is out of range; must be {range_text(describe_field(cls, key))}")
    return v


def describe_field(cls: type, key: str) -> dict[str, Any]:
    return next(d for d in describe(cls) if d["name"] == key)


def build(cls: type, overrides: dict[str, Any] | None = None, *, source: str = "") -> Any:
    """Build a config from defaults + overrides, validating every key and value (errors name the source)."""
    prefix = f"{source}: " if source else ""
    kwargs = {}
    for key, value in (overrides or {}).items():
        try:
            kwargs[key] = check_value(cls, str(key), value)
        except ConfigError as e:
            raise ConfigError(prefix + str(e)) from None
    cfg = cls(**kwargs)
    try:
        cfg.check()
    except ConfigError as e:
        raise ConfigError(prefix + str(e)) from None
    return cfg


def parse_set(items: typing.Iterable[str]) -> dict[str, Any]:
    """Parse repeated ``key=value`` options (values parsed as YAML scalars: 1e-3, true, 0.5)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            out[key] = raw
        except RecursionError:
            raise ConfigError(f"--set {key}: value nested too deeply") from None
        except Exception:  # PyYAML's constructors raise ValueError, IndexError... on e.g. `!!float ''`
            out[key] = raw
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
