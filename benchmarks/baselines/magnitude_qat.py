"""Deep Compression's pipeline with a uniform quantizer: unstructured global magnitude pruning,
then uniform fixed-bit quantization-aware training (LSQ, per output channel).

The density falls along Zhu and Gupta's cubic schedule in ``prune_steps`` steps over the first
``prune_share`` of the run (fine-tuning in float in between, pruned weights held at zero); then
every counted layer is quantized at ``bits`` and trained to the end with the mask held. The
kept count is the largest whose cost at ``bits`` meets the budget (with ``count_zero_codes``,
the default, counting only the kept weights whose code is not zero, as the papers' ratio will).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch

from baselines.common import BaselineRun, dense_cost, planned_cost
from baselines.quantization import attach_fixed_bits, step_parameters, to_geta_quantizers
from baselines.staged import StagedOptimizer
from geta.errors import BudgetError, ConfigError
from geta.optim.budget import Budget
from geta.optim.cost import output_positions
from geta.quant.prepare import quantizable_layers

__all__ = ["MagnitudeQat", "global_magnitude_masks"]


def _weights(model) -> list[torch.Tensor]:
    return [layer.weight for layer in quantizable_layers(model) if not layer.kind.embedding]


@torch.no_grad()
def global_magnitude_masks(weights: list[torch.Tensor], keep: int) -> list[torch.Tensor]:
    """Keep the ``keep`` largest magnitudes over all ``weights`` together."""
    flat = torch.cat([w.detach().abs().reshape(-1) for w in weights])
    keep = max(1, min(int(keep), flat.numel()))
    threshold = torch.topk(flat, keep, sorted=True).values[-1]
    masks = [w.detach().abs() >= threshold for w in weights]
    extra = int(sum(int(m.sum()) for m in masks)) - keep  # ties at the threshold
    for m, w in zip(masks, weights, strict=True):
        if extra <= 0:
            break
        tied = (m & (w.detach().abs() == threshold)).reshape(-1).nonzero().reshape(-1)
        drop = tied[: min(extra, len(tied))]
        m.view(-1)[drop] = False
        extra -= len(drop)
    return masks


@dataclass(frozen=True)
class MagnitudeQat:
    """Global magnitude pruning over the first ``prune_share`` of the run, then ``bits``-bit
    QAT with the mask held."""

    bits: int = 4
    prune_share: float = 0.3
    prune_steps: int = 5
    count_zero_codes: bool = True

    name = "magnitude-qat"

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 16:
            raise ConfigError(f"bits are 2..16, got {self.bits}")

    def to_dict(self) -> dict:
        return {"name": self.name, **asdict(self)}

    def kept_weights(self, model, budget: Budget, positions) -> int:
        """The most weights (largest magnitudes over all layers) whose cost at ``bits`` meets
        the budget."""
        target = budget.target(dense_cost(model, budget, positions))
        total = sum(w.numel() for w in _weights(model))

        def fits(keep: int) -> bool:
            pruned = copy.deepcopy(model)
            weights = _weights(pruned)
            with torch.no_grad():
                for w, m in zip(weights, global_magnitude_masks(weights, keep), strict=True):
                    w.mul_(m)
            cost = planned_cost(pruned, budget, self.bits, positions, self.count_zero_codes)
            return cost <= target

        if not fits(1):
            raise BudgetError(f"{budget} cannot be met at {self.bits} bits")
        low, high = 1, total  # fits(low); find the largest fitting count
        if fits(high):
            return high
        while high - low > max(1, total // 20000):
            mid = (low + high) // 2
            low, high = (mid, high) if fits(mid) else (low, mid)
        return low

    def start(self, model, example, budget: Budget, total_steps: int, **optim) -> BaselineRun:
        reference = copy.deepcopy(model)
        positions = output_positions(model, example) if budget.metric == "bops" else None
        total = sum(w.numel() for w in _weights(model))
        keep = self.kept_weights(model, budget, positions)
        quantize_at = int(self.prune_share * total_steps)
        masks: list[torch.Tensor] = []
        run: BaselineRun | None = None

        @torch.no_grad()
        def hold() -> None:
            for w, m in zip(_weights(model), masks, strict=False):
                w.mul_(m)

        def prune_to(fraction: float):
            def event(opt: StagedOptimizer) -> None:
                count = round(total - (total - keep) * fraction)
                masks[:] = global_magnitude_masks(_weights(model), count)
                run.stage = "prune"
                if fraction == 1.0:
                    hold()
                    attach_fixed_bits(model, self.bits)
                    run.stage = "qat"

            return event

        events = {}
        if keep < total:
            for i in range(1, self.prune_steps + 1):
                step = max(0, i * quantize_at // self.prune_steps - 1)
                events[step] = prune_to(1 - (1 - i / self.prune_steps) ** 3)
        else:
            attach_fixed_bits(model, self.bits)
        opt = StagedOptimizer(model, events, quantizer_params=step_parameters, hold=hold, **optim)
        run = BaselineRun(
            model,
            reference,
            example,
            budget,
            self.name,
            opt,
            finish=lambda: to_geta_quantizers(model),
        )
        run.stage = "train" if keep < total else "qat"
        run.settings = {"kept_weights": keep, "density": keep / total}
        return run
