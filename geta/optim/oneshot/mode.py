"""The one-shot mode: calibration only, no training loop (ALGORITHMS.md-style Wanda-sp / FLAP
saliency, bits by the shared budget projection, GPTQ rounding)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from geta.distributed import gathered
from geta.errors import ConfigError
from geta.optim.ajpq.hold import apply_held, hold_codes
from geta.optim.mode import CompressionMode, SearchData, register_mode
from geta.optim.oneshot.calibration import calibrate
from geta.optim.oneshot.config import OneshotConfig
from geta.optim.oneshot.plan import apply_plan, plan
from geta.optim.problem import CompressionProblem
from geta.optim.wrapped import WrappedOptimizer

if TYPE_CHECKING:
    from geta.compressor import Compressor

__all__ = ["OneshotMode", "OneshotResult", "HeldOptimizer"]


@dataclass
class OneshotResult:
    """What the calibration chose: removed units, bits per layer, the planned cost, and the
    seconds it took."""

    removed: np.ndarray
    bits: np.ndarray
    cost: float
    seconds: float
    batches: int
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "removed_units": int(self.removed.sum()),
            "units": int(self.removed.size),
            "bits": [float(b) for b in self.bits],
            "planned_cost": self.cost,
            "calibration_batches": self.batches,
            "seconds": round(self.seconds, 3),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"removed": torch.as_tensor(self.removed), "bits": torch.as_tensor(self.bits)}


class HeldOptimizer(WrappedOptimizer):
    """The model at its calibrated state: removed units and zero codes stay zero, every
    quantizer keeps its bits. Steps of the base optimizer are optional (a short fine-tune or
    distillation from the calibrated start); with none, :meth:`finish` has nothing to do.

    Example:
        >>> c = geta.Compressor(model, x, "8x", config=geta.optim.OneshotConfig())  # doctest: +SKIP
        >>> c.search(calibration_batches, [])                                  # doctest: +SKIP
        >>> small = c.finalize()                                               # doctest: +SKIP
    """

    def __init__(
        self,
        params: Iterable[Any],
        problem: CompressionProblem,
        removed: np.ndarray | None,
        keep: list[torch.Tensor] | None,
        *,
        base: str | type[torch.optim.Optimizer] = "sgd",
        check_finite: bool = True,
        **base_kwargs: Any,
    ) -> None:
        super().__init__(params, base, **base_kwargs)
        self.problem = problem
        self.removed = removed
        self.keep = keep
        self.check_finite_values = check_finite
        self.step_count = 0
        self.history: list[dict[str, float]] = []

    @property
    def stage(self) -> str:
        return "calibrated" if self.step_count == 0 else "finetune"

    @property
    def zeroed(self) -> np.ndarray:
        return self._calibrated()[0]

    def removal_counts(self) -> tuple[int, int]:
        removed = self._calibrated()[0]
        return int(removed.sum()), int(removed.size)

    def _calibrated(self) -> tuple[np.ndarray, list[torch.Tensor]]:
        if self.removed is None or self.keep is None:
            raise ConfigError(
                "mode 'oneshot' calibrates first: call Compressor.search(calibration_batches, "
                "[]) before Compressor.optimizer or finalize (or load a calibrated state)"
            )
        return self.removed, self.keep

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._closure_loss(closure)
        self.base.step()
        self.step_count += 1
        self.finish()
        return loss

    @torch.no_grad()
    def finish(self) -> None:
        removed, keep = self._calibrated()
        with self._full_parameters():
            for p, factor in self.problem.removal_factors(removed):
                p.mul_(factor)
            apply_held(self.problem, keep)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        removed, keep = self._calibrated()
        state["geta"] = {
            "step_count": self.step_count,
            "removed": torch.as_tensor(removed),
            "keep": [k.cpu() for k in keep],
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        extra = state.pop("geta")
        self._load_base_state(state)
        self.step_count = int(extra["step_count"])
        self.removed = extra["removed"].numpy().astype(bool)
        self.keep = [
            k.to(layer.weight.device)
            for k, layer in zip(extra["keep"], self.problem.cost_model.layers, strict=True)
        ]


@register_mode
class OneshotMode(CompressionMode):
    """``mode="oneshot"`` or ``config=OneshotConfig(...)``: :meth:`geta.Compressor.search` on
    calibration batches measures every layer's inputs, plans removed units and bits under
    the budget and rounds the weights; nothing trains unless the caller steps the optimizer."""

    name = "oneshot"
    config_type = OneshotConfig
    config_field = "oneshot"
    searches = True
    scores_on_heldout = False  # it calibrates on the training batches alone
    shards = True  # each rank calibrates on its batches; the statistics are summed

    def check(self, compressor: Compressor) -> None:
        if compressor.budget is None:
            raise ConfigError("mode 'oneshot' needs a budget (e.g. budget='8x')")
        if compressor.budget.metric not in self.metrics:
            raise ConfigError("mode 'oneshot' plans size or BOPs budgets")

    def learned_quantizer_params(self, compressor: Compressor) -> list[torch.nn.Parameter]:
        return []  # the bits and clips calibration set stay

    def search(self, compressor: Compressor, data: SearchData, **_: Any) -> OneshotResult:
        """Calibrate on ``data.train`` (nothing to resume, nothing scored on held-out data:
        the calibration is one pass)."""
        cfg = self.settings(compressor)
        problem = compressor.problem
        start = time.perf_counter()
        stats = calibrate(
            compressor.model, problem.cost_model.layers, data.train, cfg.calibration_batches
        )
        if all(s is None for s in stats):
            raise ConfigError(
                "mode 'oneshot' saw no calibration input: give Compressor.search batches the "
                "model runs on (inputs, or (inputs, targets) pairs)"
            )
        with gathered(compressor.model, problem.rebind):  # every rank: the same plan
            chosen = plan(problem, stats, cfg)
            apply_plan(problem, stats, chosen, cfg)
            hold_codes(problem)
        return OneshotResult(
            chosen.removed,
            chosen.bits,
            chosen.cost,
            time.perf_counter() - start,
            cfg.calibration_batches,
        )

    def optimizer(
        self, compressor: Compressor, groups: list[dict], total_steps: int, **kwargs: Any
    ) -> HeldOptimizer:
        found = compressor.search_result
        if not isinstance(found, OneshotResult):  # resuming: load_state_dict brings the state
            return HeldOptimizer(groups, compressor.problem, None, None, **kwargs)
        with gathered(compressor.model, compressor.problem.rebind):
            keep = hold_codes(compressor.problem)
        return HeldOptimizer(groups, compressor.problem, found.removed, keep, **kwargs)
