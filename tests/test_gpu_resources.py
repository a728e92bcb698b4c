"""What `ssl-ray train` and `ssl-ray tune` run on (tuning/resources.py, cluster.py): one GPU rule for both
commands, no silent CPU fall-back, fractional GPUs only where NCCL can take them, and clusters that can grow
taking work that waits instead of refusing it. The rules are checked with the cluster's state as input; then
on real local Ray instances that declare logical GPUs (a GPU-less machine: a worker that gets its GPU fails at
require_gpu, which shows the resource check let it through)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from ssl_ray.errors import SSLRayError
from ssl_ray.tuning.resources import (GPU_RULE, ClusterState, check_fits, check_gpu_split, concurrency, default_gpus,
                                      launcher_max)

CLUSTERS = Path(__file__).resolve().parent.parent / "clusters"
FIXED_GPUS = ClusterState({"CPU": 8, "GPU": 2}, grows=False, where="this machine", why="a local instance")
NO_GPUS = ClusterState({"CPU": 8, "GPU": 0}, grows=False)
# an aws-gpu.yaml cluster just after `ray up`: a head of 0 CPUs, no worker yet, its launcher config readable
EMPTY_AUTOSCALING = ClusterState({"CPU": 0, "GPU": 0}, grows=True, most={"CPU": 32, "GPU": 8}, why="launcher config")
GROWS_UNKNOWN = ClusterState({"CPU": 0, "GPU": 0}, grows=True, most=None, why="an autoscaler runs")


# ------------------------------------------------------------------------------------------ the GPU default
@pytest.mark.parametrize("state, gpus", [(FIXED_GPUS, 1.0), (NO_GPUS, 0.0), (EMPTY_AUTOSCALING, 1.0),
                                         (ClusterState({"CPU": 4}, grows=True, most={"CPU": 64}), 0.0)])
def test_default_gpus_is_one_per_worker_when_the_cluster_has_or_can_add_gpus(state, gpus):
    assert default_gpus(state, "--gpus-per-worker") == gpus


def test_default_gpus_is_not_guessed_on_a_cluster_that_grows_into_unknown_nodes():
    with pytest.raises(SSLRayError, match=r"give --gpus-per-trial 1 to wait for GPU nodes, or --gpus-per-trial 0"):
        default_gpus(GROWS_UNKNOWN, "--gpus-per-trial")


@pytest.mark.parametrize("state", [FIXED_GPUS, NO_GPUS, EMPTY_AUTOSCALING])
def test_tune_and_train_take_the_same_gpu_default(state):
    """`ssl-ray tune` (trial_gpus) and `ssl-ray train` (_resources) decide the default GPUs by the same rule."""
    from ssl_ray.tuning.options import TuneOptions
    from ssl_ray.tuning.train_ray import _resources
    from ssl_ray.tuning.tune import trial_gpus

    assert TuneOptions().gpus_per_trial is None  # not 0: decided from the cluster
    assert trial_gpus(TuneOptions(), state) == _resources(1, 1, None, state)[0] == default_gpus(state, "x")


def test_the_gpu_default_is_stated_in_both_helps():
    from ssl_ray.cli import main

    for cmd in ("train", "tune"):
        text = " ".join(CliRunner().invoke(main, [cmd, "--help"], terminal_width=400).output.split())
        assert GPU_RULE in text, cmd
        assert "--wait-for-resources / --no-wait-for-resources" in text, cmd
    readme = " ".join((Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8").split())
    assert GPU_RULE in readme


# ------------------------------------------------------------------------------------- GPUs that cannot serve
def test_more_workers_than_gpus_is_refused_in_one_line():
    from ssl_ray.tuning.train_ray import _resources

    with pytest.raises(SSLRayError) as e:
        _resources(3, 1, None, FIXED_GPUS)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("3 worker(s) need 3 CPUs and 3 GPUs but this machine has 8 CPUs and 2 GPUs")
    assert "lower --workers to 2" in msg and "--gpus-per-worker 0 to train on CPUs" in msg and GPU_RULE in msg
    assert _resources(3, 1, 0, FIXED_GPUS) == (0, None)  # asked for the CPU: fine


@pytest.mark.parametrize("workers, gpus, ok", [(2, 0.5, False), (4, 0.25, False), (1, 0.5, True), (2, 1, True),
                                               (2, 2, True), (1, 1.5, False), (3, 0, True)])
def test_fractional_gpus_are_refused_with_several_workers(workers, gpus, ok):
    if ok:
        check_gpu_split(workers, gpus, "--gpus-per-worker")
        return
    with pytest.raises(SSLRayError) as e:
        check_gpu_split(workers, gpus, "--gpus-per-worker")
    assert "\n" not in str(e.value) and f"--gpus-per-worker {gpus:g}" in str(e.value)


def test_fractional_gpus_are_refused_by_both_commands_before_anything_starts(tmp_path):
    from ssl_ray.cli import main

    for args in (["train", "supervised", "--workers", "2", "--gpus-per-worker", "0.5", "--output", str(tmp_path / "t")],
                 ["tune", "supervised", "--workers", "2", "--gpus-per-trial", "0.5", "--storage", str(tmp_path / "s"),
                  "--dry-run"]):
        t0 = time.time()
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2, r.output
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and "Duplicate GPU detected" in lines[0], r.output
        assert time.time() - t0 < 30


# ---------------------------------------------------------------------------------- clusters that can grow
def test_work_larger_than_the_live_cluster_waits_on_a_cluster_that_grows():
    notice = check_fits(2, 4, 1, EMPTY_AUTOSCALING)
    assert notice.startswith("waiting for nodes: 2 worker(s) need 8 CPUs and 2 GPUs but the cluster has 0 CPUs")
    assert "up to 32 CPUs and 8 GPUs" in notice
    assert check_fits(1, 1, 1, GROWS_UNKNOWN).startswith("waiting for nodes")
    assert check_fits(1, 1, 1, FIXED_GPUS) is None  # fits now: nothing to say


def test_work_larger_than_the_cluster_can_grow_to_is_refused():
    with pytest.raises(SSLRayError, match=r"^9 worker\(s\) need 9 CPUs and 9 GPUs but the cluster has 0 CPUs and 0 "
                                          r"GPUs and can grow to at most 32 CPUs and 8 GPUs; "):
        check_fits(9, 1, 1, EMPTY_AUTOSCALING)
    with pytest.raises(SSLRayError, match=r"but this machine has 8 CPUs and 2 GPUs \(a local instance\)"):
        check_fits(1, 1, 4, FIXED_GPUS)


def test_concurrency_is_sized_on_what_the_cluster_can_grow_to():
    """On a cluster that grows, max_concurrent_trials is not capped at the GPUs up now (0 here)."""
    assert concurrency(1, 4, 1, EMPTY_AUTOSCALING, max_concurrent=None, n_trials=20) == 8  # 8 GPUs at most
    assert concurrency(1, 4, 1, EMPTY_AUTOSCALING, max_concurrent=3, n_trials=20) == 3
    assert concurrency(1, 1, 1, GROWS_UNKNOWN, max_concurrent=None, n_trials=20) == 20  # every trial submitted
    assert concurrency(1, 1, 1, FIXED_GPUS, max_concurrent=None, n_trials=20) == 2  # what is there
    assert concurrency(2, 1, 0, FIXED_GPUS, max_concurrent=None, n_trials=20) == 4


@pytest.mark.parametrize("name, most", [("aws-gpu.yaml", {"CPU": 32, "GPU": 8}), ("gcp-gpu.yaml", {"CPU": 64, "GPU": 8}),
                                        ("local.yaml", None)])
def test_launcher_config_gives_what_the_cluster_can_grow_to(name, most):
    """The shipped files: max_workers 8 over 8 spot + 2 on-demand 1-GPU types; local.yaml's nodes declare no
    resources (detected when they start), so its size is not known beforehand."""
    from ray.autoscaler._private.util import prepare_config

    with open(CLUSTERS / name, encoding="utf-8") as f:
        got = launcher_max(prepare_config(yaml.safe_load(f)))
    assert got == (None if most is None else {k: float(v) for k, v in most.items()})


# ------------------------------------------------------- real local instances with logical GPUs (no real GPU)
def _python(code: str, tmp_path: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "SSL_RAY_CACHE": str(tmp_path / "cache"), "SSL_RAY_RUNS": str(tmp_path / "runs")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)


FAKE_TWO_GPUS = "import ssl_ray.tuning.resources as r; r.local_gpus = lambda: 2\n"  # torch's count on a 2-GPU box


@pytest.mark.ray
def test_explicit_gpus_per_worker_fits_a_local_instance_with_gpus(tmp_path):
    """`--gpus-per-worker 1` on a machine whose torch sees 2 GPUs (stood in for here) passes the check before
    Ray starts (it said "the cluster has 0 GPUs" before: only CPUs were given), the local instance declares the
    2 GPUs, and the worker that gets one fails at require_gpu because this machine has no real GPU: the resource
    decision let it through. Too many workers for those GPUs is refused before Ray starts."""
    out = tmp_path / "run"
    code = FAKE_TWO_GPUS + f"""
