"""Runs on a real cluster of Ray processes on this machine, shaped like the cluster files: a head of 0 CPUs
that trains nothing, and a worker node that joins later.

- Growing: a search whose trial needs more than the cluster has now is refused in one line on a cluster that
  cannot grow (its nodes started by hand: Ray's autoscaler monitor shows anonymous node types), and with
  --wait-for-resources it is submitted and waits; when a node joins (as an autoscaler would add one) the trial
  runs to the end. (Ray's fake autoscaling cluster does not start its nodes here: shared/notes/RAY.md.)
- Storage: `ssl-ray train` on the two nodes refuses a run folder on this node, and with --storage (a folder
  both nodes see, standing in for a shared mount) its checkpoints, TensorBoard files and result.json land there.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(address: str, env) -> str:
    return subprocess.run(["ray", "status", "--address", address], capture_output=True, text=True, env=env,
                          timeout=60).stdout


class Cluster:
    def __init__(self, tmp: Path):
        port, dash = _port(), _port()
        self.address = f"127.0.0.1:{port}"
        # Ray 2.60 drains a node on SIGTERM for up to 30 s, asking its GCS, which the same group SIGTERM has
        # ended: every teardown waited the 30 s out (measured: 33.5 s for a head node, 2.5 s with draining off)
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
                    "SSL_RAY_CACHE": str(tmp / "cache"), "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
        self.common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats", "--block"]
        self.procs = [self._start(["--head", f"--port={port}", f"--dashboard-port={dash}",
                                   "--dashboard-host=127.0.0.1", "--num-cpus=0"])]
        self._wait(1)

    def _start(self, args: list[str]) -> subprocess.Popen:
        return subprocess.Popen(["ray", "start", *args, *self.common], env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)

    def _wait(self, nodes: int) -> None:
        """Until `ray status` (the autoscaler monitor's status, which ssl-ray reads too) lists `nodes` nodes."""
        deadline = time.time() + 120
        while sum(1 for ln in _status(self.address, self.env).splitlines() if ln.strip().startswith("1 node_")) < nodes:
            assert time.time() < deadline, f"the cluster did not reach {nodes} node(s)"
            time.sleep(1)

    def add_worker(self) -> None:
        if len(self.procs) == 1:
            self.procs.append(self._start([f"--address={self.address}", "--num-cpus=2"]))
            self._wait(2)

    def stop(self) -> None:
        for p in reversed(self.procs):  # --block: each node goes down with its `ray start` process group
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield c
    finally:
        c.stop()


def _cli(args: list[str], c: Cluster, timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssl_ray.cli", *args], capture_output=True, text=True, env=c.env,
                          timeout=timeout)


TUNE = ["tune", "supervised", "--num-samples", "1", "--max-epochs", "1", "--grace-epochs", "1", "--gpus-per-trial", "0",
        "--json", "--quiet", "--set", "steps_per_epoch=5"]


def test_a_search_waits_for_nodes_on_a_cluster_that_grows_and_is_refused_on_one_that_cannot(cluster, tmp_path):
    # 0 CPUs up, nodes started by hand: refused at once, in one line, saying why
    r = _cli([*TUNE, "--address", cluster.address, "--storage", str(tmp_path), "--name", "refused"], cluster)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 1 worker(s) of one trial need 1 CPUs and 0 GPUs but the "
                                                   "cluster has 0 CPUs and 0 GPUs (no autoscaler"), r.stderr
    # --wait-for-resources: submitted, waits; a node joins; the trial runs to the end
    p = subprocess.Popen([sys.executable, "-m", "ssl_ray.cli", *TUNE, "--address", cluster.address, "--storage",
                          str(tmp_path), "--name", "waited", "--wait-for-resources"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=cluster.env, start_new_session=True)
    try:
        err = []
        for line in p.stderr:
            err.append(line)
            if line.startswith("waiting for nodes:"):
                break
        assert err and err[-1].startswith("waiting for nodes: 1 worker(s) of one trial need 1 CPUs"), "".join(err)
        assert (tmp_path / "waited" / "ssl_ray_space.json").is_file()  # the search is submitted
        time.sleep(3)
        assert p.poll() is None  # ...and waits
        cluster.add_worker()
        out, rest = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 0, ("".join(err) + rest)[-3000:]
    s = json.loads(out.strip().splitlines()[-1])
    assert s["num_trials"] == 1 and s["num_errored"] == 0 and s["best"]["epochs"] == 1, s


def test_train_on_two_nodes_needs_storage_and_puts_everything_there(cluster, tmp_path):
    cluster.add_worker()
    job = ["train", "supervised", "--address", cluster.address, "--workers", "2", "--epochs", "2",
           "--set", "steps_per_epoch=5", "--json"]
    r = _cli([*job, "--output", str(tmp_path / "local")], cluster)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "is on this node, and the cluster has 2 node(s)" in lines[0] and "--storage" in lines[0]
    shared = tmp_path / "shared"
    r = _cli([*job, "--storage", str(shared), "--output", "run1"], cluster)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])
    run = shared / "run1"
    assert s["output"] == str(run) and s["epochs"] == 2 and s["workers"] == 2
    assert list((run / "ray_train").glob("checkpoint_*/state.pt"))
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert json.loads((run / "result.json").read_text())["epochs"] == 2
