"""Data parallelism is exact: N workers with per-worker batch B reach the same parameters as one worker with
batch N*B (CPU, gloo), for the supervised baseline and a two-player GAN with a learned prior (vcagan); and a
real 2-worker Ray Train run trains. Each case costs about a minute on a loaded 2-core machine, so not every
method is run here (infogan passes too, measured once).

Not every method can be exact: vat (its random probe d), advgen (G's noise z) and the Gaussian noise layers
of improvedgan's and i2gan's discriminators draw noise from each worker's own torch stream, so two workers draw
other noise than one worker with a double batch (Method.global_rand is the exact alternative, which improvedgan
and i2gan use for G's z; switching the others to it would change their numbers); entropy's batch-entropy term
J_B (beta > 0) is taken per worker's batch.
Methods with BatchNorm are exact only without it (per-worker statistics)."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssl_ray.data import DataSpec
from ssl_ray.engine.loop import RunSpec, Trainer

CASES = {
    # method: (data spec, per-worker config). Labelled share R/T chosen so R is whole at both batch sizes.
    "supervised": (DataSpec("digits", labels=40, val_size=100), {"batch_size": 16, "arch": "mlp"}),
    "vcagan": (DataSpec("gaussians", labels=8, val_size=100, options={"n_train": 600, "n_test": 100}),
               {"batch_size": 8, "width": 32, "depth": 2}),
}
STEPS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(rank: int, world: int, port: int, method: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world)
    data, cfg = CASES[method]
    cfg = dict(cfg, steps_per_epoch=STEPS, batch_size=cfg["batch_size"] * (2 // world))
    tr = Trainer(RunSpec(method, data, epochs=1, seed=5, config=cfg), progress=False)
    m = tr.run_epoch()
    if rank == 0:
        torch.save({"params": {k: mod.state_dict() for k, mod in tr.method.modules.items()},
                    "val_error": m["val_error"], "extra": tr.method.extra_state()}, out)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


@pytest.mark.parametrize("method", list(CASES))
def test_two_workers_equal_one_worker_with_double_batch(method, tmp_path):
    one, two = str(tmp_path / "one.pt"), str(tmp_path / "two.pt")
    mp.start_processes(_run, args=(1, _free_port(), method, one), nprocs=1, start_method="spawn")
    mp.start_processes(_run, args=(2, _free_port(), method, two), nprocs=2, start_method="spawn")
    a, b = torch.load(one, weights_only=True), torch.load(two, weights_only=True)
    moved = False
    for name in a["params"]:
        for k, v in a["params"][name].items():
            torch.testing.assert_close(b["params"][name][k], v, rtol=1e-4, atol=1e-5, msg=f"{name}.{k}")
    # and training did move the parameters (the comparison is not of two untouched initialisations)
    init = Trainer(RunSpec(method, CASES[method][0], epochs=1, seed=5,
                           config=dict(CASES[method][1], steps_per_epoch=STEPS)), progress=False)
    for name, mod in init.method.modules.items():
        for k, v in mod.state_dict().items():
            moved |= v.is_floating_point() and not torch.allclose(v, a["params"][name][k])
    assert moved
    assert a["val_error"] == pytest.approx(b["val_error"], abs=1e-6)  # evaluation over the whole split
    for k, v in a["extra"].items():
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            torch.testing.assert_close(b["extra"][k], v, rtol=1e-4, atol=1e-6, msg=k)


@pytest.mark.ray
def test_ray_train_two_workers(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "ssl_ray.cli", "train", "supervised", "--dataset", "digits",
                        "--labels", "50", "--epochs", "4", "--workers", "2", "--output", str(out), "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["workers"] == 2 and s["epochs"] == 4 and s["test_error"] < 60


def _overlap(rank: int, world: int, port: int, out: str) -> None:
    from ssl_ray.nn import distributed as D

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)  # the same initial weights on both workers
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 6 * 6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    spare = torch.nn.Linear(4, 4)  # rank 1 never uses it: its gradients exist on rank 0 only
    params = list(net.parameters()) + list(spare.parameters())
    torch.manual_seed(1 + rank)  # other data on each worker
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    grads = {}
    for how in ("flat", "overlapped"):
        for p in params:
            p.grad = None
        loss = torch.nn.functional.cross_entropy(net(x), y)
        if rank == 0:
            loss = loss + spare(torch.ones(1, 4)).sum()
        if how == "flat":
            loss.backward()
            D.average_gradients(params)
        else:  # buckets of ~1 KB: most parameters get one of their own, sent while backward runs
            with D.averaged_backward(params, bucket_bytes=1024):
                loss.backward()
        grads[how] = [p.grad.clone() for p in params]
    if rank == 0:
        torch.save(grads, out)
    dist.barrier()
    dist.destroy_process_group()


def test_overlapped_averaging_equals_the_flat_all_reduce_bit_for_bit(tmp_path):
    """The bucketed all-reduce that overlaps backward (Method.step) gives exactly the gradients of one flat
    all-reduce after it, also when a gradient is missing on one worker (sent as zeros, in bucket order)."""
    out = str(tmp_path / "g.pt")
    mp.start_processes(_overlap, args=(2, _free_port(), out), nprocs=2, start_method="spawn")
    g = torch.load(out, weights_only=True)
    assert len(g["flat"]) == 8
    for a, b in zip(g["flat"], g["overlapped"]):
        assert torch.equal(a, b)
    assert g["flat"][-1].abs().sum() > 0  # the spare layer's gradient: rank 0's, halved
