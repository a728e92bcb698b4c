"""The pre-flight check shared by `ssl-ray train` and `ssl-ray tune`: build the run before any trial runs."""
from __future__ import annotations

from ..engine.spec import RunSpec
from ..errors import SSLRayError


def preflight(spec: RunSpec) -> None:
    """Build the method and its batch stream against the dataset's shape, without training, so that every
    config x dataset error (bad hyperparameter, absent or corrupt dataset, labels the dataset cannot give,
    a model that does not fit the input) is one readable line before any trial runs (`ssl-ray train`: before
    Ray starts; `ssl-ray tune`: while it starts, tune.preflight_while_ray_starts), not a traceback from inside a
    Ray worker. (An unknown key or a bad value is refused before, when the RunSpec is made.)"""
    from ..engine.loop import Trainer

    try:
        Trainer(spec, device="cpu", log_dir=None, progress=False)
    except SSLRayError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SSLRayError(f"{spec.method} cannot be built for {spec.data.name} with this configuration: "
                          f"{type(e).__name__}: {first}") from None
