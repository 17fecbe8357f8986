"""Channel alignment (``channel_multiple``): every group keeps a multiple of its unit multiple
or all of its units, in every mode's plan, and the budget still holds."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

import geta
from geta.errors import ConfigError
from geta.graph.equivalence import check_prune_equivalence
from geta.models import lenet5
from geta.models.tricky import GQABlock, ResidualChain
from geta.optim import AjpqConfig, bit_distortion, minimum_cost, project, select_fraction
from geta.optim.ajpq.policy import LayerPolicy, layer_order
from geta.optim.ajpq.wall import ActionWall, channel_tables
from geta.optim.alignment import (
    aligned_keep_counts,
    check_channel_multiple,
    is_aligned,
    kept_counts,
    nearest_allowed,
    unit_multiples,
)
from geta.optim.channel_bits import ChannelLayout
from geta.optim.problem import CompressionProblem
from geta.quant import prepare
from tests.optim.conftest import Blobs, random_plan, train


def odd_mlp() -> nn.Module:
    """Hidden widths 50 (no multiple of 4 or 8), 36 (of 4, not 8) and 6 (smaller than 8)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(16, 50), nn.ReLU(), nn.Linear(50, 36), nn.ReLU(),
        nn.Linear(36, 6), nn.ReLU(), nn.Linear(6, 4),
    )  # fmt: skip


MODELS = {
    "odd_mlp": (odd_mlp, lambda: torch.randn(2, 16)),
    "residual": (ResidualChain, lambda: torch.randn(2, 3, 8, 8)),
    "lenet5": (lenet5, lambda: torch.randn(2, 1, 28, 28)),
    "gqa": (GQABlock, lambda: torch.randint(0, 40, (2, 6))),
}


def _problem(name: str, multiple: int, ratio: float = 8.0, **kw) -> CompressionProblem:
    build, example = MODELS[name]
    model = prepare(build(), init_bits=16, per_channel=True)
    graph = geta.trace(model, (example(),))
    return CompressionProblem(
        model, graph, geta.Budget.size(ratio=ratio), channel_multiple=multiple, **kw
    )


def _assert_aligned(problem: CompressionProblem, removed: np.ndarray) -> np.ndarray:
    sizes = np.diff(problem.units.offsets)
    kept = kept_counts(removed, problem.units.group_of, sizes)
    assert np.all(is_aligned(kept, sizes, problem.unit_multiple)), (kept, problem.unit_multiple)
    assert np.all(kept >= problem.min_keep)
    return kept


# ---------------------------------------------------------------------------- pure rules
def test_unit_multiple_counts_the_indices_of_every_member_slice():
    # plain channels; heads of head_dim 64 (q spans 2 heads' 128 under GQA); heads of
    # head_dim 4; a channel flattened into a linear layer's 16 inputs
    widths = [[1, 1, 1], [128, 64, 64, 128], [16, 4, 4, 16], [1, 16]]
    assert unit_multiples(widths, 8).tolist() == [8, 1, 2, 8]
    assert unit_multiples(widths, 1).tolist() == [1, 1, 1, 1]
    assert unit_multiples(widths, 32).tolist() == [32, 1, 8, 32]


def test_aligned_minimum_and_nearest_allowed_counts():
    sizes = np.array([50, 36, 6, 64])
    assert aligned_keep_counts(sizes, [5, 4, 1, 7], 8).tolist() == [8, 8, 6, 8]
    assert aligned_keep_counts(sizes, [5, 4, 1, 7], 1).tolist() == [5, 4, 1, 7]
    assert is_aligned([48, 36, 6, 60], sizes, 8).tolist() == [True, True, True, False]  # or whole
    assert is_aligned([49, 20, 5, 64], sizes, 8).tolist() == [False, False, False, True]
    assert nearest_allowed(45, 50, 8, 8) == 48  # nearest multiple
    assert nearest_allowed(49, 50, 8, 8) == 50  # the whole group is allowed too
    assert nearest_allowed(44, 50, 8, 8) == 48  # a tie keeps more
    assert nearest_allowed(2, 50, 8, 8) == 8  # never below the minimum


@pytest.mark.parametrize("bad", [0, -8, 2.0, True, "8"])
def test_a_channel_multiple_is_an_int_of_at_least_one(bad):
    with pytest.raises(ValueError, match="channel_multiple is an int of at least 1"):
        check_channel_multiple(bad)
    with pytest.raises(ConfigError, match="channel_multiple"):
        geta.CompressorConfig(channel_multiple=bad)
    with pytest.raises(ConfigError, match="channel_multiple"):
        AjpqConfig(channel_multiple=bad)


def test_the_setting_serializes():
    config = geta.CompressorConfig(channel_multiple=8)
    assert geta.CompressorConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="channel_multiple"):
        geta.CompressorConfig.from_dict({"channel_multiple": 0})
    assert AjpqConfig.from_dict({"channel_multiple": 4}).channel_multiple == 4


