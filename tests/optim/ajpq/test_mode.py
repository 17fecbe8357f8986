"""AJPQ mode end to end: the search walls every policy into the budget, QAT trains the best one
with masks and bits held, finalize removes the 0-bit units exactly, the artifact stores each
channel at its own bits, a search resumes, and the runner drives it."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import geta
from geta.cli.compress import run_compress
from geta.cli.spec import CompressSpec
from geta.errors import ConfigError
from geta.models import lenet5
from geta.optim import AjpqConfig
from geta.optim.ajpq import AgentConfig, AjpqOptimizer, AjpqSearch

SMALL = AgentConfig(hidden=32, warmup_episodes=2, batch_size=16)


def _data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(10, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    x = centers[y] + 0.5 * torch.randn(n, 1, 28, 28, generator=g)
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, n, 32)]


def _compressor(episodes=4, **kw):
    torch.manual_seed(0)
    model = lenet5()
    cfg = AjpqConfig(episodes=episodes, recovery_steps=2, eval_batches=2, agent=SMALL, **kw)
    return model, geta.Compressor(model, (torch.randn(2, 1, 28, 28),), "30x", config=cfg)


def test_the_config_type_selects_the_mode_and_the_name_is_an_alias():
    _, c = _compressor()
    assert c.mode == "ajpq" and c.handler.searches
    c2 = geta.Compressor(lenet5(), (torch.randn(2, 1, 28, 28),), "30x", mode="ajpq")
    assert isinstance(c2.handler.settings(c2), AjpqConfig)
    assert AjpqConfig.from_dict(AjpqConfig(episodes=7).to_dict()).episodes == 7


def test_search_then_qat_then_finalize_and_export(tmp_path):
    model, c = _compressor()
    data = _data()
    found = c.search(data, data[:2], progress=False)
    assert isinstance(found, AjpqSearch) and len(found.history) == 4
    target = c.problem.target
    assert all(row["cost"] <= target * (1 + 1e-9) for row in found.history)
    assert found.best_reward == max(row["reward"] for row in found.history)
    opt = c.optimizer(lr=0.01, momentum=0.9, total_steps=8)
    assert isinstance(opt, AjpqOptimizer)
    removed = c.problem.units.to_plan(found.best_plan.removed)
    for x, y in data:
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    bits_before = [q.bits().detach().clone() for q in geta.quant.weight_quantizers(model).values()]
    for before, q in zip(bits_before, geta.quant.weight_quantizers(model).values(), strict=True):
        assert torch.allclose(q.bits().detach(), before)
    x = data[0][0]
    model.eval()
    with torch.no_grad():
        zeroed = model(x)
    assert removed  # the search pruned units (0 bits) ...
    small = c.finalize()
    with torch.no_grad():
        assert torch.allclose(small(x), zeroed, atol=1e-5)  # ... removed with identical outputs
    report = c.report()
    assert report.within_budget and report.removed_units == int(found.best_plan.removed.sum())
    assert any(len(row.bit_histogram) > 1 for row in report.layers)  # mixed precision
    assert report.extra["search"]["episodes"] == 4
    path = c.export(tmp_path / "artifact")
    loaded = geta.export.load(path, model=lenet5)
    with torch.no_grad():
        assert torch.equal(loaded(x), small(x))


def test_a_search_resumes_where_it_stopped():
    data = _data()
    _, full = _compressor(episodes=5)
    whole = full.search(data, data[:2], progress=False)

    saved = []
    _, first = _compressor(episodes=3)
    first.search(data, data[:2], progress=False, on_episode=saved.append)
    state = saved[-1]
    _, second = _compressor(episodes=5)
    resumed = second.search(data, data[:2], progress=False, state=state)
    rewards = [row["reward"] for row in resumed.history]
    assert len(rewards) == 5
    assert rewards == pytest.approx([row["reward"] for row in whole.history])
    assert np.array_equal(resumed.best_plan.unit_bits, whole.best_plan.unit_bits)


def test_training_before_the_search_is_a_clear_error():
    model, c = _compressor()
    opt = c.optimizer(lr=0.01, total_steps=2)
    F.cross_entropy(model(torch.randn(2, 1, 28, 28)), torch.tensor([0, 1])).backward()
    with pytest.raises(ConfigError, match="search"):
        opt.step()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"budget": None}, "needs a budget"),
        ({"config": geta.CompressorConfig(per_channel=False)}, "per_channel"),
    ],
)
def test_settings_it_cannot_run_are_refused(kwargs, match):
    args = {"budget": "30x", "mode": "ajpq", **kwargs}
    with pytest.raises(ConfigError, match=match):
        geta.Compressor(lenet5(), (torch.randn(2, 1, 28, 28),), **args)


def test_bad_config_values_are_refused():
    with pytest.raises(ConfigError, match="recovery"):
        AjpqConfig(recovery="retrain")
    with pytest.raises(ConfigError, match="bit_range"):
        AjpqConfig(bit_range=(1, 8))


def test_the_runner_searches_on_the_validation_split_and_plots_it(tmp_path):
    spec = CompressSpec(
        data="synthetic",
        mode="ajpq",
        epochs=1,
        dense_epochs=1,
        limit=384,
        validation=128,
        method={
            "episodes": 3,
            "recovery_steps": 2,
            "eval_batches": 1,
            "agent": {"warmup_episodes": 1, "hidden": 16},
        },
    )
    result = run_compress(spec, tmp_path / "run", progress=False)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["search"]["episodes"] == 3
    assert report["compressed"]["within_budget"]
    assert result.seconds["search"] > 0
    assert (tmp_path / "run" / "plots" / "search.png").stat().st_size > 0
    assert not (tmp_path / "run" / "search.pt").exists()  # removed with the checkpoint


def test_the_runner_refuses_a_search_without_a_validation_split(tmp_path):
    spec = CompressSpec(data="synthetic", mode="ajpq", epochs=1, dense_epochs=1, limit=256)
    with pytest.raises(ConfigError, match="--validation"):
        run_compress(spec, tmp_path / "run", progress=False)


def test_fitted_plans_spend_the_budget_they_have():
    """Plans over the budget are walled on the expected nonzero codes, then corrected by the
    measured cost: they land within the budget and use most of it."""
    from geta.optim.report import measured_cost

    _, c = _compressor()
    search = AjpqSearch(c.problem, c.handler.settings(c))
    for action in ([0.0, 1.0], [0.3, 0.7], [0.1, 0.4]):
        chosen, _, _ = search.rollout(lambda state, a=action: np.array(a))
        assert search.layout.cost(chosen, search.share) > c.problem.target
        search.land(search.fit(chosen))
        spent = measured_cost(c.problem.cost_model) / c.problem.target
        assert 0.9 <= spent <= 1 + 1e-9


def test_qat_enforces_the_budget_when_codes_revive():
    """Kept weights may cross the zero code during QAT; the trims (and finish) bring the
    measured cost back within the budget, and what they zero stays zero."""
    from geta.optim.report import measured_cost

    model, c = _compressor()
    search = AjpqSearch(c.problem, c.handler.settings(c))
    chosen, _, _ = search.rollout(lambda state: np.array([0.0, 1.0]))  # over the budget
    search.best_plan = search.fit(chosen)
    search.land(search.best_plan)
    c.search_result = search
    opt = c.optimizer(lr=0.0, total_steps=4)
    with torch.no_grad():  # every code leaves the zero bin: the cost jumps
        for layer in c.problem.cost_model.layers:
            layer.weight.add_(0.3 * torch.sign(torch.randn_like(layer.weight)))
    units = c.problem.removal_factors(opt.plan.removed)
    for p, values in units:
        p.data.mul_(values)
    before = measured_cost(c.problem.cost_model)
    opt.finish()
    after = measured_cost(c.problem.cost_model)
    assert after <= c.problem.target * (1 + 1e-9) <= before
    held = [~k for k in opt.keep]
    for layer, zero in zip(c.problem.cost_model.layers, held, strict=True):
        assert bool((layer.weight[zero] == 0).all())
    assert c.report().within_budget


def test_qat_spends_the_budget_zero_codes_leave():
    """Kept weights drifting into the zero bin leave the measured cost under the budget; the
    trims raise single channels' bits until it is nearly spent, never over it, and a resumed
    optimizer keeps the raised bits."""
    from geta.optim.report import measured_cost

    model, c = _compressor()
    search = AjpqSearch(c.problem, c.handler.settings(c))
    chosen, _, _ = search.rollout(lambda state: np.array([0.0, 1.0]))
    search.best_plan = search.fit(chosen)
    search.land(search.best_plan)
    c.search_result = search
    opt = c.optimizer(lr=0.0, total_steps=4)
    layers, target = c.problem.cost_model.layers, c.problem.target
    with torch.no_grad():  # weights shrink toward zero, as weight decay pulls them: codes die
        for layer in layers:
            layer.weight.mul_(0.4)
    before = measured_cost(c.problem.cost_model)
    assert before < 0.8 * target
    opt.finish()
    after = measured_cost(c.problem.cost_model)
    assert 0.95 * target <= after <= target * (1 + 1e-9)
    raised = [layer.quantizer.bits().detach().round().clone() for layer in layers]
    assert any(b.unique().numel() > 1 for b in raised)  # channel by channel
    assert c.report().within_budget

    state = opt.state_dict()
    for layer in layers:
        layer.quantizer.set_bits(2.0)
    resumed = c.optimizer(lr=0.0, total_steps=4)
    resumed.load_state_dict(state)
    x, y = _data(32)[0]
    F.cross_entropy(model(x), y).backward()
    resumed.step()
    for layer, bits in zip(layers, raised, strict=True):
        assert torch.equal(layer.quantizer.bits().detach().round(), bits)
