"""What a compression achieved: budget, cost, the papers' ratio, per-layer bits and sparsity."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from geta.export.artifact import quantized_codes
from geta.export.size import code_bits
from geta.optim.cost import FLOAT_BITS, CostModel

__all__ = ["LayerReport", "CompressionReport", "measure_layers", "measured_cost"]


@dataclass(frozen=True)
class LayerReport:
    name: str
    dense_shape: tuple[int, ...]
    shape: tuple[int, ...]
    dense_numel: int
    nonzeros: int
    bits: int

    @property
    def density(self) -> float:
        return self.nonzeros / max(self.dense_numel, 1)


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

    @property
    def ratio(self) -> float:
        """The papers' ratio: dense fp32 cost / achieved cost."""
        return self.dense_cost / max(self.achieved, 1e-30)

    @property
    def within_budget(self) -> bool:
        return self.target is None or self.achieved <= self.target * (1 + 1e-9)

    @property
    def real_ratio(self) -> float | None:
        if self.artifact_bytes and self.fp32_bytes:
            return self.fp32_bytes / self.artifact_bytes
        return None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(ratio=self.ratio, within_budget=self.within_budget, real_ratio=self.real_ratio)
        return out

    def __str__(self) -> str:
        unit = "bits" if self.metric == "size" else "BOPs"
        lines = [
            f"mode {self.mode}, budget {self.budget}, stage {self.stage or '-'}",
            f"{'layer':<36} {'shape':>18} {'density':>8} {'bits':>4}",
        ]
        for r in self.layers:
            shape = "x".join(map(str, r.shape))
            lines.append(f"{r.name:<36} {shape:>18} {r.density:>8.1%} {r.bits:>4}")
        target = f"{self.target:.4g}" if self.target is not None else "none"
        lines.append(
            f"achieved {self.achieved:.4g} {unit} (budget {target}): {self.ratio:,.1f}x the papers' "
            f"way; {'within' if self.within_budget else 'OVER'} budget; "
            f"{self.removed_units} of {self.total_units} units removed"
        )
        if self.real_ratio is not None:
            lines.append(
                f"artifact {self.artifact_bytes:,} bytes vs {self.fp32_bytes:,} fp32 bytes: "
                f"{self.real_ratio:,.1f}x real"
            )
        return "\n".join(lines)


@torch.no_grad()
def measure_layers(cost_model: CostModel) -> tuple[list[LayerReport], np.ndarray, np.ndarray]:
    """Each counted layer as it is now: nonzero quantized codes (or nonzero floats) and bits.
    Returns the rows, and the nonzeros and bits as arrays."""
    rows = []
    for i, layer in enumerate(cost_model.layers):
        w = layer.weight
        if layer.quantizer is not None:
            codes, _ = quantized_codes(w, layer.quantizer)
            nonzeros = int(np.count_nonzero(codes))
            bits = code_bits(codes, layer.quantizer.storage_bits())
        else:
            nonzeros = int(torch.count_nonzero(w).item())
            bits = FLOAT_BITS
        rows.append(
            LayerReport(
                layer.name,
                cost_model.shapes[i],
                tuple(w.shape),
                int(cost_model.numel[i]),
                nonzeros,
                bits,
            )
        )
    nnz = np.array([r.nonzeros for r in rows], dtype=np.float64)
    bits = np.array([r.bits for r in rows], dtype=np.float64)
    return rows, nnz, bits


def measured_cost(
    cost_model: CostModel, nonzeros: np.ndarray | None = None, bits: np.ndarray | None = None
) -> float:
    """The model's cost now, in the budget's unit: nonzero quantized codes x bits per layer
    (x MACs and activation bits for BOPs). ``nonzeros`` and ``bits`` as
    :func:`measure_layers` returns them, measured now when not given."""
    if nonzeros is None or bits is None:
        _, nonzeros, bits = measure_layers(cost_model)
    return float((cost_model.coefficients() * bits * nonzeros).sum())
