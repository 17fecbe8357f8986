"""Size accounting, the papers' way and in real bytes.

Counted layers: the weights of every quantizable layer kind (conv, linear, embedding; see
:mod:`geta.quant.prepare`). Biases, norm parameters and statistics are left out of the
papers' ratio, as the papers do; they are in the real bytes.

    papers' ratio = 32 * sum(numel) / sum(bits * nonzeros)

``numel`` is taken from ``reference`` (the dense model before pruning) when given, so removed
channels count as compressed away; otherwise from the model itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch
from torch import nn
from torch.nn.utils import parametrize

from geta.export.artifact import MANIFEST, WEIGHTS, read_manifest
from geta.quant.codes import code_bits, quantized_codes
from geta.quant.prepare import _kind_of, weight_quantizers
from geta.quant.ratio import FLOAT_BITS, papers_ratio, real_ratio

__all__ = ["LayerSize", "SizeReport", "size_report"]


@dataclass(frozen=True)
class LayerSize:
    name: str
    numel: int
    nonzeros: int
    bits: int

    @property
    def bytes(self) -> float:
        return self.bits * self.nonzeros / 8


@dataclass(frozen=True)
class SizeReport:
    layers: tuple[LayerSize, ...]
    artifact_bytes: int | None
    reference_fp32_bytes: int

    @property
    def numel(self) -> int:
        return sum(r.numel for r in self.layers)

    @property
    def nonzeros(self) -> int:
        return sum(r.nonzeros for r in self.layers)

    @property
    def weight_bits(self) -> float:
        return sum(r.bits * r.nonzeros for r in self.layers)

    @property
    def paper_ratio(self) -> float:
        """32 * sum numel / sum bits * nonzeros (index and codebook overhead ignored)."""
        return papers_ratio(FLOAT_BITS * self.numel, self.weight_bits)

    @property
    def average_bits(self) -> float:
        return self.weight_bits / max(self.nonzeros, 1)

    @property
    def real_ratio(self) -> float | None:
        """fp32 safetensors bytes of the reference model / bytes of the artifact on disk."""
        return real_ratio(self.reference_fp32_bytes, self.artifact_bytes)

    def __str__(self) -> str:
        lines = [f"{'layer':<32} {'numel':>10} {'nonzeros':>10} {'bits':>4} {'bytes':>12}"]
        for r in self.layers:
            lines.append(
                f"{r.name:<32} {r.numel:>10,} {r.nonzeros:>10,} {r.bits:>4} {r.bytes:>12,.0f}"
            )
        lines.append(
            f"{'total':<32} {self.numel:>10,} {self.nonzeros:>10,} {self.average_bits:>4.1f} {self.weight_bits / 8:>12,.0f}"
        )
        lines.append(
            f"papers' ratio: {self.paper_ratio:,.1f}x ({self.nonzeros / max(self.numel, 1):.2%} nonzeros)"
        )
        if self.artifact_bytes is not None:
            lines.append(
                f"real bytes: {self.artifact_bytes:,} on disk vs {self.reference_fp32_bytes:,} fp32 "
                f"safetensors: {self.real_ratio:,.1f}x"
            )
        return "\n".join(lines)


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, module in model.named_modules():
        kind = _kind_of(module)
        if kind is None:
            continue
        if parametrize.is_parametrized(module, kind.param):
            tensor = getattr(module.parametrizations, kind.param).original
        else:
            tensor = getattr(module, kind.param, None)
        if isinstance(tensor, torch.Tensor):
            out[f"{name}.{kind.param}" if name else kind.param] = tensor
    return out


def size_report(
    model: nn.Module, artifact: str | Path | None = None, reference: nn.Module | None = None
) -> SizeReport:
    """Per-layer numel, nonzeros, bits and bytes, the papers' ratio, and (with ``artifact``)
    the real bytes on disk against the fp32 safetensors of ``reference`` (default: ``model``
    itself, as float)."""
    quantizers = {f"{k}.weight" if k else "weight": q for k, q in weight_quantizers(model).items()}
    reference_weights = _weights(reference) if reference is not None else {}
    manifest = read_manifest(artifact) if artifact is not None else None
    rows = []
    for name, tensor in _weights(model).items():
        q = quantizers.get(name)
        if q is not None:
            codes, _ = quantized_codes(tensor, q)
            nonzeros = int((codes != 0).sum())
            bits = code_bits(
                codes,
                manifest["tensors"][name]["bits"]
                if manifest
                else max(1, int(torch.ceil(q.bits().max()).item())),
            )
        else:
            nonzeros = int(torch.count_nonzero(tensor.detach()).item())
            bits = torch.finfo(tensor.dtype).bits if tensor.is_floating_point() else 32
        numel = reference_weights[name].numel() if name in reference_weights else tensor.numel()
        rows.append(LayerSize(name, numel, nonzeros, bits))
    source = reference if reference is not None else model
    from geta.export.artifact import _float_state

    float_state = {
        k: v.detach().float().cpu().contiguous() for k, v in _float_state(source)[0].items()
    }
    fp32_bytes = len(safetensors.torch.save(float_state))
    artifact_bytes = None
    if artifact is not None:
        artifact = Path(artifact)
        artifact_bytes = (artifact / MANIFEST).stat().st_size + (artifact / WEIGHTS).stat().st_size
    return SizeReport(tuple(rows), artifact_bytes, fp32_bytes)
