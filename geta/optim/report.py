"""What a compression achieved: budget, cost, the papers' ratio (the speed-up for latency),
per-layer bits and sparsity."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from geta.optim.budget import Budget
from geta.optim.cost import FLOAT_BITS, CostModel
from geta.quant.codes import channel_code_bits, channel_nonzeros, quantized_codes
from geta.quant.prepare import QuantizableLayer, quantizable_layers
from geta.quant.ratio import papers_ratio, real_ratio, speedup

__all__ = [
    "LayerReport",
    "CompressionReport",
    "measure_layers",
    "measured_cost",
    "report_against",
]


@dataclass(frozen=True)
class LayerReport:
    name: str
    dense_shape: tuple[int, ...]
    shape: tuple[int, ...]
    dense_numel: int
    nonzeros: int
    bits: int
    payload: int | None = None  # bits of the nonzero codes: sum over channels of bits x nonzeros
    bit_histogram: dict[int, int] = field(default_factory=dict)  # channels at each bit-width
    structural: int | None = None  # weights left once all-zero slices are removed (latency)
    outputs: int | None = None  # output features with a nonzero weight (latency)

    @property
    def density(self) -> float:
        return self.nonzeros / max(self.dense_numel, 1)

    @property
    def payload_bits(self) -> float:
        """What the layer's weights cost: ``payload``, or ``bits x nonzeros`` without it."""
        return float(self.payload if self.payload is not None else self.bits * self.nonzeros)

    @property
    def bits_label(self) -> str:
        """``"4"`` for one bit-width, ``"2:10 4:6"`` (bits:channels) for mixed precision."""
        if len(self.bit_histogram) <= 1:
            return str(self.bits)
        return " ".join(f"{b}:{n}" for b, n in sorted(self.bit_histogram.items()))


@dataclass
class CompressionReport:
    """Returned by :meth:`geta.Compressor.report`; ``str()`` gives a table, ``to_dict()``
    JSON-ready values."""

    mode: str
    budget: str
    metric: str
    target: float | None
    achieved: float
    dense_cost: float
    layers: list[LayerReport]
    removed_units: int = 0
    total_units: int = 0
    stage: str = ""
    artifact_bytes: int | None = None
    fp32_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    measured: float | None = None  # latency: the deployed model's measured milliseconds

    @property
    def ratio(self) -> float:
        """The papers' ratio: dense fp32 cost / achieved cost (for latency, the predicted
        speed-up: ``target``, ``achieved`` and ``dense_cost`` are then milliseconds)."""
        if self.metric == "latency":
            return speedup(self.dense_cost, self.achieved)
        return papers_ratio(self.dense_cost, self.achieved)

    @property
    def measured_speedup(self) -> float | None:
        """Latency: the dense model's measured time over the deployed model's."""
        return speedup(self.dense_cost, self.measured) if self.measured else None

    @property
    def measured_within_budget(self) -> bool | None:
        """Latency: whether the deployed model's measured time is within the budget (the
        plan holds the predicted time; ``None`` before :meth:`geta.Compressor.finalize`)."""
        if self.measured is None or self.target is None:
            return None
        return self.measured <= self.target

    @property
    def within_budget(self) -> bool:
        return self.target is None or self.achieved <= self.target * (1 + 1e-9)

    @property
    def real_ratio(self) -> float | None:
        """fp32 bytes of the model / bytes of the artifact on disk (``None`` before export)."""
        return real_ratio(self.fp32_bytes, self.artifact_bytes)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(ratio=self.ratio, within_budget=self.within_budget, real_ratio=self.real_ratio)
        if self.metric == "latency":
            out["measured_speedup"] = self.measured_speedup
            out["measured_within_budget"] = self.measured_within_budget
        return out

    def __str__(self) -> str:
        unit = {"size": "bits", "bops": "BOPs", "latency": "ms"}[self.metric]
        lines = [
            f"mode {self.mode}, budget {self.budget}, stage {self.stage or '-'}",
            f"{'layer':<36} {'shape':>18} {'density':>8} {'bits':>4}",
        ]
        for r in self.layers:
            shape = "x".join(map(str, r.shape))
            lines.append(f"{r.name:<36} {shape:>18} {r.density:>8.1%} {r.bits_label:>4}")
        target = f"{self.target:.4g}" if self.target is not None else "none"
        way = "faster (predicted)" if self.metric == "latency" else "the papers' way"
        lines.append(
            f"achieved {self.achieved:.4g} {unit} (budget {target}): {self.ratio:,.2f}x {way}; "
            f"{'within' if self.within_budget else 'OVER'} budget; "
            f"{self.removed_units} of {self.total_units} units removed"
        )
        if self.measured is not None:
            lines.append(
                f"measured {self.measured:.4g} ms deployed vs {self.dense_cost:.4g} ms dense: "
                f"{self.measured_speedup:,.2f}x faster"
                + (
                    ""
                    if self.measured_within_budget is not False
                    else "; OVER budget when measured"
                )
            )
        if self.real_ratio is not None:
            lines.append(
                f"artifact {self.artifact_bytes:,} bytes vs {self.fp32_bytes:,} fp32 bytes: "
                f"{self.real_ratio:,.1f}x real"
            )
        return "\n".join(lines)


