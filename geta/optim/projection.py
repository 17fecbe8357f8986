"""The budget projection shared by every mode: which units to remove and which bits each layer
gets, so that ``cost <= B`` with the least importance lost (ALGORITHMS.md section 2).

Two kinds of moves, one scale (squared weight error per unit of cost saved):

- remove a unit of a group: loses its importance, saves ``sum_l coef_l * bits_l * dnnz_l``
  (plus, for latency, the time between layers its output features took:
  :attr:`CostModel.axis_cost`);
- lower a layer's bits to the next point of the lower convex hull of its (bits, distortion)
  curve: loses ``nnz_l * (D_l(b') - D_l(b))``, saves ``coef_l * (b - b') * nnz_l``.

(``bits`` here is what a kept weight costs at those bits: :meth:`CostModel.bit_cost`, the bits
themselves for size and BOPs, a kernel's time per weight for latency.)

A greedy takes the cheapest move (loss per cost saved) until the budget holds (a lazy heap:
a move's ratio is recomputed when it reaches the top, since removals change later costs);
then spends any slack on bit upgrades, best distortion drop per cost first (the
multiple-choice knapsack greedy). With one bit-width and groups of single weights this is the
ADMM papers' "rank by w^2 / b" projection.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from geta.errors import BudgetError
from geta.optim.alignment import (
    align_down,
    align_removal,
    aligned_keep_counts,
    best_up,
    up_moves,
)
from geta.optim.bit_allocation import lower_hull
from geta.optim.cost import FLOAT_BITS, CostModel
from geta.quant.functional import clip_search, fake_quantize, step_for_bits

__all__ = [
    "Projection",
    "bit_distortion",
    "nonzero_code_share",
    "project",
    "select_fraction",
    "minimum_cost",
    "keep_top",
]


@dataclass(frozen=True)
class Projection:
    """The chosen removal mask (one flag per unit), bits per layer, and resulting cost."""

    removed: np.ndarray
    bits: np.ndarray
    cost: float
    budget: float | None


@torch.no_grad()
def bit_distortion(
    cost_model: CostModel,
    bit_options: np.ndarray,
    sample: int = 1 << 16,
    weights: list[torch.Tensor] | None = None,
) -> np.ndarray:
    """Mean squared quantization error per weight of each layer at each bit option, with the
    clip that suits that bit-width (the quantizer learns its clip, and is recalibrated when its
    target changes). ``[layers, options]``; rows of unquantized layers are zero. Per-tensor
    quantizers are measured on a fixed random sample of at most ``sample`` weights, per-channel
    ones on a fixed random sample of whole channels holding about ``sample`` weights (each with
    its own clip; a 30522-row embedding table is otherwise a minute's search per re-plan).
    ``weights`` (one tensor per layer) replaces the layers' own weights (ADMM projects
    ``W + U``)."""
    out = np.zeros((len(cost_model.layers), len(bit_options)))
    for i, layer in enumerate(cost_model.layers):
        q = layer.quantizer
        if q is None:
            continue
        w = (layer.weight if weights is None else weights[i]).detach()
        w, t = _channel_sample(w, q.t.detach(), q, sample)
        for j, b in enumerate(bit_options):
            _, err = clip_search(w, float(b), t, q.axis, q.per_channel, sample=sample)
            out[i, j] = float(err.mean())
    return out


@torch.no_grad()
def nonzero_code_share(
    cost_model: CostModel,
    bit_options: np.ndarray,
    sample: int = 1 << 16,
    weights: list[torch.Tensor] | None = None,
) -> np.ndarray:
    """Share of each layer's nonzero weights whose quantized code is not zero, at each bit
    option with the clip :func:`bit_distortion` fits for it: ``[layers, options]``, ones for
    unquantized layers. At 2-3 bits many small weights round to the zero code and cost
    nothing, so a plan that counts every kept weight overshoots the budget. ``weights`` (one
    tensor per layer) replaces the layers' own weights (ADMM projects ``W + U``)."""
    out = np.ones((len(cost_model.layers), len(bit_options)))
    for i, layer in enumerate(cost_model.layers):
        q = layer.quantizer
        if q is None:
            continue
        w = (layer.weight if weights is None else weights[i]).detach()
        w, t = _channel_sample(w, q.t.detach(), q, sample)
        w = w.float()
        if q.per_channel:
            w = w.movedim(q.axis % w.dim(), 0).reshape(w.shape[q.axis], -1)
            t = t.float().reshape(-1, 1) if t.numel() > 1 else t.float().reshape(1, 1)
        else:
            w, t = w.reshape(1, -1), t.float().reshape(-1)[:1].reshape(1, 1)
        t = t.to(w.device)
        nonzero = w != 0
        count = int(nonzero.sum())
        if count == 0:
            continue
        for j, b in enumerate(bit_options):
            if q.per_channel:
                clip, _ = clip_search(w, float(b), t.reshape(-1), 0, True, sample=sample)
            else:
                clip, _ = clip_search(w[nonzero], float(b), t.reshape(-1), sample=sample)
            clip = clip.reshape(-1, 1)
            codes = fake_quantize(w, step_for_bits(float(b), clip, t), clip, t)
            out[i, j] = int(((codes != 0) & nonzero).sum()) / count
    return out


