"""Everything the optimizer needs to plan: cost model, unit statistics, budget, bit options,
and the per-tensor masks that apply a removal plan to the live parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from geta.errors import BudgetError
from geta.graph.dependency_graph import DependencyGraph
from geta.optim.alignment import aligned_keep_counts, unit_multiples
from geta.optim.budget import Budget
from geta.optim.cost import CostModel
from geta.optim.projection import (
    Projection,
    bit_distortion,
    nonzero_code_share,
    project,
    select_fraction,
)
from geta.optim.saliency import AVERAGED, LOSS_SCALED, Curvature, UnitStatistics, importance
from geta.quant.ratio import FLOAT_BITS

if TYPE_CHECKING:
    from geta.deployment.latency import LatencyTable

__all__ = ["CompressionProblem", "TensorMask", "equalised"]


@dataclass(frozen=True)
class TensorMask:
    """The units of one (parameter, dim) pair: ``unit_of[i]`` is the unit index ``i`` belongs
    to, or -1."""

    name: str
    dim: int
    unit_of: torch.Tensor


def equalised(importance: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``importance`` with every group's units (``offsets[g]:offsets[g + 1]``) rescaled to the
    same mean, the mean over all units (so the scale against bit distortion is kept); a group
    whose units all have zero importance stays zero."""
    out = importance.astype(np.float64, copy=True)
    overall = float(out.mean()) if out.size else 0.0
    for start, end in zip(offsets[:-1], offsets[1:], strict=True):
        mean = float(out[start:end].mean()) if end > start else 0.0
        if mean > 0:
            out[start:end] *= overall / mean
    return out


