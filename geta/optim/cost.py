"""The cost model: model size (bits x nonzeros), BOPs or latency, per layer, from the graph's
groups.

What counts: the weight of every quantizable layer (conv, linear, embedding; the layer kinds of
:mod:`geta.quant.prepare`). Biases and normalisation parameters are left out, as in the papers.
A layer without a weight quantizer counts at 32 bits.

Removing units of groups shrinks the layers they slice: a layer's structural nonzeros are
``numel * prod_d kept_d / size_d`` over its grouped dims. Costs update from a removal mask and
the bits per layer without tracing again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from geta.graph.dependency_graph import DependencyGraph
from geta.quant.prepare import QuantizableLayer, quantizable_layers
from geta.quant.ratio import FLOAT_BITS

if TYPE_CHECKING:
    from geta.deployment.latency import LatencyTable

__all__ = ["CostModel", "UnitIndex", "Axis"]


@dataclass(frozen=True)
class UnitIndex:
    """A flat numbering of every unit of every group: group ``g`` owns ids
    ``offsets[g] .. offsets[g + 1] - 1``."""

    offsets: np.ndarray
    group_of: np.ndarray
    group_ids: tuple[int, ...]

    @classmethod
    def from_graph(cls, graph: DependencyGraph) -> UnitIndex:
        sizes = np.array([g.size for g in graph.groups], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        group_of = np.repeat(np.arange(len(sizes)), sizes)
        return cls(offsets, group_of, tuple(g.id for g in graph.groups))

    @property
    def count(self) -> int:
        return int(self.offsets[-1])

    def to_plan(self, removed: np.ndarray) -> dict[int, list[int]]:
        """``{group id: removed unit indices}`` for :func:`geta.prune`."""
        plan = {}
        for i, gid in enumerate(self.group_ids):
            hit = np.nonzero(removed[self.offsets[i] : self.offsets[i + 1]])[0]
            if hit.size:
                plan[gid] = hit.tolist()
        return plan

    def from_plan(self, plan: dict[int, list[int]]) -> np.ndarray:
        removed = np.zeros(self.count, dtype=bool)
        position = {gid: i for i, gid in enumerate(self.group_ids)}
        for gid, idx in plan.items():
            removed[self.offsets[position[int(gid)]] + np.asarray(idx, dtype=np.int64)] = True
        return removed


@dataclass(frozen=True)
class Axis:
    """One grouped dim of one layer's weight: ``units`` remove ``widths`` indices each."""

    layer: int
    dim: int
    size: int
    units: np.ndarray
    widths: np.ndarray


