"""The ADMM modes end to end: a quadratic toy with a known answer, the budget met, zeros and
bits held through masked fine-tuning, binary and ternary layers, structured ADMM, switching
modes on one model, resuming."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

import geta
from geta.optim.admm.optimizer import admm_phases, ramp_budgets, ramp_steps
from geta.optim.admm.projection import project_groups
from geta.optim.landing import HEADROOM
from geta.optim.report import measured_cost
from tests.optim.conftest import Blobs, mlp, train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def accuracy(model, blobs):
    x, y = blobs.batch(512)
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def make(mode="admm", budget="60x", model=None, bit_range=(2, 8), **admm):
    model = model if model is not None else mlp()
    config = geta.CompressorConfig(bit_range=bit_range, admm=geta.AdmmConfig(**admm))
    return model, geta.Compressor(model, (torch.randn(2, 16),), budget, mode=mode, config=config)


def weight_values(c):
    """Each counted layer's effective (quantized) weight."""
    return [layer.module.weight.detach() for layer in c.problem.cost_model.layers]


def quadratic_toy(seed, **admm):
    """``loss = 1/2 ||W - A||^2`` on a 4x8 linear layer under "6 weights at 8 bits", where 6
    entries of ``A`` (the support) are far larger than the rest; 299 of 300 steps run (the
    last would end the run with the hard projection). Returns the compressor, its optimizer,
    ``A``, the support and the loss."""
    g = torch.Generator().manual_seed(seed)
    a = 0.3 * torch.rand(4, 8, generator=g) * torch.randn(4, 8, generator=g).sign()
    support = torch.zeros(32, dtype=torch.bool)
    support[torch.randperm(32, generator=g)[:6]] = True
    support = support.reshape(4, 8)
    a[support] = (2 + torch.rand(6, generator=g)) * torch.randn(6, generator=g).sign()
    model = nn.Linear(8, 4, bias=False)
    admm = geta.AdmmConfig(rho=1.0, update_every=5, finetune=0, ramp=1, **admm)
    config = geta.CompressorConfig(bit_range=(8, 8), admm=admm)
    c = geta.Compressor(model, (torch.randn(2, 8),), geta.Budget.size(bits=48), "admm", config)
    opt = c.optimizer(base="sgd", lr=0.1, total_steps=300)

    def loss():
        return 0.5 * (model.weight - a).square().sum()

    for _ in range(299):
        loss().backward()
        opt.step()
        opt.zero_grad()
    return c, opt, a, support, loss


@pytest.mark.parametrize("balance_rho", [False, True])
def test_quadratic_toy_reaches_the_known_admm_answer(balance_rho):
    """With the papers' proximal term the toy's answer is A's 6 largest entries (quantized),
    and at the fixed point W = V and U = (A - V) / rho (with residual balancing, at the rho
    it ends with: U is rescaled whenever rho changes)."""
    c, opt, a, support, loss = quadratic_toy(0, balance_rho=balance_rho, proximal="budget")
    model = c.model
    w, v, u = model.parametrizations.weight.original.detach(), opt.V[0], opt.U[0]
    rhos = {h["rho"] for h in opt.history}
    assert (len(rhos) > 1) == balance_rho  # residual balancing moved it; growth 1.0 did not
    assert bool(((v != 0) == support).all())
    half_step = float(a.abs().max()) / 127 / 2  # V's clip moves on a grid as Z moves
    torch.testing.assert_close(w, v, atol=half_step, rtol=0)
    torch.testing.assert_close(u, (a - v) / opt.rho, atol=2e-2, rtol=0)
    loss().backward()
    opt.step()  # the hard projection
    final = model.weight.detach()
    assert bool(((final != 0) == support).all())
    torch.testing.assert_close(final[support], a[support], atol=0.03, rtol=0)
    assert c.report().achieved <= 48