class CompressionProblem:
    """A model, its graph, a budget and a bit range, ready to be projected.

    ``budget=None`` with ``target_group_sparsity`` is GETA's own formulation: remove that share
    of units and learn bits within ``bit_range``; with neither there is no target (ADMM's
    per-layer targets).

    ``channel_multiple=N`` aligns every plan (:mod:`geta.optim.alignment`): each group keeps
    a multiple of ``unit_multiple[g]`` units (so every dimension it prunes keeps a multiple of
    ``N`` indices) or all of them, and ``min_keep`` is rounded up to match.

    A latency budget needs the measured ``latency`` table; its :attr:`target` is the part of
    the budget left for the layers' plan-dependent time (the rest of the model and each
    layer's largest fixed time over the bit options taken off).
    """

    def __init__(
        self,
        model: nn.Module,
        graph: DependencyGraph,
        budget: Budget | None,
        *,
        bit_range: tuple[int, int] = (2, 8),
        positions: dict[str, float] | None = None,
        max_group_sparsity: float = 0.9,
        target_group_sparsity: float | None = None,
        saliency: str = "geta",
        equalise_groups: bool = False,
        count_zero_codes: bool = False,
        channel_multiple: int = 1,
        latency: LatencyTable | None = None,
    ) -> None:
        lo, hi = bit_range
        if not 2 <= lo <= hi <= 32:
            raise ValueError(f"bit_range must satisfy 2 <= low <= high <= 32, got {bit_range}")
        self.model = model
        self.graph = graph
        self.metric = budget.metric if budget is not None else "size"
        self.cost_model = CostModel(model, graph, self.metric, positions, latency)
        self.stats = UnitStatistics(model, graph)
        observed = dict(self.stats.params)
        observed.update({layer.tensor_name: layer.weight for layer in self.cost_model.layers})
        self.curvature = Curvature(observed)
        self.budget = budget
        self.bit_options = np.arange(lo, hi + 1, dtype=np.float64)
        self.target = self._target(budget) if budget else None
        self.target_group_sparsity = target_group_sparsity
        self.saliency = saliency
        self.equalise_groups = equalise_groups
        self.count_zero_codes = count_zero_codes
        self.channel_multiple = channel_multiple
        self.unit_multiple = unit_multiples(
            [[m.width for m in group.members] for group in graph.groups], channel_multiple
        )
        self.min_keep = self.aligned_min_keep(max_group_sparsity)
        self.masks = self._tensor_masks()

    def _target(self, budget: Budget) -> float:
        cm = self.cost_model
        if cm.metric != "latency":
            return budget.target(cm.dense_cost())
        options = np.broadcast_to(self.bit_options, (len(cm.layers), len(self.bit_options)))
        rest = cm.offset(np.where(cm.quantized[:, None], options, float(FLOAT_BITS)))
        total = budget.target(cm.latency.dense_ms)
        if total <= rest:
            raise BudgetError(
                f"the budget of {budget} ({total:.3g} ms) cannot be met: the model's time "
                f"outside its prunable weights is already {rest:.3g} ms of the measured "
                f"{cm.latency.dense_ms:.3g} ms; raise the budget",
                min_cost=rest,
            )
        return total - rest

    @property
    def units(self):
        return self.cost_model.units

    def rebind(self, params: dict[str, torch.Tensor]) -> None:
        """Hold ``params`` (qualified name -> tensor) in place of the parameters of those
        names: a sharded model's parameters are gathered and put back around each step
        (:func:`geta.distributed.gathered`)."""
        for held in (self.stats.params, self.curvature.params):
            held.update({name: p for name, p in params.items() if name in held})

    def aligned_min_keep(self, max_sparsity: float) -> np.ndarray:
        """The fewest units each group keeps when at most ``max_sparsity`` of it may go: at
        least one, rounded up to the group's :attr:`unit_multiple` (capped at its size)."""
        sizes = np.diff(self.units.offsets)
        keep = np.maximum(1, np.ceil((1 - max_sparsity) * sizes)).astype(np.int64)
        return aligned_keep_counts(sizes, keep, self.unit_multiple)

    def _tensor_masks(self) -> list[TensorMask]:
        """The unit of every index of every grouped (parameter, dim): the saliency slices'
        positions and unit ids, scattered into one lookup per pair."""
        masks = []
        for s in self.stats.slices:
            unit_of = torch.full((self.stats.params[s.tensor].shape[s.dim],), -1)
            unit_of[s.positions] = s.unit_ids
            masks.append(TensorMask(s.tensor, s.dim, unit_of))
        return masks

    def observe(self) -> None:
        """Record this step's gradients (in place) in the running statistics the saliency
        reads: Fisher's curvature, Taylor's mean ``|<x, g>|`` per unit."""
        if self.saliency in LOSS_SCALED:
            self.curvature.observe()
        if self.saliency in AVERAGED:
            self.stats.observe()

    @property
    def loss_scaled(self) -> bool:
        """Importance in loss units (curvature-weighted), distortion weighed to match."""
        return self.saliency in LOSS_SCALED and self.curvature.steps > 0

    def importance(self, criterion: str | None = None) -> np.ndarray:
        crit = criterion or self.saliency
        curvature = self.curvature if crit in LOSS_SCALED else None
        stats = self.stats.compute(with_grad=True, curvature=curvature)
        has_grad = bool(stats["g2"].sum() > 0)
        if crit in LOSS_SCALED and not self.curvature.steps:
            has_grad = False  # no gradient seen yet: fall back to the weights alone
        imp = importance(stats, crit if has_grad else "magnitude")
        return equalised(imp, self.units.offsets) if self.equalise_groups else imp

    def layer_curvature(self) -> np.ndarray:
        """Each counted layer's mean curvature over its weights (its squared-gradient mean):
        quantization noise of variance ``D`` per weight costs about ``0.5 F D`` each."""
        out = []
        for layer in self.cost_model.layers:
            f = self.curvature.of(layer.tensor_name, layer.weight)
            nonzero = layer.weight.detach() != 0
            out.append(float(f[nonzero].mean()) if bool(nonzero.any()) else 0.0)
        return np.array(out)

    def plan(
        self,
        forced: np.ndarray | None = None,
        max_bits: np.ndarray | None = None,
        criterion: str | None = None,
        importance: np.ndarray | None = None,
    ) -> Projection:
        """Project the current model onto the budget (or GETA's sparsity target), with the
        units' ``importance`` (computed now from the saliency ``criterion`` when not given)."""
        imp = self.importance(criterion) if importance is None else importance
        cm = self.cost_model
        if self.target is None:
            removed = select_fraction(
                cm,
                imp,
                self.target_group_sparsity,
                forced=forced,
                min_keep=self.min_keep,
                multiple=self.unit_multiple,
            )
            bits = np.where(cm.quantized, self.bit_options[-1], 32.0)
            return Projection(removed, bits, cm.cost(removed, bits), None)
        distortion = bit_distortion(cm, self.bit_options)
        if self.loss_scaled and (criterion or self.saliency) in LOSS_SCALED:
            distortion = distortion * 0.5 * self.layer_curvature()[:, None]
        share = nonzero_code_share(cm, self.bit_options) if self.count_zero_codes else None
        return project(
            cm,
            self.target,
            imp,
            distortion,
            self.bit_options,
            forced=forced,
            max_bits=max_bits,
            min_keep=self.min_keep,
            code_share=share,
            multiple=self.unit_multiple,
        )

    def removal_factors(self, removed: np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """:meth:`keep_factors` of a removal mask (one flag per unit): 0 along the
        ``removed`` units' slices of every member tensor, 1 elsewhere."""
        factor = torch.ones(self.units.count)
        factor[torch.as_tensor(np.asarray(removed, dtype=bool))] = 0.0
        return self.keep_factors(factor)

    def removed_indices(self, tensor_name: str, dim: int, removed: np.ndarray) -> torch.Tensor:
        """Which indices of parameter ``tensor_name`` along ``dim`` a removal mask (one flag
        per unit) removes, as a bool tensor (all False where no group masks that axis)."""
        size = self.stats.params[tensor_name].shape[dim]
        gone = torch.zeros(size, dtype=torch.bool)
        removed_t = torch.as_tensor(np.asarray(removed, dtype=bool))
        for mask in self.masks:
            if mask.name == tensor_name and mask.dim == dim:
                hit = mask.unit_of >= 0
                gone[hit] |= removed_t[mask.unit_of[hit]]
        return gone

    def keep_factors(self, factor_of_unit: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """For each masked (parameter, dim) with a factor other than 1: the parameter and the
        multiplier of each index along ``dim``, shaped to broadcast. ``factor_of_unit`` has
        one value per unit."""
        out = []
        for mask in self.masks:
            p = self.stats.params[mask.name]
            values = torch.ones(mask.unit_of.shape, dtype=torch.float32)
            hit = mask.unit_of >= 0
            values[hit] = factor_of_unit[mask.unit_of[hit]]
            if bool((values != 1).any()):
                shape = [1] * p.dim()
                shape[mask.dim] = -1
                out.append((p, values.to(p.device, p.dtype).reshape(shape)))
        return out
