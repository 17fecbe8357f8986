"""What every baseline shares: the runner's view of a run, the layers not to prune, the cost
of a plan before training, and the measured report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from baselines.quantization import nonzero_codes
from geta.errors import BudgetError
from geta.export import artifact
from geta.optim.budget import Budget
from geta.optim.cost import FLOAT_BITS, output_positions
from geta.optim.projection import keep_top
from geta.optim.report import CompressionReport, report_against
from geta.quant.prepare import quantizable_layers

__all__ = ["BaselineRun", "output_layers", "planned_cost", "dense_cost", "first_fit"]


def output_layers(model: nn.Module, example: tuple) -> list[nn.Module]:
    """The counted layers whose output is a model output (their output channels are the
    model's outputs: a classifier's classes), found by running the model once."""
    produced: dict[int, nn.Module] = {}
    handles = [
        layer.module.register_forward_hook(
            lambda m, i, o: produced.__setitem__(id(o), m) if isinstance(o, torch.Tensor) else None
        )
        for layer in quantizable_layers(model)
    ]
    try:
        with torch.no_grad():
            out = model(*example)
    finally:
        for h in handles:
            h.remove()
    outputs = out if isinstance(out, tuple | list) else (out,)
    return [produced[id(o)] for o in outputs if id(o) in produced]


def _coefficients(model: nn.Module, budget: Budget, positions: dict[str, float] | None):
    layers = [layer for layer in quantizable_layers(model) if not layer.kind.embedding]
    numel = np.array([layer.weight.numel() for layer in layers], dtype=np.float64)
    if budget.metric == "size":
        return numel, np.ones(len(layers))
    return numel, np.array([positions.get(layer.name, 1.0) * FLOAT_BITS for layer in layers])


def dense_cost(model: nn.Module, budget: Budget, positions: dict[str, float] | None) -> float:
    numel, coef = _coefficients(model, budget, positions)
    return float((coef * FLOAT_BITS * numel).sum())


def planned_cost(
    model: nn.Module,
    budget: Budget,
    bits: int,
    positions: dict[str, float] | None,
    count_zero_codes: bool = False,
) -> float:
    """The cost of ``model`` with every counted weight at ``bits``: what a user plans with
    before training. ``count_zero_codes``: count only the weights whose code is not zero
    when quantized now (per channel, clip of least squared error), as the papers' ratio will."""
    layers = [layer for layer in quantizable_layers(model) if not layer.kind.embedding]
    _, coef = _coefficients(model, budget, positions)
    counts = []
    for layer in layers:
        w = layer.weight.detach()
        if count_zero_codes:
            counts.append(float(nonzero_codes(w, bits, layer.kind.channel_axis)))
        else:
            counts.append(float(torch.count_nonzero(w)))
    return float((coef * bits * np.array(counts)).sum())


def first_fit(fits, candidates) -> float:
    """The first candidate with ``fits(candidate)``."""
    for candidate in candidates:
        if fits(candidate):
            return candidate
    raise BudgetError("no candidate setting meets the budget")


@torch.no_grad()
def trim_to_budget(
    model: nn.Module, report: CompressionReport, positions: dict[str, float] | None
) -> None:
    """Zero the weights of least ``Q(w)^2 / cost`` over all counted layers until ``report``'s
    target holds (nothing when it holds already); ``positions`` as for a BOPs report."""
    if report.within_budget:
        return
    layers = {layer.name: layer for layer in quantizable_layers(model)}
    chosen = [layers[row.name] for row in report.layers]
    coef = np.array(
        [
            1.0 if report.metric == "size" else positions.get(row.name, 1.0) * FLOAT_BITS
            for row in report.layers
        ]
    )
    values = [
        layer.quantizer(layer.weight).detach() if layer.quantizer is not None else layer.weight
        for layer in chosen
    ]
    bits = np.array([row.bits for row in report.layers], dtype=np.float64)
    for layer, keep in zip(
        chosen, keep_top(values, coef * bits, float(report.target)), strict=True
    ):
        layer.weight.mul_(keep.to(layer.weight))


class BaselineRun:
    """One baseline run as the runner drives it: the optimizer to train with, the cost now,
    and at the end the compressed model with geta's quantizers, its report and artifact."""

    resumable = False

    def __init__(
        self,
        model: nn.Module,
        reference: nn.Module,
        example: tuple,
        budget: Budget,
        mode: str,
        optimizer: torch.optim.Optimizer,
        finish,
    ) -> None:
        self.model = model
        self.reference = reference
        self.example = example
        self.budget = budget
        self.mode = mode
        self.optimizer = optimizer
        self.settings: dict[str, Any] = {}
        self.positions = output_positions(reference, example) if budget.metric == "bops" else None
        self.target = budget.target(dense_cost(reference, budget, self.positions))
        self._finish = finish
        self.finalized = False
        self.artifact_path: Path | None = None
        self.stage = "train"

    def measure(self) -> dict[str, Any]:
        return {"cost": None, "stage": self.stage}

    def finalize(self) -> nn.Module:
        """geta's quantizers in place of the baseline's; then, if the codes that stayed nonzero
        through training cost more than the plan expected, the smallest quantized weights are
        zeroed across layers until the budget holds (what geta does at its freeze)."""
        if not self.finalized:
            self._finish()
            trim_to_budget(self.model, self.report(), self.positions)
            self.finalized = True
            self.stage = "finalized"
        return self.model

    def report(self) -> CompressionReport:
        report = report_against(
            self.model,
            self.reference,
            mode=self.mode,
            budget=self.budget,
            positions=self.positions,
        )
        if self.artifact_path is not None:
            report.artifact_bytes = sum(f.stat().st_size for f in self.artifact_path.iterdir())
        return report

    def export(self, path: str | Path, *, architecture: str | None = None) -> Path:
        self.finalize()
        self.artifact_path = artifact.save(self.model, path, architecture=architecture)
        return self.artifact_path