def test_zeros_proximal_pulls_only_the_dropped_weights():
    """``proximal="zeros"`` (the default) on the same toy: the kept weights are not pulled
    onto V's quantization levels (they reach A itself, their duals stay 0); the dropped ones
    go to zero with the duals ``A / rho``, as with the papers' proximal term."""
    c, opt, a, support, _ = quadratic_toy(1)
    assert opt.config.proximal == "zeros"
    w, v, u = c.model.parametrizations.weight.original.detach(), opt.V[0], opt.U[0]
    assert bool(((v != 0) == support).all())
    torch.testing.assert_close(w[support], a[support], atol=1e-4, rtol=0)  # float, not 8-bit
    assert float((v[support] - a[support]).abs().max()) > 1e-3  # V is on 8-bit levels
    assert bool((u[support] == 0).all())
    torch.testing.assert_close(w[~support], torch.zeros_like(w[~support]), atol=2e-2, rtol=0)
    torch.testing.assert_close(u[~support], a[~support] / opt.rho, atol=2e-2, rtol=0)


def test_proximal_must_be_known():
    with pytest.raises(geta.ConfigError, match="proximal"):
        geta.AdmmConfig(proximal="weights")


@pytest.fixture(scope="module")
def unstructured():
    blobs = Blobs()
    model, c = make("admm", "60x", finetune=0.3, update_every=0.1)
    opt = c.optimizer(base="sgd", lr=0.05, momentum=0.9, total_steps=160)
    checks = []

    def on_step():
        if opt.stage != "finetune" or opt.masks is None:
            return
        layers = c.problem.cost_model.layers
        zeros = all(
            bool((layer.weight[~m] == 0).all()) for layer, m in zip(layers, opt.masks, strict=True)
        )
        bits = [layer.quantizer.bits().detach().tolist() for layer in layers]
        clips = [layer.quantizer.q_m.detach().clone() for layer in layers]
        checks.append((zeros, bits, clips))

    train(model, opt, blobs, 160, on_step)
    return blobs, model, c, opt, checks


def test_budget_met_and_artifact_exports_unstructured(unstructured, tmp_path):
    blobs, model, c, opt, _ = unstructured
    before = accuracy(model, blobs)
    assert c.finalize() is model
    report = c.report()
    assert report.within_budget and report.ratio >= 60
    # weights removed (at 2 bits or more, at most target / 2 are left), shapes kept
    assert report.removed_units >= report.total_units - report.target / 2
    assert [r.shape for r in report.layers] == [r.dense_shape for r in report.layers]
    assert before > 0.9 and accuracy(model, blobs) == before  # nothing to prune physically
    c.export(tmp_path / "a")
    loaded = geta.export.load(tmp_path / "a", model=mlp)
    x, _ = blobs.batch(32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    sizes = geta.size_report(model, tmp_path / "a", reference=mlp())
    assert sizes.paper_ratio == pytest.approx(report.ratio)


def test_masked_finetuning_keeps_zeros_and_bits(unstructured):
    _, _, c, opt, checks = unstructured
    assert len(checks) >= 40  # 30% of 160 steps
    assert all(zeros for zeros, _, _ in checks)
    bits = np.array([x for layer in checks[0][1] for x in layer])
    for _, b, _ in checks:  # bits fixed, integers ...
        np.testing.assert_allclose([x for layer in b for x in layer], bits, atol=1e-4)
    np.testing.assert_allclose(bits, bits.round(), atol=1e-4)
    first, last = checks[0][2], checks[-1][2]
    assert any(not torch.equal(a, b) for a, b in zip(first, last, strict=True))  # ... clips learn
    projections = [h for h in opt.history if h["event"] == "hard projection"]
    # the projection spends the landing headroom; fine-tuning's trims make the budget hold
    assert len(projections) == 1 and projections[0]["cost"] <= c.problem.target * HEADROOM
    assert measured_cost(c.problem.cost_model) <= c.problem.target


def test_with_a_fixed_clip_kept_weights_stay_inside_it():
    blobs = Blobs()
    model, c = make("admm", "60x", finetune=0.3, update_every=0.1, learn_clip=False)
    opt = c.optimizer(base="sgd", lr=0.05, momentum=0.9, total_steps=100)
    seen = []

    def on_step():
        if opt.stage == "finetune" and opt.masks is not None:
            layers = c.problem.cost_model.layers
            inside = all(
                bool((layer.weight.abs() <= layer.quantizer.q_m.reshape(-1, 1)).all())
                for layer in layers
            )
            seen.append((inside, [layer.quantizer.q_m.detach().clone() for layer in layers]))

    train(model, opt, blobs, 100, on_step)
    assert seen and all(inside for inside, _ in seen)
    assert all(
        torch.equal(a, b) for _, clips in seen for a, b in zip(clips, seen[0][1], strict=True)
    )


def test_structured_admm_prunes_groups_physically():
    blobs = Blobs()
    model, c = make("admm", "24x", granularity="group", finetune=0.3, update_every=0.1)
    opt = c.optimizer(base="sgd", lr=0.05, momentum=0.9, total_steps=160)
    train(model, opt, blobs, 160)
    zeroed = copy.deepcopy(model)
    c.finalize()
    report = c.report()
    assert report.within_budget and report.ratio >= 24 and report.removed_units > 0
    assert sum(r.shape != r.dense_shape for r in report.layers) >= 1  # channels are gone
    x, _ = blobs.batch(64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), zeroed(x), atol=1e-5, rtol=1e-5)
    assert accuracy(model, blobs) > 0.9


