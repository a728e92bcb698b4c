"""engine.worker.run_worker, the one body of a training worker (in-process train, every Ray Train worker, every
single-worker Tune trial), without Ray: it continues the checkpoint furthest along, records a divergence in one
way (DIVERGED.txt) and refuses, before any compute, to continue a run that recorded one. A resolved RunSpec:
its config is built once, when it is made."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssl_ray.data import DataSpec
from ssl_ray.engine import checkpoint
from ssl_ray.engine import spec as spec_module
from ssl_ray.engine.spec import RunSpec
from ssl_ray.engine.worker import DIVERGED_FILE, diverged, run_worker
from ssl_ray.errors import ConfigError, DivergenceError

PLUGINS = str(Path(__file__).parent / "plugins")
DATA = DataSpec("digits", labels=20, val_size=100)


def _spec(epochs: int, **config) -> RunSpec:
    return RunSpec("supervised", DATA, epochs=epochs, seed=0, config={"steps_per_epoch": 2, **config})


def test_a_spec_is_resolved_once_when_it_is_made(monkeypatch):
    builds = []
    real = spec_module.C.build
    monkeypatch.setattr(spec_module.C, "build", lambda *a, **k: builds.append(a) or real(*a, **k))
    s = _spec(1, lr=0.01)
    assert len(builds) == 1 and s.method_config().lr == 0.01 and s.method_config() is s.method_config()
    assert s.config_dict()["lr"] == 0.01 and s.to_dict()["config"] == {"steps_per_epoch": 2, "lr": 0.01}
    assert RunSpec.from_dict(s.to_dict()) == s and len(builds) == 2  # resolved again across a process boundary
    with pytest.raises(ConfigError, match="method supervised: lr"):
        _spec(1, lr=-1.0)


def test_run_worker_continues_the_checkpoint_furthest_along(tmp_path):
    seen: list[dict] = []
    run_worker(_spec(2), "cpu", None, [], checkpoint_dir=str(tmp_path / "a"), progress=False)
    run_worker(_spec(1), "cpu", None, [], checkpoint_dir=str(tmp_path / "b"), progress=False)
    assert checkpoint.load(tmp_path / "a")["epoch"] == 2 and checkpoint.load(tmp_path / "b")["epoch"] == 1
    trainer = run_worker(_spec(3), "cpu", lambda m, c: seen.append(m), [tmp_path / "b", tmp_path / "a", tmp_path],
                         threads=1, progress=False)
    assert [m["epoch"] for m in seen] == [3] and trainer.epoch == 3  # from epoch 2 (folder a), the one further on


def test_divergence_is_recorded_and_a_retry_fails_before_any_compute(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(PLUGINS)
    import faulty_methods  # noqa: F401  (registers `faulty`)

    spec = RunSpec("faulty", DATA, epochs=3, config={"nan_epoch": 2, "steps_per_epoch": 2})
    with pytest.raises(DivergenceError, match="loss_lab became nan at epoch 2, step 3"):
        run_worker(spec, "cpu", None, [], marker_dir=tmp_path, progress=False)
    assert diverged(tmp_path).startswith("loss_lab became nan at epoch 2") and (tmp_path / DIVERGED_FILE).is_file()
    built = []
    with pytest.raises(DivergenceError, match="loss_lab became nan at epoch 2"):
        run_worker(spec, "cpu", None, [tmp_path], started=built.append, progress=False)
    assert built == []  # refused before a Trainer was built
    assert diverged(tmp_path / "nothing") is None


def test_a_gpu_given_and_not_usable_is_an_error_not_a_cpu_run(monkeypatch):
    from ssl_ray.errors import SSLRayError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SSLRayError, match="asked for 1 GPU"):
        run_worker(_spec(1), "cpu", None, [], gpus=1, progress=False)
