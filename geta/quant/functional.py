"""Bit-width arithmetic of GETA's quantizer (pure tensor functions)."""

from __future__ import annotations

import torch

__all__ = ["bits_of", "step_for_bits", "project_step", "clip_search", "fake_quantize"]


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


def fake_quantize(x: torch.Tensor, d: torch.Tensor, q_m: torch.Tensor, t: torch.Tensor):
    """The quantizer's forward in plain tensor math (broadcasting), for calibration sweeps
    and projections."""
    c = torch.minimum(x.abs(), q_m)
    if t.numel() > 1 or float(t.reshape(-1)[0]) != 1.0:
        c = c.pow(t)
    return torch.sign(x) * d * torch.round(c / d)


def clip_search(
    x: torch.Tensor,
    bits: float | torch.Tensor,
    t: torch.Tensor,
    axis: int = 0,
    per_channel: bool = False,
    grid: int = 16,
    sample: int = 1 << 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clip ``q_m`` that minimises the squared quantization error of ``x`` at ``bits``
    (a grid over fractions of max |x|, per channel or per tensor), and that error per scalar
    (per channel, or one value). A per-tensor search looks at a fixed random sample of at most
    ``sample`` values, all grid points at once. A per-channel search takes one ``bits`` or a
    tensor of bits per channel (mixed precision)."""
    x = x.detach().float()
    if isinstance(bits, torch.Tensor) and bits.numel() > 1 and not per_channel:
        raise ValueError("bits per channel need a per-channel search")
    t = t.detach().float().reshape(-1).to(x.device)
    fractions = torch.linspace(1.0 / grid, 1.0, grid, device=x.device)
    if not per_channel:
        flat = x.reshape(-1)
        top = flat.abs().max().clamp_min(1e-8)
        if flat.numel() > sample:
            g = torch.Generator(device=flat.device).manual_seed(0)
            flat = flat[torch.randint(flat.numel(), (sample,), generator=g, device=flat.device)]
        q_m = (top * fractions).unsqueeze(1)
        d = step_for_bits(bits, q_m, t[:1])
        err = (fake_quantize(flat.unsqueeze(0), d, q_m, t[:1]) - flat).square().mean(1)
        best = int(err.argmin())
        return q_m[best].reshape(1), err[best].reshape(1)
    axis = axis % x.dim()
    moved = x.movedim(axis, 0).reshape(x.shape[axis], -1)
    top = moved.abs().amax(1).clamp_min(1e-8)
    t_col = t.reshape(-1, 1) if t.numel() > 1 else t.reshape(1, 1)
    if isinstance(bits, torch.Tensor):
        bits = bits.detach().to(x.device, torch.float32).reshape(-1, 1)
    best_err = torch.full_like(top, float("inf"))
    best_clip = top.clone()
    for f in fractions.tolist():
        q_m = (top * f).unsqueeze(1)
        d = step_for_bits(bits, q_m, t_col)
        err = (fake_quantize(moved, d, q_m, t_col) - moved).square().mean(1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_clip = torch.where(better, q_m.squeeze(1), best_clip)
    return best_clip, best_err