def _channel_sample(
    w: torch.Tensor, t: torch.Tensor, q: torch.nn.Module, sample: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A per-channel quantizer's weight cut to a fixed random set of channels with about
    ``sample`` weights in all (with their exponents); other weights are returned as they are."""
    if not q.per_channel or w.numel() <= sample:
        return w, t
    channels = w.shape[q.axis]
    keep = max(1, sample // (w.numel() // channels))
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(channels, generator=g)[:keep].sort().values.to(w.device)
    return w.index_select(q.axis, idx), t.reshape(-1).index_select(0, idx)


class _State:
    """Removal mask, kept indices per axis, nonzeros and bits, updated move by move."""

    def __init__(
        self,
        cm: CostModel,
        removed: np.ndarray,
        bits: np.ndarray,
        coef: np.ndarray,
        axis_cost: np.ndarray | None = None,
    ):
        self.cm = cm
        self.axis_cost = cm.axis_cost if axis_cost is None else axis_cost
        self.removed = removed.copy()
        self.kept = cm.kept(self.removed)
        self.bits = bits.astype(np.float64).copy()
        self.coef = coef
        self.nnz = cm.nonzeros(kept=self.kept)
        self.cost = float((coef * self.bits * self.nnz).sum() + (self.axis_cost * self.kept).sum())

    def unit_saving(self, u: int) -> float:
        per_layer: dict[int, float] = {}
        own = 0.0
        for a, w in self.cm.unit_axes[u]:
            layer = self.cm.axes[a].layer
            kept = self.kept[a]
            factor = (kept - w) / kept if kept > 0 else 1.0
            per_layer[layer] = per_layer.get(layer, 1.0) * factor
            own += self.axis_cost[a] * w
        return own + sum(
            self.coef[layer] * self.bits[layer] * self.nnz[layer] * (1 - f)
            for layer, f in per_layer.items()
        )

    def remove(self, u: int) -> None:
        self.removed[u] = True
        self._resize(u, -1)

    def restore(self, u: int) -> None:
        """Undo :meth:`remove` (channel alignment brings groups back up)."""
        self.removed[u] = False
        self._resize(u, 1)

    def _resize(self, u: int, sign: int) -> None:
        layers = set()
        for a, w in self.cm.unit_axes[u]:
            self.kept[a] += sign * w
            self.cost += sign * w * self.axis_cost[a]
            layers.add(self.cm.axes[a].layer)
        for layer in layers:
            nnz = self.cm.numel[layer]
            for a in self.cm.layer_axes[layer]:
                nnz *= self.kept[a] / self.cm.axes[a].size
            self.cost += self.coef[layer] * self.bits[layer] * (nnz - self.nnz[layer])
            self.nnz[layer] = nnz

    def set_bits(self, layer: int, bits: float) -> None:
        self.cost += self.coef[layer] * (bits - self.bits[layer]) * self.nnz[layer]
        self.bits[layer] = bits


def _per_group(cm: CostModel, min_keep: int | np.ndarray) -> np.ndarray:
    return np.broadcast_to(np.asarray(min_keep, dtype=np.int64), (len(cm.units.group_ids),))


def _keep_best(cm: CostModel, importance: np.ndarray, min_keep: int | np.ndarray) -> np.ndarray:
    """Removal mask of every unit but the ``min_keep`` most important of each group."""
    removed = np.ones(cm.units.count, dtype=bool)
    keep = _per_group(cm, min_keep)
    for g in range(len(cm.units.group_ids)):
        lo, hi = cm.units.offsets[g], cm.units.offsets[g + 1]
        best = np.argsort(-importance[lo:hi], kind="stable")[: keep[g]]
        removed[lo + best] = False
    return removed


def minimum_cost(
    cm: CostModel,
    bit_options: np.ndarray,
    coef: np.ndarray | None = None,
    min_keep: int | np.ndarray = 1,
    code_share: np.ndarray | None = None,
) -> float:
    """The smallest reachable cost: every group down to ``min_keep`` units, lowest bits
    (times the share of nonzero codes there, when ``code_share`` is given)."""
    coef = cm.coefficients() if coef is None else coef
    removed = _keep_best(cm, np.zeros(cm.units.count), min_keep)
    lowest = _cost_bits(cm, np.asarray(sorted(bit_options), dtype=np.float64), code_share)[:, 0]
    kept = cm.kept(removed)
    return float((coef * lowest * cm.nonzeros(kept=kept)).sum() + (cm.axis_cost * kept).sum())


def _cost_bits(cm: CostModel, bit_options: np.ndarray, code_share: np.ndarray | None) -> np.ndarray:
    """``[layers, options]``: what each kept weight costs at each option (32 bits for float
    layers; :meth:`CostModel.bit_cost` of the bits); with ``code_share``, bits times the share
    of weights that keep a nonzero code. Never cheaper with more bits: where a lower width runs
    on a slower kernel (latency), the slower kernel's cost counts for the bits above it too."""
    table = np.broadcast_to(bit_options, (len(cm.layers), len(bit_options))).astype(np.float64)
    if code_share is not None:
        table = table * code_share
    table = np.where(cm.quantized[:, None], table, float(FLOAT_BITS))
    if cm.metric == "latency":
        table = cm.bit_cost(table)
    return np.maximum.accumulate(table, axis=1)


def _describe(cm: CostModel, cost: float) -> str:
    if cm.metric == "size":
        return f"{cost / 8:,.0f} bytes ({cm.dense_cost() / cost:,.1f}x)"
    if cm.metric == "latency":
        return f"{cost + cm.offset():.3g} ms"
    return f"{cost:.4g} BOPs ({cm.dense_cost() / cost:,.1f}x fewer)"


def project(
    cm: CostModel,
    budget: float,
    importance: np.ndarray,
    distortion: np.ndarray,
    bit_options: np.ndarray,
    *,
    forced: np.ndarray | None = None,
    max_bits: np.ndarray | None = None,
    min_keep: int | np.ndarray = 1,
    allow_pruning: bool = True,
    coef: np.ndarray | None = None,
    code_share: np.ndarray | None = None,
    multiple: int | np.ndarray = 1,
) -> Projection:
    """Choose removed units and per-layer bits with ``cost <= budget``.

    ``importance`` has one value per unit (squared-error scale, see
    :func:`geta.optim.saliency.importance`); ``distortion`` is :func:`bit_distortion`;
    ``forced`` units are removed whatever their importance (already being pruned);
    ``max_bits`` caps each layer's bits; ``min_keep`` (one value, or one per group) is the
    fewest units a group keeps. Layers without a quantizer keep 32 bits. With ``code_share``
    (:func:`nonzero_code_share`) a kept weight costs its bits only where its code is not
    zero, so the cost is the expected count of nonzero codes times bits. ``multiple`` (one
    value, or one per group: :func:`geta.optim.alignment.unit_multiples`) aligns the plan:
    every group keeps a multiple of its value of units, or all of them, and at least
    ``min_keep`` rounded up to it. The greedy's groups go down to the allowed count below
    (:func:`geta.optim.alignment.align_down`), then the slack is spent on raising bits and on
    bringing groups back up (:func:`geta.optim.alignment.up_moves`), best gain per cost first;
    ``1`` leaves the plan as the greedy made it.

    Raises:
        BudgetError: even the smallest reachable model is over the budget.

    Example:
        >>> p = project(cm, budget, imp, bit_distortion(cm, opts), opts)   # doctest: +SKIP
        >>> p.cost <= budget                                                # doctest: +SKIP
        True
    """
    coef = cm.coefficients() if coef is None else coef
    bit_options = np.asarray(sorted(bit_options), dtype=np.float64)
    n_layers = len(cm.layers)
    forced = np.zeros(cm.units.count, bool) if forced is None else forced.astype(bool)
    if max_bits is None:
        max_bits = np.full(n_layers, bit_options[-1])
    cost_bits = _cost_bits(cm, bit_options, code_share)
    aligned = allow_pruning and bool(np.any(np.asarray(multiple) > 1))
    if aligned:
        min_keep = aligned_keep_counts(np.diff(cm.units.offsets), min_keep, multiple)
    smallest = minimum_cost(cm, bit_options, coef, min_keep, code_share) if allow_pruning else None
    if smallest is not None and smallest > budget * (1 + 1e-12):
        raise BudgetError(
            f"the budget of {_describe(cm, budget)} cannot be met: the smallest model geta can "
            f"reach (every group down to its minimum, every layer at "
            f"{int(bit_options[0])} bits) is {_describe(cm, smallest)}; raise the budget or "
            "lower the bit range",
            min_cost=smallest,
        )

    hulls: list[list[int]] = []
    position = np.zeros(n_layers, dtype=np.int64)
    start_bits = cost_bits[:, -1].copy()  # float layers: 32 bits (their float kernel for latency)
    for layer in range(n_layers):
        if not cm.quantized[layer]:
            hulls.append([])
            continue
        allowed = np.nonzero(bit_options <= max_bits[layer] + 1e-9)[0]
        allowed = allowed if allowed.size else np.array([0])
        sub = lower_hull(cost_bits[layer, allowed], distortion[layer, allowed])
        hull = [int(allowed[i]) for i in sub]
        hulls.append(hull)
        position[layer] = len(hull) - 1
        start_bits[layer] = cost_bits[layer, hull[-1]]

    state = _State(cm, forced, start_bits, coef)
    keep = _per_group(cm, min_keep)
    groups_left = np.diff(cm.units.offsets) - np.bincount(
        cm.units.group_of[forced], minlength=len(cm.units.group_ids)
    )

    def bit_key(layer: int) -> float | None:
        if position[layer] == 0:
            return None
        hi, lo = hulls[layer][position[layer]], hulls[layer][position[layer] - 1]
        saved = coef[layer] * (cost_bits[layer, hi] - cost_bits[layer, lo])
        return (distortion[layer, lo] - distortion[layer, hi]) / saved if saved > 0 else None

    def unit_key(u: int) -> float | None:
        saved = state.unit_saving(u)
        return importance[u] / saved if saved > 0 else None

    heap: list[tuple[float, int, int]] = []  # (loss per cost saved, kind 0=bits 1=unit, index)
    for layer in range(n_layers):
        if (k := bit_key(layer)) is not None:
            heap.append((k, 0, layer))
    if allow_pruning:
        for u in np.nonzero(~forced)[0].tolist():
            if (k := unit_key(u)) is not None:
                heap.append((k, 1, u))
    heapq.heapify(heap)

    while state.cost > budget and heap:
        key, kind, index = heapq.heappop(heap)
        if kind == 1:
            group = cm.units.group_of[index]
            if state.removed[index] or groups_left[group] <= keep[group]:
                continue
            fresh = unit_key(index)
            if fresh is None:
                continue
            if heap and fresh > key * (1 + 1e-9) and fresh > heap[0][0]:
                heapq.heappush(heap, (fresh, 1, index))
                continue
            state.remove(index)
            groups_left[group] -= 1
        else:
            position[index] -= 1
            state.set_bits(index, cost_bits[index, hulls[index][position[index]]])
            if (k := bit_key(index)) is not None:
                heapq.heappush(heap, (k, 0, index))

    if state.cost > budget * (1 + 1e-12):
        raise BudgetError(
            f"the budget of {_describe(cm, budget)} cannot be met with the allowed moves; the "
            f"closest reached is {_describe(cm, state.cost)}",
            min_cost=state.cost,
        )
    ups: dict[int, np.ndarray] = {}
    if aligned:
        lowered = align_down(state, cm.units.offsets, importance, multiple, keep)
        ups = up_moves(state.removed, cm.units.offsets, importance, multiple, lowered, forced)
    _spend_slack(state, budget, hulls, position, distortion, cost_bits, coef, ups, importance)
    bits = np.array(
        [bit_options[h[position[i]]] if h else float(FLOAT_BITS) for i, h in enumerate(hulls)]
    )
    return Projection(state.removed, bits, state.cost, budget)


def _spend_slack(
    state, budget, hulls, position, distortion, cost_bits, coef, ups=None, importance=None
) -> None:
    """Raise bits where the budget still has room: best distortion drop per cost first. With
    ``ups`` (channel alignment's groups that may come back up to their next allowed count,
    :func:`geta.optim.alignment.up_moves`) those compete on the same scale: importance
    regained per cost."""
    ups = {} if ups is None else dict(ups)
    while True:
        best, best_layer = 0.0, -1
        for layer, hull in enumerate(hulls):
            if not hull or position[layer] + 1 >= len(hull):
                continue
            lo, hi = hull[position[layer]], hull[position[layer] + 1]
            extra = coef[layer] * (cost_bits[layer, hi] - cost_bits[layer, lo]) * state.nnz[layer]
            if extra <= 0 or state.cost + extra > budget:
                continue
            gain = (distortion[layer, lo] - distortion[layer, hi]) * state.nnz[layer] / extra
            if gain > best:
                best, best_layer = gain, layer
        group, up_gain, _ = best_up(state, ups, importance, budget) if ups else (None, 0.0, 0.0)
        if group is not None and up_gain >= best:
            for u in ups.pop(group).tolist():
                state.restore(u)
            continue
        if best_layer < 0:
            return
        position[best_layer] += 1
        state.set_bits(best_layer, cost_bits[best_layer, hulls[best_layer][position[best_layer]]])


def select_fraction(
    cm: CostModel,
    importance: np.ndarray,
    fraction: float,
    *,
    forced: np.ndarray | None = None,
    min_keep: int | np.ndarray = 1,
    multiple: int | np.ndarray = 1,
) -> np.ndarray:
    """GETA's own target: remove ``fraction`` of all units, least important per scalar first
    (keeping ``min_keep`` units of every group). With ``multiple`` the kept counts are aligned
    as in :func:`project` (:func:`geta.optim.alignment.align_removal`): groups go down to an
    allowed count, then come back up while at least ``fraction`` stays removed. Returns the
    removal mask."""
    removed = np.zeros(cm.units.count, bool) if forced is None else forced.astype(bool).copy()
    target = int(round(fraction * cm.units.count))
    sizes = np.diff(cm.units.offsets)
    left = sizes - np.bincount(cm.units.group_of[removed], minlength=len(sizes))
    aligned = bool(np.any(np.asarray(multiple) > 1))
    if aligned:
        min_keep = aligned_keep_counts(sizes, min_keep, multiple)
    keep = _per_group(cm, min_keep)
    per_scalar = importance / np.maximum(_unit_numel(cm), 1)
    for u in np.argsort(per_scalar, kind="stable").tolist():
        if removed.sum() >= target:
            break
        g = cm.units.group_of[u]
        if removed[u] or left[g] <= keep[g]:
            continue
        removed[u] = True
        left[g] -= 1
    if aligned:
        state = _KeptUnits(removed)
        fixed = None if forced is None else forced.astype(bool)
        align_removal(
            state,
            cm.units.offsets,
            per_scalar,
            multiple,
            min_keep=keep,
            fixed=fixed,
            budget=float(cm.units.count - target),
        )
        removed = state.removed
    return removed


class _KeptUnits:
    """A removal mask whose cost is the count of kept units (:func:`select_fraction`'s share
    as a budget for :func:`geta.optim.alignment.align_removal`)."""

    def __init__(self, removed: np.ndarray) -> None:
        self.removed = removed.copy()
        self.cost = float((~self.removed).sum())

    def remove(self, u: int) -> None:
        self.removed[u] = True
        self.cost -= 1.0

    def restore(self, u: int) -> None:
        self.removed[u] = False
        self.cost += 1.0


def _unit_numel(cm: CostModel) -> np.ndarray:
    """Weight scalars of counted layers removed with each unit, in the dense model."""
    ones, no_axis_cost = np.ones(len(cm.layers)), np.zeros(len(cm.axes))
    state = _State(cm, np.zeros(cm.units.count, bool), ones, ones, no_axis_cost)
    return np.array([state.unit_saving(u) for u in range(cm.units.count)])


# ---------------------------------------------------------------------------- sparsity step
def keep_top(
    z: Sequence[torch.Tensor],
    weight_cost: np.ndarray,
    budget: float,
    *,
    min_keep: np.ndarray | None = None,
    frozen: Sequence[torch.Tensor | None] | None = None,
    curvature: Sequence[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """The sparsity step with bits fixed: keep masks with ``sum_l weight_cost[l] * kept_l <=
    budget``, best ``z^2 / weight_cost`` first over all layers at once (a prefix of one global
    sort); with ``curvature`` (per weight, the diagonal Fisher) best ``F z^2 / weight_cost``,
    the loss a weight's removal costs per unit of budget. Each layer keeps at least its
    ``min_keep`` largest weights; ``frozen`` (``True`` = held at zero) and exact zeros are
    never kept.

    Raises:
        BudgetError: the ``min_keep`` weights alone are over the budget.
    """
    scores, costs = [], []
    forced_cost = 0.0
    for i, zl in enumerate(z):
        flat = zl.detach().reshape(-1).double().cpu()  # one global sort, on the host
        s = flat.square() / max(float(weight_cost[i]), 1e-300)
        if curvature is not None:
            s = s * curvature[i].detach().reshape(-1).double().cpu()
        s[flat == 0] = -torch.inf
        if frozen is not None and frozen[i] is not None:
            s[frozen[i].reshape(-1).cpu()] = -torch.inf
        k = int(min_keep[i]) if min_keep is not None else 0
        if k:
            top = torch.topk(s, min(k, s.numel())).indices
            s[top] = torch.inf
            forced_cost += float(weight_cost[i]) * len(top)
        scores.append(s)
        costs.append(torch.full_like(s, float(weight_cost[i])))
    if forced_cost > budget * (1 + 1e-12):
        raise BudgetError(
            f"the weights every layer must keep cost {forced_cost:.4g}, over the budget of "
            f"{budget:.4g}",
            min_cost=forced_cost,
        )
    flat = torch.cat(scores)
    order = torch.argsort(flat, descending=True, stable=True)
    running = torch.cumsum(torch.cat(costs)[order], 0)
    limit = torch.tensor(budget * (1 + 1e-12), dtype=running.dtype)  # float32 rounds by ~8 at 1e8
    count = int(torch.searchsorted(running, limit, right=True))
    count = min(count, int((flat > -torch.inf).sum()))
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[order[:count]] = True
    out, start = [], 0
    for zl in z:
        out.append(keep[start : start + zl.numel()].reshape(zl.shape).to(zl.device))
        start += zl.numel()
    return out
