"""FSDP2 on two CPU processes (gloo): a fully sharded model compresses exactly as the same
model in one process would, in GETA mode and in the one-shot mode, and finalize gathers it
into a plain, physically smaller model."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.distributed.fsdp import fully_shard

import geta
from geta.distributed import gathered, is_sharded
from tests.optim.conftest import Blobs, mlp

STEPS = 60
PROBE = torch.Generator().manual_seed(7)
X_PROBE = torch.randn(64, 16, generator=PROBE)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shard(model: torch.nn.Module) -> None:
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    fully_shard(model)


def _geta_run(sharded: bool, resume_at: int | None = None, checkpoint: str = "") -> dict:
    """GETA mode on the MLP with the same batches in every process; with ``sharded`` the
    model is fully sharded after the Compressor is built (as accelerate would). With
    ``resume_at`` the run stops after that many steps, saves each rank's model and optimizer
    state to ``checkpoint``, and a fresh Compressor, model and optimizer carry on from it."""

    def start():
        model = mlp()
        c = geta.Compressor(model, (torch.randn(2, 16),), "24x", mode="geta")
        if sharded:
            _shard(model)
        return model, c, c.optimizer(lr=0.05, momentum=0.9, total_steps=STEPS)

    model, c, opt = start()
    blobs = Blobs(seed=100)  # every rank the same batches: averaged gradients = one process's
    for step in range(STEPS):
        if step == resume_at:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, checkpoint)
            del model, c, opt
            state = torch.load(checkpoint, weights_only=False)  # DTensor shards: not plain
            model, c, opt = start()
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
        x, y = blobs.batch(32)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    small = c.finalize()
    report = c.report()
    return {
        "plain": not is_sharded(small),
        "bits": np.array([r.bits for r in report.layers], dtype=np.float64),
        "shapes": np.array([s for r in report.layers for s in r.shape], dtype=np.float64),
        "removed": np.array(opt.removal_counts(), dtype=np.float64),
        "out": small(X_PROBE).detach().double().numpy(),
        "within": report.within_budget,
    }


def _calibration() -> list[torch.Tensor]:
    blobs = Blobs(seed=5)
    return [blobs.batch(16)[0] for _ in range(8)]


def _oneshot_run(batches: list[torch.Tensor], sharded: bool) -> dict:
    model = mlp()
    c = geta.Compressor(model, (torch.randn(2, 16),), "12x", mode="oneshot")
    if sharded:
        _shard(model)
    result = c.search(batches, [])
    small = c.finalize()
    return {
        "plain": not is_sharded(small),
        "bits": np.asarray(result.bits, dtype=np.float64),
        "removed": np.asarray(result.removed, dtype=np.float64),
        "out": small(X_PROBE).detach().double().numpy(),
        "within": c.report().within_budget,
    }


def _refused() -> str:
    model = mlp()
    c = geta.Compressor(model, (torch.randn(2, 16),), "24x", mode="admm")
    _shard(model)
    try:
        c.optimizer(lr=0.01, total_steps=10)
    except geta.ConfigError as error:
        return str(error)
    return ""


def _gather_round_trip(rank: int) -> bool:
    """Inside ``gathered`` each rank sees the full parameters; a change made there identically
    on every rank is what the shards hold afterwards."""
    model = mlp()
    _shard(model)
    with gathered(model) as changed, torch.no_grad():
        full = [p.detach().clone() for p in model.parameters()]
        for p in model.parameters():
            p.mul_(2.0)
    with gathered(model):
        after = [p.detach() for p in model.parameters()]
    shapes = [p.shape for p in mlp().parameters()]
    return changed and all(
        a.shape == s and torch.equal(a, 2 * f) for a, f, s in zip(after, full, shapes, strict=True)
    )


def _worker(rank: int, world: int, port: int, out: str, case: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        if case == "geta":
            result = _geta_run(sharded=True)
        elif case == "resume":  # at step 20, in the joint stage, a quarter of the removals made
            result = _geta_run(sharded=True, resume_at=20, checkpoint=f"{out}.ckpt{rank}")
        elif case == "oneshot":
            result = _oneshot_run(_calibration()[rank::world], sharded=True)
        else:
            result = {"message": _refused(), "round_trip": _gather_round_trip(rank)}
        torch.save(result, f"{out}.{rank}")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path, case: str) -> list[dict]:
    out = str(tmp_path / case)
    mp.spawn(_worker, args=(2, _free_port(), out, case), nprocs=2, join=True)
    return [torch.load(f"{out}.{rank}", weights_only=False) for rank in range(2)]


def test_geta_mode_on_a_sharded_model_matches_one_process(tmp_path):
    reference = _geta_run(sharded=False)
    ranks = _spawn(tmp_path, "geta")
    assert reference["removed"][0] > 0  # 24x needs units removed: the plan did something
    for result in ranks:
        assert result["plain"] and result["within"]
        np.testing.assert_array_equal(result["bits"], reference["bits"])
        np.testing.assert_array_equal(result["shapes"], reference["shapes"])
        np.testing.assert_array_equal(result["removed"], reference["removed"])
        np.testing.assert_allclose(result["out"], reference["out"], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(ranks[0]["out"], ranks[1]["out"])


def test_a_sharded_geta_run_resumed_from_its_checkpoint_matches_the_uninterrupted_one(
    tmp_path,
):
    reference = _geta_run(sharded=False)
    for result in _spawn(tmp_path, "resume"):
        assert result["plain"] and result["within"]
        np.testing.assert_array_equal(result["bits"], reference["bits"])
        np.testing.assert_array_equal(result["shapes"], reference["shapes"])
        np.testing.assert_array_equal(result["removed"], reference["removed"])
        np.testing.assert_allclose(result["out"], reference["out"], rtol=1e-4, atol=1e-5)


def test_oneshot_on_a_sharded_model_plans_from_every_ranks_batches(tmp_path):
    # each rank calibrates on half the batches; summed statistics = one process on all of them
    reference = _oneshot_run(_calibration(), sharded=False)
    ranks = _spawn(tmp_path, "oneshot")
    for result in ranks:
        assert result["plain"] and result["within"]
        np.testing.assert_array_equal(result["bits"], reference["bits"])
        np.testing.assert_array_equal(result["removed"], reference["removed"])
        np.testing.assert_allclose(result["out"], reference["out"], rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(ranks[0]["out"], ranks[1]["out"])


def test_sharded_parameters_gather_and_modes_without_sharding_refuse(tmp_path):
    for result in _spawn(tmp_path, "other"):
        assert result["round_trip"]
        assert "does not run on a sharded (FSDP2) model" in result["message"]
        assert "geta" in result["message"] and "oneshot" in result["message"]


@pytest.mark.parametrize("mode", ["geta", "oneshot"])
def test_structure_copy_holds_no_tensor_memory(mode):
    model = mlp()
    c = geta.Compressor(model, (torch.randn(2, 16),), "12x", mode=mode)
    copied = list(c._structure.parameters()) + list(c._structure.buffers())
    assert copied and all(t.is_meta for t in copied)
    assert all(not t.is_meta for t in model.parameters())
