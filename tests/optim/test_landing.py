"""The delivered ratio lands on the budget: within [1.0, 1.1] x the asked ratio (unused budget
is accuracy given away), in GETA mode and in both ADMM granularities."""

import pytest
import torch

import geta
from geta.optim.landing import raise_bits_within_budget, trim_steps, trim_to_budget
from geta.optim.report import measured_cost
from tests.optim.conftest import Blobs, mlp, train

CASES = {
    "geta": ("geta", {}),
    "admm-unstructured": ("admm", {"granularity": "weight", "update_every": 20}),
    "admm-structured": ("admm", {"granularity": "group", "update_every": 20}),
    "admm-fisher": ("admm", {"distance": "fisher", "update_every": 20}),
}


@pytest.mark.parametrize("ratio", [20, 60])
@pytest.mark.parametrize("case", CASES)
def test_delivered_ratio_is_within_ten_percent_of_the_budget(case, ratio):
    mode, admm = CASES[case]
    model = mlp()
    config = geta.CompressorConfig(admm=geta.AdmmConfig(**admm))
    c = geta.Compressor(model, (torch.randn(2, 16),), f"{ratio}x", mode=mode, config=config)
    opt = c.optimizer(base="sgd", lr=0.05, momentum=0.9, total_steps=200)
    train(model, opt, Blobs(), 200)
    c.finalize()
    report = c.report()
    assert report.within_budget
    assert 1.0 <= report.ratio / ratio <= 1.1, f"asked {ratio}x, delivered {report.ratio:.1f}x"


def test_trim_points_are_the_quarters_and_the_last_step():
    assert trim_steps(100, 200) == {125, 150, 175, 199}


def test_trim_narrows_the_masks_only_when_over_the_budget():
    model = mlp()
    c = geta.Compressor(model, (torch.randn(2, 16),), "20x")
    cm = c.problem.cost_model
    held = [torch.ones_like(layer.weight, dtype=torch.bool) for layer in cm.layers]
    now = measured_cost(cm)
    assert trim_to_budget(cm, held, now * 1.01) is None
    narrowed = trim_to_budget(cm, held, now / 3)
    assert narrowed is not None
    with torch.no_grad():
        for layer, keep in zip(cm.layers, narrowed, strict=True):
            layer.weight.mul_(keep)
    assert measured_cost(cm) <= now / 3
    kept = sum(int(k.sum()) for k in narrowed)
    assert 0 < kept < sum(k.numel() for k in held)


def _at_two_bits():
    """An MLP's counted layers at 2 bits per channel (clips fitted), and their bits."""
    c = geta.Compressor(mlp(), (torch.randn(2, 16),), "20x")
    cm = c.problem.cost_model
    for layer in cm.layers:
        layer.quantizer.calibrate(layer.weight.detach(), 2.0)
    return cm, [layer.quantizer.bits().detach().round() for layer in cm.layers]


@torch.no_grad()
def _error(cm):
    return sum(
        float((layer.quantizer(layer.weight) - layer.weight).square().sum()) for layer in cm.layers
    )


@pytest.mark.parametrize("per_channel", [False, True])
def test_raising_bits_spends_the_room_within_the_budget(per_channel):
    cm, bits = _at_two_bits()
    before, error = measured_cost(cm), _error(cm)
    clips = [layer.quantizer.q_m.detach().clone() for layer in cm.layers]
    limit = 1.5 * before
    raised = raise_bits_within_budget(cm, bits, limit, 8.0, per_channel=per_channel)
    spent = measured_cost(cm)
    assert spent <= limit
    assert _error(cm) < error
    for layer, b, old, clip in zip(cm.layers, raised, bits, clips, strict=True):
        assert torch.equal(layer.quantizer.bits().detach().round(), b)  # quantizers left at them
        assert bool((b >= old).all()) and bool((b <= old + 4).all())
        same = b == old
        assert torch.equal(layer.quantizer.q_m.detach()[same], clip[same])  # clips kept
        if not per_channel:
            assert b.unique().numel() == 1  # one width per layer
    if per_channel:  # single channels are small steps: the room is nearly all spent
        assert spent >= 0.97 * limit
        assert any(b.unique().numel() > 1 for b in raised)  # mixed precision within a layer
    else:
        assert spent > before


