"""Progressive ADMM (Ye et al. 2019; ALGORITHMS.md section 3): per-layer targets (binary,
ternary, density and bits), or targets derived from a budget, reached in ``AdmmConfig.steps``
runs, each starting from the last one's result. The ADMM optimizer runs it with Ye et al.'s
rho schedule and projection."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from geta.errors import ConfigError
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

    def check(self, compressor: Compressor) -> None:
        self._check_weights_only(compressor)
        admm = self.settings(compressor)
        if (compressor.budget is None) == (admm.targets is None):
            raise ConfigError(
                "mode 'admm-progressive' needs either a budget or per-layer targets "
                "(AdmmConfig(targets=...)), not both"
            )
        if admm.granularity != "weight":
            raise ConfigError("mode 'admm-progressive' is unstructured: granularity='weight'")

    def learned_quantizer_params(self, compressor: Compressor) -> list[nn.Parameter]:
        """None: Ye et al.'s targets put a whole layer on one set of levels, its clip fixed."""
        return []
