"""The Ray internals ssl-ray relies on (ssl_ray/tuning/ray_internals.py) exist in the installed Ray, and behave
as the adapter assumes: this file fails, naming the internal, when a Ray upgrade moves one."""
from __future__ import annotations

import os

import pytest

from ssl_ray.tuning import ray_internals, ray_internals_tune

ADAPTER = ("ray_internals.py", "ray_internals_tune.py")  # the adapter's files (the second split out for size)


def test_every_internal_is_there_in_the_installed_ray():
    assert ray_internals.check() == []


def test_asha_bracket_records_results_in_its_rungs():
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    s = ASHAScheduler(time_attr="epoch", max_t=9, grace_period=1, reduction_factor=3, metric="val_error", mode="min")

    class T:
        def __init__(self, tid):
            self.trial_id = tid

    b = ray_internals.asha_bracket(s)
    for tid, v in (("a", 10.0), ("b", 50.0), ("c", 70.0)):
        b.on_result(T(tid), 1, -v)  # ASHA keeps min-mode values sign-flipped
    assert ray_internals.asha_rungs(s)[1] == {"a": -10.0, "b": -50.0, "c": -70.0}
    assert b.on_result(T("d"), 1, -90.0) == TrialScheduler.STOP  # worse than the rung's cut-off
    assert b.on_result(T("e"), 1, -5.0) == TrialScheduler.CONTINUE


def test_asha_replay_fills_the_rungs_as_reports_would():
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    s = ASHAScheduler(time_attr="epoch", max_t=9, grace_period=1, reduction_factor=3, metric="val_error", mode="min")
    ray_internals.asha_replay(s, [(1, "a", 10.0), (1, "b", 50.0), (1, "c", 70.0), (3, "a", 8.0)], "min")
    rungs = ray_internals.asha_rungs(s)
    assert rungs[1] == {"a": -10.0, "b": -50.0, "c": -70.0} and rungs[3] == {"a": -8.0}
    bracket = ray_internals.asha_bracket(s)

    class T:
        trial_id = "d"

    assert bracket.on_result(T(), 1, -90.0) == TrialScheduler.STOP  # judged against the replayed cut-off
    s2 = ASHAScheduler(time_attr="epoch", max_t=9, grace_period=1, reduction_factor=3, metric="acc", mode="max")
    ray_internals.asha_replay(s2, [(1, "a", 0.5)], "max")
    assert ray_internals.asha_rungs(s2)[1] == {"a": 0.5}  # kept as is in max mode


def test_loopback_only_sets_and_restores_the_flag(monkeypatch):
    import ray._private.ray_constants as ray_constants

    monkeypatch.delenv(ray_internals.CLUSTER_ENV, raising=False)
    before = ray_constants.ENABLE_RAY_CLUSTER
    with ray_internals.loopback_only():
        assert ray_constants.ENABLE_RAY_CLUSTER is False
        assert os.environ[ray_internals.CLUSTER_ENV] == "0"
    assert ray_constants.ENABLE_RAY_CLUSTER == before
    assert ray_internals.CLUSTER_ENV not in os.environ
    with pytest.raises(KeyError):
        with ray_internals.loopback_only():
            raise KeyError("x")
    assert ray_constants.ENABLE_RAY_CLUSTER == before  # restored after an error too


def test_no_api_server_skips_the_step_and_puts_it_back():
    from ray._private import node

    before = node.Node.start_api_server

    class Fake:
        pass

    fake = Fake()
    with ray_internals.no_api_server():
        assert node.Node.start_api_server is not before
        node.Node.start_api_server(fake, include_dashboard=False, raise_on_failure=False)
        assert fake._webui_url is None  # what ray.init reads back as the dashboard's address
    assert node.Node.start_api_server is before
    with pytest.raises(KeyError):
        with ray_internals.no_api_server():
            raise KeyError("x")
    assert node.Node.start_api_server is before  # put back after an error too


def test_no_other_module_reaches_into_ray_internals():
    """Private Ray names appear only in the adapter."""
    import pathlib

    import ssl_ray

    root = pathlib.Path(ssl_ray.__file__).parent
    offenders = []
    for p in root.rglob("*.py"):
        if p.name in ADAPTER:
            continue
        text = p.read_text(encoding="utf-8")
        for needle in ("ray._private", "_internal.", "._brackets", "_local_tuner", "ENABLE_RAY_CLUSTER", "._rungs",
                       ".on_result(", "_node_ip_address", "_tune_config", "RAY_GCS_SERVER_PORT",
                       "RAY_TRAIN_ENABLE_PRINT_PATCH", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
                       "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "TUNE_DISABLE_SIGINT_HANDLER", "start_api_server",
                       "_create_checkpoint_manager", "_ExperimentCheckpointManager", "TUNE_GLOBAL_CHECKPOINT_S"):
            if needle in text.replace("ray_internals", ""):
                offenders.append(f"{p.relative_to(root)}: {needle}")
    assert offenders == []


