"""Every use of Ray's private internals, in one place (written for Ray 2.60; setup.py pins ray 2.60.x).

Ray offers no public way to do these things; each is reached here and nowhere else, and
`tests/test_ray_internals.py` fails loudly, naming the internal, when a Ray upgrade moves one:

1. ASHA's rung state (`ASHAScheduler._brackets[0]`, its `on_result` and `_rungs`): Ray does not save it, so a
   resumed search replays the saved results into it (tune.replay_rungs -> asha_replay).
2. A local instance on loopback only (`ray._private.ray_constants.ENABLE_RAY_CLUSTER`): with it off, Ray keeps
   every server of the node on 127.0.0.1 (cluster.init_ray; measured in docs/RELIABILITY.md); and
   `ray.init(_node_ip_address=...)`, a private argument, names the node 127.0.0.1 (LOOPBACK_NODE).
3. Train V2's per-report INFO logger (`ray.train.v2._internal.execution.context.logger`), which RunConfig's
   LoggingConfig does not reach; and the logger of Ray's token set-up
   (`ray._private.authentication.authentication_token_setup.logger`), whose "Token authentication is enabled"
   warning comes before ray.init's `logging_level` applies (no_token_warning).
5. A retried trial's result.json (`Trial.local_path`, `Trial.storage`): when Tune restarts a failed trial
   (--max-failures) its JSON logger copies result.json back from the storage over the driver's local copy
   (ray/tune/logger/logger.py, `_restore_from_remote`), and the storage copy lags by the rows reported since
   the last sync; `push_result_file` sends the local copy first, so those epochs are not lost. hooks.TrialRecorder
   also pushes it at each result and before recording a trial finished, so a killed driver leaves the
   storage's copy (which `--resume` reads) complete.
4. `RAY_TRAIN_ENABLE_PREEMPTION_WATCHER`, `TUNE_DISABLE_SIGINT_HANDLER`, `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`,
   `RAY_GCS_SERVER_PORT` (the local instance's GCS port: cluster.init_ray), `RAY_TRAIN_ENABLE_PRINT_PATCH`,
   `RAY_TRAIN_HEALTH_CHECK_INTERVAL_S` (Train V2's worker polling, TRAIN_POLL_S), `RAY_prestart_worker_first_driver`
   (the raylet's system config `prestart_worker_first_driver`, read from the environment it starts in: off for a
   local instance, cluster.init_ray): environment switches Ray reads but does not document as API.
6. Synchronous successive halving (hooks.PlanSHA) is Ray's `HyperBandScheduler` held to one bracket: the bracket
   class (`ray.tune.schedulers.hyperband._Bracket`), the scheduler's bracket records (`_hyperbands`, `_state`,
   `_trial_info`), its decision step (`_process_bracket`, overridden) and the bracket's list of the trials it
   was given (`_all_trials`): sha_bracket, sha_join and sha_arrived.
7. A local instance started without the dashboard starts no dashboard process either: `Node.start_api_server`
   (ray._private.node) is skipped for that start (no_api_server; cluster.init_ray).
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import os
from typing import Any, Iterable, Iterator

WRITTEN_FOR = "2.60"
"""The Ray minor version these internals were read in."""

PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
SIGINT_HANDLER_ENV = "TUNE_DISABLE_SIGINT_HANDLER"
CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
GCS_PORT_ENV = "RAY_GCS_SERVER_PORT"
PRINT_PATCH_ENV = "RAY_TRAIN_ENABLE_PRINT_PATCH"
TRAIN_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
PRESTART_ENV = "RAY_prestart_worker_first_driver"
TRAIN_POLL_S = "0.2"
"""How often Train V2's controller polls its workers (Ray's default 2 s). A worker's `ray.train.report` waits
until the controller has taken its previous result, so every report costs up to one interval: with Ray's 2 s,
a 20-epoch `ssl-ray train --ray-train` of digits spent 34 of its 64 s waiting (BENCHMARKS.md, section 0, run C)."""
API_SERVER_STEP = "start_api_server"
"""The step of Ray's `Node` (ray._private.node) that starts the dashboard process (no_api_server)."""
LOOPBACK_NODE: dict[str, Any] = {"_node_ip_address": "127.0.0.1"}
"""ray.init's private argument that names the local node 127.0.0.1 (with loopback_only: nothing listens beyond it)."""


def asha_bracket(scheduler: Any) -> Any:
    """The single bracket of an ASHAScheduler (ssl-ray uses Ray's default of one bracket)."""
    brackets = scheduler._brackets
    if len(brackets) != 1:
        raise RuntimeError(f"ssl-ray replays ASHA rungs into one bracket; this scheduler has {len(brackets)}")
    return brackets[0]


