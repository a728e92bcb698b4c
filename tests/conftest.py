"""Shared fixtures. Tests use real files, real Ray instances and data the project makes or ships."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test writes dataset caches and runs under its own temporary folders."""
    cache = tmp_path_factory.getbasetemp() / "array_cache"
    monkeypatch.setenv("SSL_RAY_CACHE", str(cache))
    monkeypatch.setenv("SSL_RAY_RUNS", str(tmp_path_factory.getbasetemp() / "runs"))
    yield


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance (2 CPUs) shared by the tests that drive Ray in-process."""
    import ray

    from ssl_ray.tuning.cluster import init_ray

    if not ray.is_initialized():
        init_ray(None, num_cpus=2)
    yield ray
    ray.shutdown()
