"""Putting quantizers on a model's layers, through a registry of layer kinds."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from geta.lazy_types import LazyTypes
from geta.quant.quantizer import Quantizer

__all__ = [
    "LayerKind",
    "register_layer_kind",
    "prepare",
    "attach_input_quantizer",
    "dequantized_copy",
    "bits",
    "weight_quantizers",
    "input_quantizers",
    "QuantizableLayer",
    "quantizable_layers",
]


@dataclass(frozen=True)
class LayerKind:
    """How to quantize one module type: which parameter, and its output-channel axis."""

    module_type: type
    param: str = "weight"
    channel_axis: int = 0
    embedding: bool = False

    @property
    def output_axis(self) -> int:
        """The weight axis along which the layer's output features lie: its channel axis, or
        the vector axis of an embedding table (whose channel axis is its rows)."""
        return -1 if self.embedding else self.channel_axis


_KINDS: list[LayerKind] = []


def register_layer_kind(kind: LayerKind) -> LayerKind:
    """Teach ``prepare`` a new quantizable module type (the most recent registration wins)."""
    _KINDS.insert(0, kind)
    return kind


_LAZY_KINDS: LazyTypes[dict[str, Any]] = LazyTypes()


def register_lazy_layer_kind(module_path: str, type_name: str, **fields: Any) -> None:
    """Teach ``prepare`` a module type of an optional library without importing it: the
    type is resolved (and registered with ``LayerKind(type, **fields)``) once its module has
    been imported, as it is by any model that holds one."""
    _LAZY_KINDS.add(module_path, type_name, fields)


register_layer_kind(LayerKind(nn.Linear))
register_layer_kind(LayerKind(nn.modules.conv._ConvNd))
register_layer_kind(LayerKind(nn.modules.conv._ConvTransposeNd, channel_axis=1))
register_layer_kind(LayerKind(nn.Embedding, embedding=True))
# transformers' GPT-2-style Conv1D: a linear layer stored as [in, out], outputs along dim 1
register_lazy_layer_kind("transformers.pytorch_utils", "Conv1D", channel_axis=1)


def _kind_of(module: nn.Module) -> LayerKind | None:
    if _LAZY_KINDS:
        _LAZY_KINDS.resolve(
            lambda module_type, fields: register_layer_kind(LayerKind(module_type, **fields))
        )
    for kind in _KINDS:
        if isinstance(module, kind.module_type):
            return kind
    return None


@dataclass(frozen=True)
class QuantizableLayer:
    """A layer whose weight counts towards the model size: its module name, the fully
    qualified name of the stored weight tensor (the parametrization's ``original`` when
    quantized), the module, and its weight quantizer (``None`` when not prepared)."""

    name: str
    tensor_name: str
    module: nn.Module
    kind: LayerKind
    quantizer: Quantizer | None

    @property
    def weight(self) -> torch.Tensor:
        if parametrize.is_parametrized(self.module, self.kind.param):
            return getattr(self.module.parametrizations, self.kind.param).original
        return getattr(self.module, self.kind.param)


def quantizable_layers(model: nn.Module) -> list[QuantizableLayer]:
    """Every layer of a registered kind (conv, linear, embedding, ...), in module order; a
    layer whose weight is tied to an earlier one's (a language model's output layer sharing
    the token embedding) is listed once, under the first: it is one tensor, stored and
    counted once."""
    out = []
    seen: set[int] = set()
    for name, module in model.named_modules():
        kind = _kind_of(module)
        if kind is None or not isinstance(getattr(module, kind.param, None), torch.Tensor):
            continue
        quantizer, stored = None, kind.param
        if parametrize.is_parametrized(module, kind.param):
            quantizer = next(
                (p for p in module.parametrizations[kind.param] if isinstance(p, Quantizer)), None
            )
            stored = f"parametrizations.{kind.param}.original"
        layer = QuantizableLayer(
            name, (f"{name}." if name else "") + stored, module, kind, quantizer
        )
        if id(layer.weight) in seen:
            continue
        seen.add(id(layer.weight))
        out.append(layer)
    return out


class _InputQuantizerHook:
    def __init__(self, quantizer: Quantizer) -> None:
        self.quantizer = quantizer

    def __call__(self, module: nn.Module, args: tuple):
        if args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
            return (self.quantizer(args[0]), *args[1:])
        return None


def prepare(
    model: nn.Module,
    weights: bool = True,
    activations: bool = False,
    init_bits: float = 16,
    per_channel: bool = False,
    embeddings: bool = False,
) -> nn.Module:
    """Put learnable quantizers on the weights (and optionally inputs) of conv, linear and,
    where asked, embedding layers, in place.

    Weight quantizers are parametrizations: ``layer.weight`` becomes ``Q(original)`` and the
    original lives at ``layer.parametrizations.weight.original``. Input quantizers are
    submodules ``layer.input_quantizer`` applied by a forward pre-hook. At 16 bits the model's
    outputs stay within 1e-3 (relative) of the float model.

    Example:
        >>> model = geta.quant.prepare(torchvision.models.resnet18(), init_bits=8)  # doctest: +SKIP
        >>> geta.quant.bits(model)["conv1"]                                        # doctest: +SKIP
        8.0
    """
    tied: dict[int, tuple[Quantizer, int]] = {}  # weight tensor -> its quantizer and axis
    for module in list(model.modules()):
        kind = _kind_of(module)
        if kind is None or (kind.embedding and not embeddings):
            continue
        if weights and not parametrize.is_parametrized(module, kind.param):
            w = getattr(module, kind.param)
            shared = tied.get(id(w))
            if shared is not None and shared[1] != kind.channel_axis % w.dim():
                continue  # tied along another channel axis: one quantizer cannot serve both
            q = (
                shared[0]
                if shared is not None
                else Quantizer.for_tensor(w.detach(), init_bits, per_channel, kind.channel_axis)
            )
            parametrize.register_parametrization(module, kind.param, q)
            tied[id(w)] = (q, kind.channel_axis % w.dim())
        if activations and not kind.embedding and not hasattr(module, "input_quantizer"):
            q = Quantizer(1)
            with torch.no_grad():
                q.q_m.fill_(6.0)  # refined by calibration or training
                q.set_bits(init_bits)
            attach_input_quantizer(module, q)
    return model


def attach_input_quantizer(module: nn.Module, quantizer: Quantizer) -> None:
    """Quantize ``module``'s first input with ``quantizer`` (a submodule
    ``module.input_quantizer`` applied by a forward pre-hook)."""
    module.input_quantizer = quantizer
    module.register_forward_pre_hook(_InputQuantizerHook(quantizer))


def quantizers(model: nn.Module) -> list[Quantizer]:
    """Every quantizer in ``model`` (on weights and on inputs), each once, in module order."""
    return [m for m in model.modules() if isinstance(m, Quantizer)]


def weight_quantizers(model: nn.Module) -> dict[str, Quantizer]:
    """``{layer name: its weight quantizer}``."""
    out = {}
    for name, module in model.named_modules():
        kind = _kind_of(module)
        if kind is not None and parametrize.is_parametrized(module, kind.param):
            for p in module.parametrizations[kind.param]:
                if isinstance(p, Quantizer):
                    out[name] = p
    return out


def input_quantizers(model: nn.Module) -> dict[str, Quantizer]:
    return {
        name: m.input_quantizer
        for name, m in model.named_modules()
        if isinstance(getattr(m, "input_quantizer", None), Quantizer)
    }


def bits(model: nn.Module) -> dict[str, float]:
    """Bits per quantized layer (the mean over channels for per-channel quantizers); input
    quantizers appear as ``"<layer>:input"``."""
    out = {name: float(q.bits().detach().mean()) for name, q in weight_quantizers(model).items()}
    out.update(
        {
            f"{name}:input": float(q.bits().detach().mean())
            for name, q in input_quantizers(model).items()
        }
    )
    return out


def dequantized_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose weights are its quantizers' outputs, as plain float
    parameters (the weight quantizers removed; input quantizers stay). ``model`` is untouched.

    ``parametrize`` keeps a parametrized weight as a property of a class the original and a
    ``deepcopy`` share, and removing the parametrization deletes it from that class; each copied
    module therefore gets a class of its own first."""
    copied = copy.deepcopy(model)
    for module in copied.modules():
        if parametrize.is_parametrized(module):
            cls = type(module)
            module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
            for attr in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
    return copied
