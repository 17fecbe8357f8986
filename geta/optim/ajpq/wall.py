"""The action wall: after an episode's actions, reduce bits and remove units along the cheapest
path until the budget holds, so every policy the search evaluates meets the budget.

Three kinds of moves, on one scale (squared weight error per unit of cost saved), as in the
budget projection of the other modes (:func:`geta.optim.projection.project`):

- lower one unit's bits by one level: loses the rise of its channels' quantization error;
- lower one layer's free channels (those no group can remove) by one level: likewise;
- remove one unit (0 bits): loses its importance net of the quantization error it had; with
  channel alignment (a group's ``unit_multiple`` above 1) a block of the group's units that
  lose least, down to its next allowed count (:mod:`geta.optim.alignment`), so an aligned plan
  stays aligned.

A lazy heap takes the cheapest move until the cost is within the budget (a move's ratio is
recomputed when it reaches the top, since removals change what later moves save).

With ``fill``, a plan under the budget is then raised the other way: one level of bits at a
time for a unit's channels (or a layer's free channels), most quantization error removed per
unit of cost added first, while the raise fits. Removed units stay removed (what to prune is
the controllers' choice); the plan ends within one raise of the budget instead of wherever the
controllers left it.
"""

from __future__ import annotations

import heapq

import numpy as np
import torch

from geta.errors import BudgetError
from geta.optim.alignment import next_allowed_below
from geta.optim.channel_bits import ChannelLayout, ChannelPlan, CodeShare
from geta.quant.functional import clip_search, fake_quantize, step_for_bits

__all__ = ["ActionWall", "channel_tables"]

_BITS, _FREE, _REMOVE, _BLOCK = 0, 1, 2, 3


@torch.no_grad()
def channel_tables(
    layout: ChannelLayout, bit_levels: tuple[int, ...]
) -> tuple[list[np.ndarray], CodeShare]:
    """Per counted layer, ``[channels, levels]``: each channel's summed squared quantization
    error at each bit level, and the share of its weights with a nonzero code there, with
    the clip that suits each level (zero error and a share of one for float layers)."""
    cm = layout.problem.cost_model
    distortion, shares = [], []
    for i, layer in enumerate(cm.layers):
        channels = len(layout.channel_unit[i])
        error = np.zeros((channels, len(bit_levels)))
        share = np.ones((channels, len(bit_levels)))
        q = layer.quantizer
        if q is not None:
            w = layer.weight.detach().float()
            moved = w.movedim(layout.axes[i], 0).reshape(channels, -1)
            t = q.t.detach().float().reshape(-1)
            t = t if t.numel() == channels else t[:1].expand(channels)
            t = t.to(w.device)
            for j, bits in enumerate(bit_levels):
                clip, err = clip_search(moved, float(bits), t, 0, True)
                clip = clip.reshape(-1, 1)
                step = step_for_bits(float(bits), clip, t.reshape(-1, 1))
                codes = fake_quantize(moved, step, clip, t.reshape(-1, 1))
                error[:, j] = err.double().cpu().numpy() * moved.shape[1]
                share[:, j] = (codes != 0).double().mean(1).cpu().numpy()
        distortion.append(error)
        shares.append(share)
    return distortion, CodeShare(np.asarray(bit_levels, dtype=np.float64), shares)