def _bn_mlp(first_scale: float) -> nn.Module:
    """An MLP whose hidden layers feed batch norm: scaling a layer's weights leaves its
    outputs (in training mode) and the loss unchanged."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(16, 48, bias=False),
        nn.BatchNorm1d(48, eps=1e-12),
        nn.ReLU(),
        nn.Linear(48, 48, bias=False),
        nn.BatchNorm1d(48, eps=1e-12),
        nn.ReLU(),
        nn.Linear(48, 4),
    )
    with torch.no_grad():
        model[0].weight.mul_(first_scale)
    return model


@pytest.mark.parametrize("distance", ["fisher", "euclidean"])
def test_structured_projection_with_fisher_ignores_the_scale_batch_norm_hides(distance):
    """Structured budget ADMM ranks groups by ``sum F z^2`` with ``distance="fisher"``: the
    loss a group's removal costs. A layer before batch norm with its weights 100x smaller
    computes the same function (its gradients are 100x larger; batch norm's eps set tiny so
    that holds to rounding); the Fisher plan is the same, the energy plan removes that
    layer's units first."""
    blobs = Blobs()
    batches = [blobs.batch(128) for _ in range(20)]
    removed = []
    for scale in (1.0, 0.01):
        model, c = make("admm", "48x", model=_bn_mlp(scale), granularity="group", distance=distance)
        opt = c.optimizer(base="sgd", lr=0.05, total_steps=100)
        for x, y in batches:  # curvature observed, weights unchanged
            nn.functional.cross_entropy(model(x), y).backward()
            c.problem.curvature.observe()
            opt.zero_grad()
        curvature = opt._curvature()
        assert (curvature is not None) == (distance == "fisher")
        z = [w.detach().clone() for w in opt._weights()]
        p = project_groups(c.problem, z, opt.specs, curvature=curvature)
        assert p.cost <= c.problem.target
        removed.append(p.removed)
    first = slice(0, 48)  # the first group's units: model[0]'s outputs
    assert removed[0].sum() > 0
    if distance == "fisher":
        np.testing.assert_array_equal(removed[0], removed[1])
    else:  # the scaled layer loses most of the removed units
        assert removed[1][first].sum() > removed[0][first].sum() + removed[0].sum() // 2


@pytest.mark.parametrize("hold", [True, False])
def test_structured_admm_holds_zero_codes_or_lets_them_train(hold):
    """``hold_zero_codes``: the weights of kept units whose code is zero at the hard
    projection stay zero through fine-tuning (True), or may leave the zero bin (False);
    either way the run ends within the budget."""
    blobs = Blobs()
    model, c = make(
        "admm", "24x", granularity="group", finetune=0.6, update_every=0.1, hold_zero_codes=hold
    )
    opt = c.optimizer(base="sgd", lr=0.05, momentum=0.9, total_steps=160)
    steps = 0
    while opt.stage != "finetune":
        train(model, opt, blobs, 1)
        steps += 1
    zero = [w == 0 for w in weight_values(c)]
    train(model, opt, blobs, 160 - steps)
    revived = sum(int((z & (w != 0)).sum()) for z, w in zip(zero, weight_values(c), strict=True))
    assert (revived == 0) == hold
    c.finalize()
    assert c.report().within_budget