import json, ray, sys
from ssl_ray.cli import main
from ssl_ray.tuning import train_ray as train
seen = {{}}
real = train.torch_trainer
def spy(*a, **k):
    seen.update(ray.cluster_resources())
    return real(*a, **k)
train.torch_trainer = spy
try:
    main(['train', 'supervised', '--epochs', '1', '--gpus-per-worker', '1', '--ray-train', '--output', {str(out)!r}])
finally:
    print('seen resources:', json.dumps({{k: seen.get(k) for k in ('CPU', 'GPU')}}), file=sys.stderr)
"""
    r = _python(code, tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    # Ray Train set up NCCL for the GPU worker (before worker_loop's require_gpu), which torch refuses without a
    # GPU: told in one line (Ray's own log of the worker failure comes before it)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: the Ray Train workers were given GPUs but torch on their "
                                                     "node sees none (ProcessGroupNCCL"), r.stderr[-3000:]
    # found by its prefix: Ray's worker log lines reach stderr asynchronously and can come after it
    seen = [ln for ln in r.stderr.splitlines() if ln.startswith("seen resources: ")]
    assert len(seen) == 1, r.stderr[-3000:]
    assert json.loads(seen[0][len("seen resources: "):])["GPU"] == 2.0  # the instance declared torch's count
    t0 = time.time()
    r = _python(FAKE_TWO_GPUS + f"""
