"""GETA mode (ALGORITHMS.md section 1): the staged optimizer learns every quantizer parameter
and removes the graph's groups under the budget."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from geta.errors import ConfigError
from geta.optim.geta.optimizer import GetaOptimizer
from geta.optim.mode import CompressionMode, register_mode
from geta.optim.schedule import Schedule
from geta.quant import quantizers

if TYPE_CHECKING:
    from geta.compressor import Compressor

__all__ = ["GetaMode"]


@register_mode
class GetaMode(CompressionMode):
    """``mode="geta"``: its settings are :class:`geta.CompressorConfig`'s stage, saliency and
    bit settings."""

    name = "geta"
    metrics = ("size", "bops", "latency")
    shards = True

    def check(self, compressor: Compressor) -> None:
        if compressor.budget is None and compressor.config.target_group_sparsity is None:
            raise ConfigError("give a budget, or a target_group_sparsity (GETA's own target)")

    def budget_label(self, compressor: Compressor) -> str:
        return f"{compressor.config.target_group_sparsity:.0%} of groups"

    def learned_quantizer_params(self, compressor: Compressor) -> list[nn.Parameter] | None:
        """With ``learned_bits`` (GETA's parametrization) every quantizer parameter learns;
        without it (the default) the step and the clip learn and the exponent ``t`` stays 1.
        The plan sets the bits, so ``t`` has nothing to trade against them, and its gradient,
        a sum over every weight of a channel that no LSQ-style scale tames, moved it far
        enough to cost LeNet-5 / Fashion-MNIST 0.4 pt at 300x (3 seeds; the ablation is
        ``geta-allocation[learned-exponent]`` in ``lenet5-fashion-mnist-ablations``)."""
        if compressor.config.learned_bits:
            return None
        return [p for q in quantizers(compressor.model) for p in (q.d, q.q_m)]

    def optimizer(
        self, compressor: Compressor, groups: list[dict], total_steps: int, **kwargs: Any
    ) -> GetaOptimizer:
        cfg = compressor.config
        schedule = Schedule.of(total_steps, cfg.warmup, cfg.bit_reduction, cfg.joint, cfg.periods)
        return GetaOptimizer(
            groups, compressor.problem, schedule, learned_bits=cfg.learned_bits, **kwargs
        )
