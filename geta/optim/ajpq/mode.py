"""AJPQ mode (Tang, Wei, Li; ALGORITHMS.md section 5): channel-wise mixed precision where 0 bits
means pruned, searched by a hierarchical DDPG agent, then trained with QAT."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from geta.errors import ConfigError
from geta.optim.ajpq.config import AjpqConfig
from geta.optim.ajpq.optimizer import AjpqOptimizer
from geta.optim.ajpq.search import AjpqSearch
from geta.optim.cost import output_positions
from geta.optim.mode import ClipLearningMode, SearchData, register_mode
from geta.optim.projection import minimum_cost

if TYPE_CHECKING:
    from geta.compressor import Compressor

__all__ = ["AjpqMode"]


@register_mode
class AjpqMode(ClipLearningMode):
    """``mode="ajpq"`` or ``config=AjpqConfig(...)``: :meth:`geta.Compressor.search` chooses
    every unit's bits (0 = pruned) under the budget, the optimizer trains that policy."""

    name = "ajpq"
    config_type = AjpqConfig
    searches = True

    def settings(self, compressor: Compressor) -> AjpqConfig:
        cfg = compressor.mode_config
        return cfg if isinstance(cfg, AjpqConfig) else AjpqConfig()

    def check(self, compressor: Compressor) -> None:
        if compressor.budget is None:
            raise ConfigError("mode 'ajpq' needs a budget (e.g. budget='30x')")
        if not compressor.config.per_channel:
            raise ConfigError("mode 'ajpq' sets bits per channel: it needs per_channel=True")
        if compressor.config.quantize_activations:
            raise ConfigError(
                "mode 'ajpq' searches weight bits only; use mode='geta' to learn activation bits"
            )

    def channel_multiple(self, compressor: Compressor) -> int:
        """``AjpqConfig.channel_multiple``, or the ``CompressorConfig``'s when AJPQ was named
        with one (``mode="ajpq", config=CompressorConfig(channel_multiple=8)``)."""
        cfg = compressor.mode_config
        if isinstance(cfg, AjpqConfig):
            return cfg.channel_multiple
        return compressor.config.channel_multiple

    def _min_keep(self, compressor: Compressor) -> np.ndarray:
        return compressor.problem.aligned_min_keep(self.settings(compressor).max_sparsity)

    def smallest_cost(self, compressor: Compressor) -> float:
        """Every group down to ``1 - max_sparsity`` of its units, every channel at the lowest
        bits."""
        cm = compressor.problem.cost_model
        low = np.array([self.settings(compressor).bit_range[0]], dtype=np.float64)
        return minimum_cost(cm, low, min_keep=self._min_keep(compressor))

    def search(
        self,
        compressor: Compressor,
        data: SearchData,
        *,
        state: dict[str, Any] | None = None,
        progress: bool = True,
        on_episode: Callable[[dict[str, Any]], None] | None = None,
    ) -> AjpqSearch:
        args, kwargs = compressor.example_inputs
        positions = output_positions(compressor.model, args, kwargs)
        search = AjpqSearch(compressor.problem, self.settings(compressor), positions)
        if state is not None:
            search.load_state_dict(state)
        return search.run(data, progress=progress, on_episode=on_episode)

    def optimizer(
        self, compressor: Compressor, groups: list[dict], total_steps: int, **kwargs: Any
    ) -> AjpqOptimizer:
        found = compressor.search_result
        plan = found.best_plan if isinstance(found, AjpqSearch) else None
        cfg = self.settings(compressor)
        return AjpqOptimizer(
            groups,
            compressor.problem,
            plan,
            total_steps,
            learn_clip=cfg.learn_clip,
            low_bits=cfg.bit_range[0],
            high_bits=cfg.bit_range[1],
            **kwargs,
        )