class CostModel:
    """Per-layer size or BOPs as a function of removed units and bits.

    ``metric="size"``: ``cost = sum_l bits_l * nnz_l`` (bits).
    ``metric="bops"``: ``cost = sum_l positions_l * act_bits_l * bits_l * nnz_l`` where
    ``positions_l * numel_l`` is the layer's MAC count per sample (output positions of a conv,
    tokens of a linear layer; embeddings have none), and ``act_bits_l`` the bits of its input
    quantizer (32 without one).
    ``metric="latency"``: ``cost = sum_l slope_l(bits_l) * nnz_l + out_l * kept_out_l``
    milliseconds, the slope of the kernel the layer's bits deploy to, and the time between
    layers per kept output feature (:attr:`output_ms`), from a measured
    :class:`~geta.deployment.latency.LatencyTable`; the rest of the model's time
    (:meth:`offset`) does not depend on the plan. Everywhere a cost multiplies bits, it
    multiplies :meth:`bit_cost` of them.

    Example:
        >>> cm = CostModel(model, graph, metric="size")                      # doctest: +SKIP
        >>> cm.cost(np.zeros(cm.units.count, bool), cm.current_bits())       # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        graph: DependencyGraph,
        metric: str = "size",
        positions: dict[str, float] | None = None,
        latency: LatencyTable | None = None,
    ) -> None:
        if metric not in ("size", "bops", "latency"):
            raise ValueError(f"metric is 'size', 'bops' or 'latency', not {metric!r}")
        if metric == "latency" and latency is None:
            raise ValueError("a latency cost model needs a measured LatencyTable")
        self.metric = metric
        self.latency = latency
        self.layers: list[QuantizableLayer] = quantizable_layers(model)
        self.names = [layer.name for layer in self.layers]
        self.shapes = [tuple(layer.weight.shape) for layer in self.layers]
        self.numel = np.array([int(np.prod(s)) for s in self.shapes], dtype=np.float64)
        self.units = UnitIndex.from_graph(graph)
        self.axes = self._axes(graph)
        self.layer_axes: list[list[int]] = [[] for _ in self.layers]
        for a, axis in enumerate(self.axes):
            self.layer_axes[axis.layer].append(a)
        self.unit_axes = self._unit_axes()
        self.positions = np.array(
            [float((positions or {}).get(n, 1.0)) for n in self.names], dtype=np.float64
        )
        self.quantized = np.array([layer.quantizer is not None for layer in self.layers])
        self.output_axes = [
            layer.kind.output_axis % len(shape)
            for layer, shape in zip(self.layers, self.shapes, strict=True)
        ]
        self.output_ms, self._fixed_output_ms = self._output_costs()
        self.axis_cost = self._axis_costs()

    # ------------------------------------------------------------ structure
    def _axes(self, graph: DependencyGraph) -> list[Axis]:
        index = {layer.tensor_name: i for i, layer in enumerate(self.layers)}
        found: dict[tuple[int, int], tuple[list, list]] = {}
        for gi, group in enumerate(graph.groups):
            base = self.units.offsets[gi]
            for m in group.members:
                if m.name not in index or m.is_buffer or m.role == "quantizer":
                    continue
                units, widths = found.setdefault((index[m.name], m.dim), ([], []))
                units.append(base + np.arange(group.size))
                widths.append(np.full(group.size, m.width))
        return [
            Axis(layer, dim, self.shapes[layer][dim], np.concatenate(u), np.concatenate(w))
            for (layer, dim), (u, w) in sorted(found.items())
        ]

    def _output_costs(self) -> tuple[np.ndarray, float]:
        """Per layer, the milliseconds one kept output feature brings between layers where
        the plan can remove output features (0 elsewhere, and for size and BOPs), and the
        total of those the plan cannot change (they go to :meth:`offset`)."""
        per_layer = np.zeros(len(self.layers))
        fixed = 0.0
        if self.metric != "latency":
            return per_layer, fixed
        grouped = {(axis.layer, axis.dim) for axis in self.axes}
        for i, name in enumerate(self.names):
            row = self.latency.layers.get(name)
            if row is None or not row.output_ms:
                continue
            if (i, self.output_axes[i]) in grouped:
                per_layer[i] = row.output_ms
            else:
                fixed += row.output_ms * self.shapes[i][self.output_axes[i]]
        return per_layer, fixed

    def _axis_costs(self) -> np.ndarray:
        """What one kept index along each grouped axis costs on its own (not through the
        layer's weights): a layer's :attr:`output_ms` on its output axis, 0 elsewhere."""
        return np.array(
            [
                self.output_ms[axis.layer] if axis.dim == self.output_axes[axis.layer] else 0.0
                for axis in self.axes
            ]
        )

    def _unit_axes(self) -> list[list[tuple[int, int]]]:
        """For each unit, the ``(axis, width)`` pairs it removes."""
        out: list[list[tuple[int, int]]] = [[] for _ in range(self.units.count)]
        for a, axis in enumerate(self.axes):
            for u, w in zip(axis.units.tolist(), axis.widths.tolist(), strict=True):
                out[u].append((a, w))
        return out

    # ------------------------------------------------------------ costs
    def kept(self, removed: np.ndarray) -> np.ndarray:
        """Indices left along every grouped axis."""
        return np.array(
            [axis.size - int((removed[axis.units] * axis.widths).sum()) for axis in self.axes],
            dtype=np.float64,
        )

    def nonzeros(self, removed: np.ndarray | None = None, kept: np.ndarray | None = None):
        """Structural nonzeros per layer (what is left after removing the units)."""
        if kept is None:
            kept = self.kept(removed if removed is not None else np.zeros(self.units.count, bool))
        nnz = self.numel.copy()
        for a, axis in enumerate(self.axes):
            nnz[axis.layer] *= kept[a] / axis.size
        return nnz

    def coefficients(self, activation_bits: np.ndarray | None = None) -> np.ndarray:
        """Cost per (:meth:`bit_cost` x nonzero) of each layer."""
        if self.metric in ("size", "latency"):
            return np.ones(len(self.layers))
        act = activation_bits if activation_bits is not None else self.activation_bits()
        return self.positions * act

    def activation_bits(self) -> np.ndarray:
        bits = []
        for layer in self.layers:
            q = getattr(layer.module, "input_quantizer", None)
            bits.append(
                float(torch.ceil(q.bits().detach().max()).item()) if q is not None else FLOAT_BITS
            )
        return np.array(bits, dtype=np.float64)

    def current_bits(self) -> np.ndarray:
        """Each layer's weight bits now: the ceiling of its quantizer's largest channel, or 32."""
        return np.array(
            [
                layer.quantizer.storage_bits() if layer.quantizer is not None else FLOAT_BITS
                for layer in self.layers
            ],
            dtype=np.float64,
        )

    def bit_cost(self, bits: np.ndarray) -> np.ndarray:
        """What one kept weight of each layer costs at ``bits`` (first axis: layers; any
        trailing axes, e.g. bit options): the bits themselves for size and BOPs; for latency
        the milliseconds per weight of the kernel those bits deploy to."""
        bits = np.asarray(bits, dtype=np.float64)
        if self.metric != "latency":
            return bits
        out = np.zeros_like(bits)
        for i, name in enumerate(self.names):
            if name in self.latency.layers:  # a layer the forward never ran costs nothing
                row = bits[i]
                out[i] = np.vectorize(lambda b, n=name: self.latency.slope(n, b))(row)
        return out

    def offset(self, bits: np.ndarray | None = None) -> float:
        """The part of the cost no plan changes: for latency, the time outside the counted
        layers plus each layer's fixed time at ``bits`` (its current bits by default; with a
        second axis of bit options, the largest over them); 0 for size and BOPs."""
        if self.metric != "latency":
            return 0.0
        bits = np.asarray(self.current_bits() if bits is None else bits, dtype=np.float64)
        fixed = sum(
            max(self.latency.intercept(name, float(b)) for b in np.atleast_1d(row))
            for name, row in zip(self.names, bits, strict=True)
            if name in self.latency.layers
        )
        return float(self.latency.fixed_ms + fixed + self._fixed_output_ms)

    def cost(self, removed: np.ndarray, bits: np.ndarray, coef: np.ndarray | None = None) -> float:
        coef = self.coefficients() if coef is None else coef
        kept = self.kept(removed)
        weights = float((coef * self.bit_cost(bits) * self.nonzeros(kept=kept)).sum())
        return weights + float((self.axis_cost * kept).sum())

    def channel_axes(self) -> list[int]:
        """Each counted layer's channel axis: its quantizer's axis (the layer kind's output
        channel axis when it has no quantizer), the axis along which bits may vary."""
        return [
            layer.quantizer.axis % len(shape)
            if layer.quantizer is not None
            else layer.kind.channel_axis % len(shape)
            for layer, shape in zip(self.layers, self.shapes, strict=True)
        ]

    def channel_cost(
        self, removed: np.ndarray, channel_bits: list[np.ndarray], coef: np.ndarray | None = None
    ) -> float:
        """The cost with bits per channel (mixed precision): ``sum_l coef_l * sum_c bits_lc *
        nnz_lc``, ``nnz_lc`` a channel's structural nonzeros after the removal along the
        layer's other axes. ``channel_bits[l]`` has one value per index along the layer's
        channel axis (:meth:`channel_axes`), 0 where that channel is removed; with one value
        for every channel of a layer this is :meth:`cost`."""
        return float(self.channel_costs(removed, channel_bits, coef).sum())

    def channel_costs(
        self, removed: np.ndarray, channel_bits: list[np.ndarray], coef: np.ndarray | None = None
    ) -> np.ndarray:
        """:meth:`channel_cost` per layer."""
        coef = self.coefficients() if coef is None else coef
        sums = np.array([float(np.sum(b)) for b in channel_bits])
        return coef * self.channel_weights(removed) * sums

    def channel_weights(self, removed: np.ndarray) -> np.ndarray:
        """Structural nonzeros of one kept channel of each layer (its weights left after the
        removal along the layer's other axes)."""
        kept = self.kept(removed)
        out = np.empty(len(self.layers))
        for layer, (shape, axis) in enumerate(zip(self.shapes, self.channel_axes(), strict=True)):
            per_channel = self.numel[layer] / shape[axis]
            for a in self.layer_axes[layer]:
                if self.axes[a].dim != axis:
                    per_channel *= kept[a] / self.axes[a].size
            out[layer] = per_channel
        return out

    def dense_cost(self) -> float:
        """The fp32 model's cost: 32-bit weights (and 32-bit activations for BOPs; the float
        kernels' time and every output feature's for latency, :meth:`offset` not
        included)."""
        act = np.full(len(self.layers), float(FLOAT_BITS))
        float_bits = np.full(len(self.layers), float(FLOAT_BITS))
        weights = float((self.coefficients(act) * self.bit_cost(float_bits) * self.numel).sum())
        return weights + float(
            sum(a.size * c for a, c in zip(self.axes, self.axis_cost, strict=True))
        )


def output_positions(model: nn.Module, args: tuple, kwargs: dict | None = None) -> dict[str, float]:
    """MACs per weight of each quantizable layer, from one forward pass on ``args`` (batch on
    dim 0): a conv's output pixels, a linear layer's tokens. Embedding lookups count none."""
    layers = quantizable_layers(model)
    found: dict[str, float] = {}
    handles = []
    for layer in layers:
        if layer.kind.embedding:
            found[layer.name] = 0.0
            continue

        def hook(module, inputs, output, name=layer.name, layer=layer):
            # weight.shape[0] is the output channels of a conv/linear and the input channels of
            # a transposed conv (channel axis 1), whose MACs follow its input positions
            t = inputs[0] if layer.kind.channel_axis == 1 else output
            if isinstance(t, torch.Tensor) and t.dim() >= 2 and t.shape[0] > 0:
                found[name] = t.numel() / t.shape[0] / layer.weight.shape[0]

        handles.append(layer.module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(*args, **(kwargs or {}))
    finally:
        for h in handles:
            h.remove()
    return found