def test_fully_binarized_network():
    blobs = Blobs()
    model, c = make("admm-progressive", None, targets=geta.LayerTarget.binary(), finetune=0.3)
    opt = c.optimizer(base="sgd", lr=0.05, momentum=0.9, total_steps=150)
    train(model, opt, blobs, 106)  # through the hard projection
    assert opt.stage == "finetune"
    signs = [w.sign() for w in weight_values(c)]
    train(model, opt, blobs, 44)
    c.finalize()
    flips = sum(int((w.sign() != s).sum()) for w, s in zip(weight_values(c), signs, strict=True))
    assert flips > 0  # binary weights still train (their latent copy crosses zero)
    for w in weight_values(c):
        assert len(w.unique()) == 2 and float(w.unique().sum()) == pytest.approx(0.0, abs=1e-6)
    report = c.report()
    assert all(r.bits == 1 and r.density == 1 for r in report.layers)
    assert report.ratio == pytest.approx(32.0)
    assert accuracy(model, blobs) > 0.9


def test_progressive_ternary_steps_from_the_previous_result():
    blobs = Blobs()
    target = geta.LayerTarget.ternary(0.2)
    model, c = make("admm-progressive", None, targets=target, steps=2, finetune=0.3)
    opt = c.optimizer(base="sgd", lr=0.05, momentum=0.9, total_steps=200)
    train(model, opt, blobs, 100)  # the end of step 1: pruning only, to sqrt(0.2)
    first = [m.clone() for m in opt.masks]
    assert all(float(m.float().mean()) == pytest.approx(0.2**0.5, abs=0.02) for m in first)
    assert opt.frozen is None
    train(model, opt, blobs, 100)
    assert all(bool((m <= f).all()) for f, m in zip(first, opt.masks, strict=True))  # subsets
    c.finalize()
    for w in weight_values(c):
        assert len(w.abs().unique()) == 2  # {0, a}: ternary
        assert float((w != 0).float().mean()) <= 0.2 + 1e-6
    assert all(r.bits == 2 for r in c.report().layers)
    assert accuracy(model, blobs) > 0.9


@pytest.mark.parametrize("mode", ["geta", "admm", "admm-progressive"])
def test_switching_modes_on_the_same_model_and_data(mode):
    blobs = Blobs(seed=3)
    dense = mlp()
    train(dense, torch.optim.SGD(dense.parameters(), lr=0.05), blobs, 60)
    model, c = make(mode, "40x", model=copy.deepcopy(dense), update_every=0.1)
    opt = c.optimizer(base="sgd", lr=0.05, momentum=0.9, total_steps=150)
    train(model, opt, blobs, 150)
    c.finalize()
    report = c.report()
    assert report.mode == mode and report.within_budget and report.ratio >= 40
    assert accuracy(model, blobs) > 0.9


def test_ramp_tightens_the_budget_in_steps_and_holds_what_it_removed():
    blobs = Blobs()
    model, c = make("admm", "60x", finetune=0.5, update_every=0.1, ramp=4)
    opt = c.optimizer(base="sgd", lr=0.05, momentum=0.9, total_steps=160)
    assert opt.ramp_at == ramp_steps(opt.phases[0], 4) == [19, 39, 59]
    layers = c.problem.cost_model.layers
    seen = []

    def on_step():
        if opt.stage == "admm" and opt.frozen is not None:  # removed weights stay zero
            assert all(
                bool((layer.weight[f] == 0).all())
                for layer, f in zip(layers, opt.frozen, strict=True)
            )
            seen.append(sum(int(f.sum()) for f in opt.frozen))

    train(model, opt, blobs, 160, on_step)
    ramps = [h for h in opt.history if h["event"] == "ramp projection"]
    costs = [h["cost"] for h in ramps]
    assert len(ramps) == 3 and costs == sorted(costs, reverse=True)
    assert all(h["cost"] <= b for h, b in zip(ramps, opt.ramp_budgets, strict=False))
    assert seen == sorted(seen) and seen[-1] > seen[0] > 0  # removal only grows
    assert c.finalize() is model
    report = c.report()
    assert report.within_budget and report.ratio <= 60 * HEADROOM
    assert accuracy(model, blobs) > 0.9


