"""Every use of Ray's private internals, in one place (written for Ray 2.60; setup.py pins ray 2.60.x).

Ray offers no public way to do these things; each is reached here and nowhere else, each has a probe in `check()`
(tests/test_ray_internals.py fails, naming it, when a Ray upgrade moves one), and each is weighed against what
it buys, i.e. what happens without it (figures: BENCHMARKS.md):

1. ASHA's rungs (`ASHAScheduler._brackets[0]`, `on_result`, `_rungs`), replayed on resume (schedulers/asha):
   a correct resume; without it every resumed trial passes the rungs it reaches first, for lack of competition.
2. A local instance on loopback only (`ray._private.ray_constants.ENABLE_RAY_CLUSTER`, `ray.init(
   _node_ip_address=...)`; cluster.init_ray): nothing of a local run listens beyond this machine (measured in
   docs/RELIABILITY.md); without it Ray's gRPC servers listen on all interfaces, its metrics on 0.0.0.0.
3. Train V2's per-report INFO logger (`ray.train.v2._internal.execution.context.logger`) and the logger of Ray's
   token set-up (`ray._private.authentication.authentication_token_setup.logger`): quiet output only (a line per
   report and worker; a warning before every run's output and before a pre-flight error's one line).
4. Environment switches Ray reads but does not document: RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (TRAIN_POLL_S: with
   Ray's 2 s a 20-epoch train waited 34 of its 64 s, section 0); RAY_prestart_worker_first_driver (idle workers
   that took CPU from ray.init, section 2); RAY_GCS_SERVER_PORT (a private instance that Train's placement-group
   cleaner cannot confuse with another's: it once removed a live run's group); RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER
   (item 2); TUNE_DISABLE_SIGINT_HANDLER (Ctrl-C records trials as interrupted, not finished);
   RAY_TRAIN_ENABLE_PRINT_PATCH (prints not shown twice); RAY_TRAIN_ENABLE_PREEMPTION_WATCHER (off locally: an
   error-level log line per run; its 0.2 CPU-s of a 29 s run, section 1, buys nothing measurable).
5. A retried trial's result.json (`Trial.local_path`, `StorageContext.trial_fs_path`; Tune's JSON logger copies
   the lagging storage copy back, `LoggerCallback._restore_from_remote`): push_result_file keeps every epoch of a
   retried trial, and of a killed driver's (`--resume` reads the storage's copy).
6. Ray's HyperBandScheduler held to one bracket (`hyperband._Bracket`, its `_all_trials`; the scheduler's
   `_hyperbands`, `_state`, `_trial_info`, `_process_bracket`; in ray_internals_tune.py): the whole `sha`
   scheduler (Ray has none).
7. No dashboard process for a local instance without the dashboard (`ray._private.node.Node.start_api_server`
   skipped for that start: no_api_server): 1.4-1.6 s of every `ssl-ray tune` start (ray.init median 2.12 s
   against 4.03 s, "No dashboard process").
8. PBT over plan entries (`PopulationBasedTraining._get_new_config`, `_trial_state[t].last_result`; its
   on_trial_add reads `search_alg`; in ray_internals_tune.py): each trial keeps its plan entry, folder and records;
   every exploit recorded.
9. What a joined cluster can grow to (`ray._private.state.state.get_max_resources_from_cluster_config`, the
   autoscaler's status via `ray.experimental.internal_kv._internal_kv_get`; cluster.autoscaler_view): a request
   larger than the cluster waits where it can grow, is refused at once where it cannot; a change in Ray: "unknown".
10. Tune's experiment snapshots made rare (`TuneController._create_checkpoint_manager` rebuilt without the snapshot
   forced every `num_to_keep` trial checkpoints; TUNE_GLOBAL_CHECKPOINT_S 600 unless set; rare_experiment_snapshots
   around the fit, in ray_internals_tune.py): storage written per result flat in the number of trials (section 10:
   without it 43 -> 61 requests, 277 -> 426 KB per result from 100 to 300 trials: each snapshot re-uploads every
   trial's driver-side files and a ~1 MB experiment_state). Lost: a driver killed mid-search leaves Tune's
   driver-side files (params.json, progress.csv, error.txt, experiment_state) up to 10 min behind in the storage
   instead of ~10 s. `--resume` reads none of them (ssl-ray's records, row files, result.json pushes and the
   trials' checkpoints, written by the trials, are its state); what shows: such a trial's error reads "error",
   its TensorBoard run has no searched values in its name, a retried trial's progress.csv may miss epochs.
11. The worker output Ray shows on the driver (`ray._private.worker.global_worker_stdstream_dispatcher`, its
   "ray_print_logs" handler) without the traceback Ray's own SIGTERM handler (`Worker.main_loop`'s
   sigterm_handler) leaves when Ray ends a worker inside a callback ("Exception ignored in ... SystemExit: 1"):
   without it that traceback shows, now and then, after a Ctrl-C or an ASHA stop (CI of 2026-12-03).
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import os
from typing import Any, Callable, Iterable, Iterator

WRITTEN_FOR = "2.60"  # the Ray minor version these internals were read in

PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
SIGINT_HANDLER_ENV = "TUNE_DISABLE_SIGINT_HANDLER"
CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
GCS_PORT_ENV = "RAY_GCS_SERVER_PORT"
PRINT_PATCH_ENV = "RAY_TRAIN_ENABLE_PRINT_PATCH"
TRAIN_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
PRESTART_ENV = "RAY_prestart_worker_first_driver"
TRAIN_POLL_S = "0.2"  # how often Train V2's controller polls its workers (Ray's 2 s); each report waits (item 4)
API_SERVER_STEP = "start_api_server"  # the step of ray._private.node.Node that starts the dashboard (item 7)
LOOPBACK_NODE: dict[str, Any] = {"_node_ip_address": "127.0.0.1"}  # ray.init's private argument (item 2)
TOKEN_SETUP_LOGGER = "ray._private.authentication.authentication_token_setup"
RESULT_FILE = "result.json"
PRINT_LOGS = "ray_print_logs"  # the dispatcher's handler that prints the workers' output on the driver (item 11)
SIGTERM_FRAME = "in sigterm_handler"  # the frame of Worker.main_loop's handler in a traceback (item 11)
AUTOSCALING_STATUS_KEY = "__autoscaling_status"  # the autoscaler's status (`ray status`; DEBUG_AUTOSCALING_STATUS)

from . import ray_internals_tune as _tune  # noqa: E402 - items 6, 8, 10, re-exported (their probes: PROBES)
from .ray_internals_tune import (BracketDecisionHook, ExploitHook, GLOBAL_CHECKPOINT_ENV,  # noqa: E402,F401
                                 CHECKPOINT_MANAGER_STEP, rare_experiment_snapshots, sha_arrived, sha_bracket,
                                 sha_decide, sha_join, sha_record, sha_remove, without_search)


# ---- 1. ASHA's rungs ------------------------------------------------------------------------------------------
def asha_bracket(scheduler: Any) -> Any:
    """The single bracket of an ASHAScheduler (ssl-ray uses Ray's default of one bracket)."""
    brackets = scheduler._brackets
    if len(brackets) != 1:
        raise RuntimeError(f"ssl-ray replays ASHA rungs into one bracket; this scheduler has {len(brackets)}")
    return brackets[0]


def asha_rungs(scheduler: Any) -> dict[float, dict[str, float]]:
    """{milestone: {trial id: recorded (sign-flipped) value}} of the scheduler's bracket (for tests and checks)."""
    return {milestone: dict(rec) for milestone, rec in asha_bracket(scheduler)._rungs}


def asha_replay(scheduler: Any, results: Iterable[tuple[float, str, float]], mode: str) -> None:
    """Record (time, trial key, metric value) results in the scheduler's rungs, in the order given, as if the
    trials had reported them (the bracket's own rules decide; ASHA keeps values sign-flipped in min mode)."""
    from types import SimpleNamespace

    bracket = asha_bracket(scheduler)
    for time, trial_id, value in results:  # a trial as the bracket reads it: its id (experiment.plan_key)
        bracket.on_result(SimpleNamespace(trial_id=trial_id), time, -value if mode == "min" else value)


# ---- 2., 3., 7. starting a local instance -------------------------------------------------------------------
@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """While Ray starts a local node: every server on 127.0.0.1 (Ray's behaviour where it supports no clusters).
    The environment variable reaches Ray's own processes; the driver reads the module constant."""
    import ray._private.ray_constants as ray_constants

    saved_env, saved_flag = os.environ.get(CLUSTER_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[CLUSTER_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(CLUSTER_ENV, None)
        else:
            os.environ[CLUSTER_ENV] = saved_env


@contextlib.contextmanager
def no_token_warning() -> Iterator[None]:
    """While Ray starts a local node: no "Token authentication is enabled" warning on stderr (Ray 2.60 says it
    before ray.init's logging_level applies). The authentication itself is unchanged (cluster._private_token)."""
    log = logging.getLogger(TOKEN_SETUP_LOGGER)
    saved = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(saved)


@contextlib.contextmanager
def no_api_server() -> Iterator[None]:
    """While Ray starts a local node without the dashboard: no dashboard process at all (Ray 2.60 still starts one
    loading only its usage statistics, and waits for it). `Node.start_api_server` is replaced, for this start
    only, by a step that records no dashboard URL, as Ray does when its dashboard cannot start."""
    from ray._private import node

    saved = node.Node.__dict__[API_SERVER_STEP]

    def skip(self: Any, *, include_dashboard: Any, raise_on_failure: bool) -> None:
        self._webui_url = None

    setattr(node.Node, API_SERVER_STEP, skip)
    try:
        yield
    finally:
        setattr(node.Node, API_SERVER_STEP, saved)


def quiet_train_reports() -> None:
    """Silence Train V2's INFO line per report ("Reporting training result ..."); a no-op if Ray moved it."""
    try:
        from ray.train.v2._internal.execution import context as train_context

        train_context.logger.setLevel(logging.WARNING)
    except (ImportError, AttributeError):
        pass


# ---- 5. a retried trial's result.json -----------------------------------------------------------------------
def trial_storage(trial: Any) -> tuple[Any, str]:
    """(storage filesystem, the trial's folder there): where Tune puts the trial's files (Trial.storage)."""
    return trial.storage.storage_filesystem, trial.storage.trial_fs_path


def push_result_file(trial: Any) -> None:
    """Copy a trial's driver-side result.json to its folder in the storage (before Tune restores it from there)."""
    import pyarrow.fs

    fs, folder = trial_storage(trial)
    local, remote = os.path.join(trial.local_path, RESULT_FILE), f"{folder}/{RESULT_FILE}"
    if os.path.exists(local) and os.path.abspath(local) != os.path.abspath(remote):
        pyarrow.fs.copy_files(local, remote, destination_filesystem=fs)


# ---- 9. what a joined cluster can grow to ---------------------------------------------------------------------
def cluster_config_max() -> dict[str, float] | None:
    """The most the cluster can hold, from the cluster config Ray Train checks its worker groups against (in Ray's
    GCS when an autoscaler reported one); None when there is none or it cannot be read."""
    try:
        from ray._private.state import state

        most = state.get_max_resources_from_cluster_config()
        return {k: float(v) for k, v in most.items()} if most else None
    except Exception:  # noqa: BLE001 - private API: unknown rather than an error
        return None


def autoscaler_status() -> dict[str, Any]:
    """The autoscaler monitor's last report ({} when there is none, or it cannot be read)."""
    try:
        import json

        from ray.experimental.internal_kv import _internal_kv_get

        raw = _internal_kv_get(AUTOSCALING_STATUS_KEY)
        return (json.loads(raw) if raw else {}).get("autoscaler_report") or {}
    except Exception:  # noqa: BLE001 - private API: unknown rather than an error
        return {}


# ---- 11. a worker's exit on SIGTERM, not shown as a traceback ---------------------------------------------------
def quiet_sigterm_exits() -> None:
    """Show the workers' output on this driver as Ray does, less the tracebacks of Ray's own SIGTERM handler
    (without_sigterm_exits). A no-op when Ray forwards no output here or moved the handler."""
    try:
        from ray._private.worker import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return
    with dispatcher._lock:
        dispatcher.handlers = [(name, _filtered(h) if name == PRINT_LOGS and not hasattr(h, "ssl_ray") else h)
                               for name, h in dispatcher.handlers]


def _filtered(handle: Callable[[dict], None]) -> Callable[[dict], None]:
    def filtered(data: dict) -> None:
        lines = without_sigterm_exits(data.get("lines") or [])
        if lines or not data.get("lines"):
            handle({**data, "lines": lines})

    filtered.ssl_ray = True  # type: ignore[attr-defined]
    return filtered


def without_sigterm_exits(lines: list[str]) -> list[str]:
    """`lines` less every traceback that passes through Ray's SIGTERM handler and ends in SystemExit (with the
    "Exception ignored in" line before it)."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("Traceback (most recent call last):"):
            j = i + 1
            while j < len(lines) and lines[j][:1] in (" ", "\t", ""):  # the frames: indented (or blank)
                j += 1
            block = lines[i:j + 1]
            if j < len(lines) and lines[j].startswith("SystemExit") and any(SIGTERM_FRAME in b for b in block):
                if out and out[-1].startswith("Exception ignored in"):
                    out.pop()
                i = j + 1
                continue
        out.append(lines[i])
        i += 1
    return out


# ---- the probes: (what, the private names it covers, probe), each True when the internal is there as written ----
PROBES: list[tuple[str, tuple[str, ...], Callable[[], bool]]] = list(_tune.PROBES)


def probe(what: str, *covers: str) -> Callable[[Callable[[], bool]], Callable[[], bool]]:
    def register(f: Callable[[], bool]) -> Callable[[], bool]:
        PROBES.append((what, covers, f))
        return f

    return register


def check() -> list[str]:
    """The internals this module relies on that the installed Ray lacks ([] when all are there)."""
    import ray

    v = ray.__version__
    missing = [] if v.startswith(f"{WRITTEN_FOR}.") else [f"ray {v} (written for {WRITTEN_FOR}.x)"]
    return missing + [what for what, _, f in PROBES if not _passes(f)]


def _passes(f: Callable[[], bool]) -> bool:
    try:
        return f()
    except (ImportError, AttributeError, TypeError, KeyError, ValueError, OSError):
        return False


def _params(f: Any) -> list[str]:  # a function's parameter names
    return list(inspect.signature(f).parameters)


@probe("ASHAScheduler._brackets[0].on_result(trial, cur_iter, cur_rew) and ._rungs", "_brackets", "_rungs")
def _asha() -> bool:
    from ray.tune.schedulers import ASHAScheduler

    b = ASHAScheduler(time_attr="epoch", max_t=9, grace_period=1, reduction_factor=3, metric="m", mode="min")._brackets
    return len(b) == 1 and hasattr(b[0], "_rungs") and _params(b[0].on_result) == ["trial", "cur_iter", "cur_rew"]


@probe("ray._private.ray_constants.ENABLE_RAY_CLUSTER, ENABLE_RAY_CLUSTERS_ENV_VAR, GCS_PORT_ENVIRONMENT_VARIABLE and "
       "DEBUG_AUTOSCALING_STATUS; ray.init(_node_ip_address=...)", "ray._private.ray_constants", *LOOPBACK_NODE)
def _loopback() -> bool:
    import ray
    import ray._private.ray_constants as c

    return (isinstance(c.ENABLE_RAY_CLUSTER, bool) and c.ENABLE_RAY_CLUSTERS_ENV_VAR == CLUSTER_ENV
            and c.GCS_PORT_ENVIRONMENT_VARIABLE == GCS_PORT_ENV and c.DEBUG_AUTOSCALING_STATUS == AUTOSCALING_STATUS_KEY
            and all(f'"{k}"' in inspect.getsource(ray.init) for k in LOOPBACK_NODE))


@probe(f"ray.train.v2._internal.execution.context.logger; {TOKEN_SETUP_LOGGER}.logger (its _warn_token_auth_enabled)",
       "ray.train.v2._internal.execution", "ray._private.authentication", "_warn_token_auth_enabled")
def _loggers() -> bool:
    from ray._private.authentication import authentication_token_setup as token_setup
    from ray.train.v2._internal.execution import context as train_context

    return (isinstance(train_context.logger, logging.Logger) and isinstance(token_setup.logger, logging.Logger)
            and token_setup.logger.name == TOKEN_SETUP_LOGGER and callable(token_setup._warn_token_auth_enabled))


@probe(f"ray.train.v2._internal.constants: {PRINT_PATCH_ENV}, {PREEMPTION_WATCHER_ENV}, {TRAIN_POLL_ENV}; the raylet's "
       f"system config {PRESTART_ENV[len('RAY_'):]!r}", "ray.train.v2._internal.constants")
def _switches() -> bool:
    import mmap

    import ray
    from ray.train.v2._internal import constants as c

    raylet = os.path.join(os.path.dirname(ray.__file__), "core", "src", "ray", "raylet", "raylet")
    with open(raylet, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        prestart = m.find(PRESTART_ENV[len("RAY_"):].encode()) >= 0
    return prestart and (c.ENABLE_PRINT_PATCH_ENV_VAR, c.ENABLE_PREEMPTION_WATCHER_ENV_VAR,
                         c.HEALTH_CHECK_INTERVAL_S_ENV_VAR) == (PRINT_PATCH_ENV, PREEMPTION_WATCHER_ENV, TRAIN_POLL_ENV)


@probe("Trial.local_path/path, StorageContext.trial_fs_path (properties); LoggerCallback._restore_from_remote (else "
       "push_result_file may be unneeded)", "ray.train._internal.storage", "_restore_from_remote")
def _result_file() -> bool:
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial
    from ray.tune.logger import logger as tune_logger

    return (all(isinstance(getattr(c, a), property) for c, a in ((Trial, "local_path"), (Trial, "path"),
                                                                 (StorageContext, "trial_fs_path")))
            and hasattr(tune_logger.LoggerCallback, "_restore_from_remote"))


@probe(f"ray._private.node.Node.{API_SERVER_STEP}(self, *, include_dashboard, raise_on_failure), called by "
       f"start_head_processes, setting _webui_url", "ray._private.node", "_webui_url")
def _api_server() -> bool:
    from ray._private import node

    step = node.Node.__dict__[API_SERVER_STEP]
    return (_params(step) == ["self", "include_dashboard", "raise_on_failure"] and "self._webui_url" in
            inspect.getsource(step) and f"self.{API_SERVER_STEP}(" in inspect.getsource(node.Node.start_head_processes))


@probe(f"ray.tune.tune reads {SIGINT_HANDLER_ENV} (without it Tune's own Ctrl-C handler stops the trials as if they "
       f"had finished)", SIGINT_HANDLER_ENV)
def _sigint() -> bool:
    return f'"{SIGINT_HANDLER_ENV}"' in inspect.getsource(importlib.import_module("ray.tune.tune"))


@probe("ray._private.state.state.get_max_resources_from_cluster_config; ray.experimental.internal_kv._internal_kv_get",
       "ray._private.state", "_internal_kv_get")
def _cluster() -> bool:
    from ray._private.state import state
    from ray.experimental.internal_kv import _internal_kv_get

    return callable(state.get_max_resources_from_cluster_config) and callable(_internal_kv_get)


@probe(f"ray._private.worker.global_worker_stdstream_dispatcher (_lock, handlers: its {PRINT_LOGS!r}, added by "
       f"connect); Worker.main_loop's sigterm_handler raising SystemExit", "ray._private.worker.Worker",
       "ray._private.worker.connect", "ray._private.worker.global_worker_stdstream_dispatcher", "_lock", PRINT_LOGS,
       SIGTERM_FRAME)
def _sigterm_exits() -> bool:
    from ray._private.worker import Worker, connect, global_worker_stdstream_dispatcher as d

    loop = inspect.getsource(Worker.main_loop)
    return (isinstance(d.handlers, list) and hasattr(d._lock, "acquire") and f'"{PRINT_LOGS}"' in
            inspect.getsource(connect) and "def sigterm_handler(" in loop
            and "raise_sys_exit_with_custom_error_message" in loop)