class ActionWall:
    """Brings any plan within a budget by the cheapest reductions (see the module docstring).

    Example:
        >>> distortion, share = channel_tables(layout, levels)                  # doctest: +SKIP
        >>> wall = ActionWall(layout, importance, distortion, levels, min_keep, share)  # doctest: +SKIP
        >>> layout.cost(wall(plan, budget), share) <= budget                    # doctest: +SKIP
        True
    """

    def __init__(
        self,
        layout: ChannelLayout,
        importance: np.ndarray,
        distortion: list[np.ndarray],
        bit_levels: tuple[int, ...],
        min_keep: np.ndarray,
        share: CodeShare | None = None,
        *,
        fill: bool = False,
    ) -> None:
        self.layout = layout
        self.fill = fill
        self.share = share
        self.cm = layout.problem.cost_model
        self.units = layout.problem.units
        self.importance = np.asarray(importance, dtype=np.float64)
        self.levels = np.asarray(bit_levels, dtype=np.float64)
        self.min_keep = np.asarray(min_keep, dtype=np.int64)
        self.multiple = np.asarray(layout.problem.unit_multiple, dtype=np.int64)
        self.coef = self.cm.coefficients()
        quantized = self.cm.quantized
        n_levels = len(bit_levels)
        # what a unit's (or a layer's free) channels cost per structural nonzero at each level:
        # bits, times the share of nonzero codes when counted
        self.owners: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(self.units.count)]
        self.unit_distortion = np.zeros((self.units.count, n_levels))
        self.free = np.zeros(self.layout.layer_count, dtype=np.int64)
        self.free_cost = np.zeros((self.layout.layer_count, n_levels))
        self.free_distortion = np.zeros((self.layout.layer_count, n_levels))
        for i, channel_units in enumerate(layout.channel_unit):
            if not quantized[i]:
                continue
            per_level = np.broadcast_to(self.levels, (len(channel_units), n_levels)).copy()
            if share is not None:
                per_level *= share.tables[i]
            owned = channel_units >= 0
            self.free[i] = int((~owned).sum())
            self.free_cost[i] = per_level[~owned].sum(0)
            self.free_distortion[i] = distortion[i][~owned].sum(0)
            np.add.at(self.unit_distortion, channel_units[owned], distortion[i][owned])
            unit_cost = np.zeros((self.units.count, n_levels))
            np.add.at(unit_cost, channel_units[owned], per_level[owned])
            for u in np.unique(channel_units[owned]).tolist():
                self.owners[u].append((i, unit_cost[u]))

    def _level(self, bits: float) -> int:
        return int(np.argmin(np.abs(self.levels - bits)))

    def __call__(
        self, plan: ChannelPlan, budget: float, scale: np.ndarray | None = None
    ) -> ChannelPlan:
        """A plan within ``budget``: ``plan`` itself when it already holds, else reduced.
        ``scale`` (one factor per layer) corrects each layer's estimated cost, e.g. by the
        ratio of its measured to its estimated cost once a plan was applied.

        Raises:
            BudgetError: even every reduction the bounds allow is over the budget.
        """
        unit_bits = plan.unit_bits.astype(np.float64).copy()
        layer_bits = plan.layer_bits.astype(np.float64).copy()
        coef = self.coef if scale is None else self.coef * np.asarray(scale, dtype=np.float64)
        state = _WallState(self, unit_bits, layer_bits, coef)
        if state.cost <= budget:
            if self.fill:
                self._fill(state, budget)
            return ChannelPlan(unit_bits, layer_bits)
        low = self.levels[0]
        left = np.diff(self.units.offsets) - np.bincount(
            self.units.group_of[unit_bits == 0], minlength=len(self.units.offsets) - 1
        )

        group_of = self.units.group_of

        def removal(u: int) -> tuple[int, int]:
            """The move that removes unit ``u``: itself, or its group's next block."""
            g = int(group_of[u])
            return (_BLOCK, g) if self.multiple[g] > 1 else (_REMOVE, u)

        def unit_loss(u: int) -> float:
            held = self.unit_distortion[u, self._level(unit_bits[u])]
            return max(self.importance[u] - held, 0.0)

        def block(g: int) -> np.ndarray | None:
            """The units of group ``g`` that take it to its next allowed count (least loss
            first), or ``None`` below its minimum."""
            below = next_allowed_below(left[g], self.multiple[g])
            if below < max(int(self.min_keep[g]), 1):
                return None
            units = np.arange(self.units.offsets[g], self.units.offsets[g + 1])
            alive = units[unit_bits[units] > 0]
            losses = np.array([unit_loss(u) for u in alive.tolist()])
            return alive[np.argsort(losses, kind="stable")][: left[g] - below]

        def key(kind: int, index: int) -> tuple[float, float] | None:
            """(loss per cost saved, minus the saving): ties go to the larger saving."""
            if kind == _BLOCK:
                units = block(index)
                if units is None:
                    return None
                loss = sum(unit_loss(u) for u in units.tolist())
                saved = sum(state.removal_saving(u) for u in units.tolist())
            elif kind == _BITS:
                b = unit_bits[index]
                if b <= low or not self.owners[index]:
                    return None
                j = self._level(b)
                loss = self.unit_distortion[index, j - 1] - self.unit_distortion[index, j]
                saved = state.bits_saving(index, j)
            elif kind == _FREE:
                b = layer_bits[index]
                if b <= low or not self.free[index]:
                    return None
                j = self._level(b)
                loss = self.free_distortion[index, j - 1] - self.free_distortion[index, j]
                drop = self.free_cost[index, j] - self.free_cost[index, j - 1]
                saved = state.coef[index] * state.weights[index] * drop
            else:
                g = self.units.group_of[index]
                if unit_bits[index] == 0 or left[g] <= self.min_keep[g]:
                    return None
                held = self.unit_distortion[index, self._level(unit_bits[index])]
                loss = max(self.importance[index] - held, 0.0)
                saved = state.removal_saving(index)
            return (max(loss, 0.0) / saved, -saved) if saved > 0 else None

        heap: list[tuple[tuple[float, float], int, int]] = []
        for kind, count in ((_BITS, self.units.count), (_FREE, self.layout.layer_count)):
            for index in range(count):
                if (k := key(kind, index)) is not None:
                    heap.append((k, kind, index))
        for move in dict.fromkeys(removal(u) for u in range(self.units.count)):
            if (k := key(*move)) is not None:
                heap.append((k, *move))
        heapq.heapify(heap)
        while state.cost > budget and heap:
            k, kind, index = heapq.heappop(heap)
            fresh = key(kind, index)
            if fresh is None:
                continue
            if heap and fresh[0] > k[0] * (1 + 1e-9) and fresh > heap[0][0]:
                heapq.heappush(heap, (fresh, kind, index))
                continue
            if kind == _BITS:
                state.set_unit_bits(index, self.levels[self._level(unit_bits[index]) - 1])
            elif kind == _FREE:
                state.set_free_bits(index, self.levels[self._level(layer_bits[index]) - 1])
            elif kind == _BLOCK:
                units = block(index)
                state.remove(*units.tolist())
                left[index] -= len(units)
            else:
                state.remove(index)
                left[self.units.group_of[index]] -= 1
            if kind == _FREE:
                follows = [(_FREE, index)]
            elif kind == _BLOCK:
                follows = [(_BLOCK, index)]
            else:
                follows = [(_BITS, index), removal(index)]
            for follow in follows:
                if (k := key(*follow)) is not None:
                    heapq.heappush(heap, (k, *follow))
        if state.cost > budget * (1 + 1e-9):
            raise BudgetError(
                f"the action wall cannot bring the policy within the budget ({budget:.4g}); "
                f"the smallest reached is {state.cost:.4g}: raise the budget, max_sparsity, or "
                "lower the bit range",
                min_cost=state.cost,
            )
        if self.fill:
            self._fill(state, budget)
        return ChannelPlan(unit_bits, layer_bits)

    def _fill(self, state: _WallState, budget: float) -> None:
        """Raise kept channels' bits, most error removed per cost added first, while each
        raise fits in ``budget`` (a raise that does not fit now never will: costs only
        grow). Raising bits leaves the layers' widths alone, so every raise keeps its price."""
        top = len(self.levels) - 1

        def move(kind: int, index: int) -> tuple[float, float, int, int] | None:
            if kind == _BITS:
                b = state.unit_bits[index]
                if b <= 0 or not self.owners[index] or self._level(b) >= top:
                    return None
                j = self._level(b)
                gain = self.unit_distortion[index, j] - self.unit_distortion[index, j + 1]
                added = state.bits_saving(index, j + 1)
            else:
                b = state.layer_bits[index]
                if not self.free[index] or self._level(b) >= top:
                    return None
                j = self._level(b)
                gain = self.free_distortion[index, j] - self.free_distortion[index, j + 1]
                drop = self.free_cost[index, j + 1] - self.free_cost[index, j]
                added = state.coef[index] * state.weights[index] * drop
            if added <= 0 or gain <= 0:
                return None
            return (-gain / added, added, kind, index)

        heap = [
            m
            for kind, count in ((_BITS, self.units.count), (_FREE, self.layout.layer_count))
            for index in range(count)
            if (m := move(kind, index)) is not None
        ]
        heapq.heapify(heap)
        cost = state.cost
        while heap:
            _, added, kind, index = heapq.heappop(heap)
            if cost + added > budget:
                continue
            if kind == _BITS:
                up = self.levels[self._level(state.unit_bits[index]) + 1]
                state.set_unit_bits(index, up)
            else:
                state.set_free_bits(index, self.levels[self._level(state.layer_bits[index]) + 1])
            cost += added
            if (m := move(kind, index)) is not None:
                heapq.heappush(heap, m)