@pytest.mark.ray
def test_push_result_file_sends_the_driver_copy_to_the_storage(tmp_path, ray_local):
    """A retried trial's result.json is copied back from the storage: after the push it holds every row."""
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial

    storage = StorageContext(storage_path=str(tmp_path / "remote"), experiment_dir_name="exp")
    trial = Trial("trial_fn", config={}, storage=storage, stub=True)
    trial.init_local_path()
    assert os.path.abspath(trial.local_path) != os.path.abspath(trial.path)  # Ray stages the driver's files
    rows = "".join(f'{{"epoch": {e}}}\n' for e in (1, 2, 3))
    with open(os.path.join(trial.local_path, "result.json"), "w") as f:
        f.write(rows)
    os.makedirs(trial.path, exist_ok=True)
    with open(os.path.join(trial.path, "result.json"), "w") as f:
        f.write('{"epoch": 1}\n')  # the storage's copy, one sync behind
    ray_internals.push_result_file(trial)
    with open(os.path.join(trial.path, "result.json")) as f:
        assert f.read() == rows


# ---- every private name the adapter uses has a probe ----------------------------------------------------------
def _private_uses(source: str) -> set[str]:
    """The private Ray names `source` (ray_internals.py's text) uses: attributes named `_x` of objects it does not
    define, modules with a private part (`ray._private.node`, also as `from ray._private import node`), and
    private names imported from Ray."""
    import ast

    tree = ast.parse(source)
    own = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    used: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__") \
                and n.attr not in own:
            used.add(n.attr)
        elif isinstance(n, ast.ImportFrom) and n.module and n.module.split(".")[0] == "ray":
            for a in n.names:
                if a.name.startswith("_"):
                    used.add(a.name)
                elif any(p.startswith("_") for p in n.module.split(".")):
                    used.add(f"{n.module}.{a.name}")
        elif isinstance(n, ast.Import):
            used |= {a.name for a in n.names if any(p.startswith("_") for p in a.name.split(".")[1:])}
    return used


def _uncovered(used: set[str], covers: set[str]) -> list[str]:
    return sorted(u for u in used if not any(u == c or u.startswith(c + ".") for c in covers))


def _probe_bodies() -> str:
    import inspect

    return "\n".join(inspect.getsource(f) for _, _, f in ray_internals.PROBES)


def test_check_probes_every_private_name_the_adapter_uses():
    """Each private Ray name ray_internals.py reaches (an attribute, a module, an imported name) is covered by a
    probe of check(), and each switch it sets (an environment variable, a key, a step, a private argument) is read
    by one: a Ray upgrade that moves any of them fails test_every_internal_is_there_in_the_installed_ray."""
    import pathlib

    modules = (ray_internals, ray_internals_tune)
    covers = {c for _, cs, _ in ray_internals.PROBES for c in cs}
    used = set().union(*(_private_uses(pathlib.Path(m.__file__).read_text(encoding="utf-8")) for m in modules))
    assert {"_brackets", "_process_bracket", "ray._private.node", "_internal_kv_get",
            "_ExperimentCheckpointManager", "_checkpoint_period"} <= used  # the reader reads both files
    assert _uncovered(used, covers) == []
    switches = {k for m in modules for k in vars(m) if k.endswith(("_ENV", "_KEY", "_STEP")) or k == "LOOPBACK_NODE"}
    assert len(switches) >= 10
    bodies = _probe_bodies() + "\n".join(w for w, _, _ in ray_internals.PROBES)
    assert sorted(k for k in switches if k not in bodies) == []
    assert {f for _, _, f in ray_internals_tune.PROBES} <= {f for _, _, f in ray_internals.PROBES}  # check() runs them


def test_the_probe_coverage_check_can_fail():
    """A private attribute or module added without a probe is found (the check above is not vacuous)."""
    covers = {c for _, cs, _ in ray_internals.PROBES for c in cs}
    extra = "from ray._private import worker\n\ndef f(s):\n    return s._new_private_thing\n"
    assert _uncovered(_private_uses(extra), covers) == ["_new_private_thing", "ray._private.worker"]


