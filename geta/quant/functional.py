"""Bit-width arithmetic of GETA's quantizer (pure tensor functions)."""

from __future__ import annotations

import torch

__all__ = ["bits_of", "step_for_bits", "project_step", "clip_search"]


def bits_of(d: torch.Tensor, q_m: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``b = log2(q_m^t / d + 1) + 1`` (a sign bit plus the magnitude levels)."""
    return torch.log2(q_m.pow(t) / d + 1) + 1


def step_for_bits(bits: torch.Tensor | float, q_m: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``d(b) = q_m^t / (2^(b-1) - 1)``, the step that gives ``b`` bits (``b > 1``)."""
    bits = torch.as_tensor(bits, dtype=q_m.dtype, device=q_m.device)
    return q_m.pow(t) / (torch.pow(2.0, bits - 1) - 1)


def project_step(
    d: torch.Tensor, q_m: torch.Tensor, t: torch.Tensor, b_lo: float, b_hi: float
) -> torch.Tensor:
    """Clamp ``d`` so the bits stay in ``[b_lo, b_hi]`` (more bits, smaller step)."""
    return torch.minimum(torch.maximum(d, step_for_bits(b_hi, q_m, t)), step_for_bits(b_lo, q_m, t))


def clip_search(
    x: torch.Tensor,
    bits: float,
    t: torch.Tensor,
    axis: int = 0,
    per_channel: bool = False,
    grid: int = 24,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clip ``q_m`` that minimises the squared quantization error of ``x`` at ``bits``
    (a grid over fractions of max |x|, per channel or per tensor), and that error per scalar
    (per channel, or one value)."""
    from geta.quant.ops import quantize

    x = x.detach().float()
    t = t.detach().float()
    dims = [i for i in range(x.dim()) if i != axis % max(x.dim(), 1)] if per_channel else None
    top = (x.abs().amax(dim=dims) if dims else x.abs()) if per_channel else x.abs().max()
    top = top.reshape(-1).clamp_min(1e-8)
    best_err = torch.full_like(top, float("inf"))
    best_clip = top.clone()
    count = x.numel() / top.numel()
    for f in torch.linspace(1.0 / grid, 1.0, grid).tolist():
        q_m = top * f
        d = step_for_bits(bits, q_m, t)
        sq = (quantize(x, d, q_m, t, axis) - x).square()
        err = (sq.sum(dim=dims) if dims else sq.sum()).reshape(-1) / count
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_clip = torch.where(better, q_m, best_clip)
    return best_clip, best_err
