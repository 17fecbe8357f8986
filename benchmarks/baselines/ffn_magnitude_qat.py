"""The transformer pipeline a user would otherwise run: uniform fixed-bit QAT plus magnitude
pruning of the feed-forward channels, at one ratio in every layer.

It is registered as a compression mode (``mode="ffn-magnitude-qat"``), so a HuggingFace run of
``geta compress`` (:func:`geta.hf.run.run_hf_compress`) trains it exactly as it trains GETA
mode: same documents, batch order, distillation loss, optimizer and schedule, and the same
checkpoint, artifact and report at the end. Only the decisions differ, and they are the
user's: every FFN unit (a graph group of kind ``channel``; attention heads are kept) is ranked
by the squared norm of its weights over the whole group (Torch-Pruning's group magnitude), the
same share of each FFN is removed once at the start, and every counted layer trains at the
same bits. The share is the smallest (in 1% steps) that meets the budget at ``bits[0]``
bits; where no share up to ``max_sparsity`` does, the next entry of ``bits`` is tried (what a
user does when 4 bits and FFN pruning alone cannot reach the budget). The training that
follows holds the removed units at zero and the bits fixed (AJPQ's QAT optimizer with one bit
level, whose trims keep the measured cost within the budget); with ``count_zero_codes`` (the
default, as for the image baselines) the plan counts only the weights whose code is not zero
at those bits, as the papers' ratio will.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from geta.errors import BudgetError, ConfigError
from geta.optim.ajpq.optimizer import AjpqOptimizer
from geta.optim.ajpq.wall import channel_tables
from geta.optim.channel_bits import ChannelLayout, ChannelPlan
from geta.optim.mode import ClipLearningMode, register_mode
from geta.optim.problem import CompressionProblem

if TYPE_CHECKING:
    from geta.compressor import Compressor

__all__ = ["FfnMagnitudeQatConfig", "FfnMagnitudeQatMode", "uniform_magnitude_plan"]


@dataclass(frozen=True)
class FfnMagnitudeQatConfig:
    """``bits``: the uniform bit widths to try, most first; ``kinds``: the group kinds pruned
    (``channel``: a transformer's FFN channels; ``head`` would add attention heads)."""

    bits: tuple[int, ...] = (4, 3, 2)
    kinds: tuple[str, ...] = ("channel",)
    max_sparsity: float = 0.95
    count_zero_codes: bool = True
    learn_clip: bool = True

    def __post_init__(self) -> None:
        if not self.bits or any(not 2 <= b <= 16 for b in self.bits):
            raise ConfigError(f"bits are 2..16, got {self.bits}")
        if not 0 <= self.max_sparsity < 1:
            raise ConfigError(f"max_sparsity is in [0, 1), got {self.max_sparsity}")


def _least_important(problem: CompressionProblem, kinds: tuple[str, ...]) -> list[np.ndarray]:
    """For each group of one of ``kinds``: its unit ids, least magnitude first."""
    units = problem.units
    importance = problem.importance("magnitude")
    orders = []
    for g, group in enumerate(problem.graph.groups):
        if group.kind in kinds:
            lo, hi = int(units.offsets[g]), int(units.offsets[g + 1])
            orders.append(lo + np.argsort(importance[lo:hi], kind="stable"))
    return orders


def _removal(count: int, orders: list[np.ndarray], share: float) -> np.ndarray:
    """The ``share`` of each ordered group's units that come first (one at least kept)."""
    removed = np.zeros(count, dtype=bool)
    for order in orders:
        removed[order[: min(int(share * len(order)), len(order) - 1)]] = True
    return removed


def uniform_magnitude_plan(
    problem: CompressionProblem, cfg: FfnMagnitudeQatConfig
) -> tuple[ChannelPlan, float]:
    """The plan (every kept unit and layer at one bit width, the same share of every prunable
    group removed by magnitude) and that share.

    Raises:
        BudgetError: no bit width of ``cfg.bits`` meets the budget with up to
            ``max_sparsity`` of each prunable group removed.
    """
    if problem.target is None:
        raise ConfigError("mode 'ffn-magnitude-qat' needs a budget (e.g. budget='12x')")
    layout = ChannelLayout(problem)
    orders = _least_important(problem, cfg.kinds)  # the weights do not move while planning
    shares = [s / 100 for s in range(int(round(cfg.max_sparsity * 100)) + 1)]
    for bits in cfg.bits:
        code_share = channel_tables(layout, (bits,))[1] if cfg.count_zero_codes else None
        layer_bits = np.full(layout.layer_count, float(bits))
        for share in shares:
            removed = _removal(problem.units.count, orders, share)
            plan = ChannelPlan(np.where(removed, 0.0, float(bits)), layer_bits)
            if layout.cost(plan, code_share) <= problem.target:
                return plan, share
    raise BudgetError(
        f"the budget cannot be met at {min(cfg.bits)} bits with up to "
        f"{cfg.max_sparsity:.0%} of the {'/'.join(cfg.kinds)} units removed"
    )


@register_mode
class FfnMagnitudeQatMode(ClipLearningMode):
    """``mode="ffn-magnitude-qat"``: the plan of :func:`uniform_magnitude_plan`, made once
    from the model as it starts, then QAT with the masks held and the bits fixed."""

    name = "ffn-magnitude-qat"
    config_type = FfnMagnitudeQatConfig

    def settings(self, compressor: Compressor) -> FfnMagnitudeQatConfig:
        cfg = compressor.mode_config
        return cfg if isinstance(cfg, FfnMagnitudeQatConfig) else FfnMagnitudeQatConfig()

    def check(self, compressor: Compressor) -> None:
        if compressor.budget is None:
            raise ConfigError("mode 'ffn-magnitude-qat' needs a budget (e.g. budget='12x')")
        if compressor.config.quantize_activations:
            raise ConfigError("mode 'ffn-magnitude-qat' quantizes weights only")

    def optimizer(
        self, compressor: Compressor, groups: list[dict], total_steps: int, **kwargs: Any
    ) -> AjpqOptimizer:
        cfg = self.settings(compressor)
        plan, share = uniform_magnitude_plan(compressor.problem, cfg)
        bits = int(plan.layer_bits[0]) if len(plan.layer_bits) else cfg.bits[0]
        ChannelLayout(compressor.problem).apply(plan, low_bits=bits)
        opt = AjpqOptimizer(
            groups,
            compressor.problem,
            plan,
            total_steps,
            learn_clip=cfg.learn_clip,
            low_bits=bits,
            high_bits=bits,
            **kwargs,
        )
        opt.history[0].update(bits=float(bits), share=share)
        return opt
