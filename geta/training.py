"""A plain classification training loop for the CLI, the benchmarks and the notebooks (geta's
optimizer works in any loop; this is only the one geta's own tools use)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

__all__ = ["evaluate", "evaluate_metrics", "fit", "train_epoch", "History", "model_device"]


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); the CPU for a model with none.
    Batches are moved there, so the same loop trains on a CPU or a GPU."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@dataclass
class History:
    """Per-step loss and per-epoch test accuracy of a run, plus its wall time."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0
    extra: list[dict] = field(default_factory=list)


@torch.no_grad()
def evaluate_metrics(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    """``(mean cross-entropy loss, top-1 accuracy in 0..1)`` of ``model`` on ``loader``, in
    eval mode (mode restored)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    loss = 0.0
    device = model_device(model)
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        total += len(y)
    model.train(was_training)
    return loss / max(total, 1), correct / max(total, 1)


def evaluate(model: nn.Module, loader: DataLoader) -> float:
    """Top-1 accuracy (0..1) of ``model`` on ``loader``, in eval mode (mode restored)."""
    return evaluate_metrics(model, loader)[1]


def train_epoch(
    model: nn.Module,
    train: DataLoader,
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    on_step: Callable[[int, float], None] | None = None,
    bar: tqdm | None = None,
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> list[float]:
    """One pass over ``train`` with cross-entropy, stepping ``scheduler`` every step; calls
    ``on_step(step_in_epoch, loss)`` after each step; batches go to the model's device.
    ``loss_fn(model, x, y)`` replaces the cross-entropy (e.g. to mix in distillation).
    Returns the step losses (NaN where not finite)."""
    model.train()
    losses = []
    device = model_device(model)
    for i, (x, y) in enumerate(train):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = loss_fn(model, x, y) if loss_fn is not None else F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if scheduler is not None:
            scheduler.step()
        value = float(loss.detach())
        losses.append(value if math.isfinite(value) else float("nan"))
        if on_step is not None:
            on_step(i, value)
        if bar is not None:
            bar.update(1)
    return losses


def fit(
    model: nn.Module,
    train: DataLoader,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    *,
    test: DataLoader | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    on_step: Callable[[int], dict | None] | None = None,
    progress: bool = True,
    description: str = "train",
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> History:
    """Train with cross-entropy for ``epochs``, stepping ``scheduler`` every step; evaluates on
    ``test`` after each epoch. ``on_step(step)`` may return a dict that is kept in
    ``history.extra`` (e.g. the cost against the budget); ``loss_fn`` as in
    :func:`train_epoch`."""
    history = History()
    start = time.perf_counter()
    step = 0
    bar = tqdm(total=epochs * len(train), desc=description, disable=not progress, leave=False)

    def step_done(_: int, value: float) -> None:
        nonlocal step
        if on_step is not None and (info := on_step(step)):
            history.extra.append(info)
        step += 1
        bar.set_postfix(loss=f"{value:.3f}")

    for _ in range(epochs):
        history.loss += train_epoch(
            model,
            train,
            optimizer,
            scheduler=scheduler,
            on_step=step_done,
            bar=bar,
            loss_fn=loss_fn,
        )
        if test is not None:
            history.accuracy.append(evaluate(model, test))
    bar.close()
    history.seconds = time.perf_counter() - start
    return history
