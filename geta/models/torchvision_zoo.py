"""torchvision classification models at small input sizes, for tests and benchmarks.

The architectures are unchanged; only the input resolution (and ViT's image_size, kept at
4x4 patches) is reduced so every model runs quickly on a CPU. MaxViT needs its default 224
and Inception at least 75."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

__all__ = ["classification_models", "build_small", "small_input"]


def classification_models() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models)


def _vit_size(name: str) -> int:
    return 4 * int(name.rsplit("_", 1)[1])


def small_input(name: str, batch: int = 1) -> torch.Tensor:
    if name.startswith("vit_"):
        size = _vit_size(name)
    else:
        size = {"inception_v3": 96, "maxvit_t": 224}.get(name, 64)
    return torch.randn(batch, 3, size, size)


def build_small(name: str) -> nn.Module:
    """The model with random weights, in eval mode."""
    kwargs = {"image_size": _vit_size(name)} if name.startswith("vit_") else {}
    return torchvision.models.get_model(name, weights=None, **kwargs).eval()
