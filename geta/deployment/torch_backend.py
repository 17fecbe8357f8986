"""The torch backend: every quantized layer replaced by a module that holds its integer codes
and runs on an integer kernel (:mod:`geta.deployment.kernels`), chosen per layer from its learned
bits, its shape and the :class:`DeployConfig`; unquantized layers stay as they are.

Layer types map to converters through a registry (:func:`register_converter`), the way
:func:`geta.quant.register_layer_kind` maps them to quantizers; a quantized layer of a type no
converter knows keeps its float weight and is reported with the ``float`` kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from geta.deployment.kernels import (
    DynamicInt8Linear,
    Int4Linear,
    Int8Linear,
    StoredConv,
    StoredEmbedding,
    StoredLinear,
    int4_supported,
)
from geta.deployment.report import KERNEL_BITS, LayerDeployment

__all__ = [
    "DeployConfig",
    "QuantizedWeight",
    "convert",
    "register_converter",
]

WEIGHT_CHOICES = ("auto", "int8", "int4", "float")
ACTIVATION_CHOICES = ("auto", None, "int8")
COMPUTE_CHOICES = ("dequantize", "kernel")


@dataclass(frozen=True)
class DeployConfig:
    """How :func:`geta.deploy` maps layers to kernels.

    - ``weights``: ``"auto"`` (int4 where a layer's bits are <= 4 and the kernel takes its
      shape, int8 where <= 8, float above), ``"int8"`` (int8 for every layer of <= 8 bits),
      ``"int4"`` (as auto, but an error for a <= 4-bit layer the int4 kernel cannot take) or
      ``"float"`` (dequantized float weights: exact, no memory saving).
    - ``activations``: ``"auto"`` (default: ``"int8"`` for the linear layers whose inputs
      were quantized to 8 bits or fewer during compression, weight-only elsewhere), ``None``
      (weight-only everywhere: outputs match the fake-quantized weights up to float rounding)
      or ``"int8"`` (every linear layer quantizes its inputs to int8 per call, fbgemm's
      dynamic kernel: the fastest on x86 CPUs, outputs within activation-rounding error).
    - ``compute`` (weight-only linear layers): ``"dequantize"`` (default: the codes are
      held at their width and dequantized at each call into a float matmul) or ``"kernel"``
      (torch's packed int8 / int4 matmul kernels: on an AVX2 CPU measured many times slower
      than float for float inputs; try it on AVX-512 machines and GPUs).
    """

    weights: str = "auto"
    activations: str | None = "auto"
    compute: str = "dequantize"

    def __post_init__(self) -> None:
        if self.weights not in WEIGHT_CHOICES:
            raise ValueError(f"weights must be one of {WEIGHT_CHOICES}, got {self.weights!r}")
        if self.activations not in ACTIVATION_CHOICES:
            raise ValueError(
                f"activations must be one of {ACTIVATION_CHOICES}, got {self.activations!r}"
            )
        if self.compute not in COMPUTE_CHOICES:
            raise ValueError(f"compute must be one of {COMPUTE_CHOICES}, got {self.compute!r}")


@dataclass(frozen=True)
class QuantizedWeight:
    """A layer's weight as integers: ``weight == codes * scale`` with ``scale`` one value per
    channel along ``axis`` (or one value), and each channel's storage bits."""

    codes: torch.Tensor  # int64, the weight's shape
    scale: torch.Tensor  # float32
    axis: int
    channel_bits: torch.Tensor  # int64, one per channel (or one)
    input_bits: float | None = None  # the bits the layer's inputs were quantized to, if any

    @property
    def bits(self) -> int:
        return int(self.channel_bits.max())

    def fits(self, kernel_bits: int) -> bool:
        """Whether every code lies in the signed range of ``kernel_bits``."""
        top = 1 << (kernel_bits - 1)
        return not self.codes.numel() or (
            int(self.codes.min()) >= -top and int(self.codes.max()) < top
        )

    def histogram(self) -> dict[int, int]:
        bits, counts = torch.unique(self.channel_bits, return_counts=True)
        return {int(b): int(n) for b, n in zip(bits, counts, strict=True)}

    def deployment(self, name: str, kernel: str) -> LayerDeployment:
        """The report's record of this weight deployed as layer ``name`` on ``kernel``."""
        bits = self.rounding_bits(KERNEL_BITS[kernel])
        return LayerDeployment(name, kernel, self.histogram(), self.codes.numel(), bits)

    def rounding_bits(self, kernel_bits: int) -> int:
        """Bits the kernel width adds over the learned bits, over all weights."""
        per_channel = self.codes.numel() // self.channel_bits.numel()
        return int(((kernel_bits - self.channel_bits).clamp_min(0) * per_channel).sum())