# ---------------------------------------------------------------------------- projection
@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("multiple", [4, 8])
def test_projection_keeps_aligned_counts_within_the_budget(name, multiple):
    problem = _problem(name, multiple)
    cm = problem.cost_model
    options = problem.bit_options
    distortion = bit_distortion(cm, options)
    dense = cm.cost(np.zeros(cm.units.count, bool), np.full(len(cm.layers), 8.0))
    smallest = minimum_cost(cm, options, min_keep=problem.min_keep)
    rng = np.random.default_rng(multiple)
    for trial in range(8):
        importance = rng.random(cm.units.count) ** 3
        budget = smallest + (dense - smallest) * rng.uniform(0.0, 0.6)
        forced = None
        if trial % 2:  # units already being pruned: an earlier plan's removals, in part
            earlier = project(
                cm,
                budget * 1.2,
                importance,
                distortion,
                options,
                min_keep=problem.min_keep,
                multiple=problem.unit_multiple,
            )
            forced = earlier.removed & (rng.random(cm.units.count) < 0.5)
        p = project(
            cm,
            budget,
            importance,
            distortion,
            options,
            forced=forced,
            min_keep=problem.min_keep,
            multiple=problem.unit_multiple,
        )
        _assert_aligned(problem, p.removed)
        assert p.cost <= budget * (1 + 1e-9)
        assert cm.cost(p.removed, p.bits) == pytest.approx(p.cost, rel=1e-9)
        if forced is not None:
            assert not np.any(forced & ~p.removed)  # a unit being pruned never comes back


@pytest.mark.parametrize("name", ["odd_mlp", "residual"])
def test_a_multiple_of_one_is_the_plan_of_before(name):
    problem = _problem(name, 1)
    cm = problem.cost_model
    options = problem.bit_options
    distortion = bit_distortion(cm, options)
    rng = np.random.default_rng(0)
    sizes = np.diff(cm.units.offsets)
    assert np.array_equal(problem.unit_multiple, np.ones(len(sizes)))
    assert np.array_equal(problem.min_keep, np.maximum(1, np.ceil(0.1 * sizes)))
    for _ in range(5):
        importance = rng.random(cm.units.count)
        budget = problem.target * rng.uniform(0.5, 1.5)
        plain = project(cm, budget, importance, distortion, options, min_keep=problem.min_keep)
        ones = project(
            cm,
            budget,
            importance,
            distortion,
            options,
            min_keep=problem.min_keep,
            multiple=np.ones(len(sizes), dtype=np.int64),
        )
        assert np.array_equal(plain.removed, ones.removed)
        assert np.array_equal(plain.bits, ones.bits) and plain.cost == ones.cost


def test_aligned_minimum_is_what_feasibility_sees():
    plain, aligned = _problem("residual", 1), _problem("residual", 8)
    options = plain.bit_options
    assert np.all(aligned.min_keep >= plain.min_keep) and np.all(aligned.min_keep % 8 == 0)
    smallest = minimum_cost(aligned.cost_model, options, min_keep=aligned.min_keep)
    assert smallest > minimum_cost(plain.cost_model, options, min_keep=plain.min_keep)
    importance = np.ones(aligned.units.count)
    distortion = bit_distortion(aligned.cost_model, options)
    with pytest.raises(geta.BudgetError):
        project(
            aligned.cost_model,
            smallest * 0.99,
            importance,
            distortion,
            options,
            min_keep=aligned.min_keep,
            multiple=aligned.unit_multiple,
        )
    p = project(
        aligned.cost_model,
        smallest * 1.001,
        importance,
        distortion,
        options,
        min_keep=aligned.min_keep,
        multiple=aligned.unit_multiple,
    )
    _assert_aligned(aligned, p.removed)


def test_an_unreachable_aligned_budget_says_so():
    with pytest.raises(geta.BudgetError, match="in multiples of 8 channels.*channel_multiple"):
        geta.Compressor(
            ResidualChain(),
            (torch.randn(2, 3, 8, 8),),
            "200x",  # 812x reachable, 115x aligned
            config=geta.CompressorConfig(channel_multiple=8),
        )


@pytest.mark.parametrize("multiple", [4, 8])
def test_geta_sparsity_target_keeps_aligned_counts(multiple):
    problem = _problem("odd_mlp", multiple)
    cm = problem.cost_model
    rng = np.random.default_rng(1)
    for fraction in (0.2, 0.5, 0.8):
        importance = rng.random(cm.units.count)
        removed = select_fraction(
            cm, importance, fraction, min_keep=problem.min_keep, multiple=problem.unit_multiple
        )
        _assert_aligned(problem, removed)
        most = int((np.diff(cm.units.offsets) - problem.min_keep).sum())
        target = min(round(fraction * cm.units.count), most)
        assert target <= removed.sum() < target + multiple * len(problem.min_keep)


