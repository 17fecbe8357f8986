"""Bits per channel where 0 bits means removed: the cost model's per-channel cost, the plan
applied to a model, and the zero -> prune equivalence with mixed precision."""

import numpy as np
import pytest
import torch

import geta
from geta.graph import prune
from geta.models import lenet5
from geta.models.tricky import ResidualChain
from geta.optim.channel_bits import ChannelLayout, ChannelPlan
from geta.optim.problem import CompressionProblem
from geta.optim.report import measure_layers, measured_cost
from geta.quant import prepare


def _problem(model, x):
    prepare(model, init_bits=16, per_channel=True)
    graph = geta.trace(model, (x,))
    return CompressionProblem(model, graph, geta.Budget.size(ratio=20))


def _models():
    return [
        (lenet5(), torch.randn(4, 1, 28, 28)),
        (ResidualChain(), torch.randn(4, 3, 8, 8)),
    ]


def _random_plan(layout: ChannelLayout, rng: np.random.Generator) -> ChannelPlan:
    units = layout.problem.units
    bits = rng.integers(2, 9, units.count).astype(np.float64)
    for g in range(len(units.group_ids)):
        lo, hi = units.offsets[g], units.offsets[g + 1]
        drop = rng.permutation(np.arange(lo, hi))[: rng.integers(0, (hi - lo) // 2 + 1)]
        bits[drop] = 0.0
    return ChannelPlan(bits, rng.integers(2, 9, layout.layer_count).astype(np.float64))


@pytest.mark.parametrize("index", [0, 1])
def test_channel_cost_is_the_layer_cost_when_every_channel_has_the_layer_bits(index):
    model, x = _models()[index]
    problem = _problem(model, x)
    cm, layout = problem.cost_model, ChannelLayout(problem)
    rng = np.random.default_rng(0)
    for _ in range(5):
        removed = rng.random(problem.units.count) < 0.3
        bits = rng.integers(2, 9, len(cm.layers)).astype(np.float64)
        channel_bits = [
            np.where(units >= 0, np.where(removed[np.maximum(units, 0)], 0.0, b), b)
            for units, b in zip(layout.channel_unit, bits, strict=True)
        ]
        assert cm.channel_cost(removed, channel_bits) == pytest.approx(cm.cost(removed, bits))


def test_coupled_channels_share_their_unit_bits():
    model, x = ResidualChain(), torch.randn(2, 3, 8, 8)
    problem = _problem(model, x)
    layout = ChannelLayout(problem)
    plan = _random_plan(layout, np.random.default_rng(1))
    bits = layout.channel_bits(plan)
    seen: dict[int, float] = {}
    shared = 0
    for units, layer_bits in zip(layout.channel_unit, bits, strict=True):
        for u, b in zip(units.tolist(), layer_bits.tolist(), strict=True):
            if u < 0:
                continue
            assert seen.setdefault(u, b) == b
            shared += 1
    assert shared > len(seen)  # the residual stream's units own channels in several layers


@pytest.mark.parametrize("index", [0, 1])
def test_mixed_bits_plan_applies_and_its_zero_bit_units_prune_exactly(index):
    model, x = _models()[index]
    model.eval()
    problem = _problem(model, x)
    layout = ChannelLayout(problem)
    plan = _random_plan(layout, np.random.default_rng(index))
    layout.apply(plan)
    cm = problem.cost_model
    for i, bits in enumerate(layout.channel_bits(plan)):
        q = cm.layers[i].quantizer
        got = q.channel_storage_bits().numpy()
        assert np.array_equal(got[bits > 0], bits[bits > 0].astype(int))
    rows, _, _ = measure_layers(cm)
    assert measured_cost(cm, rows) <= layout.cost(plan) * (1 + 1e-9)
    with torch.no_grad():
        zeroed = model(x)
    prune(model, problem.graph, problem.units.to_plan(plan.removed))
    with torch.no_grad():
        pruned = model(x)
    assert torch.allclose(pruned, zeroed, atol=1e-5, rtol=1e-5)
    hist = {}
    for row in measure_layers(problem.cost_model)[0]:
        hist.update(row.bit_histogram)
    assert len(hist) > 1  # mixed precision reported per layer


def test_measured_payload_counts_each_channel_at_its_own_bits():
    layer = torch.nn.Linear(4, 3, bias=False)
    model = torch.nn.Sequential(layer)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.5, -1, 0], [1, 1, 1, 1], [0.3, -0.7, 1, 0]]))
    prepare(model, init_bits=8, per_channel=True)
    q = geta.quant.weight_quantizers(model)["0"]
    q.set_bits(torch.tensor([2.0, 4.0, 8.0]))
    (row,), _, _ = measure_layers(
        geta.optim.CostModel(model, geta.trace(model, (torch.randn(1, 4),)))
    )
    codes, _ = geta.quant.codes.quantized_codes(layer.parametrizations.weight.original, q)
    nonzero = (codes != 0).sum(1)
    assert row.payload == int((np.array([2, 4, 8]) * nonzero).sum())
    assert row.bit_histogram == {2: 1, 4: 1, 8: 1}
    assert row.bits_label == "2:1 4:1 8:1"


def test_plan_round_trips_through_plain_values():
    plan = ChannelPlan(np.array([0.0, 2.0, 8.0]), np.array([4.0]))
    back = ChannelPlan.from_dict(plan.to_dict())
    assert np.array_equal(back.unit_bits, plan.unit_bits)
    assert np.array_equal(back.removed, [True, False, False])
