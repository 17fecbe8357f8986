"""Two CPU processes on gloo: every rank picks identical groups and bits, in every mode."""

import gc
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import geta
from tests.optim.conftest import Blobs, mlp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MODES = {  # name: (mode, ADMM settings)
    "geta": ("geta", geta.AdmmConfig()),
    "admm": ("admm", geta.AdmmConfig(update_every=10)),
    "admm-structured": ("admm", geta.AdmmConfig(update_every=10, granularity="group")),
}


def _worker(rank: int, world: int, port: int, out: str, name: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        _compress_and_gather(rank, world, out, name)
        # The DDP wrapper and its reducer are gone by now; both ranks leave the
        # collectives together, so neither tears gloo down under the other.
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _compress_and_gather(rank: int, world: int, out: str, name: str) -> None:
    model = mlp()
    mode, admm = MODES[name]
    config = geta.CompressorConfig(admm=admm)
    c = geta.Compressor(model, (torch.randn(2, 16),), "24x", mode=mode, config=config)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = c.optimizer(lr=0.05, momentum=0.9, total_steps=60)
    blobs = Blobs(seed=100 + rank)  # each rank sees other data
    for _ in range(60):
        x, y = blobs.batch(32)
        F.cross_entropy(ddp(x), y).backward()
        opt.step()
        opt.zero_grad()
    c.finalize()
    bits = [float(r.bits) for r in c.report().layers]
    zeros = [float((p == 0).sum()) for p in model.parameters()]
    mine = torch.tensor(bits + zeros, dtype=torch.float64)
    gathered = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(gathered, mine)
    weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()
    all_weights = [torch.zeros_like(weights) for _ in range(world)]
    dist.all_gather(all_weights, weights)
    if rank == 0:
        np.savez(
            out,
            plans=torch.stack(gathered).numpy(),
            weights=torch.stack(all_weights).numpy(),
            within=c.report().within_budget,
        )


@pytest.mark.parametrize("name", MODES)
def test_two_ranks_choose_identical_groups_and_bits(tmp_path, name):
    out = str(tmp_path / "ddp.npz")
    mp.spawn(_worker, args=(2, _free_port(), out, name), nprocs=2, join=True)
    result = np.load(out)
    plans = result["plans"]
    np.testing.assert_array_equal(plans[0], plans[1])
    np.testing.assert_array_equal(result["weights"][0], result["weights"][1])
    assert bool(result["within"])  # 24x needs under 2 bits a weight: weights were removed
