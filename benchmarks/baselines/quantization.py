"""Uniform fixed-bit quantization-aware training for the baselines (LSQ: a learnable step per
output channel), and the hand-over to geta's quantizer for measuring and exporting.

The quantizer is LSQ's ``round(clamp(w / s, -Q, Q)) * s`` with ``Q = 2^(b-1) - 1``: the same
``2^b - 1`` symmetric levels geta's quantizer has at ``b`` bits, so a baseline's codes and bits
are counted exactly as geta's. It runs on geta's quantize op with ``d = s``, ``q_m = Q s`` and
``t = 1``, whose straight-through gradients are LSQ's.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from geta.errors import DivergenceError
from geta.quant import prepare
from geta.quant.functional import clip_search
from geta.quant.ops import quantize
from geta.quant.prepare import quantizable_layers, weight_quantizers

__all__ = [
    "FixedBitsQuantizer",
    "attach_fixed_bits",
    "to_geta_quantizers",
    "step_parameters",
    "nonzero_codes",
]


class FixedBitsQuantizer(nn.Module):
    """A weight parametrization at ``bits`` bits with a learnable step per output channel
    (initialised at the clip of least squared error), LSQ's gradient scale on the step."""

    def __init__(self, weight: torch.Tensor, bits: int, axis: int = 0) -> None:
        super().__init__()
        if bits < 2:
            raise ValueError(f"fixed-bit QAT needs at least 2 bits, got {bits}")
        self.bits, self.axis = int(bits), axis
        self.levels = 2 ** (self.bits - 1) - 1
        w = weight.detach()
        clip, _ = clip_search(w, float(bits), torch.ones(1, device=w.device), axis, True)
        self.step = nn.Parameter((clip / self.levels).clamp_min(1e-8).float())
        per_channel = w.numel() // w.shape[axis]
        self.grad_scale = float((per_channel * self.levels) ** -0.5)

    def positive_step(self) -> torch.Tensor:
        """The step in use: its magnitude, at least 1e-8 (SGD may push a step through zero)."""
        return self.step.abs().clamp_min(1e-8)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        s = self.positive_step().to(w.dtype)
        s = s * self.grad_scale + (s - s * self.grad_scale).detach()  # LSQ's gradient scale
        ones = torch.ones(1, dtype=w.dtype, device=w.device)
        return quantize(w, s, s * self.levels, ones, self.axis)


def attach_fixed_bits(model: nn.Module, bits: int) -> list[FixedBitsQuantizer]:
    """Quantize the weight of every layer geta counts (conv, linear) at ``bits``, in place."""
    out = []
    for layer in quantizable_layers(model):
        if layer.kind.embedding:
            continue
        q = FixedBitsQuantizer(layer.weight, bits, layer.kind.channel_axis)
        parametrize.register_parametrization(layer.module, layer.kind.param, q)
        out.append(q)
    return out


@torch.no_grad()
def nonzero_codes(weight: torch.Tensor, bits: int, axis: int = 0) -> int:
    """How many of ``weight``'s values get a nonzero code at ``bits`` with the initial step of
    :class:`FixedBitsQuantizer` (zeros stay zero)."""
    q = FixedBitsQuantizer(weight, bits, axis)
    return int(torch.count_nonzero(q(weight.detach())))


def step_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [m.step for m in model.modules() if isinstance(m, FixedBitsQuantizer)]


@torch.no_grad()
def to_geta_quantizers(model: nn.Module) -> nn.Module:
    """Replace every :class:`FixedBitsQuantizer` by geta's quantizer with the same levels
    (``d = s``, ``q_m = Q s``, ``t = 1``): the outputs are unchanged, and geta's report and
    artifact measure and store the model."""
    found = {}
    for layer in quantizable_layers(model):
        if not parametrize.is_parametrized(layer.module, layer.kind.param):
            continue
        chain = getattr(layer.module.parametrizations, layer.kind.param)
        fixed = [p for p in chain if isinstance(p, FixedBitsQuantizer)]
        if fixed:
            found[layer.name] = fixed[0]
            parametrize.remove_parametrizations(
                layer.module, layer.kind.param, leave_parametrized=False
            )
    prepare(model, per_channel=True, init_bits=16)
    for name, q in weight_quantizers(model).items():
        if name in found:
            fixed = found[name]
            step = fixed.positive_step().detach().to(q.d)
            if not bool(torch.isfinite(step).all()):
                raise DivergenceError(
                    f"{name}: the QAT step of channels "
                    f"{torch.nonzero(~torch.isfinite(step.flatten())).flatten().tolist()} is "
                    "not finite (the fixed-bit QAT diverged there)"
                )
            q.t.fill_(1.0)
            q.q_m.copy_((step * fixed.levels).expand_as(q.q_m))
            q.d.copy_(step.expand_as(q.d))
    return model
