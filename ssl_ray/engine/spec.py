"""What one run trains (RunSpec): resolved once, where it is made, into typed objects (the method's class, its
validated config, the data spec); a plain dict only to cross a process boundary (`to_dict` / `from_dict`, which
resolves it again on the other side) or to be written into a checkpoint (`plain`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .. import config as C
from ..data import DataSpec
from ..methods import Method, get_method


@dataclass
class RunSpec:
    """What one run trains: everything but the resources it runs on.

    Made, it is resolved: an unknown method, key or value is a ConfigError here (naming the method), and
    `method_class` / `method_config()` hand out the one validated result, never rebuilt."""

    method: str
    data: DataSpec = field(default_factory=DataSpec)
    epochs: int = 10
    seed: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    """Hyperparameter overrides, as given (validated against the method's Config when the spec is made)."""
    eval_test: bool = True
    """Also measure test error (logged; tuning looks only at val_error)."""
    test_every: int = 1
    """Measure test error every k epochs; 0 = only when the validation error improves (so
    test_error_at_best_val stays exact) and at the last epoch, which `ssl-ray train` uses."""
    picture_every: int = 0
    """Log pictures every k epochs (and at the last one); 0 = only at the last epoch."""
    checkpoint_every: int = 1
    """Checkpoint every k epochs (and always at the last one); 0 = not by epoch count."""
    checkpoint_seconds: float = 0.0
    """Also checkpoint when this many seconds passed since the last checkpoint; 0 = off."""
    amp: bool = False
    """Mixed precision: training steps under bfloat16 autocast (backward and optimiser steps in float32)."""
    compile: bool = False
    """torch.compile every model of the method (in place: checkpoints keep their keys)."""
    data_resident: bool = True
    """Keep the training set on the accelerator (no per-step host-to-device copies); False gathers each batch
    on the host and copies it. No effect on the CPU, where batches come from the shared memory map."""
    searched: list[str] = field(default_factory=list)
    """The hyperparameters a search varies: the HParams entry shows these (the rest goes to the run's text);
    empty = show them all (a single run)."""

    def __post_init__(self) -> None:
        self.method_class: type[Method[Any]] = get_method(self.method)
        self._config = C.build(self.method_class.Config, self.config, source=f"method {self.method}")

    def method_config(self) -> Any:
        """The method's validated config (built once, when the spec was made)."""
        return self._config

    def config_dict(self) -> dict[str, Any]:
        """Every hyperparameter of the run, defaults included."""
        return C.to_dict(self._config)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSpec":
        """The spec `to_dict` wrote (a checkpoint's, a trial's), resolved again on this side."""
        d = dict(d)
        d["data"] = DataSpec(**d.get("data", {}))
        return cls(**d)


def plain(d: Any) -> Any:
    """Plain containers (dict, list, str, numbers, None) of `d`, for files loaded with torch.load(weights_only)."""
    if isinstance(d, dict):
        return {str(k): plain(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [plain(v) for v in d]
    if isinstance(d, (int, float, str, bool)) or d is None:
        return d
    return str(d)
