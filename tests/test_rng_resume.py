"""Random state after a resume, per rank: a 2-worker run (torch.distributed, gloo, CPU) cut after its first epoch
and resumed continues every rank's own random stream exactly as the uninterrupted run does.

Each rank draws its own noise from torch's generator (VAT's random probe d, dropout, noise layers, per-rank
samples); the checkpoint used to hold rank 0's state only, which every rank restored, so after a resume all
ranks drew the same noise. VAT on the circles draws its probe per rank every step, so a wrong restore shows in
the weights as well as in the generators' states.
"""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssl_ray.data import DataSpec
from ssl_ray.engine import checkpoint
from ssl_ray.engine.loop import RunSpec, Trainer

DATA = DataSpec("circles", labels=8, val_size=60, options={"n_train": 300, "n_test": 60})
CONFIG = {"batch_size": 16, "steps_per_epoch": 3}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spec(epochs: int) -> RunSpec:
    return RunSpec("vat", DATA, epochs=epochs, seed=7, config=dict(CONFIG), eval_test=False)


def _run(rank: int, world: int, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    straight = Trainer(_spec(2), progress=False)
    straight.fit()
    out = {"straight_rng": torch.get_rng_state(), "straight": straight.method.modules["net"].state_dict()}

    ckpt = os.path.join(tmp, "ckpt")
    Trainer(_spec(1), progress=False).fit(checkpoint_dir=ckpt)  # every rank takes part, rank 0 writes
    dist.barrier()
    resumed = Trainer(_spec(2), progress=False)
    state = checkpoint.load(ckpt)
    resumed.restore(state)
    resumed.fit()
    out.update(resumed_rng=torch.get_rng_state(), resumed=resumed.method.modules["net"].state_dict(),
               saved_ranks=len(state["rng"]) if isinstance(state["rng"], list) else 0)
    torch.save(out, os.path.join(tmp, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def test_each_rank_continues_its_own_random_stream_after_a_resume(tmp_path):
    mp.start_processes(_run, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    r = [torch.load(tmp_path / f"rank{k}.pt", weights_only=True) for k in range(2)]
    assert r[0]["saved_ranks"] == 2  # the checkpoint holds both ranks' states
    for k in range(2):
        assert torch.equal(r[k]["resumed_rng"], r[k]["straight_rng"]), f"rank {k}'s random stream after the resume"
        for name, v in r[k]["straight"].items():
            assert torch.equal(r[k]["resumed"][name], v), f"rank {k}: {name} differs from the uninterrupted run"
    assert not torch.equal(r[0]["straight_rng"], r[1]["straight_rng"])  # the ranks' streams are their own
