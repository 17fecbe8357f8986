"""Budget ADMM (Yang et al. 2020; ALGORITHMS.md section 2): proximal training towards the
projection onto the budget, hard projection, masked fine-tuning."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from geta.errors import ConfigError
from geta.optim.admm.config import AdmmConfig
from geta.optim.admm.optimizer import AdmmOptimizer
from geta.optim.cost import FLOAT_BITS
from geta.optim.mode import CompressionMode, register_mode
from geta.quant.prepare import quantizable_layers, weight_quantizers

if TYPE_CHECKING:
    from geta.compressor import Compressor

__all__ = ["AdmmMode"]


@register_mode
class AdmmMode(CompressionMode):
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

    def learned_quantizer_params(self, compressor: Compressor) -> list[nn.Parameter]:
        """Each clip and step where fine-tuning learns clips (the step's gradient is folded
        into the clip's), else none."""
        if not self.settings(compressor).learn_clip:
            return []
        return [
            p
            for layer in quantizable_layers(compressor.model)
            if layer.quantizer is not None
            for p in (layer.quantizer.q_m, layer.quantizer.d)
        ]

    def stepped_quantizer_params(
        self, compressor: Compressor, learned: list[nn.Parameter]
    ) -> list[nn.Parameter]:
        """The step follows the clip: it has a gradient, but the optimizer does not move it."""
        steps = {id(q.d) for q in weight_quantizers(compressor.model).values()}
        return [p for p in learned if id(p) not in steps]

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
