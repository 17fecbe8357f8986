"""The GETA optimizer: a ``torch.optim.Optimizer`` that drives a model under its budget inside
an ordinary training loop (warm-up, bit reduction, joint pruning + quantization, cool-down)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from geta.distributed import is_distributed
from geta.optim.landing import (
    HEADROOM,
    land_on_budget,
    quantized_values,
    raise_bits_within_budget,
    trim_steps,
)
from geta.optim.problem import CompressionProblem
from geta.optim.projection import keep_top
from geta.optim.report import measure_layers
from geta.optim.schedule import BIT_REDUCTION, COOLDOWN, JOINT, WARMUP, Schedule
from geta.optim.wrapped import BASE_OPTIMIZERS, WrappedOptimizer

__all__ = ["GetaOptimizer", "BASE_OPTIMIZERS"]

log = logging.getLogger("geta")


class GetaOptimizer(WrappedOptimizer):
    """Joint pruning and quantization under a budget, around a base optimizer.

    Every step takes the base optimizer's step (SGD, Adam, AdamW, or any
    ``torch.optim.Optimizer`` class) and then applies GETA's stage:

    1. warm-up: plain steps; quantizer bits stay in ``[low, initial]``;
    2. bit reduction: the budget projection picks each layer's target bits (and the groups to
       remove); the upper bit bound of each layer moves linearly down to its target, as a
       projection on the quantizer step ``d``;
    3. joint: in ``periods`` periods, each period re-projects with fresh saliency and marks the
       next share of the groups to remove; marked units shrink as
       ``x <- x (T - t - 1) / (T - t)`` so they are exactly zero at the period's end (HESSO's
       form of GETA's pull ``x - gamma Q(x)`` with ``gamma = 1 / (T - t)``), and stay zero;
    4. cool-down: bits frozen at integers (never above the plan), removed units held at zero.

    When the run ends the model meets the budget exactly: the last projection chose removed
    units and integer bits with ``cost <= B``, removed units are exactly zero, and every
    layer's bits are at most its planned bits. With ``count_zero_codes`` the plans count only
    the weights expected to keep a nonzero code (at 2-3 bits many round to zero), and from
    the freeze on every zero code is held at zero, after the smallest weights are zeroed if
    the measured cost is over the budget: the cost can then only fall. Build it with
    :meth:`geta.Compressor.optimizer`.

    Example:
        >>> opt = compressor.optimizer(base="sgd", lr=0.05, momentum=0.9, total_steps=1000)  # doctest: +SKIP
        >>> loss.backward(); opt.step(); opt.zero_grad()                                      # doctest: +SKIP
    """

    def __init__(
        self,
        params: Iterable[Any],
        problem: CompressionProblem,
        schedule: Schedule,
        base: str | type[torch.optim.Optimizer] = "sgd",
        check_finite: bool = True,
        learned_bits: bool = False,
        **base_kwargs: Any,
    ) -> None:
        super().__init__(params, base, **base_kwargs)
        self.problem = problem
        self.schedule = schedule
        # where the budget is enforced exactly: the cool-down's quarters and last step
        self.trim_at = trim_steps(schedule.cooldown_start, schedule.total_steps)
        self.learned_bits = learned_bits
        self.check_finite_values = check_finite
        self.quantizers = [
            layer.quantizer for layer in problem.cost_model.layers if layer.quantizer is not None
        ]
        n_units, n_layers = problem.units.count, len(problem.cost_model.layers)
        self.step_count = 0
        self.marked = np.zeros(n_units, dtype=bool)  # being pulled to zero or already zero
        self.zeroed = np.zeros(n_units, dtype=bool)  # exactly zero, held there
        self.target = np.zeros(n_units, dtype=bool)  # the latest plan's removal set
        self.plan_bits = np.full(n_layers, float(problem.bit_options[-1]))
        self.initial_bits = np.maximum(problem.cost_model.current_bits(), self.plan_bits)
        self.frozen = False
        self.planned = False
        self.history: list[dict[str, float]] = []
        self.held: list[torch.Tensor] = []  # count_zero_codes: keep masks from the freeze on
        self._factors: list = []
        self._factors_key: tuple | None = None

    # ------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._run_closure(closure)
        step = self.step_count
        stage = self.schedule.stage(step)
        with self._full_parameters():  # a sharded model's parameters, in full for geta's part
            self._check_step(loss)
            if not self.frozen:
                self.problem.observe()
            self._before(step, stage)
            self._scale_quantizer_grads()
        self.base.step()
        with self._full_parameters():
            self._after(step, stage)
        self.step_count += 1
        return loss

    def _before(self, step: int, stage: str) -> None:
        s = self.schedule
        if stage != WARMUP and not self.planned:
            self._replan()
        if stage == JOINT:
            index, start, _ = s.period(step)
            if step == start:
                if self.history[-1]["step"] != step:
                    self._replan()
                self._mark(index)
        if stage == COOLDOWN and not self.frozen:
            self._finish_marking()
            self._freeze_bits()

    def _scale_quantizer_grads(self) -> None:
        """LSQ's scale; where the bits are set rather than learned (the bound, or frozen),
        the step follows the clip, so the step's gradient is folded onto the clip."""
        tied = self.frozen or not self.learned_bits
        for layer in self.problem.cost_model.layers:
            if layer.quantizer is not None:
                layer.quantizer.scale_gradients(layer.weight.numel())
                if tied:
                    layer.quantizer.fold_step_gradient(as_lsq=self.frozen)

    def _after(self, step: int, stage: str) -> None:
        self._apply_masks(step, stage)
        self._project_bits(step, stage)
        self._apply_held()
        if step in self.trim_at:
            self._land_on_budget()

    # ------------------------------------------------------------ planning
    def _replan(self) -> None:
        self._importance = self.problem.importance()
        projection = self.problem.plan(
            forced=self.zeroed | self.marked, importance=self._importance
        )
        removed, bits = projection.removed, projection.bits
        if is_distributed():  # every rank takes rank 0's plan
            payload = [removed, bits]
            torch.distributed.broadcast_object_list(payload, src=0)
            removed, bits = payload
        self.target = removed
        self._calibrate(bits)
        self.plan_bits = bits
        self.planned = True
        self.history.append(
            {
                "step": self.step_count,
                "planned_cost": float(projection.cost),
                "removed_units": int(removed.sum()),
            }
        )
        log.info(
            "geta: step %d planned %d of %d units removed, bits %s, cost %.4g (budget %s)",
            self.step_count,
            int(removed.sum()),
            len(removed),
            np.unique(bits[self.problem.cost_model.quantized]).astype(int).tolist(),
            projection.cost,
            f"{self.problem.target:.4g}" if self.problem.target else "none",
        )

    def _calibrate(self, bits: np.ndarray) -> None:
        """Fit the clip of every layer whose bit target changed to its new bits (the step
        follows from the current bound at the next projection)."""
        for i, layer in enumerate(self.problem.cost_model.layers):
            q = layer.quantizer
            if q is None or (self.planned and bits[i] == self.plan_bits[i]):
                continue
            current = q.bits().detach().clone()
            q.calibrate(layer.weight, float(bits[i]))
            q.set_bits(torch.maximum(current.clamp_max(self.initial_bits[i]), q.bits()))

    def _mark(self, period_index: int) -> None:
        """Mark the next share of the target units: after period ``k`` of ``P``, ``(k+1)/P`` of
        them are marked, least important first."""
        self.zeroed |= self.marked
        todo = np.nonzero(self.target & ~self.zeroed)[0]
        periods_left = self.schedule.periods - period_index
        count = math.ceil(len(todo) / periods_left) if periods_left > 0 else len(todo)
        if count and len(todo):
            imp = self._importance[todo]  # from the plan made at this same step
            chosen = todo[np.argsort(imp, kind="stable")[:count]]
        else:
            chosen = np.zeros(0, dtype=np.int64)
        self.marked = self.zeroed.copy()
        self.marked[chosen] = True
        self._factors_key = None

    def _finish_marking(self) -> None:
        """Entering cool-down: every planned unit is zero from now on."""
        if not self.planned:
            self._replan()
        self.zeroed |= self.marked | self.target
        self.marked = self.zeroed.copy()
        self._factors_key = None

    # ------------------------------------------------------------ applying
    def _apply_masks(self, step: int, stage: str) -> None:
        """Zeroed units are multiplied by 0, units being pulled by ``(T - t - 1) / (T - t)``."""
        if not self.marked.any():
            return
        pulling = self.marked & ~self.zeroed
        ratio = 0.0
        if stage == JOINT and pulling.any():
            _, _, end = self.schedule.period(step)
            ratio = (end - step - 1) / (end - step)
        key = (ratio, int(self.zeroed.sum()), int(self.marked.sum()))
        if key != self._factors_key:
            factor = torch.ones(len(self.marked))
            factor[torch.as_tensor(self.zeroed)] = 0.0
            factor[torch.as_tensor(pulling)] = ratio
            self._factors = self.problem.keep_factors(factor)
            self._factors_key = key
        for p, values in self._factors:
            p.mul_(values)
        if ratio == 0.0:
            self.zeroed |= pulling

    def _upper_bits(self, step: int, stage: str) -> np.ndarray:
        s = self.schedule
        if stage == WARMUP:
            return self.initial_bits
        if stage == BIT_REDUCTION:
            done = (step - s.warmup + 1) / s.bit_reduction
            return self.initial_bits - (self.initial_bits - self.plan_bits) * done
        return self.plan_bits

    def _project_bits(self, step: int, stage: str) -> None:
        layers = self.problem.cost_model.layers
        if self.frozen:
            for layer, bits in zip(layers, self.frozen_bits, strict=True):
                if layer.quantizer is not None:
                    layer.quantizer.set_bits(bits)
            return
        upper = self._upper_bits(step, stage)
        low = float(self.problem.bit_options[0])
        for i, layer in enumerate(layers):
            if layer.quantizer is None:
                continue
            if self.learned_bits:  # GETA's: the step learns the bits within the bounds
                layer.quantizer.project(low, max(low, float(upper[i])))
            else:  # the bits are the bound: the plan's integer bits once reduced
                layer.quantizer.set_bits(max(low, float(upper[i])))

    def _freeze_bits(self) -> None:
        bits = []
        for layer, cap in zip(self.problem.cost_model.layers, self.plan_bits, strict=True):
            q = layer.quantizer
            if q is None:
                bits.append(torch.tensor(32.0))
                continue
            b = q.bits().detach().round().clamp(float(self.problem.bit_options[0]), float(cap))
            q.set_bits(b)
            bits.append(b)
        self.frozen_bits = bits
        self.frozen = True
        log.info("geta: step %d cool-down, bits frozen", self.step_count)
        if self.problem.count_zero_codes and self.problem.target is not None:
            self._hold_zero_codes()

    def _hold_zero_codes(self) -> None:
        """Keep masks of the weights with nonzero codes now, within the budget plus a
        headroom (:data:`geta.optim.landing.HEADROOM`): bits are raised where the measured
        cost leaves room, and when it is over, the weights of least ``w_q^2 / cost`` are zeroed too,
        across all layers. Zero codes are held at zero from now on; within a few dozen steps
        about a tenth of the kept codes jitter into the zero bin and stay there, which the
        headroom anticipates, and :meth:`_land_on_budget` (at the cool-down's quarters and at
        the end) makes the budget hold exactly."""
        self._apply_masks(self.step_count, COOLDOWN)  # the planned units are zero from now on
        limit = float(self.problem.target) * HEADROOM
        self.frozen_bits = raise_bits_within_budget(
            self.problem.cost_model,
            self.frozen_bits,
            limit,
            float(self.problem.bit_options[-1]),
        )
        cm = self.problem.cost_model
        _, _, bits = measure_layers(cm)
        keep = keep_top(quantized_values(cm), cm.coefficients() * bits, limit)
        self._set_held(keep)
        self._apply_held()

    def _set_held(self, keep: list[torch.Tensor]) -> None:
        layers = self.problem.cost_model.layers
        self.held = [m.to(layer.weight) for m, layer in zip(keep, layers, strict=True)]

    def _apply_held(self) -> None:
        for layer, keep in zip(self.problem.cost_model.layers, self.held, strict=False):
            layer.weight.mul_(keep)

    def _land_on_budget(self) -> None:
        """Meet the budget on the measured cost (:func:`geta.optim.landing.land_on_budget`):
        over it, the weights of least ``w_q^2 / cost`` across layers are zeroed and held at
        zero; under it (codes drifted into the zero bin), layers' bits are raised into the
        room, each keeping its learned clip (re-fitted clips at the last trim point, with no
        training left to learn them, cost LeNet-5 Fashion-MNIST at 300x 2.7 pt)."""
        if not self.held or self.problem.target is None:
            return
        held, self.frozen_bits = land_on_budget(
            self.problem.cost_model,
            self.held,
            self.frozen_bits,
            float(self.problem.target),
            float(self.problem.bit_options[-1]),
            refit_clip=False,
        )
        if held is not None:
            self._set_held(held)
            self._apply_held()

    @torch.no_grad()
    def finish(self) -> None:
        """Bring the model to its final state now: every planned unit zero, bits frozen
        (what the end of the run does; :meth:`geta.Compressor.finalize` calls it)."""
        with self._full_parameters():
            self._finish()

    def _finish(self) -> None:
        if not self.frozen:
            self._finish_marking()
            self._apply_masks(self.step_count, COOLDOWN)
            self._freeze_bits()
        self._apply_masks(self.step_count, COOLDOWN)
        self._project_bits(self.step_count, COOLDOWN)
        self._apply_held()
        self._land_on_budget()

    def removal_counts(self) -> tuple[int, int]:
        """(removed, total) units of the graph's groups."""
        return int(self.zeroed.sum()), int(self.problem.units.count)

    # ------------------------------------------------------------ state
    @property
    def stage(self) -> str:
        return self.schedule.stage(self.step_count)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["geta"] = {
            "step_count": self.step_count,
            "marked": torch.as_tensor(self.marked),
            "zeroed": torch.as_tensor(self.zeroed),
            "target": torch.as_tensor(self.target),
            "plan_bits": torch.as_tensor(self.plan_bits),
            "initial_bits": torch.as_tensor(self.initial_bits),
            "frozen": self.frozen,
            "planned": self.planned,
            "frozen_bits": [torch.as_tensor(b) for b in getattr(self, "frozen_bits", [])],
            "history": list(self.history),
            "held": [m.bool() for m in self.held],
            "curvature": self.problem.curvature.state_dict(),
            "taylor": self.problem.stats.taylor.state_dict(),
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("geta")
        self._load_base_state(state_dict)
        self.step_count = int(extra["step_count"])
        self.marked = extra["marked"].cpu().numpy().astype(bool)
        self.zeroed = extra["zeroed"].cpu().numpy().astype(bool)
        self.target = extra["target"].cpu().numpy().astype(bool)
        self.plan_bits = extra["plan_bits"].cpu().numpy().astype(np.float64)
        self.initial_bits = extra["initial_bits"].cpu().numpy().astype(np.float64)
        self.frozen = bool(extra["frozen"])
        self.planned = bool(extra["planned"])
        self.frozen_bits = [torch.as_tensor(b) for b in extra["frozen_bits"]]
        self.history = list(extra["history"])
        if "curvature" in extra:
            self.problem.curvature.load_state_dict(extra["curvature"])
        if "taylor" in extra:
            self.problem.stats.taylor.load_state_dict(extra["taylor"])
        held = extra.get("held", [])
        self.held = []
        if held:
            self._set_held([torch.as_tensor(m) for m in held])
        self._factors_key = None

    def __repr__(self) -> str:
        return (
            f"GetaOptimizer(base={type(self.base).__name__}, step={self.step_count}/"
            f"{self.schedule.total_steps}, stage={self.stage})"
        )
