"""Latency budgets: the cost model reads the measured table, the projection meets the
milliseconds, GETA mode trains to it and the report shows predicted and measured latency."""

import copy

import numpy as np
import pytest
import torch

import geta
from geta import Budget, BudgetError, ConfigError
from geta.deployment.latency import FLOAT_WIDTH
from geta.optim.cost import CostModel
from geta.optim.projection import _cost_bits, _State, bit_distortion, project
from geta.optim.report import measured_cost, report_against, structural_nonzeros
from geta.quant.prepare import input_quantizers

from .conftest import mlp, train


def wide_mlp() -> torch.nn.Module:
    """Wide enough at batch 64 that the layers' compute, not call overhead, takes the time."""
    torch.manual_seed(0)
    n = torch.nn
    return n.Sequential(n.Linear(16, 768), n.ReLU(), n.Linear(768, 768), n.ReLU(), n.Linear(768, 4))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GETA_CACHE", str(tmp_path / "cache"))


def compressor(budget, **config):
    return geta.Compressor(
        wide_mlp(), (torch.randn(64, 16),), budget=budget, config=geta.CompressorConfig(**config)
    )


def test_budget_latency_reads_and_prints():
    assert Budget.parse("latency=2x") == Budget.latency(speedup=2)
    assert Budget.parse("latency=3.5ms") == Budget.latency(ms=3.5)
    assert str(Budget.latency(ms=4, batch=8)) == "4 ms (cpu, batch 8)"
    assert Budget.latency(speedup=2).target(dense_cost=10.0) == 5.0
    with pytest.raises(ConfigError):
        Budget.latency(speedup=2, batch=0)
    with pytest.raises(ConfigError):
        Budget.latency()
    with pytest.raises(ConfigError):
        Budget("speed", ratio=2)


def test_cost_model_prices_weights_by_their_kernel():
    c = compressor(Budget.latency(speedup=1, batch=64), quantize_activations=True)
    cm, table = c.problem.cost_model, c.latency_table
    assert cm.metric == "latency" and np.all(cm.coefficients() == 1)
    bits = np.array([8.0, 3.0, 16.0])
    expected = [table.slope(n, b) for n, b in zip(cm.names, bits, strict=True)]
    assert np.allclose(cm.bit_cost(bits), expected)
    assert cm.bit_cost(bits)[2] == table.layers[cm.names[2]].slope[FLOAT_WIDTH]
    removed = np.zeros(cm.units.count, bool)
    removed[:10] = True
    # weights by their kernel, and each kept output feature by its time between layers (the
    # first layer's outputs are the group losing 10 units; the last layer's go to the offset)
    outputs = np.array([768 - 10, 768, 0])
    assert cm.cost(removed, bits) == pytest.approx(
        float((cm.bit_cost(bits) * cm.nonzeros(removed)).sum() + (cm.output_ms * outputs).sum())
    )
    # the dense float model: layers plus the rest make the measured time
    float_bits = np.full(3, 32.0)
    assert cm.dense_cost() + cm.offset(float_bits) == pytest.approx(table.dense_ms)
    # the projection's table never makes more bits cheaper
    table_bits = _cost_bits(cm, c.problem.bit_options, None)
    assert np.all(np.diff(table_bits, axis=1) >= 0)


def test_output_features_cost_the_same_planned_and_measured():
    """With time between layers per output feature, the cost model, the projection's running
    cost and the live model's measured cost agree on a model with zeroed units; the output
    features of ungrouped layers count in the offset."""
    c = compressor(Budget.latency(speedup=1, batch=64))
    table, without = copy.deepcopy(c.latency_table), copy.deepcopy(c.latency_table)
    for i, (row, bare) in enumerate(
        zip(table.layers.values(), without.layers.values(), strict=True)
    ):
        row.output_ms, bare.output_ms = 1e-3 * (i + 1), 0.0
    cm = CostModel(c.model, c.graph, metric="latency", latency=table)
    assert cm.output_ms.tolist() == [1e-3, 2e-3, 0.0]
    no_outputs = CostModel(c.model, c.graph, metric="latency", latency=without)
    assert cm.offset() == pytest.approx(no_outputs.offset() + 3e-3 * 4)
    removed = np.zeros(cm.units.count, bool)
    removed[[0, 1, 2, 770]] = True  # three units of the first group, one of the second
    bits = cm.current_bits()
    expected = no_outputs.cost(removed, bits) + 1e-3 * (768 - 3) + 2e-3 * (768 - 1)
    assert cm.cost(removed, bits) == pytest.approx(expected)
    state = _State(cm, np.zeros(cm.units.count, bool), cm.bit_cost(bits), cm.coefficients())
    saving = state.unit_saving(0)
    for u in np.nonzero(removed)[0]:
        state.remove(int(u))
    assert state.cost == pytest.approx(expected)
    assert saving == pytest.approx(
        cm.cost(np.zeros_like(removed), bits) - cm.cost(np.eye(len(removed), dtype=bool)[0], bits)
    )
    first, second, last = (layer.weight for layer in cm.layers)
    with torch.no_grad():
        first[[0, 1, 2]] = 0
        second[:, [0, 1, 2]] = 0
        second[2] = 0
        last[:, 2] = 0
    assert measured_cost(cm) == pytest.approx(expected, rel=1e-6)