@torch.no_grad()
def _measure(
    layers: list[QuantizableLayer], dense_shapes: list[tuple[int, ...]]
) -> tuple[list[LayerReport], np.ndarray, np.ndarray]:
    rows = []
    for layer, dense_shape in zip(layers, dense_shapes, strict=True):
        w = layer.weight
        q = layer.quantizer
        if q is not None:
            codes, _ = quantized_codes(w, q)
            nonzeros = int(np.count_nonzero(codes))
            channel_bits = channel_code_bits(codes, q)
            per_channel = channel_nonzeros(codes, q)
            if q.per_channel:
                histogram = dict(Counter(int(b) for b in channel_bits.tolist()))
            else:
                histogram = {int(channel_bits[0]): int(codes.shape[q.axis % codes.ndim])}
            payload = int((channel_bits * per_channel).sum())
            bits = int(channel_bits.max())
        else:
            nonzeros = int(torch.count_nonzero(w).item())
            bits, payload = FLOAT_BITS, FLOAT_BITS * nonzeros
            histogram = {FLOAT_BITS: int(w.shape[layer.kind.channel_axis % w.dim()])}
        rows.append(
            LayerReport(
                layer.name,
                tuple(dense_shape),
                tuple(w.shape),
                int(np.prod(dense_shape)),
                nonzeros,
                bits,
                payload,
                histogram,
                structural_nonzeros(w),
                kept_slices(w, layer.kind.output_axis),
            )
        )
    nnz = np.array([r.nonzeros for r in rows], dtype=np.float64)
    bits = np.array([r.bits for r in rows], dtype=np.float64)
    return rows, nnz, bits


def structural_nonzeros(weight: torch.Tensor) -> int:
    """The weights a dense kernel still computes once every all-zero slice (along any dim) is
    cut out: the product over dims of the slices holding a nonzero."""
    count = 1
    for d in range(weight.dim()):
        count *= kept_slices(weight, d)
    return count


def kept_slices(weight: torch.Tensor, dim: int) -> int:
    """Slices of ``weight`` along ``dim`` holding a nonzero."""
    nonzero = weight.detach() != 0
    dim = dim % nonzero.dim()
    others = [i for i in range(nonzero.dim()) if i != dim]
    return int(nonzero.any(dim=others).sum()) if others else int(nonzero.sum())


def measure_layers(cost_model: CostModel) -> tuple[list[LayerReport], np.ndarray, np.ndarray]:
    """Each counted layer as it is now: nonzero quantized codes (or nonzero floats), bits (the
    largest channel's) and payload (each channel's bits x its nonzero codes). Returns the
    rows, and the nonzeros and bits as arrays."""
    return _measure(cost_model.layers, cost_model.shapes)


def report_against(
    model: nn.Module,
    reference: nn.Module,
    *,
    mode: str,
    budget: Budget,
    positions: dict[str, float] | None = None,
) -> CompressionReport:
    """The report of any compressed ``model`` (quantized with geta's quantizers, pruned in
    place by any tool) against its dense ``reference``, layers matched by name: what a
    compression made outside geta's optimizers (a baseline, say) is measured exactly as
    :meth:`geta.Compressor.report` measures geta's. ``positions`` (MACs per weight of each
    layer, :func:`geta.optim.cost.output_positions` of the reference) is needed for a BOPs
    budget; activation bits count 32 where a layer has no input quantizer."""
    if budget.metric == "latency":
        raise ValueError(
            "a latency report needs the machine's measured table: compress with "
            "geta.Compressor(budget=Budget.latency(...)) and read its report()"
        )
    if budget.metric == "bops" and positions is None:
        raise ValueError("a BOPs budget needs the layers' positions (output_positions)")
    dense = {layer.name: tuple(layer.weight.shape) for layer in quantizable_layers(reference)}
    layers = [layer for layer in quantizable_layers(model) if layer.name in dense]
    rows, nnz, bits = _measure(layers, [dense[layer.name] for layer in layers])
    numel = np.array([r.dense_numel for r in rows], dtype=np.float64)
    if budget.metric == "size":
        coef, dense_coef = np.ones(len(rows)), np.ones(len(rows))
    else:
        pos = np.array([float(positions.get(r.name, 1.0)) for r in rows])
        act = np.array(
            [
                float(torch.ceil(q.bits().detach().max()))
                if (q := getattr(layer.module, "input_quantizer", None)) is not None
                else FLOAT_BITS
                for layer in layers
            ]
        )
        coef, dense_coef = pos * act, pos * FLOAT_BITS
    dense_cost = float((dense_coef * FLOAT_BITS * numel).sum())
    return CompressionReport(
        mode=mode,
        budget=str(budget),
        metric=budget.metric,
        target=budget.target(dense_cost),
        achieved=measured_cost(None, rows, coef),
        dense_cost=dense_cost,
        layers=rows,
        stage="finalized",
        fp32_bytes=sum(4 * t.numel() for t in reference.state_dict().values()),
    )


def measured_cost(
    cost_model: CostModel | None,
    rows: list[LayerReport] | None = None,
    coef: np.ndarray | None = None,
) -> float:
    """The model's cost now, in the budget's unit: per layer, each channel's bits x its
    nonzero quantized codes (x MACs and activation bits for BOPs: ``coef``, the cost model's
    coefficients by default); for latency, the layers' plan-dependent milliseconds (their
    kernel's time per weight x structural nonzeros, and the time between layers of their kept
    output features, :meth:`CostModel.offset` not included). ``rows`` as
    :func:`measure_layers` returns them, measured now when not given."""
    if rows is None:
        rows, _, _ = measure_layers(cost_model)
    coef = cost_model.coefficients() if coef is None else coef
    if cost_model is not None and cost_model.metric == "latency":  # kernels skip no zero code
        bits = np.array([r.bits for r in rows], dtype=np.float64)
        kept = np.array([r.structural for r in rows], dtype=np.float64)
        outputs = np.array([r.outputs for r in rows], dtype=np.float64)
        weights = (coef * cost_model.bit_cost(bits) * kept).sum()
        return float(weights + (cost_model.output_ms * outputs).sum())
    return float((coef * np.array([r.payload_bits for r in rows])).sum())
