"""Bits per channel (mixed precision) where 0 bits means removed: a group's units carry their
bit-width, every channel of a layer that belongs to a unit takes that unit's bits, the others
(channels no group can remove, such as a classifier's outputs) the layer's own bits.

Pruning a unit is quantizing it to 0 bits, so one vector of unit bits describes both what
:func:`geta.prune` removes (the 0-bit units) and how each remaining channel is quantized; coupled
channels (one unit of a group, across every layer it slices) always share one bit-width.

Example:
    >>> layout = ChannelLayout(problem)                                        # doctest: +SKIP
    >>> plan = ChannelPlan(unit_bits, layer_bits)                              # doctest: +SKIP
    >>> layout.cost(plan) <= problem.target                                    # doctest: +SKIP
    >>> layout.apply(plan)           # zero the 0-bit units, calibrate per-channel quantizers
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from geta.errors import ConfigError
from geta.optim.problem import CompressionProblem
from geta.quant.ratio import FLOAT_BITS

__all__ = ["ChannelPlan", "ChannelLayout", "CodeShare"]


@dataclass(frozen=True)
class ChannelPlan:
    """Bits of every graph unit (0 = removed) and of every counted layer's channels that
    belong to no unit. Layers without a quantizer cost 32 bits per kept channel whatever the
    plan says."""

    unit_bits: np.ndarray
    layer_bits: np.ndarray

    @property
    def removed(self) -> np.ndarray:
        """The removal mask over units (``problem.units``): the 0-bit units."""
        return self.unit_bits == 0

    def to_dict(self) -> dict[str, list[int]]:
        return {
            "unit_bits": self.unit_bits.astype(int).tolist(),
            "layer_bits": self.layer_bits.astype(int).tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, list[int]]) -> ChannelPlan:
        return cls(
            np.asarray(data["unit_bits"], dtype=np.float64),
            np.asarray(data["layer_bits"], dtype=np.float64),
        )


@dataclass(frozen=True)
class CodeShare:
    """The share of each channel's weights whose quantized code is not zero, at each bit
    level (``tables[l]`` is ``[channels, levels]``; ones for float layers): at 2-3 bits many
    small weights round to the zero code and cost nothing, so a plan that counts every kept
    weight leaves much of the budget unused (the channel-wise form of
    :func:`geta.optim.projection.nonzero_code_share`)."""

    levels: np.ndarray
    tables: list[np.ndarray]

    def at(self, layer: int, bits: np.ndarray) -> np.ndarray:
        """The share of each channel of ``layer`` at its ``bits`` (1 where the bits are not a
        level, e.g. a float layer's 32)."""
        index = np.searchsorted(self.levels, bits)
        index = np.clip(index, 0, len(self.levels) - 1)
        hit = self.levels[index] == bits
        rows = np.arange(len(bits))
        return np.where(hit, self.tables[layer][rows, index], 1.0)


class ChannelLayout:
    """Which unit owns each channel of each counted layer (``-1``: none), along the layer's
    channel axis (its quantizer's axis), from the graph's groups."""

    def __init__(self, problem: CompressionProblem) -> None:
        self.problem = problem
        cm = problem.cost_model
        self.axes = cm.channel_axes()
        self.channel_unit: list[np.ndarray] = [
            np.full(shape[axis], -1, dtype=np.int64)
            for shape, axis in zip(cm.shapes, self.axes, strict=True)
        ]
        by_tensor = {(m.name, m.dim): m.unit_of for m in problem.masks}
        for i, layer in enumerate(cm.layers):
            unit_of = by_tensor.get((layer.tensor_name, self.axes[i]))
            if unit_of is not None:
                self.channel_unit[i] = unit_of.numpy().astype(np.int64)
        owned = np.concatenate([u[u >= 0] for u in self.channel_unit] or [np.zeros(0, np.int64)])
        # units that set some layer's channel bits; the others (e.g. a group sliced only along
        # input axes) can only be kept or removed
        self.has_bits = np.zeros(problem.units.count, dtype=bool)
        self.has_bits[owned] = True

    @property
    def layer_count(self) -> int:
        return len(self.channel_unit)

    def channel_bits(self, plan: ChannelPlan) -> list[np.ndarray]:
        """Bits of every channel of every counted layer (0 where its unit is removed)."""
        out = []
        quantized = self.problem.cost_model.quantized
        for i, units in enumerate(self.channel_unit):
            bits = np.full(units.shape, float(plan.layer_bits[i] if quantized[i] else FLOAT_BITS))
            owned = units >= 0
            if quantized[i]:
                bits[owned] = plan.unit_bits[units[owned]]
            else:  # a float layer's channels cost 32 bits, 0 once removed
                bits[owned] = np.where(plan.unit_bits[units[owned]] > 0, float(FLOAT_BITS), 0.0)
            out.append(bits)
        return out

    def cost_bits(self, plan: ChannelPlan, share: CodeShare | None = None) -> list[np.ndarray]:
        """What each channel's weights cost per structural nonzero: its bits, times the share
        of nonzero codes at those bits when ``share`` is given."""
        bits = self.channel_bits(plan)
        if share is None:
            return bits
        return [b * share.at(i, b) for i, b in enumerate(bits)]

    def cost(self, plan: ChannelPlan, share: CodeShare | None = None) -> float:
        """The plan's cost in the budget's unit (:meth:`geta.optim.CostModel.channel_cost`),
        counting only the expected nonzero codes when ``share`` is given."""
        return self.problem.cost_model.channel_cost(plan.removed, self.cost_bits(plan, share))

    @torch.no_grad()
    def apply(self, plan: ChannelPlan, low_bits: float = 2.0) -> None:
        """Make the live model the plan: zero the removed units' slices of every member
        tensor, and set each per-channel quantizer to its channels' bits with the clip that
        suits them (calibrated on the masked weight); a removed channel's quantizer keeps
        ``low_bits`` (its weights are zero, and :func:`geta.prune` removes it).

        Raises:
            ConfigError: a quantizer is per tensor while the plan gives its channels
                different bits.
        """
        for p, values in self.problem.removal_factors(plan.removed):
            p.mul_(values)
        cm = self.problem.cost_model
        for i, bits in enumerate(self.channel_bits(plan)):
            q = cm.layers[i].quantizer
            if q is None:
                continue
            bits = np.where(bits > 0, bits, low_bits)
            if not q.per_channel:
                if np.unique(bits).size > 1:
                    raise ConfigError(
                        f"layer {cm.layers[i].name} has a per-tensor quantizer: bits per channel "
                        "need per_channel=True"
                    )
                q.calibrate(cm.layers[i].weight.detach(), float(bits[0]))
            else:
                q.calibrate(cm.layers[i].weight.detach(), torch.as_tensor(bits))
