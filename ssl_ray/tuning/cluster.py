"""Starting or joining a Ray cluster, with readable errors instead of long hangs."""
from __future__ import annotations

import contextlib
import os
import socket
from typing import Any

from ..errors import SSLRayError
from .ray_internals import (GCS_PORT_ENV, LOOPBACK_NODE, PRESTART_ENV, PRINT_PATCH_ENV, TRAIN_POLL_ENV,  # private
                            TRAIN_POLL_S, loopback_only, no_api_server, no_token_warning, quiet_sigterm_exits)


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
    env, kwargs = _init_settings(quiet)
    if address is None and os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]  # as ray.init does (set for Ray Jobs, or by the user)
    if address and address != "local":
        _join(address, env, kwargs)
    else:
        _start_local(env, kwargs, num_cpus=num_cpus, num_gpus=num_gpus, dashboard=dashboard)
    quiet_sigterm_exits()  # a worker Ray ends mid-callback leaves a traceback that says nothing (ray_internals 11)


def _init_settings(quiet: bool) -> tuple[dict[str, str], dict[str, Any]]:
    """The environment every Ray process of ours gets (returned `env`, also inside kwargs' runtime_env: the same
    dict) and ray.init's keyword arguments; sets this process's defaults of Ray's and Tune's switches."""
    import ray

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
    return env, kwargs


def _join(address: str, env: dict[str, str], kwargs: dict[str, Any]) -> None:
    """Join the running cluster at `address`."""
    import ray

    check_address(address)
    if ":" in address and "://" not in address:
        # Train's PlacementGroupCleaner asks the State API, which without RAY_ADDRESS takes the latest cluster
        # started on its machine: with several clusters there (a shared box) maybe not this one (see below)
        env["RAY_ADDRESS"] = address
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, TimeoutError) as e:
        raise SSLRayError(f"cannot connect to the Ray cluster at {address!r}: {e}") from None


def _start_local(env: dict[str, str], kwargs: dict[str, Any], *, num_cpus: int | None, num_gpus: int | None,
                 dashboard: bool) -> None:
    """Start this process's private local instance: nothing listens beyond localhost (see below)."""
    import ray


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
    if num_gpus is None:  # the GPUs torch can use, so that Ray's count and the resource checks agree (resources.py)
        from .resources import local_gpus

        num_gpus = local_gpus()
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


# ---- what the cluster has now and can grow to (the decisions themselves: resources.py) ------------------------
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
"""The launcher config `ray up` leaves on the head node (its autoscaler's), where `ray job submit`'s and `ray exec`'s
drivers run; Tune itself takes its presence for "an autoscaling cluster" (ray.tune.execution.cluster_info)."""


def cluster_state(local: bool, wait: bool | None = None):
    """The running instance's CPUs and GPUs, and whether (and how far) it can grow: a local instance cannot;
    a joined cluster as its autoscaler says (autoscaler_view), `wait` (--wait-for-resources / --no-...) deciding
    when given, and "can grow, size unknown" when nothing says otherwise (the nodes may come from anywhere)."""
    import ray

    from .resources import ClusterState

    res = ray.cluster_resources()
    now = {"CPU": float(res.get("CPU", 0)), "GPU": float(res.get("GPU", 0))}
    if local:
        return ClusterState(now, grows=False, where="this machine", why="a local instance cannot add nodes")
    grows, most, why = autoscaler_view()
    if most is not None:  # a node up now may hold more than its type declares (detected at start)
        most = {k: max(float(most.get(k, 0)), now.get(k, 0.0)) for k in set(most) | set(now)}
    if wait is not None:
        grows, why = wait, ("--wait-for-resources" if wait else "--no-wait-for-resources")
    elif grows is None:
        grows, why = True, "nothing on this node says it cannot add nodes; --no-wait-for-resources refuses instead"
    return ClusterState(now, grows=grows, most=most if grows else None, where="the cluster", why=why)


def autoscaler_view() -> tuple[bool | None, dict[str, float] | None, str]:
    """(can grow, what it can grow to or None, how that was read) for the joined cluster, from (in this order):
    the cluster config Ray Train checks its worker groups against (Ray's GCS, when an autoscaler reported one);
    the launcher config on this node (the head of a `ray up` cluster); the autoscaler monitor's status, whose
    node types are anonymous (`node_<node id>`) on a cluster whose nodes were started by hand (`ray start`, no
    autoscaler: it cannot grow). (None, None, "") when none of them can be read. Ray's own records are private
    (ray_internals, item 9); each read is guarded: a change in Ray degrades to "unknown", never to an error."""
    import ray

    from .ray_internals import autoscaler_status, cluster_config_max

    most = cluster_config_max()
    if most:
        return True, most, "its autoscaler's cluster config"
    path = os.path.expanduser(BOOTSTRAP_CONFIG)
    if os.path.isfile(path):
        try:
            import yaml

            from .resources import launcher_max

            with open(path, encoding="utf-8") as f:
                config = yaml.safe_load(f)
            full = launcher_full(config, _alive_nodes_or_none())
            if full:
                return False, None, f"its launcher config {BOOTSTRAP_CONFIG}: {full}"
            return True, launcher_max(config), f"its launcher config {BOOTSTRAP_CONFIG}"
        except Exception:  # noqa: BLE001 - unreadable: unknown
            pass
    report = autoscaler_status()
    types = set((report.get("node_type_mapping") or {}).values()) | set(report.get("active_nodes") or {})
    try:
        ids = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
    except Exception:  # noqa: BLE001
        return None, None, ""
    if types and all(t.startswith("node_") and t[len("node_"):] in ids for t in types):
        return False, None, "no autoscaler: its nodes were started by hand (`ray start`)"
    if types:
        return True, None, "an autoscaler runs"
    return None, None, ""


def launcher_nodes(config: dict[str, Any]) -> int | None:
    """The most nodes (head included) a launcher config (as `ray up` leaves it in ~/ray_bootstrap_config.yaml,
    after Ray's prepare_config) can have: 1 + the workers its node types allow, within its max_workers; on the
    local provider also within its worker_ips (a fixed list of machines). None when a type sets no bound."""
    types = config.get("available_node_types") or {}
    if not types:
        return None
    caps = [t.get("max_workers") for t in types.values()]
    if any(not isinstance(c, int) for c in caps):
        return None
    workers = sum(caps)
    if isinstance(config.get("max_workers"), int):
        workers = min(workers, config["max_workers"])
    provider = config.get("provider") or {}
    if provider.get("type") == "local" and isinstance(provider.get("worker_ips"), list):
        workers = min(workers, len(provider["worker_ips"]))
    return 1 + workers


def launcher_full(config: dict[str, Any], alive: int | None) -> str:
    """Why a cluster made from `config` cannot grow when `alive` nodes are up ("" when it can, or when `alive` is
    unknown): every node the config allows is up (launcher_nodes), so its autoscaler has nothing to add (e.g. a
    local-provider cluster of fixed worker_ips, or node types with min_workers == max_workers, all started)."""
    most = launcher_nodes(config)
    if most is None or alive is None or alive < most:
        return ""
    return f"all {most} nodes it allows are up, it cannot add more"


def _alive_nodes_or_none() -> int | None:
    try:
        return alive_nodes()
    except Exception:  # noqa: BLE001 - Ray not joined (or its API changed): unknown
        return None


def alive_nodes() -> int:
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive"))