def asha_rungs(scheduler: Any) -> dict[float, dict[str, float]]:
    """{milestone: {trial id: recorded (sign-flipped) value}} of the scheduler's bracket (for tests and checks)."""
    return {milestone: dict(rec) for milestone, rec in asha_bracket(scheduler)._rungs}


class _TrialKey:
    """What ASHA's bracket reads of a trial: its id (here a plan entry's key, hooks.plan_key)."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def asha_replay(scheduler: Any, results: Iterable[tuple[float, str, float]], mode: str) -> None:
    """Record (time, trial key, metric value) results in the scheduler's rungs, in the order given, as if the
    trials had reported them (the bracket's own rules decide; ASHA keeps values sign-flipped in min mode)."""
    bracket = asha_bracket(scheduler)
    for time, trial_id, value in results:
        bracket.on_result(_TrialKey(trial_id), time, -value if mode == "min" else value)


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


TOKEN_SETUP_LOGGER = "ray._private.authentication.authentication_token_setup"


@contextlib.contextmanager
def no_token_warning() -> Iterator[None]:
    """While Ray starts a local node: no "Token authentication is enabled for this Ray cluster" warning. Ray 2.60
    turns token authentication on for every new local instance and says so on the driver's stderr, before
    ray.init's logging_level applies: a line before every run's output, and before a pre-flight error's one line
    (tune.preflight_while_ray_starts). The authentication itself is unchanged (cluster._private_token)."""
    log = logging.getLogger(TOKEN_SETUP_LOGGER)
    saved = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(saved)


@contextlib.contextmanager
def no_api_server() -> Iterator[None]:
    """While Ray starts a local node without the dashboard: no dashboard process at all. With
    `include_dashboard=False` Ray 2.60 still starts its dashboard process as an "API server" that loads only the
    usage-statistics module (`--modules-to-load=UsageStatsHead`: no State API, no jobs), and ray.init waits for it
    to boot (1.3-1.7 s here) before it starts the raylet. Nothing of ssl-ray uses it; a node started with the
    dashboard (Ray Train's runs: cluster.init_ray) is unchanged. `Node.start_api_server` is replaced, for this
    start only, by a step that records no dashboard URL, as Ray does when its dashboard cannot start."""
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


RESULT_FILE = "result.json"


def push_result_file(trial: Any) -> None:
    """Copy a trial's driver-side result.json to its folder in the storage (before Tune restores it from there)."""
    import pyarrow.fs

    local = os.path.join(trial.local_path, RESULT_FILE)
    remote = f"{trial.storage.trial_fs_path}/{RESULT_FILE}"
    if os.path.exists(local) and os.path.abspath(local) != os.path.abspath(remote):
        pyarrow.fs.copy_files(local, remote,
                              destination_filesystem=trial.storage.storage_filesystem)


def sha_bracket(time_attr: str, n_trials: int, first_rung: int, max_t: int, rf: int, decisions: int) -> Any:
    """One HyperBand bracket: n_trials trials, the first decision at first_rung, then every rf times later (capped
    at max_t), `decisions` halvings in all, each keeping ceil(alive / rf)."""
    from ray.tune.schedulers.hyperband import _Bracket

    return _Bracket(time_attr=time_attr, max_trials=n_trials, init_t_attr=first_rung, max_t_attr=max_t, eta=rf,
                    s=decisions, stop_last_trials=True)


def sha_join(scheduler: Any, bracket: Any, trial: Any) -> None:
    """Put a new trial into the scheduler's one bracket (HyperBandScheduler.on_trial_add would open more)."""
    if not scheduler._hyperbands[0]:
        scheduler._hyperbands[0].append(bracket)
        scheduler._state["bracket"] = bracket
    bracket.add_trial(trial)
    scheduler._trial_info[trial] = bracket, 0


def sha_arrived(bracket: Any) -> int:
    """How many trials the bracket has been given so far (finished ones included)."""
    return len(bracket._all_trials)


def check() -> list[str]:
    """The internals this module relies on that the installed Ray lacks ([] when all are there)."""
    import ray

    missing = []
    if not ray.__version__.startswith(WRITTEN_FOR + "."):
        missing.append(f"ray {ray.__version__} (written for {WRITTEN_FOR}.x)")
    from ray.tune.schedulers import ASHAScheduler

    s = ASHAScheduler(time_attr="epoch", max_t=9, grace_period=1, reduction_factor=3, metric="m", mode="min")
    b = getattr(s, "_brackets", None)
    if not b or not hasattr(b[0], "on_result") or not hasattr(b[0], "_rungs"):
        missing.append("ASHAScheduler._brackets[0].on_result/_rungs")
    elif list(inspect.signature(b[0].on_result).parameters) != ["trial", "cur_iter", "cur_rew"]:
        missing.append("ASHAScheduler._brackets[0].on_result(trial, cur_iter, cur_rew)")
    from ray.tune.schedulers import HyperBandScheduler

    try:
        hb = HyperBandScheduler(time_attr="epoch", max_t=9, metric="m", mode="min")
        b = sha_bracket("epoch", 4, 1, 9, 3, 2)
        if not (isinstance(hb._hyperbands, list) and isinstance(hb._state, dict) and isinstance(hb._trial_info, dict)
                and callable(getattr(hb, "_process_bracket", None)) and sha_arrived(b) == 0):
            raise TypeError
    except (ImportError, AttributeError, TypeError):
        missing.append("ray.tune.schedulers.hyperband: _Bracket(time_attr, max_trials, init_t_attr, max_t_attr, eta, "
                       "s, stop_last_trials), HyperBandScheduler._hyperbands/_state/_trial_info/_process_bracket, "
                       "_Bracket._all_trials")
    if f'"{next(iter(LOOPBACK_NODE))}"' not in inspect.getsource(ray.init):
        missing.append(f"ray.init({next(iter(LOOPBACK_NODE))}=...)")
    try:
        import ray._private.ray_constants as ray_constants

        if not isinstance(getattr(ray_constants, "ENABLE_RAY_CLUSTER", None), bool):
            missing.append("ray._private.ray_constants.ENABLE_RAY_CLUSTER")
        for attr, env in (("ENABLE_RAY_CLUSTERS_ENV_VAR", CLUSTER_ENV),
                          ("GCS_PORT_ENVIRONMENT_VARIABLE", GCS_PORT_ENV)):
            if getattr(ray_constants, attr, None) != env:
                missing.append(f"ray._private.ray_constants.{attr} == {env!r}")
    except ImportError:
        missing.append("ray._private.ray_constants")
    try:
        from ray.train.v2._internal import constants as train_constants

        for attr, env in (("ENABLE_PRINT_PATCH_ENV_VAR", PRINT_PATCH_ENV),
                          ("ENABLE_PREEMPTION_WATCHER_ENV_VAR", PREEMPTION_WATCHER_ENV),
                          ("HEALTH_CHECK_INTERVAL_S_ENV_VAR", TRAIN_POLL_ENV)):
            if getattr(train_constants, attr, None) != env:
                missing.append(f"ray.train.v2._internal.constants.{attr} == {env!r}")
    except ImportError:
        missing.append("ray.train.v2._internal.constants")
    try:
        from ray.train.v2._internal.execution import context as train_context

        if not isinstance(getattr(train_context, "logger", None), logging.Logger):
            missing.append("ray.train.v2._internal.execution.context.logger")
    except ImportError:
        missing.append("ray.train.v2._internal.execution.context")
    try:
        from ray._private.authentication import authentication_token_setup as token_setup

        log = getattr(token_setup, "logger", None)
        if not (isinstance(log, logging.Logger) and log.name == TOKEN_SETUP_LOGGER
                and callable(getattr(token_setup, "_warn_token_auth_enabled", None))):
            missing.append(f"{TOKEN_SETUP_LOGGER}.logger (its _warn_token_auth_enabled)")
    except ImportError:
        missing.append(TOKEN_SETUP_LOGGER)
    from ray._private import node

    step = node.Node.__dict__.get(API_SERVER_STEP)
    if not (callable(step) and list(inspect.signature(step).parameters) == ["self", "include_dashboard",
                                                                          "raise_on_failure"]
            and f"self.{API_SERVER_STEP}(" in inspect.getsource(node.Node.start_head_processes)
            and "self._webui_url" in inspect.getsource(step)):
        missing.append(f"ray._private.node.Node.{API_SERVER_STEP}(self, *, include_dashboard, raise_on_failure), "
                       f"called by start_head_processes, setting _webui_url")
    raylet = os.path.join(os.path.dirname(ray.__file__), "core", "src", "ray", "raylet", "raylet")
    if not _binary_contains(raylet, PRESTART_ENV[len("RAY_"):].encode()):
        missing.append(f"the raylet's system config {PRESTART_ENV[len('RAY_'):]!r} ({PRESTART_ENV})")
    from ray.tune.experiment import Trial

    from ray.train._internal.storage import StorageContext

    for cls, attr in ((Trial, "local_path"), (Trial, "path"), (StorageContext, "trial_fs_path")):
        if not isinstance(getattr(cls, attr, None), property):
            missing.append(f"{cls.__module__}.{cls.__name__}.{attr}")
    from ray.tune.logger import logger as tune_logger

    if not hasattr(tune_logger.LoggerCallback, "_restore_from_remote"):
        missing.append("ray.tune.logger.LoggerCallback._restore_from_remote (push_result_file may be unneeded)")
    return missing


def _binary_contains(path: str, needle: bytes) -> bool:
    """Whether the file at `path` holds `needle` (a system-config name compiled into a Ray binary)."""
    import mmap

    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return m.find(needle) >= 0
    except (OSError, ValueError):
        return False
