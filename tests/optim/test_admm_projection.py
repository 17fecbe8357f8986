"""The ADMM V-step against brute force on small random instances, and its quantizers."""

import itertools

import numpy as np
import pytest
import torch

from geta.errors import BudgetError
from geta.optim import LayerTarget, allocate_bits
from geta.optim.admm.projection import (
    LayerSpec,
    level_quantize,
    project_budget,
    project_targets,
    uniform_quantize,
)
from geta.optim.projection import keep_top
from geta.quant import Quantizer


def _instance(seed, sizes=(3, 4, 2)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g) * (1 + i) for i, n in enumerate(sizes)]


def _best_kept_energy(z, weight_cost, budget):
    """Brute force 0-1 knapsack: the most energy any set of weights within budget keeps."""
    values = torch.cat([x.double().square() for x in z]).numpy()
    costs = np.concatenate([np.full(x.numel(), c) for x, c in zip(z, weight_cost, strict=True)])
    best = 0.0
    for choice in itertools.product([False, True], repeat=len(values)):
        pick = np.array(choice)
        if costs[pick].sum() <= budget:
            best = max(best, values[pick].sum())
    return best


def _kept_energy(z, masks):
    return sum(float((x.double() * m).square().sum()) for x, m in zip(z, masks, strict=True))


@pytest.mark.parametrize("seed", range(6))
def test_sparsity_step_is_exactly_optimal_with_one_bit_width(seed):
    z = _instance(seed)
    rng = np.random.default_rng(seed)
    bits = 3.0
    cost = np.full(len(z), bits)
    budget = bits * rng.integers(1, 9)
    masks = keep_top(z, cost, budget)
    kept = sum(int(m.sum()) for m in masks)
    assert kept * bits <= budget
    assert _kept_energy(z, masks) == pytest.approx(_best_kept_energy(z, cost, budget), rel=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_sparsity_step_within_the_greedy_bound_with_mixed_bits(seed):
    z = _instance(seed)
    rng = np.random.default_rng(100 + seed)
    cost = rng.choice([2.0, 3.0, 5.0, 8.0], size=len(z))
    total = sum(c * x.numel() for c, x in zip(cost, z, strict=True))
    budget = float(total * rng.uniform(0.2, 0.8))
    masks = keep_top(z, cost, budget)
    spent = sum(c * float(m.sum()) for c, m in zip(cost, masks, strict=True))
    assert spent <= budget
    best = _best_kept_energy(z, cost, budget)
    largest = max(float(x.square().max()) for x in z)
    # a prefix of the ratio order is the LP optimum less one fractional item
    assert best - largest - 1e-9 <= _kept_energy(z, masks) <= best + 1e-9


def test_sparsity_step_holds_budgets_float32_cannot_represent():
    # A transformer's budget (~7e7 bits) lies between float32 values 8 apart: compared in
    # float32, 200000013 rounds up to 200000016 and a second weight of cost 100000007 fits.
    masks = keep_top([torch.ones(3)], np.array([100000007.0]), 200000013.0)
    assert int(masks[0].sum()) == 1


def test_sparsity_step_keeps_the_minimum_and_never_frozen_weights():
    z = [torch.tensor([0.1, 0.2, 0.05]), torch.tensor([5.0, 4.0, 3.0, 2.0])]
    frozen = [None, torch.tensor([True, False, False, False])]
    masks = keep_top(z, np.array([1.0, 1.0]), 3.0, min_keep=np.array([1, 0]), frozen=frozen)
    assert masks[0].tolist() == [False, True, False]  # the one weight layer 0 must keep
    assert masks[1].tolist() == [False, True, True, False]  # 5.0 is held at zero
    with pytest.raises(BudgetError):
        keep_top(z, np.array([1.0, 1.0]), 1.0, min_keep=np.array([1, 1]))


def _brute_force_bits(options, table, weight, budget):
    best = np.inf
    for combo in itertools.product(*[range(len(o)) for o in options]):
        cost = sum(w * o[c] for w, o, c in zip(weight, options, combo, strict=True))
        if cost <= budget:
            best = min(best, sum(t[c] for t, c in zip(table, combo, strict=True)))
    return best


@pytest.mark.parametrize("seed", range(8))
def test_bit_allocation_within_the_greedy_bound(seed):
    rng = np.random.default_rng(seed)
    layers = 4
    options = [np.arange(2.0, 9.0)] * layers
    # distortion falls about 4x a bit, with noise (so hulls are not trivial)
    table = [rng.uniform(0.5, 2) * 4.0 ** -(o - 2) * rng.uniform(0.7, 1.3, len(o)) for o in options]
    table = [np.minimum.accumulate(t) for t in table]
    weight = rng.integers(5, 50, size=layers).astype(float)
    low, high = (weight * 2).sum(), (weight * 8).sum()
    budget = float(rng.uniform(low, high))
    bits = allocate_bits(options, table, weight, budget)
    assert (weight * bits).sum() <= budget
    chosen = sum(t[int(b) - 2] for t, b in zip(table, bits, strict=True))
    best = _brute_force_bits(options, table, weight, budget)
    largest_step = max(float(np.max(-np.diff(t))) for t in table)
    assert best - 1e-12 <= chosen <= best + largest_step + 1e-12
    with pytest.raises(BudgetError):
        allocate_bits(options, table, weight, low * 0.99)


def test_budget_projection_meets_budget_and_quantizers_reproduce_it():
    g = torch.Generator().manual_seed(0)
    z = [torch.randn(6, 5, generator=g), 0.3 * torch.randn(10, 6, generator=g)]
    specs = [LayerSpec(True), LayerSpec(True, per_channel=True, axis=0)]
    options = np.arange(2.0, 9.0)
    budget = 0.3 * 32 * 90 / 4
    p = project_budget(z, specs, np.ones(2), budget, options, min_keep=np.array([1, 1]))
    nnz = p.nonzeros()
    assert p.cost == pytest.approx(float((p.bits * nnz).sum())) and p.cost <= budget
    for x, v, m, clip, b, s in zip(z, p.values, p.masks, p.clips, p.bits, specs, strict=True):
        assert bool((v[~m] == 0).all())  # V is zero where the mask drops a weight
        q = Quantizer.for_tensor(x, bits=8, per_channel=s.per_channel)
        with torch.no_grad():
            q.q_m.copy_(clip.expand_as(q.q_m))
            q.set_bits(float(b))
        torch.testing.assert_close(q(v), v)  # V lies on the quantizer's levels
        assert q.storage_bits() == int(b)
    error = sum(float((x - v).square().sum()) for x, v in zip(z, p.values, strict=True))
    assert p.error == pytest.approx(error, rel=1e-4)


def test_budget_projection_reports_an_infeasible_budget():
    z = [torch.randn(4, 4)]
    with pytest.raises(BudgetError):
        project_budget(z, [LayerSpec(True)], np.ones(1), 3.0, np.arange(2.0, 9.0), min_keep=[2])


def test_uniform_quantizer_keeps_zeros_and_levels():
    x = torch.tensor([0.0, 0.1, -0.4, 0.9, -1.0, 0.0])
    v, clip, err = uniform_quantize(x, 3, LayerSpec(True))
    assert v[0] == 0 and v[-1] == 0
    step = float(clip) / 3
    assert torch.allclose(v / step, (v / step).round(), atol=1e-5)
    assert err == pytest.approx(float((v - x).square().sum()), rel=1e-5)


def test_binary_and_ternary_levels():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, generator=g)
    v, q = level_quantize(x, 1)
    assert set(v.unique().tolist()) == {-q, q} and q == pytest.approx(float(x.abs().mean()))
    masked = x * (x.abs() > 0.5)
    v, q = level_quantize(masked, 1)
    assert set(v.unique().tolist()) == {-q, 0.0, q}
    assert bool(((v == 0) == (masked == 0)).all())  # zeros kept, nonzeros never zero
    # least squares: no other q does better on this assignment
    for other in (0.9 * q, 1.1 * q):
        assert float((torch.sign(masked) * other - masked).square().sum()) > float(
            (v - masked).square().sum()
        )
    v, q = level_quantize(x, 3)
    assert set((v / q).round().abs().unique().tolist()) <= {1.0, 2.0, 3.0}


