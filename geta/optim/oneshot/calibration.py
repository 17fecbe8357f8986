"""What the one-shot mode measures on calibration data: the inputs of every counted layer.

For a layer whose weight reads the last dim of its input (linear layers, transformers'
``Conv1D``) the full second-moment matrix ``H = X^T X`` of its input features (GPTQ's
Hessian) and their means; for a convolution the per-channel mean and second moment over
samples and positions; for an embedding how often each row is read. From those, per weight,
the output energy a change of that weight costs (:meth:`InputStats.energy`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any

import torch
from torch import nn

from geta.distributed import sum_across_ranks
from geta.quant.prepare import QuantizableLayer

__all__ = ["InputStats", "calibrate", "run_batch"]


@dataclass
class InputStats:
    """Sums over the ``count`` input rows (tokens, pixels) a layer saw."""

    kind: str  # "linear", "conv" or "embedding"
    count: int
    mean: torch.Tensor  # per input feature (embedding: per row, the share of reads)
    second: torch.Tensor  # per input feature, E[x^2]
    hessian: torch.Tensor | None = None  # linear: sum of x x^T over rows

    @property
    def variance(self) -> torch.Tensor:
        return (self.second - self.mean.square()).clamp_min(0)

    def energy(self, layer: QuantizableLayer, centred: bool) -> torch.Tensor | None:
        """Per weight, shaped like it, the mean output energy a unit change of that weight
        causes: the (centred, when a bias absorbs the mean) second moment of the input feature
        it reads, or how often its embedding row is read. ``None`` when the weight's layout
        does not match the inputs seen."""
        w = layer.weight
        per_input = self.variance if centred else self.second
        if self.kind == "embedding":
            return self.mean.to(w.device).reshape(-1, 1).expand_as(w)
        out_axis = layer.kind.channel_axis % w.dim()
        if self.kind == "linear":
            if w.dim() != 2 or w.shape[1 - out_axis] != per_input.numel():
                return None
            shape = [1, 1]
            shape[1 - out_axis] = -1
            return per_input.to(w.device).reshape(shape).expand_as(w)
        groups = int(getattr(layer.module, "groups", 1))
        in_axis = 1 if out_axis == 0 else 0
        if out_axis == 0 and w.shape[1] * groups == per_input.numel():
            per_group = per_input.reshape(groups, -1).to(w.device)  # [groups, in per group]
            rows = per_group.repeat_interleave(w.shape[0] // groups, dim=0)  # [out, in/g]
            return rows.reshape(*rows.shape, *([1] * (w.dim() - 2))).expand_as(w)
        if w.shape[in_axis] == per_input.numel():
            shape = [1] * w.dim()
            shape[in_axis] = -1
            return per_input.to(w.device).reshape(shape).expand_as(w)
        return None


class _Collector:
    def __init__(self, layer: QuantizableLayer) -> None:
        self.layer = layer
        self.count = 0
        self.sum: torch.Tensor | None = None
        self.sq: torch.Tensor | None = None
        self.hessian: torch.Tensor | None = None
        self.kind = "embedding" if layer.kind.embedding else None

    def __call__(self, module: nn.Module, args: tuple) -> None:
        if not args or not isinstance(args[0], torch.Tensor):
            return
        x = args[0].detach()
        if self.kind == "embedding":
            rows = self.layer.weight.shape[0]
            reads = torch.bincount(x.reshape(-1).long().cpu(), minlength=rows)[:rows].double()
            self._add(reads, reads, x.numel())
            return
        w = self.layer.weight
        if w.dim() == 2:
            self.kind = "linear"
            flat = x.reshape(-1, x.shape[-1]).double()
            self._add(flat.sum(0), flat.square().sum(0), flat.shape[0])
            outer = (flat.T @ flat).float()
            self.hessian = outer if self.hessian is None else self.hessian + outer
        elif x.dim() >= 2:
            self.kind = "conv"
            flat = x.transpose(0, 1).reshape(x.shape[1], -1).double()
            self._add(flat.sum(1), flat.square().sum(1), flat.shape[1])

    def _add(self, total: torch.Tensor, squares: torch.Tensor, rows: int) -> None:
        total, squares = total.cpu(), squares.cpu()
        self.sum = total if self.sum is None else self.sum + total
        self.sq = squares if self.sq is None else self.sq + squares
        self.count += rows

    def reduce_across_ranks(self) -> None:
        """Sum the statistics over the ranks of a process group (each rank calibrated on
        its own batches), so every rank plans from the same numbers."""
        count = torch.tensor([float(self.count)], dtype=torch.float64)
        kinds = torch.tensor([self.kind == k for k in ("linear", "conv")], dtype=torch.float64)
        count, kinds, self.sum, self.sq, self.hessian = sum_across_ranks(
            [count, kinds, self.sum, self.sq, self.hessian]
        )
        self.count = int(count.item())
        if self.kind is None and bool(kinds.any()):
            self.kind = "linear" if kinds[0] > 0 else "conv"

    def stats(self) -> InputStats | None:
        if self.kind is None or self.count == 0:
            return None
        if self.kind == "embedding":
            # add-one smoothing: a row calibration never read is still read at test time
            share = ((self.sum + 1) / (self.count + self.sum.numel())).float()
            return InputStats("embedding", self.count, share, share)
        mean, second = (self.sum / self.count).float(), (self.sq / self.count).float()
        return InputStats(self.kind, self.count, mean, second, self.hessian)


def run_batch(model: nn.Module, batch: Any) -> None:
    """Run ``model`` on one batch: ``(inputs, targets)`` or inputs alone; a mapping of inputs
    goes in as keyword arguments (a transformers batch), a tuple as positional ones."""
    inputs = batch[0] if isinstance(batch, (tuple, list)) and len(batch) == 2 else batch
    if isinstance(inputs, Mapping):
        model(**inputs)
    elif isinstance(inputs, (tuple, list)):
        model(*inputs)
    else:
        model(inputs)


@torch.no_grad()
def calibrate(
    model: nn.Module, layers: list[QuantizableLayer], batches: Iterable, limit: int
) -> list[InputStats | None]:
    """The input statistics of each of ``layers`` over the first ``limit`` batches (``None``
    for a layer that saw no input). In a process group of several ranks each rank runs its
    own batches and the statistics are summed over the ranks."""
    collectors = [_Collector(layer) for layer in layers]
    handles = [c.layer.module.register_forward_pre_hook(c) for c in collectors]
    was_training = model.training
    model.eval()
    try:
        for batch in islice(batches, limit):
            run_batch(model, batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    for c in collectors:
        c.reduce_across_ranks()
    return [c.stats() for c in collectors]
