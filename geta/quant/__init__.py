"""Learnable quantizers (GETA's d, q_m, t parametrization) as graph ops, and model preparation."""

from geta.quant.functional import bits_of, project_step, step_for_bits
from geta.quant.ops import quantize
from geta.quant.prepare import (
    LayerKind,
    QuantizableLayer,
    bits,
    input_quantizers,
    prepare,
    quantizable_layers,
    quantizers,
    register_layer_kind,
    register_lazy_layer_kind,
    weight_quantizers,
)
from geta.quant.quantizer import Quantizer

__all__ = [
    "LayerKind",
    "QuantizableLayer",
    "Quantizer",
    "bits",
    "bits_of",
    "input_quantizers",
    "prepare",
    "project_step",
    "quantizable_layers",
    "quantize",
    "quantizers",
    "register_layer_kind",
    "register_lazy_layer_kind",
    "step_for_bits",
    "weight_quantizers",
]