def test_defaults_ramp_unstructured_budget_admm_only():
    weight, group = geta.AdmmConfig(), geta.AdmmConfig(granularity="group")
    assert (weight.resolved("admm").ramp, weight.resolved("admm").finetune) == (5, 0.7)
    assert (group.resolved("admm").ramp, group.resolved("admm").finetune) == (1, 0.7)
    assert (weight.resolved("admm").distance, group.resolved("admm").distance) == (
        "fisher",
        "euclidean",
    )
    progressive = weight.resolved("admm-progressive")
    assert (progressive.ramp, progressive.finetune) == (1, 0.25)
    assert geta.AdmmConfig(ramp=1, finetune=0.25).resolved("admm").ramp == 1  # the papers'


def test_ramp_budgets_follow_the_cubic_schedule():
    budgets = ramp_budgets(1000.0, 10.0, 5)
    assert budgets[-1] == pytest.approx(10.0) and budgets == sorted(budgets, reverse=True)
    shed = [(1000 - b) / 990 for b in budgets]
    np.testing.assert_allclose(shed, [1 - (1 - k / 5) ** 3 for k in range(1, 6)])
    assert ramp_budgets(10.0, 20.0, 3) == [10.0, 10.0, 10.0]  # nothing to shed


@pytest.mark.parametrize("distance", ["euclidean", "fisher"])
def test_resume_mid_run_gives_the_same_result(distance):
    def run(split):
        blobs = Blobs(seed=1)
        model, c = make("admm", "60x", update_every=10, finetune=0.3, distance=distance)
        opt = c.optimizer(base="sgd", lr=0.05, momentum=0.9, total_steps=80)
        train(model, opt, blobs, split)
        if split < 80:
            state = copy.deepcopy(opt.state_dict())
            weights = copy.deepcopy(model.state_dict())
            model, c = make("admm", "60x", update_every=10, finetune=0.3, distance=distance)
            model.load_state_dict(weights)
            opt = c.optimizer(base="sgd", lr=0.05, momentum=0.9, total_steps=80)
            opt.load_state_dict(state)
            train(model, opt, blobs, 80 - split)
        return [w.clone() for w in weight_values(c)]

    for a, b in zip(run(80), run(35), strict=True):
        torch.testing.assert_close(a, b)


def test_phases_and_configuration_errors():
    assert [(p.start, p.admm_end, p.end) for p in admm_phases(10, 1, 0.3)] == [(0, 7, 10)]
    with pytest.raises(ValueError, match="not offered"):
        geta.AdmmConfig(quantizer="kmeans")
    with pytest.raises(ValueError, match="granularity"):
        make("admm-progressive", "10x", granularity="group")
    with pytest.raises(geta.ConfigError, match="ramp"):
        geta.AdmmConfig(granularity="group", ramp=3)
    with pytest.raises(geta.ConfigError, match="ramp"):
        make("admm-progressive", "10x", ramp=3)[1].optimizer(lr=0.1, total_steps=10)
    with pytest.raises(ValueError, match="needs a budget"):
        make("admm", None)
    with pytest.raises(ValueError, match="not both"):
        make("admm-progressive", "10x", targets=geta.LayerTarget(0.5, 4))
    with pytest.raises(ValueError, match="binary layer keeps every weight"):
        geta.LayerTarget(0.5, 1)
    with pytest.raises(geta.BudgetError):
        make("admm", "5000x", min_layer_density=0.05)
    with pytest.raises(ValueError, match="does not count"):
        _, c = make("admm-progressive", None, targets={"nope": geta.LayerTarget.binary()})
        c.optimizer(lr=0.1, total_steps=10)
    assert np.isfinite(make("admm", "2000x")[1].problem.target)