# ---------------------------------------------------------------------------- AJPQ
@pytest.mark.parametrize("name", ["lenet5", "residual", "odd_mlp"])
@pytest.mark.parametrize("ratio", [8, 30])
def test_ajpq_controllers_and_wall_keep_aligned_counts(name, ratio):
    problem = _problem(name, 4, ratio=ratio)
    layout = ChannelLayout(problem)
    levels = (2, 3, 4, 5, 6, 7, 8)
    importance = problem.importance("magnitude")
    policy = LayerPolicy(layout, layer_order(problem), importance, levels, 0.8, 1)
    distortion, share = channel_tables(layout, levels)
    wall = ActionWall(layout, importance, distortion, levels, policy.min_keep, share)
    sizes = np.diff(problem.units.offsets)
    rng = np.random.default_rng(ratio)
    for _ in range(10):
        plan = random_plan(policy, rng)
        walled = wall(plan, problem.target)
        for chosen in (plan, walled):
            kept = kept_counts(chosen.removed, problem.units.group_of, sizes)
            assert np.all(is_aligned(kept, sizes, problem.unit_multiple)), kept
            assert np.all(kept >= policy.min_keep)
        assert layout.cost(walled, share) <= problem.target * (1 + 1e-9)
    if ratio == 30:  # more than 2 bits a weight saves: the wall must remove blocks of units
        walled = wall(policy.start(), problem.target)
        kept = _assert_aligned(problem, walled.removed)
        assert np.any(kept < sizes) and layout.cost(walled, share) <= problem.target * (1 + 1e-9)


def test_ajpq_mode_takes_the_multiple_from_its_config():
    x = torch.randn(2, 1, 28, 28)
    c = geta.Compressor(lenet5(), (x,), "30x", config=AjpqConfig(channel_multiple=4))
    assert c.problem.channel_multiple == 4 and np.all(c.problem.unit_multiple == 4)
    named = geta.Compressor(
        lenet5(), (x,), "30x", mode="ajpq", config=geta.CompressorConfig(channel_multiple=8)
    )
    assert named.problem.channel_multiple == 8


# ---------------------------------------------------------------------------- end to end
def _train_and_finalize(model, c, steps):
    blobs = Blobs()
    opt = c.optimizer(base="sgd", lr=0.05, momentum=0.9, total_steps=steps)
    train(model, opt, blobs, steps)
    zeroed = copy.deepcopy(model)
    c.finalize()
    x, _ = blobs.batch(128)
    with torch.no_grad():
        torch.testing.assert_close(model(x), zeroed(x), rtol=1e-5, atol=1e-5)
    report = c.report()
    assert report.within_budget and report.removed_units > 0
    return report


def _assert_widths(model: nn.Module, dense: nn.Module, multiple: int) -> None:
    """Every hidden layer's width is a multiple of ``multiple`` or unpruned."""
    linears = [m for m in model if isinstance(m, nn.Linear)]
    dense_linears = [m for m in dense if isinstance(m, nn.Linear)]
    for small, full in zip(linears[:-1], dense_linears[:-1], strict=True):
        width = small.out_features
        assert width % multiple == 0 or width == full.out_features, (width, full.out_features)


@pytest.mark.parametrize("mode", ["geta", "admm"])
def test_finalized_layers_have_aligned_widths_and_the_zeroed_outputs(mode):
    model = odd_mlp()
    dense = copy.deepcopy(model)
    config = geta.CompressorConfig(
        channel_multiple=8,
        admm=geta.AdmmConfig(granularity="group", finetune=0.3, update_every=0.1),
    )
    c = geta.Compressor(model, (torch.randn(2, 16),), "40x", mode=mode, config=config)
    report = _train_and_finalize(model, c, 120)
    _assert_widths(model, dense, 8)
    assert any(r.shape != r.dense_shape for r in report.layers)


def test_grouped_query_heads_stay_whole_and_consistent():
    """Heads of head_dim 4 under channel_multiple 8 go two at a time: a key/value head with
    its two query heads is one unit, and two units are 8 key/value channels."""
    torch.manual_seed(0)
    model = GQABlock(dim=32, heads=8, kv_heads=4)  # head_dim 4
    ids = torch.randint(0, 40, (2, 6))
    c = geta.Compressor(model, (ids,), "4x", config=geta.CompressorConfig(channel_multiple=8))
    p = c.problem
    kinds = [g.kind for g in c.graph.groups]
    assert kinds.count("head") == 1 and p.unit_multiple[kinds.index("head")] == 2
    rng = np.random.default_rng(0)
    cm = p.cost_model
    distortion = bit_distortion(cm, p.bit_options)
    tight = minimum_cost(cm, p.bit_options, min_keep=p.min_keep) * 1.05
    plan = project(
        cm,
        tight,
        rng.random(cm.units.count),
        distortion,
        p.bit_options,
        min_keep=p.min_keep,
        multiple=p.unit_multiple,
    )
    _assert_aligned(p, plan.removed)
    assert plan.removed.any()
    result = check_prune_equivalence(model, c.graph, (ids,), plan=p.units.to_plan(plan.removed))
    assert result.passed, result
    assert model.q.out_features == 2 * model.k.out_features  # query heads follow their KV head
    assert model.k.out_features % 8 == 0 and model.up.out_features % 8 == 0
