"""GETA's quantizer as one custom op: one node in a captured graph, on CPU, GPU and meta.

    c(x) = min(|x|, q_m) ** t
    Q(x) = sign(x) * d * round(c(x) / d)
    bits = log2(q_m ** t / d + 1) + 1

``d`` (step), ``q_m`` (clip) and ``t`` (exponent) are per tensor (shape ``[1]``) or per
channel (shape ``[C]`` along ``axis``). The gradient of ``x`` is straight-through inside the
clip range (zero outside); ``d``, ``q_m`` and ``t`` get their analytic gradients with the
rounding passed straight through (``round(c/d) - c/d`` for ``d``, as in LSQ).
``rounding=False`` replaces the rounding by the identity: the smooth surrogate the gradient
formulas are checked against.
"""

from __future__ import annotations

import torch

__all__ = ["quantize"]


def _view(p: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    if p.numel() == 1:
        return p.reshape([1] * x.dim())
    shape = [1] * x.dim()
    shape[axis] = p.numel()
    return p.reshape(shape)


def _reduce(g: torch.Tensor, like: torch.Tensor, axis: int) -> torch.Tensor:
    if like.numel() == 1:
        return g.sum().reshape(like.shape)
    dims = [i for i in range(g.dim()) if i != axis % g.dim()]
    return g.sum(dims).reshape(like.shape)


@torch.library.custom_op("geta::quantize", mutates_args=())
def quantize(
    x: torch.Tensor,
    d: torch.Tensor,
    q_m: torch.Tensor,
    t: torch.Tensor,
    axis: int = 0,
    rounding: bool = True,
) -> torch.Tensor:
    """Fake-quantize ``x`` with GETA's quantizer (see the module docstring)."""
    d_, q_, t_ = (_view(p, x, axis) for p in (d, q_m, t))
    c = torch.minimum(x.abs(), q_).pow(t_)
    levels = torch.round(c / d_) if rounding else c / d_
    return torch.sign(x) * d_ * levels


@quantize.register_fake
def _(x, d, q_m, t, axis=0, rounding=True):
    return torch.empty_like(x)


def _setup(ctx, inputs, output):
    x, d, q_m, t, axis, rounding = inputs
    ctx.save_for_backward(x, d, q_m, t)
    ctx.axis, ctx.rounding = axis, rounding


def _backward(ctx, grad):
    x, d, q_m, t = ctx.saved_tensors
    axis = ctx.axis
    d_, q_, t_ = (_view(p, x, axis) for p in (d, q_m, t))
    absx = x.abs()
    inside = absx <= q_
    clipped = torch.minimum(absx, q_)
    c = clipped.pow(t_)
    sign = torch.sign(x)
    ratio = c / d_
    grad_x = grad * inside if ctx.needs_input_grad[0] else None
    grad_d = grad_q = grad_t = None
    if ctx.needs_input_grad[1]:
        step = (torch.round(ratio) - ratio) if ctx.rounding else torch.zeros_like(ratio)
        grad_d = _reduce(grad * sign * step, d, axis)
    if ctx.needs_input_grad[2]:
        dq = t_ * q_.pow(t_ - 1) * (~inside)
        grad_q = _reduce(grad * sign * dq, q_m, axis)
    if ctx.needs_input_grad[3]:
        log = torch.where(
            clipped > 0,
            torch.log(clipped.clamp_min(torch.finfo(x.dtype).tiny)),
            torch.zeros_like(clipped),
        )
        grad_t = _reduce(grad * sign * c * log, t, axis)
    return grad_x, grad_d, grad_q, grad_t, None, None


quantize.register_autograd(_backward, setup_context=_setup)
