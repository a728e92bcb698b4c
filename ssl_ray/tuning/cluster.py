"""Starting or joining a Ray cluster, with readable errors instead of long hangs."""
from __future__ import annotations

import contextlib
import os
import socket
from typing import Any

from ..errors import SSLRayError
from .ray_internals import (GCS_PORT_ENV, LOOPBACK_NODE, PRESTART_ENV, PRINT_PATCH_ENV, TRAIN_POLL_ENV,  # private
                            TRAIN_POLL_S, loopback_only, no_api_server, no_token_warning)


def check_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast (seconds, not minutes) when `host:port` does not answer."""
    if address in ("auto", "local"):
        return
    hostport = address[len("ray://"):] if address.startswith("ray://") else address
    host, _, port = hostport.rpartition(":")
    if "://" in hostport or not port.isdigit() or not 0 < int(port) < 65536:
        raise SSLRayError(f"--address {address!r}: give host:port (e.g. 10.0.0.5:6379), ray://host:port or auto")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as e:
        raise SSLRayError(f"cannot reach a Ray cluster at {address!r} ({e}). Start one with `ray start --head` "
                          f"or `ray up clusters/<file>.yaml`, or leave --address out to run locally.") from None


def init_ray(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None,
             quiet: bool = True, dashboard: bool = True) -> None:
    """Join `address` (host:port, 'auto', ray://...) or start a private local instance bound to 127.0.0.1.

    `dashboard=False` starts a local instance without the dashboard's head process (and its module
    subprocesses), whose polling takes CPU from the trials all the time (BENCHMARKS.md, section 2), and without
    the reduced dashboard process Ray starts in its place and waits for (ray_internals.no_api_server). Only Ray
    Train needs it (its placement-group cleaner asks the State API, RAY.md), so `ssl-ray tune` leaves it out when
    no trial drives Ray Train (--workers 1)."""
    import ray

    if ray.is_initialized():
        if address and address != "local":
            check_address(address)  # an explicit --address is still checked (an embedding process may hold Ray)
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # we write our own TensorBoard files
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # A forced experiment snapshot per kept checkpoint is expected with one checkpoint per epoch.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Train V2 turns every print in a worker into a log record (shown twice on the driver): keep print.
    os.environ.setdefault(PRINT_PATCH_ENV, "0")
    # Train V2's controller polls its workers every 2 s, and each report waits for a poll: 0.2 s (ray_internals)
    os.environ.setdefault(TRAIN_POLL_ENV, TRAIN_POLL_S)
    env = {k: os.environ[k] for k in (PRINT_PATCH_ENV, TRAIN_POLL_ENV, "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS",
                                      "SSL_RAY_CACHE", "SSL_RAY_DATA", "SSL_RAY_PLUGINS", "PYTHONPATH")
           if k in os.environ}
    kwargs: dict[str, Any] = {"logging_level": "ERROR" if quiet else "INFO", "log_to_driver": True,
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
    # A local instance: nothing listens beyond localhost (see below).
    # address="local": without it ray.init joins the latest `ray start` cluster on this machine
    # (/tmp/ray/ray_current_cluster), e.g. another user's, instead of starting a private instance.
    # Ray's State API, which Train's PlacementGroupCleaner calls from a worker process, finds "the" cluster
    # the same way: with another Ray instance on the machine it asked that one, did not find our Train
    # controller, took it for dead and removed the live run's placement group (BENCHMARKS.md). So the GCS
    # gets a port chosen here, and every worker is told the address through RAY_ADDRESS.
    port = _free_port()
    env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    # Loopback only. Ray turns a node address of 127.0.0.1 into the machine's outward IP
    # (services.resolve_ip_for_localhost), and its gRPC servers then listen on all interfaces, its
    # Prometheus endpoints on 0.0.0.0. Ray keeps a node on loopback where it does not support clusters
    # (a private constant set from an environment variable: ray_internals.loopback_only): with it off, every
    # server of this instance (GCS, raylet, workers, agents, metrics, dashboard) listens on 127.0.0.1 only
    # (measured: docs/RELIABILITY.md). The variable reaches Ray's own processes through the environment;
    # the driver reads the constant, so it is set for this call and put back after.
    # No idle worker processes started ahead: Ray starts one per CPU for the first driver, but Tune's trial actors
    # and Train's controller and workers carry their own runtime_env (env_vars) and never use them (measured for
    # Tune: every trial got a fresh process; read in Ray's code for Train), so they only took CPU from ray.init
    # (BENCHMARKS.md, section 2).
    saved = {k: os.environ.get(k) for k in (GCS_PORT_ENV, PRESTART_ENV)}
    os.environ[GCS_PORT_ENV], os.environ[PRESTART_ENV] = str(port), "0"
    _private_token()
    try:
        with loopback_only(), no_token_warning(), (contextlib.nullcontext() if dashboard else no_api_server()):
            for attempt in (1, 2):
                try:
                    ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=dashboard,
                             dashboard_host="127.0.0.1", **LOOPBACK_NODE, **kwargs)
                    break
                except Exception as e:  # Ray raises a bare Exception when its raylet dies during start-up
                    if "timed out during startup" not in str(e):
                        raise
                    ray.shutdown()
                    if attempt == 2:  # seen on an overloaded machine: the raylet gave up waiting for its agent
                        raise SSLRayError(f"Ray could not start a local instance twice ({e}); the machine may be "
                                          f"overloaded, try again") from None
                    port = _free_port()
                    env["RAY_ADDRESS"] = f"127.0.0.1:{port}"  # the same dict as kwargs' runtime_env
                    os.environ[GCS_PORT_ENV] = str(port)
    finally:
        for k, v in saved.items():  # the raylet has read them; later Ray instances of this process choose again
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _private_token()


def token_path() -> str:
    """Where Ray 2.60 keeps the token of its token authentication (on by default for a local instance)."""
    return os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray", "auth_token")


def _private_token() -> None:
    """Ray writes the token world-readable (0644): anyone on the machine could then talk to the instance.
    Make it (and its folder) the user's own, before Ray starts and again after it may have created it."""
    path = token_path()
    for p, mode in ((os.path.dirname(path), 0o700), (path, 0o600)):
        try:
            if os.path.exists(p) and os.stat(p).st_uid == os.getuid():
                os.chmod(p, mode)
        except OSError:
            pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
