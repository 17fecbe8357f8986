"""The learnable quantizer module: parameters ``d``, ``q_m``, ``t`` and the custom op."""

from __future__ import annotations

import torch
from torch import nn

from geta.quant.functional import bits_of, clip_search, project_step, step_for_bits
from geta.quant.ops import quantize

__all__ = ["Quantizer"]


class Quantizer(nn.Module):
    """GETA's quantizer with learnable step ``d``, clip ``q_m`` and exponent ``t``.

    ``channels`` is 1 for a per-tensor quantizer, or the size of ``axis`` for per-channel.
    Used as a weight parametrization (``module.weight`` becomes ``Q(original)``) or as an
    input quantizer.

    Example:
        >>> q = Quantizer.for_tensor(torch.randn(8, 4), bits=4)
        >>> float(q.bits().max())
        4.0
    """

    def __init__(self, channels: int = 1, axis: int = 0) -> None:
        super().__init__()
        self.axis = axis
        self.d = nn.Parameter(torch.ones(channels))
        self.q_m = nn.Parameter(torch.ones(channels))
        self.t = nn.Parameter(torch.ones(channels))

    @classmethod
    def for_tensor(
        cls, x: torch.Tensor, bits: float = 16, per_channel: bool = False, axis: int = 0
    ) -> Quantizer:
        """A quantizer initialised on ``x``: clip at max |x| (per channel or overall), t = 1,
        step for ``bits``."""
        with torch.no_grad():
            if per_channel and x.dim() > 0:
                dims = [i for i in range(x.dim()) if i != axis % x.dim()]
                clip = x.abs().amax(dim=dims) if dims else x.abs()
            else:
                clip = x.abs().max().reshape(1)
            clip = clip.clamp_min(1e-8).to(torch.float32)
            q = cls(clip.numel(), axis)
            q.to(x.device)
            q.q_m.copy_(clip)
            q.t.fill_(1.0)
            q.d.copy_(step_for_bits(bits, q.q_m, q.t))
        return q

    @property
    def per_channel(self) -> bool:
        return self.d.numel() > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d, q_m, t = (p if p.dtype == x.dtype else p.to(x.dtype) for p in (self.d, self.q_m, self.t))
        return quantize(x, d, q_m, t, self.axis)

    def bits(self) -> torch.Tensor:
        """Bits per channel (or one value), as a float tensor."""
        return bits_of(self.d, self.q_m, self.t)

    def channel_storage_bits(self) -> torch.Tensor:
        """Bits one stored code of each channel needs (int64, one value per channel): the
        ceiling of its bits; with per-channel bits (mixed precision) each channel has its own."""
        return torch.ceil(self.bits().detach() - 1e-6).to(torch.int64)

    def storage_bits(self) -> int:
        """Bits one stored code needs: the ceiling of the largest channel's bits (a float
        hair above an integer counts as that integer)."""
        return int(torch.ceil(self.bits().detach().max() - 1e-6).item())

    @torch.no_grad()
    def scale_gradients(self, numel: int) -> None:
        """LSQ's gradient scale ``1 / sqrt(N * levels)`` on the step's and the clip's gradients
        (``N`` the values each channel's parameters quantize, of ``numel`` in all): their
        gradients sum over every value they quantize, so unscaled they outgrow the values they
        update (a 16-bit step is ~1e-5)."""
        levels = (self.q_m.detach().pow(self.t.detach()) / self.d.detach()).clamp_min(1)
        scale = (levels * (numel / self.d.numel())).rsqrt()
        for p in (self.d, self.q_m):
            if p.grad is not None:
                p.grad.mul_(scale)

    @torch.no_grad()
    def fold_step_gradient(self, as_lsq: bool = True) -> None:
        """For a step tied to the clip at fixed bits (``d = q_m^t / L``, ``L`` the positive
        levels, as :meth:`set_bits` sets it): train the clip so that the step moves as LSQ
        would move it. Call after :meth:`scale_gradients`, before the optimizer step.

        The step's gradient (rounding residuals) and the clip's (clipped values) become LSQ's
        gradient of the step, ``g_d + g_q dq_m/dd`` with ``dq_m/dd = q_m / (t d)``; the clip's
        gradient is that times ``dq_m/dd``, so a plain SGD step on the clip changes the step
        by ``lr`` times LSQ's gradient. The chain rule alone (``g_q + g_d dd/dq_m``) would move
        the step ``(q_m / (t d))^2`` times slower than LSQ's (``L^2`` at ``t = 1``: 9x at 3 bits,
        16,000x at 8), so a tied quantizer's step barely learned at the usual ``lr_quant``.
        ``as_lsq=False`` keeps that chain-rule gradient: for a quantizer still at high bits
        (GETA mode before its bits freeze, 16 bits at the start) LSQ's rate moves the clip by
        a random walk ``sqrt(L)`` times its rounding noise and wrecks the run."""
        if self.d.grad is None and self.q_m.grad is None:
            return
        t, q_m, d = self.t.detach(), self.q_m.detach(), self.d.detach()
        dq_dd = q_m / (t * d)
        step_grad = torch.zeros_like(d)
        if self.d.grad is not None:
            step_grad = step_grad + self.d.grad
        if self.q_m.grad is not None:
            step_grad = step_grad + self.q_m.grad * dq_dd
        self.q_m.grad = step_grad * dq_dd if as_lsq else step_grad / dq_dd
        self.d.grad = None

    @torch.no_grad()
    def sanitize(self) -> None:
        """Keep the learnable parameters where the quantizer is defined: ``t`` in
        ``[0.25, 4]`` (a negative exponent would send zero weights to infinity), ``q_m > 0``."""
        self.t.clamp_(0.25, 4.0)
        self.q_m.clamp_(min=1e-8)

    @torch.no_grad()
    def project(self, b_lo: float, b_hi: float) -> None:
        """Clamp the step so the bits stay within ``[b_lo, b_hi]``."""
        self.sanitize()
        self.d.copy_(project_step(self.d.clamp(min=1e-12), self.q_m, self.t, b_lo, b_hi))

    @torch.no_grad()
    def set_bits(self, bits: float | torch.Tensor) -> None:
        self.sanitize()
        self.d.copy_(step_for_bits(bits, self.q_m, self.t).expand_as(self.d))

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor, bits: float | torch.Tensor) -> None:
        """Set the clip to the one with the least squared error on ``x`` at ``bits`` and the
        step to match (done when a layer's bit target changes). A per-channel quantizer takes
        one ``bits`` or a tensor of bits per channel (mixed precision)."""
        self.sanitize()
        if isinstance(bits, torch.Tensor):
            bits = bits.to(self.d.device, self.d.dtype)
        clip, _ = clip_search(x, bits, self.t, self.axis, self.per_channel)
        self.q_m.copy_(clip.to(self.q_m).expand_as(self.q_m))
        self.set_bits(bits)

    @torch.no_grad()
    def freeze_bits(self) -> torch.Tensor:
        """Round the bits to integers (at least 2) and set the step to match; returns them."""
        bits = self.bits().round().clamp_min(2)
        self.set_bits(bits)
        return bits

    def extra_repr(self) -> str:
        kind = (
            f"per-channel({self.d.numel()}, axis={self.axis})" if self.per_channel else "per-tensor"
        )
        return f"{kind}, bits={self.bits().detach().mean().item():.2f}"
