"""The ADMM optimizer: Yang et al.'s budget ADMM and Ye et al.'s progressive ADMM as a
``torch.optim.Optimizer`` for an ordinary training loop (ALGORITHMS.md sections 2 and 3).

Each run (progressive: each of its steps) has two phases:

1. ADMM: every step adds ``rho (W - V + U)`` (the gradient of ``rho/2 ||W - V + U||^2``) to
   the counted layers' weight gradients before the base step; every ``update_every`` steps
   ``V <- proj(W + U)``, ``U <- U + W - V`` and ``rho <- min(rho * growth, rho_max)``. With
   ``AdmmConfig.proximal = "zeros"`` (budget ADMM's default) the term and ``U``
   act only where ``V`` is zero: the weights to be dropped are pulled to zero, the kept ones
   are left to the loss. The
   weights train in float (their quantizers stay at high bits with a clip above the weights).
   With ``AdmmConfig.ramp = K > 1`` (budget ADMM, unstructured) the budget tightens in ``K``
   hard projections spread over the phase (cubic schedule, :func:`ramp_budgets`): each zeroes
   what its projection drops and holds it there; the V-steps project onto the next budget.
2. hard projection ``W <- proj(W)`` (the quantizers set so that ``Q(W) = W``), then masked
   fine-tuning: removed weights (structured: removed groups, all their members) held at exactly
   zero, bits frozen; each quantized layer's clip learns with its step tied to it
   (``AdmmConfig.learn_clip``, LSQ), or, with the clip fixed, kept weights are held within it
   (where the straight-through gradient passes); binary layers train a latent copy
   (BinaryConnect) and their weights are its signs times the step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from geta.errors import ConfigError
from geta.optim.admm.config import AdmmConfig, LayerTarget
from geta.optim.admm.projection import (
    LayerSpec,
    WeightProjection,
    project_budget,
    project_groups,
    project_targets,
)
from geta.optim.cost import FLOAT_BITS
from geta.optim.landing import HEADROOM, land_on_budget, trim_steps
from geta.optim.problem import CompressionProblem
from geta.optim.wrapped import WrappedOptimizer

__all__ = ["AdmmOptimizer", "AdmmPhase", "admm_phases", "ramp_budgets", "ramp_steps"]

log = logging.getLogger("geta")

RHO_FLOOR = 1e-4  # residual balancing never lowers rho below this


@dataclass(frozen=True)
class AdmmPhase:
    """Steps ``[start, admm_end)`` run ADMM, ``[admm_end, end)`` masked fine-tuning."""

    index: int
    start: int
    admm_end: int
    end: int


def admm_phases(total_steps: int, steps: int, finetune: int | float) -> list[AdmmPhase]:
    """Split ``total_steps`` into ``steps`` equal runs, each ending with its fine-tuning share.

    Example:
        >>> [tuple(p.__dict__.values()) for p in admm_phases(100, 2, 0.2)]
        [(0, 0, 40, 50), (1, 50, 90, 100)]
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}")
    out = []
    for i in range(steps):
        start, end = i * total_steps // steps, (i + 1) * total_steps // steps
        length = end - start
        tune = finetune if isinstance(finetune, int) else int(finetune * length)
        out.append(AdmmPhase(i, start, max(start, end - min(tune, length)), end))
    return out


def ramp_budgets(start_cost: float, target: float, count: int) -> list[float]:
    """The budgets of ``count`` hard projections from ``start_cost`` down to ``target``: the
    ``k``-th removes ``1 - (1 - k/count)^3`` of the cost to shed (Zhu and Gupta's cubic
    schedule: big cuts while much is redundant, small ones near the end).

    Example:
        >>> [round(b) for b in ramp_budgets(1000.0, 100.0, 3)]
        [367, 133, 100]
    """
    shed = max(start_cost - target, 0.0)
    return [start_cost - shed * (1 - (1 - k / count) ** 3) for k in range(1, count + 1)]


