"""A ``torch.optim.Optimizer`` around a base optimizer (SGD, Adam, ...) that shares its
parameter groups and state: what every geta mode's optimizer builds on."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from geta.distributed import gathered
from geta.errors import DivergenceError

__all__ = ["WrappedOptimizer", "BASE_OPTIMIZERS"]

BASE_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}


class WrappedOptimizer(torch.optim.Optimizer):
    """Holds ``self.base`` (built from ``base`` and ``base_kwargs``); ``param_groups`` and
    ``state`` are the base's, so LR schedulers, gradient clipping and checkpoints see one
    optimizer. Subclasses implement ``step``."""

    def __init__(
        self,
        params: Iterable[Any],
        base: str | type[torch.optim.Optimizer] = "sgd",
        **base_kwargs: Any,
    ) -> None:
        base_cls = BASE_OPTIMIZERS.get(base, base) if isinstance(base, str) else base
        if isinstance(base_cls, str):
            raise ValueError(f"unknown base optimizer {base!r}; use {', '.join(BASE_OPTIMIZERS)}")
        self.base = base_cls(params, **base_kwargs)
        super().__init__(self.base.param_groups, self.base.defaults)
        self._share_base_state()

    def _share_base_state(self) -> None:
        self.param_groups = self.base.param_groups
        self.state = self.base.state

    def _load_base_state(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.base.param_groups = self.param_groups
        self.base.state = self.state

    def _closure_loss(self, closure: Callable[[], Any] | None) -> Any:
        """Run the closure (if any) with gradients on and, when ``self.check_finite_values``,
        check the loss and gradients of ``self.problem.model`` at ``self.step_count``."""
        loss = self._run_closure(closure)
        with self._full_parameters():
            self._check_step(loss)
        return loss

    @staticmethod
    def _run_closure(closure: Callable[[], Any] | None) -> Any:
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()

    def _check_step(self, loss: Any) -> None:
        """:meth:`check_finite` of this step, when ``self.check_finite_values``."""
        if self.check_finite_values:
            self.check_finite(loss, self.problem.model, self.step_count)

    def _full_parameters(self) -> AbstractContextManager[bool]:
        """The model's parameters in full for the block, when it is sharded (FSDP2); what the
        mode does to the model between base steps runs inside it."""
        return gathered(self.problem.model, self.problem.rebind)

    def check_finite(self, loss: Any, model: nn.Module, step: int) -> None:
        """Raise :class:`geta.DivergenceError` on a non-finite loss or gradient, before the
        model is touched."""
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss).all()):
            raise DivergenceError(
                f"the loss is {loss.item()} at step {step}; lower the learning rate "
                "(or lr_quant), clip gradients, or check the data"
            )
        named = [(n, p) for n, p in model.named_parameters() if p.grad is not None]
        grads = [p.grad for _, p in named]
        if grads and not bool(torch.stack(torch._foreach_norm(grads)).isfinite().all()):
            bad = next(n for n, p in named if not bool(p.grad.isfinite().all()))
            raise DivergenceError(
                f"non-finite gradient in {bad} at step {step}; the model was not "
                "updated. Lower the learning rate (or lr_quant), clip gradients, or check the data"
            )