def test_targets_projection_densities_and_binary_layers():
    g = torch.Generator().manual_seed(1)
    z = [
        torch.randn(8, 8, generator=g),
        torch.randn(4, 8, generator=g),
        torch.randn(3, generator=g),
    ]
    targets = [LayerTarget.binary(), LayerTarget.ternary(0.25), None]
    p = project_targets(z, targets, float_bits=16)
    assert p.nonzeros().tolist() == [64, 8, 3]
    assert len(p.values[0].unique()) == 2  # binary: +-q only
    assert set(p.values[1].abs().unique().tolist()) == {0.0, float(p.values[1].abs().max())}
    assert p.cost == 64 * 1 + 8 * 2 + 3 * 16
    torch.testing.assert_close(p.values[2], z[2])  # no target: untouched
    kept = p.masks[1]
    assert float(z[1].abs()[kept].min()) >= float(z[1].abs()[~kept].max())


@pytest.mark.parametrize("seed", range(4))
def test_fisher_sparsity_step_is_optimal_for_the_weighted_energy(seed):
    z = _instance(seed)
    g = torch.Generator().manual_seed(50 + seed)
    fisher = [torch.rand(x.shape, generator=g) + 0.01 for x in z]
    cost = np.full(len(z), 3.0)
    budget = 3.0 * (seed + 3)
    masks = keep_top(z, cost, budget, curvature=fisher)
    weighted = [x * f.sqrt() for x, f in zip(z, fisher, strict=True)]  # F z^2 = (sqrt(F) z)^2
    assert sum(int(m.sum()) for m in masks) * 3.0 <= budget
    assert _kept_energy(weighted, masks) == pytest.approx(
        _best_kept_energy(weighted, cost, budget), rel=1e-9
    )


def test_fisher_projection_measures_the_weighted_distance_and_follows_the_loss():
    g = torch.Generator().manual_seed(1)
    z = [3 * torch.randn(8, 5, generator=g), 0.2 * torch.randn(12, 10, generator=g)]
    specs = [LayerSpec(True), LayerSpec(True)]
    options = np.arange(2.0, 9.0)
    budget = 2.0 * 30
    plain = project_budget(z, specs, np.ones(2), budget, options)
    # the second layer's small weights matter most to the loss: constant curvature per layer
    fisher = [torch.full_like(z[0], 1.0), torch.full_like(z[1], 1e4)]
    p = project_budget(z, specs, np.ones(2), budget, options, curvature=fisher)
    assert p.cost <= budget
    assert p.nonzeros()[1] > plain.nonzeros()[1]  # the budget moves to the layer the loss needs
    distance = sum(
        float((f * (x - v).square()).sum()) for x, v, f in zip(z, p.values, fisher, strict=True)
    )
    assert p.error == pytest.approx(distance, rel=1e-4)
    # a constant curvature is the Euclidean projection scaled
    same = project_budget(
        z, specs, np.ones(2), budget, options, curvature=[4 * f / f for f in fisher]
    )
    assert all(torch.equal(a, b) for a, b in zip(same.masks, plain.masks, strict=True))
    assert same.error == pytest.approx(4 * plain.error, rel=1e-6)