def test_projection_meets_the_latency_target():
    c = compressor(Budget.latency(speedup=1, batch=64), quantize_activations=True)
    p, cm = c.problem, c.problem.cost_model
    top = np.where(cm.quantized, p.bit_options[-1], 32.0)
    half = 0.5 * cm.cost(np.zeros(cm.units.count, bool), top)  # of the layers' time
    imp = p.importance("magnitude")
    plan = project(cm, half, imp, bit_distortion(cm, p.bit_options), p.bit_options)
    assert plan.cost <= half * (1 + 1e-9)
    assert cm.cost(plan.removed, plan.bits) <= half * (1 + 1e-9)
    assert plan.removed.sum() > 0  # bits alone do not halve the time: pruning pays


def test_weight_only_kernels_cannot_buy_the_speed():
    """On CPUs the weight-only kernels run no faster than float; a budget that would need
    them to is refused up front, saying what the rest of the model costs."""
    # refused by the time outside the prunable weights alone, or (on a slower moment of a
    # busy machine) by the fastest reachable model, which states that time too
    with pytest.raises(BudgetError, match="outside (its|the) prunable weights"):
        compressor(Budget.latency(speedup=50, batch=64))


def test_geta_mode_trains_to_a_latency_budget(blobs):
    c = compressor(Budget.latency(speedup=1.3, batch=64), quantize_activations=True)
    opt = c.optimizer(lr=0.05, total_steps=60)
    train(c.model, opt, blobs, 60)
    model = c.finalize()
    report = c.report()
    assert report.metric == "latency" and report.within_budget
    assert report.achieved <= report.target * (1 + 1e-9)
    assert report.dense_cost == pytest.approx(c.latency_table.dense_ms)
    assert report.ratio == pytest.approx(report.dense_cost / report.achieved)
    assert report.measured is not None and report.measured > 0
    assert report.to_dict()["measured_speedup"] == pytest.approx(
        report.dense_cost / report.measured
    )
    assert "ms" in str(report) and "measured" in str(report)
    # activations held within the int8 kernels' width, so geta.deploy runs them there
    for q in input_quantizers(model).values():
        assert float(q.bits().detach().max()) <= 8 + 1e-4
    deployed = geta.deploy(model, "torch")
    assert set(deployed.deploy_report.kernels()) == {"int8-dynamic"}


def test_infeasible_latency_is_a_budget_error():
    with pytest.raises(BudgetError, match="ms"):
        compressor(Budget.latency(ms=1e-9))


@pytest.mark.parametrize("mode", ["admm", "ajpq"])
def test_modes_without_latency_planning_refuse(mode):
    with pytest.raises(ConfigError, match="latency"):
        geta.Compressor(mlp(), (torch.randn(2, 16),), budget="latency=2x", mode=mode)


def test_report_against_refuses_latency():
    with pytest.raises(ValueError, match="Compressor"):
        report_against(mlp(), mlp(), mode="x", budget=Budget.latency(speedup=2))


def test_structural_nonzeros_count_what_a_dense_kernel_computes():
    w = torch.ones(4, 6, 3)
    w[1] = 0  # one output row
    w[:, 2] = 0  # one input column
    w[0, 0, 0] = 0  # a scattered zero: still computed
    assert structural_nonzeros(w) == 3 * 5 * 3
    assert structural_nonzeros(torch.zeros(5)) == 0


class Tagger(torch.nn.Module):
    """An embedding left float (quantize_embeddings off) before two linear layers."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(1000, 64)
        self.fc1 = torch.nn.Linear(64, 256)
        self.fc2 = torch.nn.Linear(256, 8)

    def forward(self, ids):
        return self.fc2(self.fc1(self.embed(ids)).relu())


def test_float_layers_cost_their_float_kernel_in_the_projection():
    torch.manual_seed(0)
    c = geta.Compressor(
        Tagger(),
        (torch.randint(0, 1000, (16, 32)),),
        budget=Budget.latency(speedup=1, batch=16),
        config=geta.CompressorConfig(quantize_activations=True),
    )
    p, cm = c.problem, c.problem.cost_model
    assert list(cm.quantized) == [False, True, True]
    top = np.where(cm.quantized, p.bit_options[-1], 32.0)
    target = 0.6 * cm.cost(np.zeros(cm.units.count, bool), top)
    plan = project(cm, target, p.importance("magnitude"), bit_distortion(cm, p.bit_options),
                   p.bit_options)  # fmt: skip
    assert plan.bits[0] == 32
    assert plan.cost == pytest.approx(cm.cost(plan.removed, plan.bits), rel=1e-9)
    assert plan.cost <= target * (1 + 1e-9)


def test_a_measured_time_over_the_budget_is_reported_and_warned(monkeypatch):
    import logging

    from geta.optim.report import CompressionReport

    over = CompressionReport("geta", "2x", "latency", 10.0, 9.0, 20.0, [], measured=12.0)
    assert over.within_budget and over.measured_within_budget is False
    assert "OVER budget when measured" in str(over)
    assert over.to_dict()["measured_within_budget"] is False
    under = CompressionReport("geta", "2x", "latency", 10.0, 9.0, 20.0, [], measured=8.0)
    assert under.measured_within_budget and "OVER" not in str(under)

    c = compressor(Budget.latency(speedup=1, batch=64))
    monkeypatch.setattr(type(c), "_time_deployed", lambda self: 1e6)
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("geta").addHandler(handler)
    try:
        c.finalize()
    finally:
        logging.getLogger("geta").removeHandler(handler)
    assert any("optimistic" in m for m in seen) and c.report().measured_within_budget is False
