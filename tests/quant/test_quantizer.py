import math

import pytest
import torch

from geta.quant import Quantizer, bits_of, project_step, quantize, step_for_bits


def params(channels=3, dtype=torch.double):
    d = torch.tensor([0.1, 0.2, 0.05][:channels], dtype=dtype, requires_grad=True)
    q_m = torch.tensor([1.0, 1.5, 0.7][:channels], dtype=dtype, requires_grad=True)
    t = torch.tensor([0.8, 1.2, 1.0][:channels], dtype=dtype, requires_grad=True)
    return d, q_m, t


def test_forward_matches_the_formula():
    x = torch.randn(5, 3, dtype=torch.double)
    d, q_m, t = params()
    expected = torch.sign(x) * d * torch.round(torch.minimum(x.abs(), q_m) ** t / d)
    torch.testing.assert_close(quantize(x, d, q_m, t, 1), expected)


def test_zero_stays_zero():
    d, q_m, t = params()
    assert torch.all(quantize(torch.zeros(4, 3, dtype=torch.double), d, q_m, t, 1) == 0)


def test_gradcheck_clip_and_exponent_on_the_smooth_surrogate():
    x = torch.randn(6, 3, dtype=torch.double) * 1.5  # some entries beyond the clip
    d, q_m, t = params()
    assert torch.autograd.gradcheck(lambda q, e: quantize(x, d, q, e, 1, False), (q_m, t))


def test_gradcheck_input_straight_through_inside_clip():
    x = torch.randn(6, 3, dtype=torch.double).requires_grad_()
    d, q_m, _ = params()
    ones = torch.ones(3, dtype=torch.double)
    assert torch.autograd.gradcheck(lambda v: quantize(v, d, q_m, ones, 1, False), (x,))


def test_step_gradient_is_the_rounding_residual():
    x = torch.randn(7, 3, dtype=torch.double)
    d, q_m, t = params()
    quantize(x, d, q_m, t, 1).sum().backward()
    c = torch.minimum(x.abs(), q_m.detach()) ** t.detach()
    ratio = c / d.detach()
    torch.testing.assert_close(d.grad, (torch.sign(x) * (torch.round(ratio) - ratio)).sum(0))


def test_per_tensor_parameters_broadcast():
    x = torch.randn(4, 5)
    one = torch.ones(1)
    out = quantize(x, one * 0.25, one * 1.0, one, 0)
    assert torch.all((out / 0.25 - torch.round(out / 0.25)).abs() < 1e-6)
    assert out.abs().max() <= 1.0


@pytest.mark.parametrize("bits", [2, 3, 4, 8, 16])
def test_bits_and_step_are_inverse(bits):
    q_m, t = torch.tensor([0.9, 2.0]), torch.tensor([1.0, 0.7])
    d = step_for_bits(bits, q_m, t)
    torch.testing.assert_close(bits_of(d, q_m, t), torch.full((2,), float(bits)))
    # the number of magnitude levels is 2^(b-1) - 1
    assert torch.allclose(q_m**t / d, torch.full((2,), 2.0 ** (bits - 1) - 1))


def test_projection_keeps_bits_in_range():
    q_m, t = torch.ones(3), torch.ones(3)
    d = torch.tensor([1e-6, 0.1, 10.0])
    b = bits_of(project_step(d, q_m, t, 3, 6), q_m, t)
    assert torch.all(b >= 3 - 1e-5) and torch.all(b <= 6 + 1e-5)
    assert math.isclose(
        float(b[1]),
        float(bits_of(torch.tensor(0.1), torch.tensor(1.0), torch.tensor(1.0))),
        rel_tol=1e-6,
    )


def test_quantizer_module_init_project_freeze():
    w = torch.randn(8, 4)
    q = Quantizer.for_tensor(w, bits=6.4, per_channel=True)
    assert q.per_channel and q.d.shape == (8,)
    torch.testing.assert_close(q.q_m.detach(), w.abs().amax(1))
    q.project(2, 5)
    assert torch.all(q.bits() <= 5 + 1e-4)
    frozen = q.freeze_bits()
    assert torch.all(frozen == frozen.round()) and torch.allclose(q.bits(), frozen, atol=1e-4)


def test_op_is_one_node_in_an_exported_graph_and_runs_on_meta():
    q = Quantizer.for_tensor(torch.randn(4, 4), bits=4)
    ep = torch.export.export(q, (torch.randn(2, 4),), strict=False)
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert targets == [torch.ops.geta.quantize.default]
    assert q(torch.randn(2, 4, device="meta")).is_meta


def _tied_quantizer_with_gradients() -> tuple[torch.Tensor, Quantizer, torch.Tensor]:
    """A 3-bit per-channel quantizer at ``t = 1.3`` (step tied to the clip), with the
    gradients of ``sum(Q(x) * g)`` on its parameters."""
    torch.manual_seed(0)
    x = torch.randn(4, 6)
    q = Quantizer.for_tensor(x, bits=3, per_channel=True)
    with torch.no_grad():
        q.t.fill_(1.3)
        q.q_m.mul_(0.7)
        q.set_bits(3)
    g = torch.randn(4, 6)
    (q(x) * g).sum().backward()
    return x, q, g


def test_a_tied_clip_moves_the_step_as_lsq_moves_it():
    """After folding, one SGD step on the clip changes the tied step by lr x LSQ's gradient
    of the step (the clip a function of the step at fixed levels), to first order."""
    from geta.quant.ops import quantize

    x, q, g = _tied_quantizer_with_gradients()
    q.fold_step_gradient()
    assert q.d.grad is None
    t = q.t.detach()
    levels = q.q_m.detach().pow(t) / q.d.detach()
    step = q.d.detach().clone().requires_grad_(True)
    clip = (levels * step).pow(1 / t)  # the clip as a function of the step
    (quantize(x, step, clip, t, 0) * g).sum().backward()
    lr = 1e-4
    new_clip = q.q_m.detach() - lr * q.q_m.grad
    new_step = new_clip.pow(t) / levels
    torch.testing.assert_close(new_step - q.d.detach(), -lr * step.grad, rtol=1e-3, atol=1e-9)


def test_folding_without_lsq_rate_is_the_chain_rule_through_the_tied_step():
    from geta.quant.functional import step_for_bits
    from geta.quant.ops import quantize

    x, q, g = _tied_quantizer_with_gradients()
    q.fold_step_gradient(as_lsq=False)
    assert q.d.grad is None
    clip = q.q_m.detach().clone().requires_grad_(True)
    step = step_for_bits(3.0, clip, q.t.detach())  # d as a function of the clip
    (quantize(x, step, clip, q.t.detach(), 0) * g).sum().backward()
    torch.testing.assert_close(q.q_m.grad, clip.grad)
