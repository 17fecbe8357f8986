"""``CompressorConfig(count_zero_codes=True)``: plans that count only the weights expected to
keep a nonzero code, zero codes held in cool-down, measured slack spent on bits, and the
budget still met exactly."""

import numpy as np
import pytest
import torch
from torch import nn

import geta
from geta.optim import CostModel, bit_distortion, nonzero_code_share, project
from geta.optim.report import measure_layers
from tests.optim.conftest import Blobs, mlp, train


def prepared(weights: list[torch.Tensor]):
    """A chain of linear layers with the given weights, prepared and traced."""
    layers = []
    for w in weights:
        layer = nn.Linear(w.shape[1], w.shape[0], bias=False)
        layer.weight.data.copy_(w)
        layers += [layer, nn.ReLU()]
    model = geta.quant.prepare(nn.Sequential(*layers[:-1]), init_bits=8)
    graph = geta.trace(model, (torch.randn(2, weights[0].shape[1]),))
    return model, CostModel(model, graph)


def test_share_counts_the_weights_that_keep_a_nonzero_code():
    g = torch.Generator().manual_seed(0)
    gaussian = torch.randn(16, 12, generator=g)
    equal = torch.ones(8, 16).index_put_((torch.tensor([0]), torch.tensor([0])), torch.tensor(-1.0))
    _, cm = prepared([gaussian, equal])
    options = np.arange(2.0, 9.0)
    share = nonzero_code_share(cm, options)
    assert share.shape == (2, len(options))
    np.testing.assert_allclose(share[1], 1.0)  # every magnitude on the clip: no zero codes
    assert 0 < share[0, 0] < 0.9  # two bits: small gaussian weights round to zero
    assert np.all(np.diff(share[0]) >= -0.02) and share[0, -1] > 0.95


def test_full_share_gives_the_plain_projection_and_a_smaller_share_keeps_more():
    g = torch.Generator().manual_seed(1)
    model, cm = prepared([torch.randn(10, 6, generator=g), torch.randn(4, 10, generator=g)])
    options = np.arange(2.0, 9.0)
    distortion = bit_distortion(cm, options)
    importance = np.random.default_rng(0).random(cm.units.count)
    budget = 0.06 * cm.dense_cost()  # under 2 bits a weight: units must go
    plain = project(cm, budget, importance, distortion, options)
    same = project(cm, budget, importance, distortion, options, code_share=np.ones((2, 7)))
    np.testing.assert_array_equal(plain.removed, same.removed)
    np.testing.assert_array_equal(plain.bits, same.bits)
    half = project(cm, budget, importance, distortion, options, code_share=np.full((2, 7), 0.5))
    assert half.cost <= budget
    assert half.removed.sum() <= plain.removed.sum()
    assert (half.removed.sum(), -half.bits.sum()) < (plain.removed.sum(), -plain.bits.sum())


def run(count_zero_codes: bool, steps: int = 200):
    blobs = Blobs()
    model = mlp()
    config = geta.CompressorConfig(count_zero_codes=count_zero_codes)
    c = geta.Compressor(model, (torch.randn(2, 16),), "24x", config=config)
    opt = c.optimizer(base="sgd", lr=0.05, momentum=0.9, total_steps=steps)
    nonzeros = []

    def record():
        if opt.frozen:
            nonzeros.append(measure_layers(c.problem.cost_model)[1].sum())

    train(model, opt, blobs, steps, record)
    return model, c, opt, blobs, nonzeros


@pytest.fixture(scope="module")
def both():
    return run(False), run(True)


def test_budget_still_holds_and_more_of_it_is_used(both):
    (_, plain, *_), (_, counted, *_) = both
    a, b = plain.report(), counted.report()
    assert a.within_budget and b.within_budget
    assert b.achieved > a.achieved  # the plain plan leaves the zero codes' share unused
    assert b.achieved >= 0.9 * b.target


def test_zero_codes_stay_zero_in_cool_down_and_finalize_is_exact(both):
    _, (model, c, opt, blobs, nonzeros) = both
    assert opt.held and nonzeros
    held = sum(int(keep.sum()) for keep in opt.held)
    assert all(count <= held for count in nonzeros[-5:])  # no code outside the held mask
    assert max(nonzeros) < sum(layer.weight.numel() for layer in c.problem.cost_model.layers)
    for layer, keep in zip(c.problem.cost_model.layers, opt.held, strict=True):
        assert bool((layer.weight[keep == 0] == 0).all())
    x, _ = blobs.batch(128)
    with torch.no_grad():
        zeroed = model(x)
        c.finalize()
        torch.testing.assert_close(model(x), zeroed, rtol=1e-5, atol=1e-5)
    assert c.report().within_budget


def test_resume_in_cool_down_gives_the_same_model(tmp_path):
    straight, *_ = run(True, steps=120)
    blobs = Blobs()
    model = mlp()
    config = geta.CompressorConfig(count_zero_codes=True)
    c = geta.Compressor(model, (torch.randn(2, 16),), "24x", config=config)
    opt = c.optimizer(base="sgd", lr=0.05, momentum=0.9, total_steps=120)
    train(model, opt, blobs, 100)  # cool-down starts at step 84
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    model2 = mlp()
    c2 = geta.Compressor(model2, (torch.randn(2, 16),), "24x", config=config)
    opt2 = c2.optimizer(base="sgd", lr=0.05, momentum=0.9, total_steps=120)
    model2.load_state_dict(state["model"])
    opt2.load_state_dict(state["opt"])
    assert len(opt2.held) == len(opt.held)
    train(model2, opt2, blobs, 20)
    for (name, a), b in zip(
        straight.state_dict().items(), model2.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