def ramp_steps(phase: AdmmPhase, count: int) -> list[int]:
    """The steps after which the first ``count - 1`` ramp projections happen, evenly over the
    phase's ADMM steps (the last one is the phase's hard projection).

    Example:
        >>> ramp_steps(AdmmPhase(0, 0, 100, 400), 4)
        [24, 49, 74]
    """
    length = phase.admm_end - phase.start
    return [phase.start + k * length // count - 1 for k in range(1, count)]


class AdmmOptimizer(WrappedOptimizer):
    """ADMM under a budget (``mode="admm"``) or per-layer targets (``mode="admm-progressive"``)
    around a base optimizer. Build it with :meth:`geta.Compressor.optimizer`.

    When the run ends (or :meth:`finish` is called) the model is the hard projection: every
    counted layer's removed weights are exactly zero, its quantizer holds the projection's bits
    and clip, and the cost is within the budget (the projection guarantees it; fine-tuning only
    moves kept weights between their levels).

    Example:
        >>> c = geta.Compressor(model, (x,), "300x", mode="admm")                  # doctest: +SKIP
        >>> opt = c.optimizer(base="sgd", lr=0.05, momentum=0.9, total_steps=5000)  # doctest: +SKIP
        >>> loss.backward(); opt.step(); opt.zero_grad()                              # doctest: +SKIP
    """

    def __init__(
        self,
        params: Iterable[Any],
        problem: CompressionProblem,
        config: AdmmConfig,
        mode: str,
        total_steps: int,
        *,
        float_bits: float = 16,
        base: str | type[torch.optim.Optimizer] = "sgd",
        check_finite: bool = True,
        **base_kwargs: Any,
    ) -> None:
        super().__init__(params, base, **base_kwargs)
        self.problem = problem
        self.config = config
        self.mode = mode
        self.float_bits = float(float_bits)
        self.check_finite_values = check_finite
        self.layers = problem.cost_model.layers
        self.specs = [
            LayerSpec(
                layer.quantizer is not None,
                bool(layer.quantizer is not None and layer.quantizer.per_channel),
                layer.quantizer.axis if layer.quantizer is not None else 0,
            )
            for layer in self.layers
        ]
        self.coef = problem.cost_model.coefficients()
        numel = problem.cost_model.numel
        self.min_keep = np.maximum(1, np.ceil(config.min_layer_density * numel)).astype(np.int64)
        steps = config.steps if mode == "admm-progressive" else 1
        self.phases = admm_phases(total_steps, steps, config.finetune)
        last = self.phases[-1]  # the budget is enforced at its fine-tuning's quarters and end
        self.trim_at = (
            trim_steps(last.admm_end, last.end) if self._lands_by_trimming(last) else set()
        )
        self.targets = self._given_targets()
        ramp = config.ramp or 1
        if ramp > 1 and (mode != "admm" or problem.target is None):
            raise ConfigError(
                "AdmmConfig.ramp tightens a budget: it needs mode='admm' with a budget "
                "(admm-progressive spreads its targets with AdmmConfig.steps)"
            )
        self.ramp_at = ramp_steps(last, ramp) if ramp > 1 else []
        self.ramp_budgets = (
            ramp_budgets(self._start_cost(), float(problem.target), ramp) if ramp > 1 else []
        )
        self.step_count = 0
        self.rho = float(config.rho)
        self.V: list[torch.Tensor] | None = None
        self.U: list[torch.Tensor] | None = None
        self.masks: list[torch.Tensor] | None = None  # after a hard projection
        self.frozen: list[torch.Tensor | None] | None = None  # zeros of earlier steps
        self.removed = np.zeros(problem.units.count, dtype=bool)
        self.projected_phase = -1
        self.binary = [False] * len(self.layers)
        self.fixed = [False] * len(self.layers)  # quantizer set by the hard projection
        self.bits = np.full(len(self.layers), float(FLOAT_BITS))  # the hard projection's
        # Ye et al.'s targets put a whole layer on one set of levels: its clip stays
        self.learn_clip = config.learn_clip and mode == "admm"
        self.latent: list[torch.Tensor | None] = [None] * len(self.layers)
        self.history: list[dict[str, float]] = []
        self._unit_factors: list = []

    # ------------------------------------------------------------ targets
    def _given_targets(self) -> list[LayerTarget | None] | None:
        t = self.config.targets
        if t is None:
            return None
        if isinstance(t, LayerTarget):
            return [t] * len(self.layers)
        names = {layer.name for layer in self.layers}
        unknown = sorted(set(t) - names)
        if unknown:
            raise ValueError(
                f"targets name layers the model does not count: {unknown}; counted layers: "
                f"{sorted(names)}"
            )
        return [t.get(layer.name) for layer in self.layers]

    def _targets_from_budget(self) -> list[LayerTarget | None]:
        """Per-layer targets from the budget projection of the current weights."""
        p = self._project_budget(self._weights())
        nnz = p.nonzeros()
        return [
            LayerTarget(max(nnz[i], 1) / w.numel(), int(p.bits[i]) if s.quantized else None)
            for i, (w, s) in enumerate(zip(self._weights(), self.specs, strict=True))
        ]

    def _phase_targets(self, phase: AdmmPhase) -> list[LayerTarget | None]:
        """Step ``k`` of ``K`` keeps ``density ** (k / K)``; bits only in the last step."""
        last = phase.index == len(self.phases) - 1
        power = (phase.index + 1) / len(self.phases)
        return [
            None
            if t is None
            else (t if last else LayerTarget(t.density**power, None) if t.density < 1 else None)
            for t in self.targets
        ]

    # ------------------------------------------------------------ projections
    def _weights(self) -> list[torch.Tensor]:
        return [layer.weight for layer in self.layers]

    def _start_cost(self) -> float:
        """Every counted weight kept at the highest bit option (float layers at 32 bits)."""
        cm = self.problem.cost_model
        bits = np.where(cm.quantized, self.problem.bit_options[-1], float(FLOAT_BITS))
        return float((self.coef * bits * cm.numel).sum())

    def _budget_at(self, step: int) -> float:
        """The budget the projections aim at in ``step``: the next ramp budget, or the
        target."""
        done = sum(1 for r in self.ramp_at if r < step)
        if done < len(self.ramp_at):
            return self.ramp_budgets[done]
        return float(self.problem.target)

    def _project_budget(
        self, z: list[torch.Tensor], *, headroom: float = 1.0, step: int | None = None
    ) -> WeightProjection:
        p = self.problem
        if self.config.granularity == "group":
            return project_groups(
                p,
                z,
                self.specs,
                p.target * headroom,
                curvature=self._curvature(),
                hold_zero_codes=self.config.hold_zero_codes,
            )
        return project_budget(
            z,
            self.specs,
            self.coef,
            self._budget_at(self.step_count if step is None else step) * headroom,
            p.bit_options,
            min_keep=self.min_keep,
            frozen=self.frozen,
            curvature=self._curvature(),
        )

    def _curvature(self) -> list[torch.Tensor] | None:
        """The layers' diagonal Fisher for ``distance="fisher"`` (None before any gradient)."""
        c = self.problem.curvature
        if self.config.distance != "fisher" or not c.steps:
            return None
        return [c.of(layer.tensor_name, layer.weight) for layer in self.layers]

    def _project(
        self,
        z: list[torch.Tensor],
        phase: AdmmPhase,
        *,
        headroom: float = 1.0,
        step: int | None = None,
    ) -> WeightProjection:
        if self.mode == "admm":
            return self._project_budget(z, headroom=headroom, step=step)
        if self.targets is None:
            self.targets = self._targets_from_budget()
        return project_targets(z, self._phase_targets(phase), self.float_bits, frozen=self.frozen)

    # ------------------------------------------------------------ the step
    def phase(self, step: int | None = None) -> AdmmPhase:
        step = self.step_count if step is None else step
        return next((p for p in self.phases if step < p.end), self.phases[-1])

    @property
    def stage(self) -> str:
        p = self.phase()
        return "admm" if self.step_count < p.admm_end else "finetune"

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._closure_loss(closure)
        k = self.step_count
        phase = self.phase(k)
        if self.config.distance == "fisher" and k < self.phases[-1].admm_end:
            self.problem.curvature.observe()  # the loss's own gradients, before the proximal term
        if k < phase.admm_end:
            if self.V is None or (k == phase.start and self.projected_phase < phase.index):
                self._start_admm(phase)
            self._add_proximal_gradient()
            self._drop_clip_gradients()  # the projections set the quantizers here
            self.base.step()
            self._hold_frozen()
            self._keep_float_quantizers()
            done = k + 1 - phase.start
            if done % self.config.interval(phase.admm_end - phase.start) == 0:
                self._update_dual(phase)
            if k in self.ramp_at:
                self._ramp_project(phase)
            if k + 1 == phase.admm_end:
                self._hard_project(phase)
        else:
            if self.projected_phase < phase.index:
                self._hard_project(phase)
            self._mask_gradients()
            self._scale_clip_gradients()
            self.base.step()
            self._keep_bits()
            self._update_latent()
            self._apply_masks()
            if k in self.trim_at:
                self._land_on_budget()
        self.step_count += 1
        return loss

    def _start_admm(self, phase: AdmmPhase) -> None:
        if self.masks is not None:  # a progressive step starts from the last result
            self.frozen = [~m for m in self.masks]
        self.masks = None
        self._unit_factors = []
        self.rho = float(self.config.rho)
        self._keep_float_quantizers(force=True)
        weights = self._weights()
        v = self._project([w.detach() for w in weights], phase)
        self.V = [x.detach().clone() for x in v.values]
        self.U = [torch.zeros_like(w) for w in weights]
        self._record("admm start", v)

    def _ramp_project(self, phase: AdmmPhase) -> None:
        """One step of the ramp: ``W`` loses what the projection onto the current budget drops
        (held at zero from now on, still float); ADMM restarts towards the next budget."""
        weights = self._weights()
        p = self._project([w.detach() for w in weights], phase)
        for w, m in zip(weights, p.masks, strict=True):
            w.mul_(m.to(w.dtype))
        self.frozen = [~m.bool() for m in p.masks]
        self._record("ramp projection", p)
        v = self._project([w.detach() for w in weights], phase, step=self.step_count + 1)
        self.V = [x.detach().clone() for x in v.values]
        self.U = [torch.zeros_like(w) for w in weights]
        self.rho = float(self.config.rho)

    def _add_proximal_gradient(self) -> None:
        for w, v, u in zip(self._weights(), self.V, self.U, strict=True):
            prox = self._pulled((w.detach() - v + u).mul_(self.rho), v)
            if w.grad is None:
                w.grad = prox
            else:
                w.grad.add_(prox)

    def _update_dual(self, phase: AdmmPhase) -> None:
        weights = [w.detach() for w in self._weights()]
        z = [w + u for w, u in zip(weights, self.U, strict=True)]
        v = self._project(z, phase)
        previous, self.V = self.V, [x.detach().clone() for x in v.values]
        residuals = [self._pulled(w - x, x) for w, x in zip(weights, self.V, strict=True)]
        for u, r in zip(self.U, residuals, strict=True):
            u.add_(r)
        gap = sum(float(r.square().sum()) for r in residuals)
        self._record("update", v, gap=gap)
        if self.config.balance_rho:
            moved = sum(
                float(self._pulled(x - o, x).square().sum())
                for x, o in zip(self.V, previous, strict=True)
            )
            self._balance_rho(gap**0.5, self.rho * moved**0.5)
        else:
            self.rho = min(self.rho * float(self.config.rho_growth), self.config.rho_max)

    def _pulled(self, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``t`` where the proximal term acts: everywhere, or with ``proximal="zeros"`` only
        where ``V`` is zero (elsewhere 0, in place)."""
        return t.mul_(v == 0) if self.config.proximal == "zeros" else t

    def _balance_rho(self, primal: float, dual: float) -> None:
        """Boyd et al.'s residual balancing (2011, sec. 3.4.1): ``rho`` doubles while the
        weights are over ten times farther from ``V`` (the primal residual) than ``V`` moved
        (the dual residual), and halves in the opposite case; ``U`` (scaled by ``1/rho``) is
        rescaled so the dual variable itself is unchanged."""
        if primal > 10 * dual:
            factor = 2.0
        elif dual > 10 * primal:
            factor = 0.5
        else:
            return
        rho = min(max(self.rho * factor, RHO_FLOOR), self.config.rho_max)
        for u in self.U:
            u.mul_(self.rho / rho)
        self.rho = rho

    def _hard_project(self, phase: AdmmPhase) -> None:
        """``W <- proj(W)``; quantizers set so that ``Q(W) = W``; masks from now on. The
        budget projection keeps :data:`geta.optim.landing.HEADROOM` times the
        budget at the last run's projection: kept codes drift into the zero bin in
        fine-tuning, and :meth:`_land_on_budget` enforces the budget exactly."""
        weights = self._weights()
        headroom = HEADROOM if self._lands_by_trimming(phase) else 1.0
        p = self._project([w.detach() for w in weights], phase, headroom=headroom)
        targets = self._phase_targets(phase) if self.mode != "admm" else None
        self.binary = [
            bool(t is not None and t.bits == 1) for t in (targets or [None] * len(p.bits))
        ]
        for i, (w, layer) in enumerate(zip(weights, self.layers, strict=True)):
            q = layer.quantizer
            self.fixed[i] = q is not None and p.clips[i] is not None
            self.latent[i] = w.detach().clone() if self.binary[i] else None
            w.copy_(p.values[i].to(w.dtype))
            if self.fixed[i]:
                q.t.fill_(1.0)
                q.q_m.copy_(p.clips[i].to(q.q_m).expand_as(q.q_m))
                q.set_bits(float(p.bits[i]))
            elif q is not None:
                self._float_quantizer(i, force=True)
            if self.binary[i]:
                clip = self._clip(i, w)
                self.latent[i] = torch.maximum(torch.minimum(self.latent[i], clip), -clip)
        self.masks = p.masks
        self.bits = np.asarray(p.bits, dtype=np.float64).copy()
        if p.removed is not None:
            self.removed = p.removed.copy()
            self._unit_factors = self.problem.removal_factors(self.removed)
        self.V = self.U = None
        self.projected_phase = phase.index
        self._apply_masks()
        self._record("hard projection", p)
        log.info(
            "geta admm: step %d hard projection, cost %.4g, bits %s",
            self.step_count,
            p.cost,
            p.bits.astype(int).tolist(),
        )

    # ------------------------------------------------------------ landing on the budget
    def _lands_by_trimming(self, phase: AdmmPhase) -> bool:
        return (
            self.mode == "admm"
            and phase.index == self.phases[-1].index
            and self.problem.target is not None
        )

    def _land_on_budget(self) -> None:
        """Meet the budget on the measured cost (:func:`geta.optim.landing.land_on_budget`):
        if the masked model costs more than the budget now, drop its weights of least
        ``w_q^2 / cost`` until it holds (the masks narrow); if it costs less (kept codes
        drifted into the zero bin, or the projection left room), raise projected layers'
        bits into the room, each keeping its learned clip, as GETA mode does."""
        if self.masks is None or not self._lands_by_trimming(self.phases[-1]):
            return
        masks, bits = land_on_budget(
            self.problem.cost_model,
            self.masks,
            self._raisable_bits(),
            float(self.problem.target),
            float(self.problem.bit_options[-1]),
            refit_clip=False,
            hold_zero_codes=self.config.hold_zero_codes,
        )
        if masks is not None:
            self.masks = [m.to(old.dtype) for m, old in zip(masks, self.masks, strict=True)]
            self._apply_masks()
            return
        for i, b in enumerate(bits):
            if b is not None:
                self.bits[i] = float(b.reshape(-1)[0])

    def _raisable_bits(self) -> list[torch.Tensor | None]:
        """The bits of each projected layer (one width per layer), ``None`` for the others
        (float and binary layers keep theirs)."""
        return [
            layer.quantizer.bits().detach().round()
            if self.fixed[i] and not self.binary[i]
            else None
            for i, layer in enumerate(self.layers)
        ]

    # ------------------------------------------------------------ masks and quantizers
    def _drop_clip_gradients(self) -> None:
        for layer in self.layers:
            if layer.quantizer is not None:
                layer.quantizer.q_m.grad = layer.quantizer.d.grad = None

    def _scale_clip_gradients(self) -> None:
        """Fine-tuning learns the clip of each projected layer, its step tied to it at fixed
        bits (``d = q_m / L``, ``L`` the positive levels), so that the step moves as LSQ's
        learnable step would (:meth:`geta.quant.Quantizer.fold_step_gradient`), with LSQ's
        scale. Float layers' quantizers are left to the projections."""
        for i, layer in enumerate(self.layers):
            q = layer.quantizer
            if q is None:
                continue
            if self.learn_clip and self.fixed[i] and q.q_m.grad is not None:
                q.scale_gradients(layer.weight.numel())
                q.fold_step_gradient()
            else:
                q.q_m.grad = None
            q.d.grad = None

    def _keep_bits(self) -> None:
        """Each projected layer's bits stay the projection's as its clip learns: the step
        follows the clip."""
        for i, layer in enumerate(self.layers):
            if self.fixed[i]:
                layer.quantizer.set_bits(float(self.bits[i]))

    def _hold_frozen(self) -> None:
        if self.frozen is None:
            return
        for w, held in zip(self._weights(), self.frozen, strict=True):
            if held is not None:
                w.masked_fill_(held, 0.0)

    def _mask_gradients(self) -> None:
        for w, m in zip(self._weights(), self.masks, strict=True):
            if w.grad is not None:
                w.grad.mul_(m)
        for p, values in self._unit_factors:
            if p.grad is not None:
                p.grad.mul_(values)

    def _clip(self, i: int, like: torch.Tensor) -> torch.Tensor:
        """Layer ``i``'s quantizer clip (its largest level at ``t = 1``), shaped like its weight."""
        q = self.layers[i].quantizer
        shape = [1] * like.dim()
        if q.per_channel:
            shape[q.axis % like.dim()] = -1
        return q.q_m.detach().to(like).reshape(shape)

    def _binarized(self, i: int, latent: torch.Tensor) -> torch.Tensor:
        clip = self._clip(i, latent)
        return torch.where(latent >= 0, clip, -clip)

    def _update_latent(self) -> None:
        """Binary layers: the base step's change goes to the latent weights (clipped)."""
        for i, w in enumerate(self._weights()):
            if self.binary[i]:
                latent = self.latent[i]
                latent.add_(w - self._binarized(i, latent))
                clip = self._clip(i, latent)
                latent.copy_(torch.maximum(torch.minimum(latent, clip), -clip))

    def _apply_masks(self) -> None:
        """Removed weights (and removed groups' other members) exactly zero; quantized
        weights within a fixed clip; binary weights the signs of their latent times the step;
        float layers' quantizers kept above their weights."""
        for p, values in self._unit_factors:
            p.mul_(values)
        for i, (w, m) in enumerate(zip(self._weights(), self.masks, strict=True)):
            w.mul_(m)
            if self.binary[i]:
                w.copy_(self._binarized(i, self.latent[i]))
            elif self.fixed[i]:
                if not self.learn_clip:
                    clip = self._clip(i, w)
                    w.copy_(torch.maximum(torch.minimum(w, clip), -clip))
            elif self.layers[i].quantizer is not None:
                self._float_quantizer(i)

    def _float_quantizer(self, i: int, force: bool = False) -> None:
        q = self.layers[i].quantizer
        w = self.layers[i].weight.detach()
        dims = [d for d in range(w.dim()) if d != q.axis % w.dim()] if q.per_channel else None
        top = (w.abs().amax(dim=dims) if dims else w.abs().amax().reshape(1)).float()
        if force or bool((top >= q.q_m.detach() * (1 - 1e-6)).any()):
            q.t.fill_(1.0)
            q.q_m.copy_((top * 1.25).clamp_min(1e-8).expand_as(q.q_m))
            q.set_bits(self.float_bits)

    def _keep_float_quantizers(self, force: bool = False) -> None:
        """During ADMM the weights train in float: each quantizer keeps high bits and a clip
        above its largest weight (so no weight is clipped or loses its gradient)."""
        for i, layer in enumerate(self.layers):
            if layer.quantizer is not None:
                self._float_quantizer(i, force)

    def _record(self, event: str, p: WeightProjection, **extra: float) -> None:
        self.history.append(
            {
                "step": self.step_count,
                "event": event,
                "rho": self.rho,
                "cost": float(p.cost),
                "error": float(p.error),
                "nonzeros": float(p.nonzeros().sum()),
                **extra,
            }
        )

    # ------------------------------------------------------------ the end
    @torch.no_grad()
    def finish(self) -> None:
        """Bring the model to its final state now (the hard projection of the last run's
        targets, if it has not happened); what :meth:`geta.Compressor.finalize` calls."""
        last = self.phases[-1]
        if self.projected_phase < last.index:
            self._hard_project(last)
        self._apply_masks()
        self._land_on_budget()

    @property
    def zeroed(self) -> np.ndarray:
        """The graph's units removed (structured); none when unstructured."""
        return self.removed

    def removal_counts(self) -> tuple[int, int]:
        """(removed, total) units: groups' units when structured, else weights."""
        if self.config.granularity == "group":
            return int(self.removed.sum()), int(self.problem.units.count)
        total = int(self.problem.cost_model.numel.sum())
        if self.masks is None:
            return 0, total
        return total - int(sum(int(m.sum()) for m in self.masks)), total

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()

        def tensors(xs):
            return None if xs is None else [None if x is None else x.clone() for x in xs]

        state["admm"] = {
            "step_count": self.step_count,
            "rho": self.rho,
            "V": tensors(self.V),
            "U": tensors(self.U),
            "masks": tensors(self.masks),
            "frozen": tensors(self.frozen),
            "removed": torch.as_tensor(self.removed),
            "projected_phase": self.projected_phase,
            "binary": list(self.binary),
            "fixed": list(self.fixed),
            "bits": torch.as_tensor(self.bits),
            "latent": tensors(self.latent),
            "targets": None
            if self.targets is None
            else [None if t is None else (t.density, t.bits) for t in self.targets],
            "history": list(self.history),
            "curvature": self.problem.curvature.state_dict(),
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("admm")
        self._load_base_state(state_dict)
        self.step_count = int(extra["step_count"])
        self.rho = float(extra["rho"])
        self.V, self.U = extra["V"], extra["U"]
        self.masks, self.frozen = extra["masks"], extra["frozen"]
        self.removed = extra["removed"].cpu().numpy().astype(bool)  # accelerate moves state
        self.projected_phase = int(extra["projected_phase"])
        self.binary = list(extra["binary"])
        self.fixed = list(extra["fixed"])
        if "bits" in extra:
            self.bits = extra["bits"].cpu().numpy().astype(np.float64)
        self.latent = list(extra["latent"])
        if extra["targets"] is not None:
            self.targets = [None if t is None else LayerTarget(*t) for t in extra["targets"]]
        self.history = list(extra["history"])
        if "curvature" in extra:
            self.problem.curvature.load_state_dict(extra["curvature"])
        self._unit_factors = []
        if self.masks is not None and self.removed.any():
            self._unit_factors = self.problem.removal_factors(self.removed)

    def __repr__(self) -> str:
        return (
            f"AdmmOptimizer(mode={self.mode}, base={type(self.base).__name__}, "
            f"step={self.step_count}/{self.phases[-1].end}, stage={self.stage}, rho={self.rho:.3g})"
        )