Converter = Callable[[nn.Module, QuantizedWeight, DeployConfig], tuple[nn.Module, str]]
_CONVERTERS: list[tuple[type, Converter]] = []


def register_converter(module_type: type) -> Callable[[Converter], Converter]:
    """Register how a quantized layer of ``module_type`` is deployed (the most recent
    registration wins). A converter takes the float module, its :class:`QuantizedWeight` and
    the config, and returns the replacement module and its kernel name (see
    :data:`geta.deployment.report.KERNEL_BITS`).

    Example:
        >>> @register_converter(MyLinear)                                  # doctest: +SKIP
        ... def _(module, weight, config):
        ...     return Int8Linear(weight.codes, weight.scale, module.bias), "int8"
    """

    def decorate(fn: Converter) -> Converter:
        _CONVERTERS.insert(0, (module_type, fn))
        return fn

    return decorate


def _width(weight: QuantizedWeight, config: DeployConfig) -> int:
    """The narrowest kernel width (4, 8 or 32 = float) the config allows for this weight."""
    if config.weights == "float" or weight.bits > 8 or not weight.fits(8):
        return 32
    if config.weights != "int8" and weight.bits <= 4 and weight.fits(4):
        return 4
    return 8


@register_converter(nn.Linear)
def _linear(module: nn.Linear, weight: QuantizedWeight, config: DeployConfig):
    width = _width(weight, config)
    if width == 32 or weight.axis % 2 != 0 and weight.scale.numel() > 1:
        return module, "float"
    dynamic = config.activations == "int8" or (
        config.activations == "auto" and weight.input_bits is not None and weight.input_bits <= 8
    )
    if dynamic:
        return DynamicInt8Linear(weight.codes, weight.scale, module.bias), "int8-dynamic"
    if config.compute == "dequantize":
        stored = StoredLinear(weight.codes, weight.scale, module.bias, width)
        return stored, stored.kernel
    if width == 4 and int4_supported(module.out_features, module.in_features):
        return Int4Linear(weight.codes, weight.scale, module.bias), "int4"
    if width == 4 and config.weights == "int4":
        raise ValueError(
            f"the int4 kernel does not take a [{module.out_features}, {module.in_features}] "
            "weight (out must be a multiple of 16, in of 32): deploy with weights='auto'"
        )
    return Int8Linear(weight.codes, weight.scale, module.bias), "int8"


@register_converter(nn.modules.conv._ConvNd)
def _conv(module: nn.Module, weight: QuantizedWeight, config: DeployConfig):
    width = _width(weight, config)
    if width == 32:
        return module, "float"
    stored = StoredConv(module, weight.codes, weight.scale, weight.axis, width)
    return stored, stored.kernel


@register_converter(nn.Embedding)
def _embedding(module: nn.Embedding, weight: QuantizedWeight, config: DeployConfig):
    if _width(weight, config) == 32 or (weight.axis % 2 != 0 and weight.scale.numel() > 1):
        return module, "float"
    return StoredEmbedding(module, weight.codes, weight.scale), "int8-storage"


def _converter(module: nn.Module) -> Converter | None:
    return next((fn for t, fn in _CONVERTERS if isinstance(module, t)), None)


def convert(
    model: nn.Module, weights: dict[str, QuantizedWeight], config: DeployConfig
) -> nn.Module:
    """Replace, in place, each layer named in ``weights`` (float ``model``, its weights
    dequantized) by its deployed module; each carries a ``deployment`` record
    (:class:`LayerDeployment`) for the report."""
    for name, weight in weights.items():
        module = model.get_submodule(name)
        fn = _converter(module)
        new, kernel = fn(module, weight, config) if fn is not None else (module, "float")
        new.deployment = weight.deployment(name, kernel)
        if new is not module:
            parent, _, attr = name.rpartition(".")
            if not attr:
                return new
            setattr(model.get_submodule(parent), attr, new)
    return model
