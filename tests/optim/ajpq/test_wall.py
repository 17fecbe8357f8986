"""The action wall: whatever the controllers chose, the evaluated policy meets the budget, by
reductions only, within the groups' minimum."""

import numpy as np
import pytest
import torch

import geta
from geta.errors import BudgetError
from geta.models import lenet5
from geta.models.tricky import ResidualChain
from geta.optim.ajpq.hold import hold_codes
from geta.optim.ajpq.policy import LayerPolicy, layer_order
from geta.optim.ajpq.wall import ActionWall, channel_tables
from geta.optim.channel_bits import ChannelLayout
from geta.optim.problem import CompressionProblem
from geta.quant import prepare
from tests.optim.conftest import random_plan

LEVELS = (2, 3, 4, 5, 6, 7, 8)


def _setup(model, x, ratio, count_codes=False, fill=False):
    prepare(model, init_bits=16, per_channel=True)
    problem = CompressionProblem(model, geta.trace(model, (x,)), geta.Budget.size(ratio=ratio))
    layout = ChannelLayout(problem)
    importance = problem.importance("magnitude")
    policy = LayerPolicy(layout, layer_order(problem), importance, LEVELS, 0.8, 1)
    distortion, share = channel_tables(layout, LEVELS)
    share = share if count_codes else None
    wall = ActionWall(layout, importance, distortion, LEVELS, policy.min_keep, share, fill=fill)
    return problem, layout, policy, wall


@pytest.mark.parametrize(
    ("model", "x"),
    [(lenet5(), torch.randn(2, 1, 28, 28)), (ResidualChain(), torch.randn(2, 3, 8, 8))],
    ids=["lenet5", "residual"],
)
@pytest.mark.parametrize("ratio", [8, 30, 100])
@pytest.mark.parametrize("count_codes", [False, True], ids=["every-weight", "nonzero-codes"])
def test_random_actions_always_meet_the_budget_by_reductions_only(model, x, ratio, count_codes):
    problem, layout, policy, wall = _setup(model, x, ratio, count_codes)
    rng = np.random.default_rng(ratio)
    units = problem.units
    for _ in range(25):
        plan = random_plan(policy, rng)
        walled = wall(plan, problem.target)
        assert layout.cost(walled, wall.share) <= problem.target * (1 + 1e-9)
        assert np.all(walled.unit_bits <= plan.unit_bits)
        assert np.all(walled.layer_bits <= plan.layer_bits)
        assert set(np.unique(walled.unit_bits)) <= {0.0, *map(float, LEVELS)}
        kept = np.bincount(units.group_of[~walled.removed], minlength=len(units.group_ids))
        assert np.all(kept >= policy.min_keep)


def test_a_plan_within_the_budget_is_left_as_it_is():
    problem, layout, policy, wall = _setup(lenet5(), torch.randn(2, 1, 28, 28), 8)
    plan = policy.start()
    for layer in policy.order:
        policy.decide(plan, layer, np.array([0.9, 0.0]))  # most units pruned, lowest bits
    assert layout.cost(plan) <= problem.target
    walled = wall(plan, problem.target)
    assert np.array_equal(walled.unit_bits, plan.unit_bits)


@pytest.mark.parametrize("ratio", [8, 30, 100])
def test_filling_raises_bits_until_no_raise_fits(ratio):
    """With ``fill``, a policy under the budget gets bits until no further one-level raise of
    a unit with something to gain fits; what is removed stays removed."""
    problem, layout, policy, wall = _setup(lenet5(), torch.randn(2, 1, 28, 28), ratio, fill=True)
    rng = np.random.default_rng(ratio)
    for _ in range(10):
        plan = random_plan(policy, rng)
        filled = wall(plan, problem.target)
        wall.fill = False
        reduced = wall(plan, problem.target)
        wall.fill = True
        cost = layout.cost(filled)
        assert layout.cost(reduced) <= cost <= problem.target * (1 + 1e-9)
        assert np.array_equal(filled.removed, reduced.removed)
        assert np.all(filled.unit_bits >= reduced.unit_bits)
        for u in np.nonzero(~filled.removed)[0].tolist():
            level = LEVELS.index(int(filled.unit_bits[u]))
            if level + 1 == len(LEVELS) or not wall.owners[u]:
                continue
            if wall.unit_distortion[u, level] <= wall.unit_distortion[u, level + 1]:
                continue  # nothing to gain from a raise
            raised = type(filled)(filled.unit_bits.copy(), filled.layer_bits.copy())
            raised.unit_bits[u] = LEVELS[level + 1]
            assert layout.cost(raised) > problem.target


def test_the_wall_spends_the_least_importance():
    """Units of no importance (every weight of theirs zero) go before any important unit
    loses bits."""
    model = lenet5()
    with torch.no_grad():  # half of the first linear layer's outputs are dead
        model[7].weight[:60] = 0.0
        model[7].bias[:60] = 0.0
        model[9].weight[:, :60] = 0.0
    problem, layout, policy, wall = _setup(model, torch.randn(2, 1, 28, 28), 12)
    walled = wall(policy.start(), problem.target)
    dead = layout.channel_unit[2][:60]  # counted layers: conv, conv, the linear layer, ...
    assert walled.unit_bits[dead].max() == 0.0


def test_an_unreachable_budget_is_a_clear_error():
    problem, layout, policy, wall = _setup(lenet5(), torch.randn(2, 1, 28, 28), 8)
    with pytest.raises(BudgetError, match="action wall"):
        wall(policy.start(), problem.target / 1e4)


def test_the_channel_controller_prunes_the_least_important_and_bands_the_rest():
    problem, layout, policy, _ = _setup(lenet5(), torch.randn(2, 1, 28, 28), 30)
    plan = policy.start()
    first = policy.order[0]
    policy.decide(plan, first, np.array([0.5, 0.5]))
    units = policy.owned[first]
    order = units[np.argsort(policy.importance[units], kind="stable")]
    bits = plan.unit_bits[order]
    assert (bits == 0).sum() == round(0.5 * 0.8 * len(units))
    kept = bits[bits > 0]
    assert np.all(np.diff(kept) >= 0)  # more important, never fewer bits
    assert set(kept.tolist()) == {4.0, 5.0, 6.0}  # level 5 with spread 1


def test_counting_zero_codes_spends_the_budget_and_landing_enforces_it():
    """A plan walled on the expected nonzero codes, landed (zero codes held, trimmed to the
    budget), measures within the budget and uses most of it; counting every kept weight
    leaves much of it unused."""
    from geta.optim.report import measured_cost

    spent = {}
    for count_codes in (False, True):
        model = lenet5()
        problem, layout, policy, wall = _setup(model, torch.randn(2, 1, 28, 28), 30, count_codes)
        plan = wall(policy.start(), problem.target)
        layout.apply(plan)
        hold_codes(problem)
        spent[count_codes] = measured_cost(problem.cost_model) / problem.target
    assert spent[True] <= 1 + 1e-9 and spent[False] <= 1 + 1e-9
    assert spent[True] > 0.85 and spent[True] > spent[False] + 0.1
