"""Settings of the one-shot mode: calibration only, no training loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from geta import config
from geta.errors import ConfigError

__all__ = ["OneshotConfig", "SALIENCIES"]

SALIENCIES = ("flap", "wanda")


@dataclass
class OneshotConfig:
    """``Compressor(model, x, budget, config=OneshotConfig(...))`` compresses from calibration
    data alone (:meth:`geta.Compressor.search` with calibration batches), for models too large
    to train: group saliency from activations and weights, per-layer bits by the budget
    projection with the distortion measured on the calibration activations, then rounding
    with error compensation.

    - ``calibration_batches``: batches read from the data given to ``search``.
    - ``saliency``: ``"flap"`` (a unit's importance is the variance of the input features it
      feeds times the squared weights that read them; what a removed unit's mean contributed
      goes into the consuming layer's bias, where it has one) or ``"wanda"`` (the second
      moment instead of the variance, no compensation: Wanda-sp).
    - ``gptq``: round linear layers column by column, each column's rounding error spread over
      the columns not yet rounded with the inverse Hessian of the layer inputs (GPTQ);
      ``False``: round to nearest.
    - ``damp``: GPTQ's dampening, a share of the mean Hessian diagonal added to it.
    - ``block_size``: GPTQ's columns per lazy update block.
    """

    calibration_batches: int = 32
    saliency: str = "flap"
    gptq: bool = True
    damp: float = 0.01
    block_size: int = 128

    def __post_init__(self) -> None:
        if self.calibration_batches < 1:
            raise ConfigError(f"calibration_batches is at least 1, got {self.calibration_batches}")
        if self.saliency not in SALIENCIES:
            raise ConfigError(f"saliency is one of {', '.join(SALIENCIES)}, not {self.saliency!r}")
        if not 0 <= self.damp < 1:
            raise ConfigError(f"damp is in [0, 1), got {self.damp}")
        if self.block_size < 1:
            raise ConfigError(f"block_size is at least 1, got {self.block_size}")

    def to_dict(self) -> dict[str, Any]:
        return config.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OneshotConfig:
        return config.from_dict(cls, data)
