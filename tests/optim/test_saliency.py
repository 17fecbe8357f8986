"""Saliency criteria: the curvature-weighted (Fisher / OBD) importance and the loss-scaled
projection it implies."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import geta
from geta.optim.saliency import Curvature, saliency
from tests.optim.conftest import Blobs, mlp, train


def test_curvature_is_the_running_mean_of_squared_gradients():
    p = nn.Parameter(torch.zeros(2))
    c = Curvature({"p": p}, decay=0.5)
    for g in ([1.0, 0.0], [3.0, 2.0], [1.0, 2.0]):
        p.grad = torch.tensor(g)
        c.observe()
    # exact mean for the first 1 / (1 - decay) = 2 steps, then weight 1/2 on the new one
    first_two = torch.tensor([(1 + 9) / 2, (0 + 4) / 2])
    expected = 0.5 * first_two + 0.5 * torch.tensor([1.0, 4.0])
    torch.testing.assert_close(c.of("p", p), expected)
    assert torch.equal(c.of("q", p), torch.zeros(2))  # never observed: no curvature
    again = Curvature({"p": p}, decay=0.5)
    again.load_state_dict(c.state_dict())
    torch.testing.assert_close(again.of("p", p), expected)


def test_taylor_saliency_is_the_running_mean_of_each_units_abs_inner_product():
    model = mlp()
    c = geta.Compressor(
        model, (torch.randn(2, 16),), "20x", config=geta.CompressorConfig(saliency="taylor")
    )
    stats, blobs, seen = c.problem.stats, Blobs(), []
    for _ in range(3):
        model.zero_grad()
        x, y = blobs.batch()
        F.cross_entropy(model(x), y).backward()
        seen.append(stats.compute(with_grad=True)["xg"].abs())
        c.problem.observe()  # the optimizer's call at every step
    mean = torch.stack(seen).mean(0)
    out = stats.compute(with_grad=True)
    torch.testing.assert_close(out["axg"], mean)
    assert not torch.allclose(mean, seen[-1])  # one batch alone ranks differently
    torch.testing.assert_close(saliency(out, "taylor"), mean)
    assert c.problem.curvature.steps == 0  # Fisher's statistics are not gathered for Taylor


def test_fisher_importance_is_half_the_curvature_weighted_energy_of_each_unit():
    model = mlp()
    c = geta.Compressor(
        model, (torch.randn(2, 16),), "20x", config=geta.CompressorConfig(saliency="fisher")
    )
    blobs = Blobs()
    x, y = blobs.batch()
    F.cross_entropy(model(x), y).backward()
    c.problem.curvature.observe()
    imp = c.problem.importance()
    # unit 0 of the first group: hidden unit 0 of layer 0 (row 0 of its weight and bias, and
    # column 0 of the next layer's weight)
    group = c.graph.groups[0]
    expected = 0.0
    for m in group.members:
        if m.is_buffer or m.role == "quantizer":
            continue
        p = dict(model.named_parameters())[m.name]
        f = c.problem.curvature.of(m.name, p)
        index = [slice(None)] * p.dim()
        index[m.dim] = int(np.asarray(m.positions).ravel()[0])
        expected += float(0.5 * (f * p.detach().square())[tuple(index)].sum())
    assert imp[0] == pytest.approx(expected, rel=1e-5)


def test_loss_scaled_plan_gives_bits_to_the_layer_the_loss_is_sensitive_to():
    """Two layers with equal weights: scaling up one layer's curvature makes its quantization
    error cost more loss, so the loss-scaled plan keeps more bits there."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32))
    with torch.no_grad():
        model[2].weight.copy_(model[0].weight)
    config = geta.CompressorConfig(saliency="fisher", max_group_sparsity=0.0)
    c = geta.Compressor(model, (torch.randn(2, 32),), "10x", config=config)
    layers = c.problem.cost_model.layers
    for scale, layer in zip((1.0, 100.0), layers, strict=True):
        layer.weight.grad = torch.full_like(layer.weight, scale)
    c.problem.curvature.observe()
    bits = c.problem.plan().bits
    assert bits[1] > bits[0]
    for layer in layers:  # and the other way round
        layer.weight.grad = None
    for scale, layer in zip((100.0, 1.0), layers, strict=True):
        layer.weight.grad = torch.full_like(layer.weight, scale)
    c.problem.curvature = Curvature(c.problem.curvature.params)
    c.problem.curvature.observe()
    bits = c.problem.plan().bits
    assert bits[0] > bits[1]


def test_fisher_saliency_runs_end_to_end_and_meets_the_budget():
    model = mlp()
    config = geta.CompressorConfig(saliency="fisher")
    c = geta.Compressor(model, (torch.randn(2, 16),), "40x", config=config)
    opt = c.optimizer(base="sgd", lr=0.05, momentum=0.9, total_steps=120)
    train(model, opt, Blobs(), 120)
    c.finalize()
    assert c.report().within_budget and c.problem.curvature.steps > 0


def test_equalised_groups_share_one_mean_and_keep_their_order():
    from geta.optim.problem import equalised

    imp = np.array([1.0, 3.0, 10.0, 30.0, 50.0, 0.0, 0.0])
    offsets = np.array([0, 2, 5, 7])
    out = equalised(imp, offsets)
    overall = imp.mean()
    assert out[0:2].mean() == pytest.approx(overall) and out[2:5].mean() == pytest.approx(overall)
    assert out[0] / out[1] == pytest.approx(1 / 3) and list(np.argsort(out[2:5])) == [0, 1, 2]
    assert (out[5:] == 0).all()  # an all-zero group stays zero


def test_equalised_importance_ignores_a_groups_overall_scale():
    from geta.optim.problem import equalised

    rng = np.random.default_rng(0)
    imp, offsets = rng.random(12), np.array([0, 5, 12])
    scaled = imp.copy()
    scaled[:5] *= 400.0  # one group's weights 20x larger: its magnitudes 400x
    np.testing.assert_allclose(
        equalised(scaled, offsets) / equalised(scaled, offsets).mean(),
        equalised(imp, offsets) / equalised(imp, offsets).mean(),
    )


def test_equalise_groups_reaches_the_plan():
    x = torch.randn(2, 16)
    cfg = geta.CompressorConfig(saliency="magnitude", equalise_groups=True)
    c = geta.Compressor(mlp(), (x,), "40x", config=cfg)
    imp, offsets = c.problem.importance(), c.problem.units.offsets
    means = [imp[a:b].mean() for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    assert means == pytest.approx([imp.mean()] * len(means))
    assert c.problem.plan().cost <= c.problem.target
