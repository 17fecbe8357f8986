"""A small synthetic image-classification set: fast, learnable, and needs no files."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

__all__ = ["synthetic_images"]


def synthetic_images(
    train: int = 1024,
    test: int = 256,
    *,
    classes: int = 10,
    shape: tuple[int, int, int] = (1, 28, 28),
    noise: float = 0.5,
    seed: int = 0,
) -> tuple[TensorDataset, TensorDataset]:
    """``(train, test)`` datasets of images drawn around one random pattern per class (unit
    variance patterns plus Gaussian ``noise``); classes are balanced and the same ``seed``
    gives the same data. For tests and quick trials of the command line.

    Example:
        >>> tr, te = synthetic_images(64, 32)
        >>> tr.tensors[0].shape, int(te.tensors[1].max()) < 10
        (torch.Size([64, 1, 28, 28]), True)
    """
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randn(classes, *shape, generator=g)

    def draw(n: int) -> TensorDataset:
        labels = torch.arange(n) % classes
        labels = labels[torch.randperm(n, generator=g)]
        images = patterns[labels] + noise * torch.randn(n, *shape, generator=g)
        return TensorDataset(images, labels)

    return draw(train), draw(test)
