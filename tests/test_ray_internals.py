"""The Ray internals ssl-ray relies on (ssl_ray/tuning/ray_internals.py) exist in the installed Ray, and behave
as the adapter assumes: this file fails, naming the internal, when a Ray upgrade moves one."""
from __future__ import annotations

import os

import pytest

from ssl_ray.tuning import ray_internals


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
        if p.name == "ray_internals.py":
            continue
        text = p.read_text(encoding="utf-8")
        for needle in ("ray._private", "_internal.", "._brackets", "_local_tuner", "ENABLE_RAY_CLUSTER", "._rungs",
                       ".on_result(", "_node_ip_address", "_tune_config", "RAY_GCS_SERVER_PORT",
                       "RAY_TRAIN_ENABLE_PRINT_PATCH", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
                       "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "TUNE_DISABLE_SIGINT_HANDLER", "start_api_server"):
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

    source = pathlib.Path(ray_internals.__file__).read_text(encoding="utf-8")
    covers = {c for _, cs, _ in ray_internals.PROBES for c in cs}
    used = _private_uses(source)
    assert {"_brackets", "_process_bracket", "ray._private.node", "_internal_kv_get"} <= used  # the reader reads
    assert _uncovered(used, covers) == []
    switches = [k for k in vars(ray_internals) if k.endswith(("_ENV", "_KEY", "_STEP")) or k == "LOOPBACK_NODE"]
    assert len(switches) >= 9
    bodies = _probe_bodies() + "\n".join(w for w, _, _ in ray_internals.PROBES)
    assert [k for k in switches if k not in bodies] == []


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
             for p in root.rglob("*.py") if p.name != "ray_internals.py"}
    assert {k: v for k, v in found.items() if v} == {}