def test_no_other_module_imports_a_private_ray_module():
    """Outside ray_internals.py no module of ssl_ray imports a private Ray module or name (read from the imports,
    in addition to the text search of test_no_other_module_reaches_into_ray_internals)."""
    import pathlib

    import ssl_ray

    root = pathlib.Path(ssl_ray.__file__).parent
    found = {str(p.relative_to(root)): sorted(u for u in _private_uses(p.read_text(encoding="utf-8")) if "." in u
                                              or u.startswith("_internal"))
             for p in root.rglob("*.py") if p.name not in ADAPTER}
    assert {k: v for k, v in found.items() if v} == {}


# ---- 10. Tune's experiment snapshots made rare ------------------------------------------------------------------
ENV = ray_internals.GLOBAL_CHECKPOINT_ENV


def _manager_built_by(step, num_to_keep: int = 2):
    """The snapshot manager a TuneController's step builds (the controller as that step reads it)."""
    from types import SimpleNamespace

    from ray import tune

    controller = SimpleNamespace(_storage=None, _checkpoint_period=os.environ.get(ENV, "auto"),
                                 _trial_checkpoint_config=tune.CheckpointConfig(num_to_keep=num_to_keep))
    return step(controller)


def test_rare_experiment_snapshots_forces_none_and_puts_ray_back(monkeypatch):
    from ray.tune.execution.tune_controller import TuneController

    monkeypatch.delenv(ENV, raising=False)
    before = TuneController._create_checkpoint_manager
    ray_own = _manager_built_by(before)
    for _ in range(2):
        ray_own.on_trial_checkpoint("trial")
    assert ray_own._should_force_sync_up and ray_own.auto_checkpoint_enabled  # Ray's: forced after num_to_keep
    with ray_internals.rare_experiment_snapshots():
        assert os.environ[ENV] == "600"
        rare = _manager_built_by(TuneController._create_checkpoint_manager)
        for _ in range(10):
            rare.on_trial_checkpoint("trial")
        assert not rare._should_force_sync_up and rare._checkpoint_period == 600.0 and not rare.auto_checkpoint_enabled
    assert TuneController._create_checkpoint_manager is before and ENV not in os.environ
    with pytest.raises(KeyError):
        with ray_internals.rare_experiment_snapshots():
            raise KeyError("x")
    assert TuneController._create_checkpoint_manager is before and ENV not in os.environ  # after an error too


def test_a_users_snapshot_period_wins(monkeypatch):
    from ray.tune.execution.tune_controller import TuneController

    monkeypatch.setenv(ENV, "42")
    with ray_internals.rare_experiment_snapshots():
        assert os.environ[ENV] == "42"
        assert _manager_built_by(TuneController._create_checkpoint_manager)._checkpoint_period == 42.0
    assert os.environ[ENV] == "42"  # the user's setting is left as it was


