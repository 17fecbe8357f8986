"""Bit-width arithmetic of GETA's quantizer (pure tensor functions)."""

from __future__ import annotations

import torch

__all__ = ["bits_of", "step_for_bits", "project_step"]


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
