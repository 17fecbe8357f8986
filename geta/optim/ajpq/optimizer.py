"""QAT of the policy AJPQ's search chose: masks held, bits frozen per channel, clips learned."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from geta.errors import ConfigError
from geta.optim.ajpq.hold import apply_held
from geta.optim.channel_bits import ChannelLayout, ChannelPlan
from geta.optim.landing import land_on_budget, trim_steps
from geta.optim.problem import CompressionProblem
from geta.optim.report import measured_cost
from geta.optim.wrapped import WrappedOptimizer

__all__ = ["AjpqOptimizer"]


class AjpqOptimizer(WrappedOptimizer):
    """Trains a model at a fixed :class:`~geta.optim.channel_bits.ChannelPlan`: the 0-bit
    units stay exactly zero (their gradients are masked and their weights re-zeroed after
    every step) and every channel keeps its bits (the step follows the learned clip). Kept
    weights move freely across the zero code, so the measured cost drifts around the budget
    the search landed on; at the quarters of the run and at its last step (and on
    :meth:`finish`) the budget is met on the measured cost: over it, the weights of least
    ``w_q^2 / cost`` are zeroed and held there (:func:`geta.optim.landing.trim_to_budget`);
    under it, single channels get one bit more (up to ``high_bits``), the largest drop of
    quantization error per bit of cost first, while the cost stays within the budget
    (:func:`geta.optim.landing.raise_bits_within_budget`). Weight decay pulls kept weights
    into the zero bin, so without the raise the cost ended at ~0.8 of the budget (LeNet-5 at
    100x: 125x delivered): budget given away. Holding every zero code from the start (the
    search's recovery does) made that worse. Build it with
    :meth:`geta.Compressor.optimizer` after :meth:`geta.Compressor.search`.

    Example:
        >>> c.search(train_loader, heldout_loader)                                # doctest: +SKIP
        >>> opt = c.optimizer(base="sgd", lr=0.01, momentum=0.9, total_steps=n)  # doctest: +SKIP
        >>> loss.backward(); opt.step(); opt.zero_grad()                            # doctest: +SKIP
    """

    def __init__(
        self,
        params: Iterable[Any],
        problem: CompressionProblem,
        plan: ChannelPlan | None,
        total_steps: int = 1,
        *,
        learn_clip: bool = True,
        low_bits: int = 2,
        high_bits: int = 8,
        base: str | type[torch.optim.Optimizer] = "sgd",
        check_finite: bool = True,
        **base_kwargs: Any,
    ) -> None:
        super().__init__(params, base, **base_kwargs)
        self.problem = problem
        self.layout = ChannelLayout(problem)
        self.learn_clip = learn_clip
        self.low_bits = low_bits
        self.high_bits = high_bits
        self.check_finite_values = check_finite
        self.step_count = 0
        self.trim_at = trim_steps(0, max(total_steps, 1))
        self.history: list[dict[str, float]] = []
        self.plan: ChannelPlan | None = None
        if plan is not None:
            self._hold(plan)

    def _hold(self, plan: ChannelPlan, keep: list[torch.Tensor] | None = None) -> None:
        """Take ``plan`` as the one to train: its unit masks, each quantizer's frozen bits, and
        the weights held at zero by the budget's trims (``keep``: given when resuming)."""
        self.plan = plan
        self.keep = (
            keep
            if keep is not None
            else [
                torch.ones_like(layer.weight, dtype=torch.bool)
                for layer in self.problem.cost_model.layers
            ]
        )
        self._factors = self.problem.removal_factors(plan.removed)
        self._bits = []
        for i, bits in enumerate(self.layout.channel_bits(plan)):
            q = self.problem.cost_model.layers[i].quantizer
            frozen = torch.as_tensor(np.where(bits > 0, bits, self.low_bits), dtype=torch.float32)
            self._bits.append(None if q is None else frozen.to(q.d.device))
        if not self.history:
            self.history.append({"step": 0.0, "cost": self.layout.cost(plan)})

    def _require_plan(self) -> ChannelPlan:
        if self.plan is None:
            raise ConfigError(
                "AJPQ trains the policy its search chose: call compressor.search(train, "
                "heldout) before training (or load a checkpoint of a searched run)"
            )
        return self.plan

    @property
    def stage(self) -> str:
        return "qat" if self.plan is not None else "search"

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        self._require_plan()
        loss = self._closure_loss(closure)
        for p, values in self._factors:
            if p.grad is not None:
                p.grad.mul_(values)
        for layer, mask in zip(self.problem.cost_model.layers, self.keep, strict=True):
            if layer.weight.grad is not None:
                layer.weight.grad.mul_(mask.to(layer.weight.grad.dtype))
        self._quantizer_gradients()
        self.base.step()
        self._keep_bits()
        self._apply_masks()
        if self.step_count in self.trim_at:
            self._land_on_budget()
        self.step_count += 1
        return loss

    def _land_on_budget(self) -> None:
        """Meet the budget on the measured cost: over it, zero (and hold) the weights of least
        ``w_q^2 / cost``; under it, raise single channels' bits while it holds."""
        if self.problem.target is None:
            return
        cm = self.problem.cost_model
        narrowed, self._bits = land_on_budget(
            cm,
            self.keep,
            self._bits,
            float(self.problem.target),
            float(self.high_bits),
            per_channel=True,
        )
        if narrowed is not None:
            self.keep = narrowed
            apply_held(self.problem, self.keep)
        self.history.append({"step": float(self.step_count), "cost": measured_cost(cm)})

    def _quantizer_gradients(self) -> None:
        """The clip learns at frozen bits (LSQ's scaled gradient, the step's folded into it,
        as :meth:`geta.quant.Quantizer.fold_step_gradient` says); nothing else moves."""
        for layer in self.problem.cost_model.layers:
            q = layer.quantizer
            if q is None:
                continue
            if self.learn_clip and q.q_m.grad is not None:
                q.scale_gradients(layer.weight.numel())
                q.fold_step_gradient()
            else:
                q.q_m.grad = None
            q.d.grad = None

    def _keep_bits(self) -> None:
        for i, layer in enumerate(self.problem.cost_model.layers):
            if self._bits[i] is not None:
                layer.quantizer.set_bits(self._bits[i])

    def _apply_masks(self) -> None:
        for p, values in self._factors:
            p.mul_(values)
        apply_held(self.problem, self.keep)

    @torch.no_grad()
    def finish(self) -> None:
        """The final state: the plan's zeros and bits, the budget enforced."""
        self._require_plan()
        self._keep_bits()
        self._apply_masks()
        self._land_on_budget()

    @property
    def zeroed(self) -> np.ndarray:
        """The 0-bit units: what :meth:`geta.Compressor.finalize` removes physically."""
        if self.plan is None:
            return np.zeros(self.problem.units.count, dtype=bool)
        return self.plan.removed

    def removal_counts(self) -> tuple[int, int]:
        return int(self.zeroed.sum()), int(self.problem.units.count)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        held = self.plan is not None
        state["ajpq"] = {
            "plan": self.plan.to_dict() if held else None,
            "keep": [m.cpu() for m in self.keep] if held else None,
            "bits": [b if b is None else b.cpu() for b in self._bits] if held else None,
            "step_count": self.step_count,
            "history": list(self.history),
        }
        state["ajpq"]["trim_at"] = sorted(self.trim_at)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the optimizer, and the plan it trains (a resumed run needs no new
        search)."""
        state_dict = dict(state_dict)
        extra = state_dict.pop("ajpq")
        self._load_base_state(state_dict)
        self.step_count = int(extra["step_count"])
        self.trim_at = set(int(k) for k in extra["trim_at"])
        self.history = list(extra["history"])
        if extra["plan"] is not None:
            device = [layer.weight.device for layer in self.problem.cost_model.layers]
            keep = [m.to(d) for m, d in zip(extra["keep"], device, strict=True)]
            self._hold(ChannelPlan.from_dict(extra["plan"]), keep)
            if extra.get("bits") is not None:  # raised by the budget's landing since the plan
                self._bits = [
                    b if b is None else b.to(layer.weight.device)
                    for b, layer in zip(extra["bits"], self.problem.cost_model.layers, strict=True)
                ]

    def __repr__(self) -> str:
        return (
            f"AjpqOptimizer(base={type(self.base).__name__}, step={self.step_count}, "
            f"stage={self.stage})"
        )
