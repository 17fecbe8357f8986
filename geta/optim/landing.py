"""Landing on the budget: spend it at the freeze, enforce it exactly afterwards.

Once a run holds its zero codes (GETA mode's cool-down, ADMM's masked fine-tuning), SGD
jitters some kept weights into the zero bin, where they stay: on LeNet-5 at 300x about a tenth
of the kept codes within a few dozen steps (0.999 -> 0.88 of the budget). A plan made to the
budget exactly therefore delivers 10-20% more compression than asked, budget given away. So
the plan at the freeze spends :data:`HEADROOM` times the budget, and :func:`trim_to_budget`
enforces the budget exactly at a few points after it and at the end.
"""

from __future__ import annotations

import torch

from geta.optim.cost import CostModel
from geta.optim.projection import keep_top
from geta.optim.report import measure_layers, measured_cost

__all__ = ["HEADROOM", "quantized_values", "trim_to_budget", "trim_steps"]

HEADROOM = 1.1


def quantized_values(cost_model: CostModel) -> list[torch.Tensor]:
    """Each counted layer's weight as its quantizer outputs it (the float weight if none)."""
    values = []
    for layer in cost_model.layers:
        q, w = layer.quantizer, layer.weight.detach()
        values.append(q(w).detach() if q is not None else w)
    return values


@torch.no_grad()
def trim_to_budget(
    cost_model: CostModel, held: list[torch.Tensor], target: float
) -> list[torch.Tensor] | None:
    """New keep masks (``held`` narrowed) if the model's measured cost is over ``target``:
    the weights of least ``w_q^2 / cost`` across layers are dropped until it holds. ``None``
    when the budget already holds (nothing to change)."""
    rows, _, bits = measure_layers(cost_model)
    if measured_cost(cost_model, rows) <= target:
        return None
    keep = keep_top(quantized_values(cost_model), cost_model.coefficients() * bits, target)
    return [h.bool() & k.to(h.device) for h, k in zip(held, keep, strict=True)]


def trim_steps(start: int, end: int) -> set[int]:
    """The steps of ``[start, end)`` where the budget is enforced: its quarter points and its
    last step."""
    length = end - start
    return {start + k * length // 4 for k in (1, 2, 3)} | {end - 1}
