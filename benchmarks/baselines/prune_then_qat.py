"""The classic sequential pipeline: structured pruning with Torch-Pruning, then uniform
fixed-bit quantization-aware training (LSQ, per output channel).

Pruning is spread over the first ``prune_share`` of the steps in ``prune_steps`` equal steps
(Torch-Pruning's iterative pruning, fine-tuning in float in between); then every counted layer
is quantized at ``bits`` and trained to the end. The pruning ratio is the smallest that meets
the budget with every kept weight at ``bits`` (a user's plan: zero codes are not counted in
advance). With no pruning needed (``32 / bits`` reaches the budget) this is QAT alone.
``count_zero_codes`` (default) plans with the weights whose code is not zero at ``bits`` on
the dense model (at 2-3 bits many are), so the baseline spends the budget as geta does; set
it off for the plan a user makes by hand (every kept weight costs ``bits``).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
import torch_pruning as tp
from torch import nn

from baselines.common import BaselineRun, dense_cost, first_fit, output_layers, planned_cost
from baselines.quantization import attach_fixed_bits, step_parameters, to_geta_quantizers
from baselines.staged import StagedOptimizer
from geta.errors import BudgetError, ConfigError
from geta.optim.budget import Budget
from geta.optim.cost import output_positions

__all__ = ["PruneThenQat", "QatOnly", "IMPORTANCES"]

IMPORTANCES = {
    "magnitude": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "taylor": lambda: tp.importance.GroupTaylorImportance(),
}
MAX_CHANNEL_RATIO = 0.95


def unprunable_layers(model: nn.Module, example: tuple) -> list[str]:
    """The names of the conv / linear layers whose output channels Torch-Pruning cannot
    remove from this model: removing one of them on a copy breaks the forward pass. A shortcut
    that zero-pads channels by a constant (option-A ResNets) is one: Torch-Pruning narrows the
    tensors on both sides of it but not the pad. What a user of Torch-Pruning would do by
    hand: prune the other layers only. The answer depends on the architecture alone (pruning
    keeps the names), so a run finds it once."""
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    blocked = []
    for name in names:
        trial = copy.deepcopy(model)
        layer = trial.get_submodule(name)
        if layer.weight.shape[0] < 2:
            continue
        graph = tp.DependencyGraph().build_dependency(trial, example_inputs=example)
        prune_out = (
            tp.prune_conv_out_channels
            if isinstance(layer, nn.Conv2d)
            else tp.prune_linear_out_channels
        )
        group = graph.get_pruning_group(layer, prune_out, idxs=[0])
        group.prune()
        try:
            with torch.no_grad():
                trial(*example)
        except RuntimeError:
            blocked.append(name)
    return blocked


def _pruner(
    model,
    example,
    importance: str,
    ratio: float,
    global_pruning: bool,
    steps: int,
    blocked: list[str],
):
    ignored = output_layers(model, example)
    ignored += [m for m in map(model.get_submodule, blocked) if m not in ignored]
    return tp.pruner.MetaPruner(
        model,
        example,
        importance=IMPORTANCES[importance](),
        pruning_ratio=ratio,
        global_pruning=global_pruning,
        iterative_steps=steps,
        ignored_layers=ignored,
    )


@dataclass(frozen=True)
class PruneThenQat:
    """Torch-Pruning (``importance``: magnitude or Taylor; one ratio for every layer, or
    ``global_pruning``) over the first ``prune_share`` of the run, then ``bits``-bit QAT."""

    bits: int = 4
    importance: str = "magnitude"
    global_pruning: bool = False
    prune_share: float = 0.3
    prune_steps: int = 5
    count_zero_codes: bool = True

    name = "prune-then-qat"

    def __post_init__(self) -> None:
        if self.importance not in IMPORTANCES:
            raise ConfigError(f"importance is one of {', '.join(IMPORTANCES)}")
        if not 2 <= self.bits <= 16:
            raise ConfigError(f"bits are 2..16, got {self.bits}")

    def to_dict(self) -> dict:
        return {"name": self.name, **asdict(self)}

    def channel_ratio(
        self,
        model: nn.Module,
        example: tuple,
        budget: Budget,
        positions,
        reference: nn.Module | None = None,
        blocked: list[str] | None = None,
    ) -> float:
        """The smallest Torch-Pruning ratio whose pruned ``model`` meets ``budget`` at ``bits``
        (measured on pruned copies; 0 when QAT alone meets it); the budget is relative to
        ``reference`` (default: ``model``); ``blocked``: :func:`unprunable_layers` (found
        here when not given)."""
        target = budget.target(dense_cost(reference or model, budget, positions))
        if blocked is None:
            blocked = unprunable_layers(model, example)

        def fits(ratio: float) -> bool:
            pruned = copy.deepcopy(model)
            if ratio > 0:
                _pruner(pruned, example, "magnitude", ratio, self.global_pruning, 1, blocked).step()
            cost = planned_cost(pruned, budget, self.bits, positions, self.count_zero_codes)
            return cost <= target

        # Torch-Pruning's kept channels are not monotone in the ratio near its top (a layer
        # that would keep no channel is left whole), so scan upwards instead of bisecting
        try:
            return first_fit(fits, [i / 100 for i in range(int(MAX_CHANNEL_RATIO * 100) + 1)])
        except BudgetError:
            raise BudgetError(
                f"{budget} cannot be met at {self.bits} bits by pruning up to "
                f"{MAX_CHANNEL_RATIO:.0%} of the channels"
            ) from None

    def start(self, model, example, budget: Budget, total_steps: int, **optim) -> BaselineRun:
        reference = copy.deepcopy(model)
        positions = output_positions(model, example) if budget.metric == "bops" else None
        blocked = unprunable_layers(model, example)
        ratio = self.channel_ratio(model, example, budget, positions, blocked=blocked)
        quantize_at = int(self.prune_share * total_steps) if ratio > 0 else 0
        events = {}
        run: BaselineRun | None = None
        pruner = None
        if ratio > 0:
            pruner = _pruner(
                model,
                example,
                self.importance,
                ratio,
                self.global_pruning,
                self.prune_steps,
                blocked,
            )

        def prune(opt: StagedOptimizer) -> None:
            pruner.step()
            run.stage = "prune"

        def prune_last(opt: StagedOptimizer) -> None:
            prune(opt)
            # global ranking on trained weights may keep other layers than the plan did
            extra = self.channel_ratio(model, example, budget, positions, reference, blocked)
            if extra > 0:
                _pruner(
                    model, example, self.importance, extra, self.global_pruning, 1, blocked
                ).step()
            attach_fixed_bits(model, self.bits)
            run.stage = "qat"

        for i in range(1, self.prune_steps + 1 if ratio > 0 else 0):
            step = max(0, i * quantize_at // self.prune_steps - 1)
            events[step] = prune_last if i == self.prune_steps else prune
        if ratio == 0:
            attach_fixed_bits(model, self.bits)
        opt = StagedOptimizer(model, events, quantizer_params=step_parameters, **optim)
        run = BaselineRun(
            model,
            reference,
            example,
            budget,
            self.name,
            opt,
            finish=lambda: to_geta_quantizers(model),
        )
        run.stage = "qat" if ratio == 0 else "train"
        run.settings = {"channel_ratio": ratio}
        return run


def QatOnly(bits: int) -> PruneThenQat:  # noqa: N802 - reads as a method name in the tables
    """Uniform ``bits``-bit QAT from the start (the budget must allow ``32 / bits``)."""
    return PruneThenQat(bits=bits)
