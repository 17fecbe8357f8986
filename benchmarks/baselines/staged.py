"""An SGD-style optimizer for the baselines whose model changes shape during the run.

The baselines prune physically with Torch-Pruning, which replaces the pruned parameters; the
base optimizer is then rebuilt over the new ones (momentum starts again, as it does when a
user prunes and fine-tunes). The parameter groups stay two, weights and quantizer steps, so an
LR scheduler built once follows the run through every rebuild.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from geta.errors import DivergenceError
from geta.optim.wrapped import BASE_OPTIMIZERS

__all__ = ["StagedOptimizer"]

Event = Callable[["StagedOptimizer"], None]


class StagedOptimizer(torch.optim.Optimizer):
    """Steps a base optimizer over ``model``'s weights (group 0) and quantizer steps
    (group 1, ``lr_quant``, no weight decay); ``events[k]`` runs after the base step of step
    ``k`` (gradients still in place, e.g. for Taylor importance), and the base optimizer is
    rebuilt afterwards. ``hold`` runs after every step (e.g. to keep pruned weights at zero).
    A quantizer step that is no longer finite (the training diverged: a non-finite loss
    reaches every step through the gradients) raises :class:`geta.errors.DivergenceError`
    at once, instead of at the end of the run."""

    def __init__(
        self,
        model: nn.Module,
        events: dict[int, Event],
        *,
        base: str = "sgd",
        lr: float,
        lr_quant: float | None = None,
        quantizer_params: Callable[[nn.Module], list[nn.Parameter]] = lambda m: [],
        hold: Callable[[], None] | None = None,
        **base_kwargs: Any,
    ) -> None:
        self.model = model
        self.events = dict(events)
        self.base_cls = BASE_OPTIMIZERS[base]
        self.base_kwargs = dict(base_kwargs, lr=lr)
        self.lr_quant = lr_quant if lr_quant is not None else lr / 10
        self.quantizer_params = quantizer_params
        self.hold = hold
        self.step_count = 0
        self.base = self._build(None)
        super().__init__(self.base.param_groups, self.base.defaults)
        self._share()

    def _build(self, previous: list[dict] | None) -> torch.optim.Optimizer:
        steps = self.quantizer_params(self.model)
        seen = {id(p) for p in steps}
        weights = [p for p in self.model.parameters() if p.requires_grad and id(p) not in seen]
        groups = [
            {"params": weights},
            {"params": steps, "lr": self.lr_quant, "weight_decay": 0.0},
        ]
        base = self.base_cls(groups, **self.base_kwargs)
        for new, old in zip(base.param_groups, previous or [], strict=False):
            for key in ("lr", "initial_lr"):
                if key in old:
                    new[key] = old[key]
        return base

    def _share(self) -> None:
        self.param_groups = self.base.param_groups
        self.state = self.base.state

    def rebuild(self) -> None:
        """A new base optimizer over the model's parameters now (learning rates kept)."""
        self.base = self._build(self.param_groups)
        self._share()

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.base.step()
        self._check_finite()
        event = self.events.get(self.step_count)
        if event is not None:
            with torch.enable_grad():  # Torch-Pruning traces with autograd
                event(self)
            self.rebuild()
        if self.hold is not None:
            self.hold()
        self.step_count += 1
        return loss

    def _check_finite(self) -> None:
        for p in self.param_groups[1]["params"]:
            if not bool(torch.isfinite(p).all()):
                raise DivergenceError(
                    f"step {self.step_count}: a quantizer step of shape {tuple(p.shape)} is "
                    "not finite (the fixed-bit QAT diverged); a lower learning rate may help"
                )

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError("the baselines change the model's shape; they do not resume")
