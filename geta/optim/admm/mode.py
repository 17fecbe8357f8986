"""Budget ADMM (Yang et al. 2020; ALGORITHMS.md section 2): proximal training towards the
projection onto the budget, hard projection, masked fine-tuning."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from geta.errors import ConfigError
from geta.optim.admm.config import AdmmConfig
from geta.optim.admm.optimizer import AdmmOptimizer
from geta.optim.cost import FLOAT_BITS
from geta.optim.mode import ClipLearningMode, register_mode

if TYPE_CHECKING:
    from geta.compressor import Compressor

__all__ = ["AdmmMode"]


@register_mode
class AdmmMode(ClipLearningMode):
    """``mode="admm"`` (or ``config=AdmmConfig(...)``): settings in ``CompressorConfig.admm``.
    Weights only are quantized; the projections set the quantizers, and masked fine-tuning
    learns the clips (``AdmmConfig.learn_clip``)."""

    name = "admm"
    config_type = AdmmConfig
    config_field = "admm"

    def check(self, compressor: Compressor) -> None:
        self._check_weights_only(compressor)
        if compressor.budget is None:
            raise ConfigError(f"mode {self.name!r} needs a budget (e.g. budget='300x')")

    def _check_weights_only(self, compressor: Compressor) -> None:
        if compressor.config.quantize_activations:
            raise ConfigError(
                f"mode {self.name!r} quantizes weights only; use mode='geta' to learn "
                "activation bits"
            )

    def smallest_cost(self, compressor: Compressor) -> float | None:
        """Unstructured: every layer keeps ``min_layer_density`` of its weights (at least one)
        at the lowest bits."""
        if self.settings(compressor).granularity != "weight":
            return None
        p = compressor.problem
        cm = p.cost_model
        keep = np.maximum(1, np.ceil(self.settings(compressor).min_layer_density * cm.numel))
        low = np.where(cm.quantized, p.bit_options[0], float(FLOAT_BITS))
        return float((cm.coefficients() * low * keep).sum())

    def budget_label(self, compressor: Compressor) -> str:
        return "per-layer targets"

    def optimizer(
        self, compressor: Compressor, groups: list[dict], total_steps: int, **kwargs: Any
    ) -> AdmmOptimizer:
        return AdmmOptimizer(
            groups,
            compressor.problem,
            self.settings(compressor).resolved(self.name),
            self.name,
            total_steps,
            float_bits=compressor.config.init_bits,
            **kwargs,
        )
