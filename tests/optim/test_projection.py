"""The budget projection against brute force and its invariants."""

import itertools

import numpy as np
import pytest
import torch
from torch import nn

import geta
from geta.optim import CostModel, bit_distortion, minimum_cost, project


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))


@pytest.fixture(scope="module")
def problem():
    model = geta.quant.prepare(tiny(), init_bits=8)
    graph = geta.trace(model, (torch.randn(2, 3),))
    return model, graph, CostModel(model, graph)


def _brute_force(cm, importance, bits, budget):
    """Least importance lost over every removal set that keeps a unit per group."""
    best = (np.inf, None)
    n = cm.units.count
    for mask_bits in itertools.product([False, True], repeat=n):
        removed = np.array(mask_bits)
        if any(removed[lo:hi].all() for lo, hi in itertools.pairwise(cm.units.offsets)):
            continue
        if cm.cost(removed, bits) <= budget:
            best = min(best, (importance[removed].sum(), tuple(removed)), key=lambda t: t[0])
    return best


def test_sparsity_step_is_optimal_with_one_bit_width_and_equal_unit_costs(problem):
    _, _, cm = problem
    assert [g for g in cm.units.group_ids] and cm.units.count == 9  # 5 + 4 hidden units
    rng = np.random.default_rng(0)
    options = np.array([4.0])
    bits = np.full(len(cm.layers), 4.0)
    distortion = np.zeros((len(cm.layers), 1))
    # group 0 units (width 5 layer) cost 3+4 weights each; group 1 units 5+2: equal within a
    # group, so rank by importance inside each group is what must be optimal
    for _ in range(5):
        importance = rng.random(cm.units.count)
        budget = cm.cost(np.zeros(cm.units.count, bool), bits) * rng.uniform(0.3, 0.9)
        p = project(cm, budget, importance, distortion, options)
        best_loss, _ = _brute_force(cm, importance, bits, budget)
        assert p.cost <= budget
        lost = importance[p.removed].sum()
        # the greedy by loss per cost is within one unit's importance of the optimum
        assert lost <= best_loss + importance.max() + 1e-12


def test_bits_only_projection_meets_budget_with_least_distortion(problem):
    _, _, cm = problem
    options = np.arange(2.0, 9.0)
    distortion = bit_distortion(cm, options)
    assert np.all(np.diff(distortion, axis=1) <= 1e-12)  # more bits, less error
    dense_bits = cm.cost(np.zeros(cm.units.count, bool), np.full(len(cm.layers), 8.0))
    budget = dense_bits * 0.5
    p = project(cm, budget, np.full(cm.units.count, np.inf), distortion, options)
    assert p.cost <= budget and not p.removed.any()
    nnz = cm.nonzeros(p.removed)
    chosen = sum(distortion[i, int(b) - 2] * nnz[i] for i, b in enumerate(p.bits))
    # brute force over every bit assignment
    best = min(
        sum(distortion[i, int(b) - 2] * nnz[i] for i, b in enumerate(combo))
        for combo in itertools.product(options, repeat=len(cm.layers))
        if (np.array(combo) * nnz).sum() <= budget
    )
    assert chosen <= best * 1.5 + 1e-12


def test_forced_units_stay_removed_and_min_keep_holds(problem):
    _, _, cm = problem
    options = np.array([2.0, 4.0])
    distortion = bit_distortion(cm, options)
    forced = np.zeros(cm.units.count, bool)
    forced[0] = True
    imp = np.ones(cm.units.count)
    smallest = minimum_cost(cm, options, min_keep=2)
    p = project(cm, smallest, imp, distortion, options, forced=forced, min_keep=2)
    assert p.removed[0]
    for lo, hi in itertools.pairwise(cm.units.offsets):
        assert (~p.removed[lo:hi]).sum() >= 2
    assert p.cost <= smallest * (1 + 1e-9)


def test_infeasible_budget_names_the_smallest_reachable_cost(problem):
    _, _, cm = problem
    options = np.array([2.0, 4.0])
    smallest = minimum_cost(cm, options)
    with pytest.raises(geta.BudgetError, match="cannot be met") as err:
        project(cm, smallest * 0.99, np.ones(cm.units.count), bit_distortion(cm, options), options)
    assert err.value.min_cost == pytest.approx(smallest)


def test_cost_model_counts_structural_nonzeros(problem):
    model, graph, cm = problem
    removed = np.zeros(cm.units.count, bool)
    removed[[0, 1]] = True  # two hidden units of the first hidden layer
    nnz = cm.nonzeros(removed)
    shapes = [tuple(layer.weight.shape) for layer in cm.layers]
    assert shapes == [(5, 3), (4, 5), (2, 4)]
    assert nnz.tolist() == [3 * 3, 4 * 3, 2 * 4]
    assert cm.cost(removed, np.array([2.0, 4.0, 8.0])) == 2 * 9 + 4 * 12 + 8 * 8
    assert cm.dense_cost() == 32 * (15 + 20 + 8)


def test_per_channel_distortion_from_a_channel_sample_tracks_the_full_search():
    """Per-channel layers larger than ``sample`` are measured on a fixed sample of whole
    channels: close to the full search, and much faster on large tables."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(3000, 64), nn.Linear(64, 8))
    with torch.no_grad():  # rows of very different ranges, as in a trained embedding table
        model[0].weight.mul_(torch.rand(3000, 1) * 4)
    geta.quant.prepare(model, init_bits=8, per_channel=True, embeddings=True)
    cm = CostModel(model, geta.trace(model, (torch.randint(0, 3000, (2, 5)),)))
    options = np.arange(2.0, 9.0)
    full = bit_distortion(cm, options, sample=1 << 30)
    sampled = bit_distortion(cm, options, sample=1 << 13)  # 128 of 3000 rows
    np.testing.assert_allclose(sampled, full, rtol=0.15)
    assert np.all(np.diff(sampled, axis=1) <= 1e-12)
    np.testing.assert_array_equal(sampled, bit_distortion(cm, options, sample=1 << 13))
