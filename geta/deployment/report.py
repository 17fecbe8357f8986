"""What a deployed model runs on and holds in memory: one row per quantized layer (its learned
bits, the kernel that runs it, the bits rounding up to that kernel costs) and the bytes of the
module's tensors in RAM, next to the artifact's file size."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from geta.export.artifact import MANIFEST, WEIGHTS

__all__ = [
    "DeployReport",
    "LayerDeployment",
    "artifact_bytes",
    "deployment_report",
    "weight_memory_bytes",
]

KERNEL_BITS = {
    "int4": 4,
    "int8": 8,
    "int8-dynamic": 8,
    "int4-storage": 4,
    "int8-storage": 8,
    "float": 32,
}


@dataclass(frozen=True)
class LayerDeployment:
    """One quantized layer as deployed.

    ``learned_bits``: its channels' storage bits as a histogram (``{bits: channels}``);
    ``kernel``: ``int4`` / ``int8`` (torch's packed integer matmul), ``int8-dynamic``
    (int8 activations too), ``int4-storage`` / ``int8-storage`` (codes held at that width,
    dequantized into a float op at each call) or ``float``; ``rounding_bits``: the bits the kernel width
    adds over the learned bits, summed over the layer's weights."""

    name: str
    kernel: str
    learned_bits: dict[int, int]
    numel: int
    rounding_bits: int

    @property
    def kernel_bits(self) -> int:
        return KERNEL_BITS[self.kernel]


@dataclass
class DeployReport:
    """The layers of a deployed model and its weight memory."""

    backend: str
    layers: list[LayerDeployment] = field(default_factory=list)
    weight_bytes: int = 0  # bytes of the deployed module's tensors (and packed weights) in RAM
    float_bytes: int = 0  # the same model with every tensor in float32
    file_bytes: int | None = None  # the artifact's bytes on disk, when deployed from one

    @property
    def rounding_bits(self) -> int:
        return sum(layer.rounding_bits for layer in self.layers)

    def kernels(self) -> dict[str, int]:
        """How many layers run on each kernel."""
        out: dict[str, int] = {}
        for layer in self.layers:
            out[layer.kernel] = out.get(layer.kernel, 0) + 1
        return out

    def to_dict(self) -> dict:
        return {
            "backend": self.backend,
            "weight_bytes": self.weight_bytes,
            "float_bytes": self.float_bytes,
            "file_bytes": self.file_bytes,
            "rounding_bits": self.rounding_bits,
            "kernels": self.kernels(),
            "layers": [
                {
                    "name": r.name,
                    "kernel": r.kernel,
                    "learned_bits": {str(b): n for b, n in r.learned_bits.items()},
                    "numel": r.numel,
                    "rounding_bits": r.rounding_bits,
                }
                for r in self.layers
            ],
        }

    def __str__(self) -> str:
        lines = [f"{'layer':<32} {'learned bits':<16} {'kernel':<13} {'+bits':>9}"]
        for r in self.layers:
            learned = " ".join(f"{b}:{n}" for b, n in sorted(r.learned_bits.items()))
            lines.append(f"{r.name:<32} {learned:<16} {r.kernel:<13} {r.rounding_bits:>9,}")
        lines.append(
            f"weights in RAM: {self.weight_bytes:,} B (float32: {self.float_bytes:,} B, "
            f"{self.float_bytes / max(self.weight_bytes, 1):.1f}x smaller)"
            + (f"; file: {self.file_bytes:,} B" if self.file_bytes is not None else "")
            + f"; rounding to kernel widths costs {self.rounding_bits / 8:,.0f} B"
        )
        return "\n".join(lines)


def weight_memory_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s parameters and buffers (each storage once), plus the packed
    weights kernels hold outside them (``packed_bytes()``)."""
    seen, total = set(), 0
    for tensor in [*model.parameters(), *model.buffers()]:
        key = (tensor.untyped_storage().data_ptr(), tensor.device)
        if key in seen:
            continue
        seen.add(key)
        total += tensor.untyped_storage().nbytes()
    for module in model.modules():
        packed = getattr(module, "packed_bytes", None)
        if callable(packed):
            total += int(packed())
    return total


def deployment_report(
    model: nn.Module, backend: str, float_bytes: int, artifact: str | Path | None = None
) -> DeployReport:
    """The report of a model :func:`geta.deploy` converted: one row per layer that carries a
    ``deployment`` record (set by the converter)."""
    rows = [
        m.deployment
        for m in model.modules()
        if isinstance(getattr(m, "deployment", None), LayerDeployment)
    ]
    file_bytes = artifact_bytes(artifact) if artifact is not None else None
    return DeployReport(backend, rows, weight_memory_bytes(model), float_bytes, file_bytes)


def artifact_bytes(path: str | Path) -> int:
    """An artifact's bytes on disk: its manifest and weights (not the optional program)."""
    return sum((Path(path) / name).stat().st_size for name in (MANIFEST, WEIGHTS))
