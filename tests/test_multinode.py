"""A real multi-node run on one machine: a head and a worker node started as separate Ray processes with
different node resources (1 CPU each), then `ssl-ray tune --workers 2 --address <head>`: each trial's two
data-parallel workers can only be placed one per node."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.ray


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nodes(address: str, env) -> int:
    r = subprocess.run(["ray", "status", "--address", address], capture_output=True, text=True, env=env, timeout=60)
    return sum(1 for line in r.stdout.splitlines() if line.strip().startswith("1 node_"))


@pytest.fixture
def two_node_cluster(tmp_path):
    port, dash = _port(), _port()
    address = f"127.0.0.1:{port}"
    # Ray 2.60 drains a node on SIGTERM for up to 30 s, asking its GCS, which the same group SIGTERM has ended: every
    # teardown waited the 30 s out (measured: 33.5 s for a head node, 2.5 s with draining off)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats", "--block"]
    head = subprocess.Popen(["ray", "start", "--head", f"--port={port}", f"--dashboard-port={dash}",
                             "--dashboard-host=127.0.0.1", '--resources={"head_node": 1}', *common],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    procs = [head]
    try:
        deadline = time.time() + 120
        while _nodes(address, env) < 1:
            assert time.time() < deadline, "head node did not start"
            time.sleep(1)
        procs.append(subprocess.Popen(["ray", "start", f"--address={address}", '--resources={"worker_node": 1}',
                                       *common], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))
        while _nodes(address, env) < 2:
            assert time.time() < deadline, "worker node did not join"
            time.sleep(1)
        yield address, env
    finally:
        for p in reversed(procs):  # --block: the whole node goes down with its `ray start` process group
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def test_tune_with_two_worker_trials_across_two_nodes(two_node_cluster, tmp_path):
    address, env = two_node_cluster
    r = subprocess.run([sys.executable, "-m", "ssl_ray.cli", "tune", "supervised", "--address", address,
                        "--workers", "2", "--num-samples", "2", "--max-epochs", "2", "--grace-epochs", "1",
                        "--storage", str(tmp_path / "runs"), "--name", "mn", "--json", "--quiet"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]  # a successful run prints no traceback
    # the workers' State API asks this cluster (RAY_ADDRESS), not the latest one started on the machine
    assert "Found multiple active Ray instances" not in r.stderr
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["num_trials"] == 2 and s["num_errored"] == 0
    assert s["best"]["test_error"] < 60