from ssl_ray.cli import main
main(['train', 'supervised', '--workers', '3', '--cpus-per-worker', '0.5', '--output', {str(tmp_path / 'r3')!r}])
""", tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: 3 worker(s) need 1.5 CPUs and 3 GPUs but this machine "
                                                     "has"), r.stderr[-3000:]
    assert "2 GPUs" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert time.time() - t0 < 60  # refused before any Ray start-up


@pytest.mark.ray
def test_tune_on_a_local_instance_with_gpus_takes_one_per_trial(tmp_path):
    """Tune's default on an instance that declares 2 GPUs: 1 GPU per trial (the rule train follows), 2 trials at
    once, a trial that gets its GPU fails at require_gpu (no real GPU here) and the search says so."""
    code = FAKE_TWO_GPUS + f"""
import json
from ssl_ray.cli import main
main(['tune', 'supervised', '--num-samples', '1', '--max-epochs', '1', '--grace-epochs', '1', '--storage', {str(tmp_path / 'st')!r},
      '--name', 'g', '--json', '--quiet'])
"""
    r = _python(code, tmp_path, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["num_errored"] == 1 and "asked for 1 GPU(s)" in json.dumps(s["errors"]), s
    saved = json.loads((tmp_path / "st" / "g" / "ssl_ray_space.json").read_text())
    assert saved["options"]["gpus_per_trial"] == 1.0  # decided, and saved for --resume


def test_the_launcher_config_on_the_head_says_the_cluster_grows_and_how_far(tmp_path, monkeypatch):
    """On a `ray up` head, ~/ray_bootstrap_config.yaml (the autoscaler's config, prepared by `ray up`) is read;
    without it (and without Ray's cluster config or an autoscaler status to read) nothing is known."""
    from ray.autoscaler._private.util import prepare_config

    from ssl_ray.tuning.cluster import autoscaler_view

    monkeypatch.setenv("HOME", str(tmp_path))
    assert autoscaler_view()[1] is None  # no file (and no Ray, or a local instance): how far is unknown
    with open(CLUSTERS / "aws-gpu.yaml", encoding="utf-8") as f:
        (tmp_path / "ray_bootstrap_config.yaml").write_text(yaml.safe_dump(prepare_config(yaml.safe_load(f))))
    grows, most, why = autoscaler_view()
    assert grows is True and most == {"CPU": 32.0, "GPU": 8.0} and "ray_bootstrap_config.yaml" in why
