"""Landing a plan on the budget exactly: after a plan is applied, the weights whose codes are
zero are held at zero (they cost nothing, and held there the measured cost can only fall), and
when the expected code shares the plan was walled with underestimate the codes left, the
weights of least ``w_q^2 / cost`` are zeroed too until the measured cost is within the budget
(:func:`geta.optim.landing.trim_to_budget`, GETA mode's landing rule)."""

from __future__ import annotations

import torch

from geta.optim.landing import quantized_values, trim_to_budget
from geta.optim.problem import CompressionProblem

__all__ = ["hold_codes", "apply_held"]


@torch.no_grad()
def hold_codes(problem: CompressionProblem) -> list[torch.Tensor]:
    """Keep masks (one per counted layer's weight) of the nonzero codes now, narrowed until
    the measured cost is within ``problem.target``; the weights outside them are zeroed."""
    cm = problem.cost_model
    keep = [value != 0 for value in quantized_values(cm)]
    narrowed = trim_to_budget(cm, keep, float(problem.target))
    if narrowed is not None:
        keep = narrowed
    apply_held(problem, keep)
    return keep


@torch.no_grad()
def apply_held(problem: CompressionProblem, keep: list[torch.Tensor]) -> None:
    """Zero every counted weight outside its keep mask."""
    for layer, mask in zip(problem.cost_model.layers, keep, strict=True):
        layer.weight.mul_(mask.to(layer.weight.device, layer.weight.dtype))