def test_raising_bits_without_room_changes_nothing():
    cm, bits = _at_two_bits()
    before = measured_cost(cm)
    clips = [layer.quantizer.q_m.detach().clone() for layer in cm.layers]
    raised = raise_bits_within_budget(cm, bits, before, 8.0, per_channel=True)
    assert all(torch.equal(a, b) for a, b in zip(raised, bits, strict=True))
    assert measured_cost(cm) == before
    assert all(
        torch.equal(layer.quantizer.q_m.detach(), clip)
        for layer, clip in zip(cm.layers, clips, strict=True)
    )


def test_geta_mode_spends_room_left_by_codes_drifting_to_zero_on_bits():
    """Codes that drift into the zero bin in the cool-down leave the cost under the budget; the
    trim points raise bits into that room, so the run still lands on the budget."""
    model = mlp()
    c = geta.Compressor(model, (torch.randn(2, 16),), "20x")
    total = 200
    opt = c.optimizer(base="sgd", lr=0.05, momentum=0.9, total_steps=total)
    blobs = Blobs()
    train(model, opt, blobs, opt.schedule.cooldown_start + 5)
    frozen = [b.clone() for b in opt.frozen_bits]
    with torch.no_grad():  # the drift, exaggerated: half of every layer's kept weights to zero
        for layer, held in zip(c.problem.cost_model.layers, opt.held, strict=True):
            kept = held.reshape(-1).nonzero().reshape(-1)
            held.view(-1)[kept[torch.randperm(len(kept))[: len(kept) // 2]]] = False
            layer.weight.mul_(held)
    train(model, opt, blobs, total - opt.step_count)
    c.finalize()
    report = c.report()
    assert report.within_budget
    assert 1.0 <= report.ratio / 20 <= 1.1, f"delivered {report.ratio:.1f}x"
    raised = [bool((new > old).any()) for new, old in zip(opt.frozen_bits, frozen, strict=True)]
    assert any(raised) and all(
        bool((new >= old).all()) for new, old in zip(opt.frozen_bits, frozen, strict=True)
    )


def test_raising_bits_can_keep_every_learned_clip():
    cm, bits = _at_two_bits()
    before, error = measured_cost(cm), _error(cm)
    clips = [layer.quantizer.q_m.detach().clone() for layer in cm.layers]
    raised = raise_bits_within_budget(cm, bits, 1.5 * before, 8.0, refit_clip=False)
    assert measured_cost(cm) <= 1.5 * before
    assert any(bool((b > old).any()) for b, old in zip(raised, bits, strict=True))
    assert _error(cm) < error
    for layer, clip in zip(cm.layers, clips, strict=True):
        assert torch.equal(layer.quantizer.q_m.detach(), clip)  # only the steps got finer


@pytest.mark.parametrize("granularity", ["weight", "group"])
def test_admm_spends_room_left_by_codes_drifting_to_zero_on_bits(granularity):
    """As in GETA mode: when fine-tuning leaves the cost under the budget, ADMM's trim points
    raise projected layers' bits into the room (one width per layer), so the run still lands
    on the budget."""
    model = mlp()
    config = geta.CompressorConfig(admm=geta.AdmmConfig(granularity=granularity, update_every=20))
    c = geta.Compressor(model, (torch.randn(2, 16),), "20x", mode="admm", config=config)
    total = 200
    opt = c.optimizer(base="sgd", lr=0.05, momentum=0.9, total_steps=total)
    blobs = Blobs()
    train(model, opt, blobs, opt.phases[-1].admm_end + 5)  # into the masked fine-tuning
    layers = c.problem.cost_model.layers
    before = opt.bits.copy()
    with torch.no_grad():  # the drift, exaggerated: a third of every layer's kept weights to zero
        for layer, mask in zip(layers, opt.masks, strict=True):
            kept = mask.reshape(-1).nonzero().reshape(-1)
            mask.view(-1)[kept[torch.randperm(len(kept))[: len(kept) // 3]]] = 0
            layer.weight.mul_(mask)
    train(model, opt, blobs, total - opt.step_count)
    c.finalize()
    report = c.report()
    assert (opt.bits >= before).all() and (opt.bits > before).any()
    for layer, bits in zip(layers, opt.bits, strict=True):
        assert layer.quantizer.bits().detach().round().unique().tolist() == [bits]
    assert report.within_budget
    assert 1.0 <= report.ratio / 20 <= 1.1, f"delivered {report.ratio:.1f}x"
