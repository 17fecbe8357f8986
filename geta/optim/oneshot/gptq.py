"""Rounding with error compensation (GPTQ, Frantar et al. 2023): a linear layer's weight is
rounded one input column at a time, and each column's rounding error is spread over the columns
not rounded yet, weighted by the inverse Hessian ``H = X^T X`` of the layer's inputs, so the
layer's outputs on those inputs change as little as the grid allows."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["gptq"]


@torch.no_grad()
def gptq(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    quantize: Callable[[torch.Tensor], torch.Tensor],
    *,
    damp: float = 0.01,
    block_size: int = 128,
) -> torch.Tensor:
    """The rounded ``weight`` (``[outputs, inputs]``): ``quantize`` maps one column (one value
    per output row) onto the grid. Columns that are all zero (removed inputs) or never saw
    input stay zero and take no error.

    Example:
        >>> w, x = torch.randn(4, 8), torch.randn(64, 8)
        >>> q = gptq(w, x.T @ x, lambda c: torch.round(c * 2) / 2)
        >>> bool(((q * 2).round() == q * 2).all())
        True
    """
    w = weight.detach().float().clone()
    h = hessian.detach().float().clone()
    cols = w.shape[1]
    dead = (torch.diagonal(h) <= 0) | (w == 0).all(0)
    h[dead, :] = 0
    h[:, dead] = 0
    h[dead, dead] = 1
    w[:, dead] = 0
    live = torch.diagonal(h)[~dead]
    h += torch.eye(cols, device=h.device) * damp * (float(live.mean()) if live.numel() else 1.0)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    out = torch.zeros_like(w)
    for start in range(0, cols, block_size):
        end = min(start + block_size, cols)
        block = w[:, start:end].clone()
        errors = torch.zeros_like(block)
        inv = hinv[start:end, start:end]
        for i in range(end - start):
            column = block[:, i]
            rounded = quantize(column) if not bool(dead[start + i]) else torch.zeros_like(column)
            out[:, start + i] = rounded
            error = (column - rounded) / inv[i, i]
            block[:, i:] -= error.unsqueeze(1) * inv[i, i:].unsqueeze(0)
            errors[:, i] = error
        w[:, end:] -= errors @ hinv[start:end, end:]
    return out.to(weight.dtype)
