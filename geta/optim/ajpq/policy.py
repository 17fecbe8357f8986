"""AJPQ's two controllers over the graph: what the layer controller sees of each layer (its
state), and how the channel controller turns a layer's action into per-unit bits.

The layer controller visits the counted layers in topological order. Its action for a layer is
``(share, level)`` in ``[0, 1]^2``: the share of the layer's units that get 0 bits (times
``max_sparsity``) and the layer's bit level (rounded onto ``bit_range``). The channel controller
ranks the layer's units by the shared importance: the least important ``share`` get 0 bits
(pruned), the rest ``level - spread .. level + spread`` bits in equal-count bands, more bits to
the more important. A unit belongs to the first layer (in topological order) whose channels it
owns, so coupled channels (one unit of a group across several layers) share one choice. With
channel alignment (``AjpqConfig.channel_multiple``) the cut is rounded so that each group keeps
an allowed count (:func:`geta.optim.alignment.nearest_allowed`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from geta.optim.alignment import nearest_allowed
from geta.optim.channel_bits import ChannelLayout, ChannelPlan
from geta.optim.problem import CompressionProblem

__all__ = ["LayerPolicy", "layer_order", "static_features", "STATE_SIZE", "ACTION_SIZE"]

ACTION_SIZE = 2  # (share of 0-bit units, bit level)
_STATIC = 11
_DYNAMIC = 3 + ACTION_SIZE  # budget used, budget left, cost of the rest at most bits, last action
STATE_SIZE = _STATIC + _DYNAMIC


def layer_order(problem: CompressionProblem) -> list[int]:
    """The counted layers in topological order: the position of each weight's first use in
    the captured program (module order for a weight the program does not show)."""
    program = problem.graph.program
    target_of = {
        spec.arg.name: spec.target
        for spec in program.graph_signature.input_specs
        if getattr(spec.arg, "name", None) is not None and spec.target is not None
    }
    first_use: dict[str, int] = {}
    for position, node in enumerate(program.graph.nodes):
        if node.op == "placeholder":
            continue
        for arg in node.all_input_nodes:
            target = target_of.get(arg.name)
            if target is not None:
                first_use.setdefault(target, position)
    layers = problem.cost_model.layers
    fallback = len(program.graph.nodes)
    return sorted(
        range(len(layers)), key=lambda i: (first_use.get(layers[i].tensor_name, fallback), i)
    )


def static_features(
    problem: CompressionProblem, order: list[int], positions: dict[str, float] | None = None
) -> np.ndarray:
    """``[layers, _STATIC]`` HAQ/AMC-style layer descriptions, min-max normalised over layers:
    position, conv / linear / embedding / grouped flags, input and output units, kernel size,
    stride, log parameters, log MACs per sample (``positions``: MACs per weight of each layer,
    :func:`geta.optim.cost.output_positions`; the cost model's when not given)."""
    cm = problem.cost_model
    macs_per_weight = {
        name: float(positions.get(name, p)) if positions is not None else float(p)
        for name, p in zip(cm.names, cm.positions, strict=True)
    }
    rows = []
    for rank, i in enumerate(order):
        layer = cm.layers[i]
        shape = cm.shapes[i]
        module: nn.Module = layer.module
        embedding = layer.kind.embedding
        groups = int(getattr(module, "groups", 1) or 1)
        stride = getattr(module, "stride", (1,))
        stride = stride[0] if isinstance(stride, tuple) else stride
        kernel = int(np.prod(shape[2:])) if len(shape) > 2 else 1
        rows.append(
            [
                rank / max(len(order) - 1, 1),
                float(len(shape) > 2 and not embedding),
                float(len(shape) == 2 and not embedding),
                float(embedding),
                float(groups > 1),
                np.log1p(shape[1] * groups if len(shape) > 1 else 1),
                np.log1p(shape[0]),
                np.log1p(kernel),
                float(stride),
                np.log1p(cm.numel[i]),
                np.log1p(cm.numel[i] * macs_per_weight[layer.name]),
            ]
        )
    table = np.asarray(rows, dtype=np.float64)
    low, high = table.min(0), table.max(0)
    span = np.where(high > low, high - low, 1.0)
    return (table - low) / span


@dataclass
class LayerPolicy:
    """The channel controller for one problem: which units each layer decides, their
    importance ranking, and the minimum each group keeps (aligned to the problem's
    ``unit_multiple``)."""

    layout: ChannelLayout
    order: list[int]
    importance: np.ndarray
    bit_levels: tuple[int, ...]
    max_sparsity: float
    spread: int

    def __post_init__(self) -> None:
        problem = self.layout.problem
        units = problem.units
        self.min_keep = problem.aligned_min_keep(self.max_sparsity)
        self.multiple = problem.unit_multiple
        decided = np.zeros(units.count, dtype=bool)
        self.owned: dict[int, np.ndarray] = {}
        for i in self.order:
            channel_units = self.layout.channel_unit[i]
            mine = np.unique(channel_units[channel_units >= 0])
            mine = mine[~decided[mine]]
            decided[mine] = True
            self.owned[i] = mine

    def level(self, action: float) -> int:
        """The bit level an action in [0, 1] picks (rounded onto the bit levels)."""
        low, high = self.bit_levels[0], self.bit_levels[-1]
        return int(np.clip(round(low + float(action) * (high - low)), low, high))

    def start(self) -> ChannelPlan:
        """The plan before any action: every unit kept at the highest bits."""
        high = float(self.bit_levels[-1])
        count = self.layout.problem.units.count
        return ChannelPlan(np.full(count, high), np.full(self.layout.layer_count, high))

    def decide(self, plan: ChannelPlan, layer: int, action: np.ndarray) -> None:
        """Apply the action for ``layer`` to ``plan`` (in place): its free channels at the
        level, its units pruned and banded by importance."""
        level = self.level(action[1])
        plan.layer_bits[layer] = level
        units = self.owned[layer]
        if not units.size:
            return
        group_of = self.layout.problem.units.group_of
        low, high = self.bit_levels[0], self.bit_levels[-1]
        share = float(np.clip(action[0], 0.0, 1.0)) * self.max_sparsity
        kept_parts = []
        for g in np.unique(group_of[units]):
            members = units[group_of[units] == g]
            ranked = members[np.argsort(self.importance[members], kind="stable")]
            cut = min(int(round(share * len(ranked))), max(len(ranked) - int(self.min_keep[g]), 0))
            if self.multiple[g] > 1:
                kept = nearest_allowed(
                    len(ranked) - cut, len(ranked), int(self.min_keep[g]), int(self.multiple[g])
                )
                cut = max(len(ranked) - kept, 0)
            plan.unit_bits[ranked[:cut]] = 0.0
            kept_parts.append(ranked[cut:])
        kept = np.concatenate(kept_parts)
        kept = kept[np.argsort(self.importance[kept], kind="stable")]  # least important first
        bands = 2 * self.spread + 1
        band = (np.arange(len(kept)) * bands) // max(len(kept), 1)
        plan.unit_bits[kept] = np.clip(level - self.spread + band, low, high)
