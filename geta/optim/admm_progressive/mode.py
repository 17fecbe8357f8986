"""Progressive ADMM (Ye et al. 2019; ALGORITHMS.md section 3): per-layer targets (binary,
ternary, density and bits), or targets derived from a budget, reached in ``AdmmConfig.steps``
runs, each starting from the last one's result. The ADMM optimizer runs it with Ye et al.'s
rho schedule and projection."""

from __future__ import annotations

from typing import TYPE_CHECKING

from geta.errors import ConfigError
from geta.optim.admm.config import AdmmConfig
from geta.optim.admm.mode import AdmmMode
from geta.optim.mode import register_mode

if TYPE_CHECKING:
    from geta.compressor import Compressor

__all__ = ["ProgressiveAdmmMode"]


@register_mode
class ProgressiveAdmmMode(AdmmMode):
    """``mode="admm-progressive"``: settings in ``CompressorConfig.admm`` (an
    :class:`geta.AdmmConfig` selects plain ``"admm"``; name this mode to run it)."""

    name = "admm-progressive"
    config_type = AdmmConfig

    def check(self, compressor: Compressor) -> None:
        if compressor.config.quantize_activations:
            raise ConfigError(
                f"mode {self.name!r} quantizes weights only; use mode='geta' to learn "
                "activation bits"
            )
        admm = self.settings(compressor)
        if (compressor.budget is None) == (admm.targets is None):
            raise ConfigError(
                "mode 'admm-progressive' needs either a budget or per-layer targets "
                "(AdmmConfig(targets=...)), not both"
            )
        if admm.granularity != "weight":
            raise ConfigError("mode 'admm-progressive' is unstructured: granularity='weight'")
