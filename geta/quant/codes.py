"""A quantized weight as the integers it is stored as, and what each one costs: the maths the
optimizers' cost measurements, the reports and the artifact writer share."""

from __future__ import annotations

import numpy as np
import torch

from geta.quant.quantizer import Quantizer

__all__ = ["quantized_codes", "code_bits", "channel_code_bits", "channel_nonzeros"]


def quantized_codes(weight: torch.Tensor, q: Quantizer) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes and per-channel steps with ``codes * step == Q(weight)`` exactly."""
    with torch.no_grad():
        w = weight.detach().float().cpu()
        shape = [1] * w.dim()
        if q.per_channel:
            shape[q.axis % w.dim()] = -1
        d, q_m, t = (p.detach().float().cpu().reshape(shape) for p in (q.d, q.q_m, q.t))
        codes = torch.sign(w) * torch.round(torch.minimum(w.abs(), q_m).pow(t) / d)
    return codes.to(torch.int64).numpy(), q.d.detach().float().cpu().numpy()


def code_bits(codes: np.ndarray, bits: int) -> int:
    """Bits one stored weight costs, the papers' way: the quantizer's ``bits``, or 1 for a
    binary layer (every code is +-1: no zeros, two levels; the artifact stores one bit each).

    Example:
        >>> code_bits(np.array([1, -1, 1]), 2), code_bits(np.array([1, 0, -1]), 2)
        (1, 2)
    """
    return 1 if codes.size and bool(np.all(np.abs(codes) == 1)) else bits


def channel_code_bits(codes: np.ndarray, q: Quantizer) -> np.ndarray:
    """Bits one stored weight of each channel costs (one value per channel along the
    quantizer's axis; one value for a per-tensor quantizer): each channel's own storage bits
    (mixed precision), or 1 everywhere for a binary layer (:func:`code_bits`).

    Example:
        >>> q = Quantizer.for_tensor(torch.randn(3, 4), bits=8, per_channel=True)
        >>> q.set_bits(torch.tensor([2.0, 4.0, 8.0]))
        >>> channel_code_bits(np.array([[1, 0, -1, 1]] * 3), q).tolist()
        [2, 4, 8]
    """
    bits = q.channel_storage_bits().cpu().numpy()
    if code_bits(codes, int(bits.max())) == 1:
        return np.ones_like(bits)
    return bits


def channel_nonzeros(codes: np.ndarray, q: Quantizer) -> np.ndarray:
    """Nonzero codes of each channel along the quantizer's axis (one value for a per-tensor
    quantizer), matching :func:`channel_code_bits`.

    Example:
        >>> q = Quantizer.for_tensor(torch.randn(2, 3), bits=4, per_channel=True)
        >>> channel_nonzeros(np.array([[1, 0, -1], [0, 0, 2]]), q).tolist()
        [2, 1]
    """
    if not q.per_channel:
        return np.array([np.count_nonzero(codes)])
    channels = np.moveaxis(codes, q.axis % codes.ndim, 0)
    return np.count_nonzero(channels.reshape(channels.shape[0], -1), 1)
