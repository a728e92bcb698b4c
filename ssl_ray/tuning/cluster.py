"""Starting or joining a Ray cluster, with readable errors instead of long hangs."""
from __future__ import annotations

import os
import socket

from ..errors import SSLRayError


def check_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast (seconds, not minutes) when `host:port` does not answer."""
    if address in ("auto", "local") or address.startswith("ray://") is False and ":" not in address:
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as e:
        raise SSLRayError(f"cannot reach a Ray cluster at {address!r} ({e}). Start one with `ray start --head` "
                          f"or `ray up clusters/<file>.yaml`, or leave --address out to run locally.") from None


def init_ray(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None,
             quiet: bool = True) -> None:
    """Join `address` (host:port, 'auto', ray://...) or start a private local instance bound to 127.0.0.1."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # we write our own TensorBoard files
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # A forced experiment snapshot per kept checkpoint is expected with one checkpoint per epoch.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Train V2 turns every print in a worker into a log record (shown twice on the driver): keep print.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    env = {k: os.environ[k] for k in ("RAY_TRAIN_ENABLE_PRINT_PATCH", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS",
                                      "SSL_RAY_CACHE", "SSL_RAY_DATA", "SSL_RAY_PLUGINS", "PYTHONPATH")
           if k in os.environ}
    kwargs = {"logging_level": "ERROR" if quiet else "INFO", "log_to_driver": True,
              "runtime_env": {"env_vars": env},
              "logging_config": ray.LoggingConfig(log_level="WARNING" if quiet else "INFO")}
    if address is None and os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]  # as ray.init does (set for Ray Jobs, or by the user)
    if address and address != "local":
        check_address(address)
        if ":" in address and "://" not in address:
            # Train's PlacementGroupCleaner asks the State API, which without RAY_ADDRESS takes the latest cluster
            # started on its machine: with several clusters there (a shared box) maybe not this one (see below)
            env["RAY_ADDRESS"] = address
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, TimeoutError) as e:
            raise SSLRayError(f"cannot connect to the Ray cluster at {address!r}: {e}") from None
        return
    # A local instance: nothing listens beyond localhost (node, GCS and dashboard on 127.0.0.1).
    # address="local": without it ray.init joins the latest `ray start` cluster on this machine
    # (/tmp/ray/ray_current_cluster), e.g. another user's, instead of starting a private instance.
    # Ray's State API, which Train's PlacementGroupCleaner calls from a worker process, finds "the" cluster
    # the same way: with another Ray instance on the machine it asked that one, did not find our Train
    # controller, took it for dead and removed the live run's placement group (BENCHMARKS.md). So the GCS
    # gets a port chosen here, and every worker is told the address through RAY_ADDRESS.
    port = _free_port()
    env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    saved = os.environ.get("RAY_GCS_SERVER_PORT")
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    try:
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=True,
                 dashboard_host="127.0.0.1", _node_ip_address="127.0.0.1", **kwargs)
    finally:
        if saved is None:
            os.environ.pop("RAY_GCS_SERVER_PORT", None)
        else:
            os.environ["RAY_GCS_SERVER_PORT"] = saved


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_resources() -> dict[str, float]:
    import ray

    return dict(ray.cluster_resources())