class _WallState:
    """The plan's per-layer cost sums (bits, times the code share when counted) and channel
    weights, updated move by move."""

    def __init__(
        self, wall: ActionWall, unit_bits: np.ndarray, layer_bits: np.ndarray, coef: np.ndarray
    ) -> None:
        self.wall = wall
        self.coef = coef
        self.unit_bits, self.layer_bits = unit_bits, layer_bits
        self._measure()

    def _measure(self) -> None:
        plan = ChannelPlan(self.unit_bits, self.layer_bits)
        bits = self.wall.layout.cost_bits(plan, self.wall.share)
        self.sums = np.array([b.sum() for b in bits], dtype=np.float64)
        self.weights = self.wall.cm.channel_weights(plan.removed)

    @property
    def cost(self) -> float:
        return float((self.coef * self.weights * self.sums).sum())

    def _unit_cost(self, u: int, j: int) -> float:
        return float(
            sum(self.coef[i] * self.weights[i] * table[j] for i, table in self.wall.owners[u])
        )

    def bits_saving(self, u: int, j: int) -> float:
        """What lowering unit ``u`` from level ``j`` to ``j - 1`` saves."""
        return self._unit_cost(u, j) - self._unit_cost(u, j - 1)

    def removal_saving(self, u: int) -> float:
        """The cost a removal saves: its channels' bits, and its share of the layers it
        narrows along their other axes."""
        saved = (
            self._unit_cost(u, self.wall._level(self.unit_bits[u])) if self.unit_bits[u] else 0.0
        )
        cm = self.wall.cm
        axes = self.wall.layout.axes
        kept = cm.kept(self.unit_bits == 0)
        for a, width in cm.unit_axes[u]:
            axis = cm.axes[a]
            if axis.dim != axes[axis.layer] and kept[a] > 0:
                layer = axis.layer
                layer_cost = self.coef[layer] * self.weights[layer] * self.sums[layer]
                saved += layer_cost * width / kept[a]
        return float(saved)

    def set_unit_bits(self, u: int, bits: float) -> None:
        j, k = self.wall._level(self.unit_bits[u]), self.wall._level(bits)
        for i, table in self.wall.owners[u]:
            self.sums[i] -= table[j] - table[k]
        self.unit_bits[u] = bits

    def set_free_bits(self, layer: int, bits: float) -> None:
        j, k = self.wall._level(self.layer_bits[layer]), self.wall._level(bits)
        self.sums[layer] -= self.wall.free_cost[layer, j] - self.wall.free_cost[layer, k]
        self.layer_bits[layer] = bits

    def remove(self, *units: int) -> None:
        for u in units:
            self.unit_bits[u] = 0.0
        self._measure()