def _snapshots_of_a_search(storage, rare: bool) -> dict:
    """A real Tune search (2 trials of 8 reports 0.3 s apart, a checkpoint with each, Tune keeping 2 per trial)
    into `storage`, watched by benchmarks/scale_bookkeeping.py's watcher (inotify, a separate process): what
    reached the storage, with `snapshots` the experiment_state files written."""
    import contextlib
    import json
    import signal
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    from ray import tune

    def trainable(config):
        for i in range(1, 9):
            time.sleep(0.3)
            with tempfile.TemporaryDirectory() as d:
                Path(d, "state.txt").write_text(str(i))
                tune.report({"epoch": i, "val_error": config["base"] - i}, checkpoint=tune.Checkpoint.from_directory(d))

    os.makedirs(storage)
    out = f"{storage}.watch.json"
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "scale_bookkeeping.py"
    watcher = subprocess.Popen([sys.executable, str(bench), "--watch", storage, "--watch-out", out])
    deadline = time.time() + 120
    while not os.path.exists(out + ".ready"):
        assert watcher.poll() is None and time.time() < deadline, "the watcher did not start"
        time.sleep(0.1)
    tuner = tune.Tuner(trainable, param_space={"base": tune.grid_search([10.0, 20.0])},
                       tune_config=tune.TuneConfig(metric="val_error", mode="min", max_concurrent_trials=2),
                       run_config=tune.RunConfig(name="snap", storage_path=storage, verbose=0,
                                                 checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
    with ray_internals.rare_experiment_snapshots() if rare else contextlib.nullcontext():
        results = tuner.fit()
    assert sorted(r.metrics["epoch"] for r in results) == [8, 8]
    time.sleep(1.0)  # the last closes reach the watcher
    watcher.send_signal(signal.SIGTERM)
    watcher.wait(30)
    with open(out) as f:
        return json.load(f)


@pytest.mark.ray
def test_a_search_with_rare_snapshots_writes_two_against_tunes_many(tmp_path, ray_local, monkeypatch):
    """With rare_experiment_snapshots, a search of 16 checkpoints writes the experiment snapshot to the storage at
    its start and its end only; the same search as Ray runs it writes one every num_to_keep (2) checkpoints."""
    monkeypatch.delenv(ENV, raising=False)
    rare = _snapshots_of_a_search(str(tmp_path / "rare"), rare=True)
    as_ray = _snapshots_of_a_search(str(tmp_path / "ray"), rare=False)
    print(f"experiment snapshots written: rare {rare['snapshots']}, as Ray runs it {as_ray['snapshots']}")
    assert rare["overflows"] == as_ray["overflows"] == 0
    assert 1 <= rare["snapshots"] <= 2, rare  # the first loop turn's and the final one (the period is 600 s)
    assert as_ray["snapshots"] >= 5, as_ray  # 16 checkpoints, a snapshot forced after every 2 of a trial
    ckpts = [c["by_kind"].get("checkpoints", [0, 0])[0] for c in (rare, as_ray)]
    assert ckpts[0] >= 16 and ckpts[1] >= 16  # the trials' checkpoints reach the storage either way


# ---- 11. the traceback of Ray's own SIGTERM handler is not shown on the driver ---------------------------------
SIGTERM_EXIT = [  # as a Ray 2.60 worker ended by SIGTERM inside a callback writes it (CI of 2026-12-03)
    "Exception ignored in: <function WeakSet.__init__.<locals>._remove at 0x7f1e1f6f65c0>",
    "Traceback (most recent call last):",
    '  File "/usr/lib/python3.11/_weakrefset.py", line 39, in _remove',
    "    def _remove(item, selfref=ref(self)):",
    "    ",
    '  File "/venv/lib/python3.11/site-packages/ray/_private/worker.py", line 1063, in sigterm_handler',
    "    raise_sys_exit_with_custom_error_message(",
    '  File "python/ray/_raylet.pyx", line 712, in ray._raylet.raise_sys_exit_with_custom_error_message',
    "SystemExit: 1",
]
OTHER = ["Traceback (most recent call last):", '  File "train.py", line 3, in step', "    x = 1 / 0",
         "ZeroDivisionError: division by zero"]


def test_without_sigterm_exits_drops_that_traceback_only():
    f = ray_internals.without_sigterm_exits
    assert f(["epoch 1", *SIGTERM_EXIT, "epoch 2"]) == ["epoch 1", "epoch 2"]
    assert f(SIGTERM_EXIT[1:]) == [] and f(SIGTERM_EXIT) == []
    assert f(OTHER + SIGTERM_EXIT + OTHER) == OTHER + OTHER  # a trial's own traceback stays
    exit_elsewhere = OTHER[:3] + ["SystemExit: 1"]  # a SystemExit not raised by Ray's handler stays
    assert f(["Exception ignored in: <x>", *exit_elsewhere]) == ["Exception ignored in: <x>", *exit_elsewhere]
    assert f(SIGTERM_EXIT[:-1]) == SIGTERM_EXIT[:-1]  # cut before its last line: shown, not guessed at
    assert f([line.rstrip() for line in SIGTERM_EXIT]) == []  # its blank frame line with the spaces stripped


NOISE = """\
import gc, os, signal, sys, time
import ray
from ssl_ray.tuning.cluster import init_ray

init_ray(num_cpus=1, dashboard=False)


@ray.remote
def task():
    class Dying:
        def __del__(self):  # Ray's SIGTERM handler raises SystemExit here: "Exception ignored in ..."
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)

    d = Dying()
    del d
    gc.collect()
    print("after the signal", file=sys.stderr, flush=True)
    print("a line of the task", flush=True)
    return "done"


print(ray.get(task.remote()), flush=True)
time.sleep(3)  # the worker's output reaches the driver
"""


@pytest.mark.ray
def test_a_worker_ended_in_a_callback_shows_no_traceback_on_the_driver(tmp_path):
    """A real worker runs Ray's own SIGTERM handler inside a __del__ (how a trial's worker, ended by Ray after a
    Ctrl-C or an ASHA stop, printed a traceback on `ssl-ray tune`'s stderr): the driver shows the worker's other
    lines, not the traceback (without quiet_sigterm_exits it does: the `SystemExit` lines above)."""
    import subprocess
    import sys

    script = tmp_path / "noise.py"
    script.write_text(NOISE)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "SSL_RAY_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "done" in r.stdout and "a line of the task" in r.stdout
    assert "after the signal" in r.stderr  # the worker lived on and its output was forwarded
    assert "Traceback" not in r.stderr and "SystemExit" not in r.stderr, r.stderr[-3000:]
