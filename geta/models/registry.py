"""A small registry of zoo models with example inputs, so tests, benchmarks and the CLI can
build any of them by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "ModelSpec",
    "register_model",
    "get_model",
    "list_models",
    "example_inputs",
    "model_spec",
]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    factory: Callable[..., nn.Module]
    make_inputs: Callable[[int], tuple[tuple, dict[str, Any]]]
    tags: tuple[str, ...] = field(default_factory=tuple)


_MODELS: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    make_inputs: Callable[[int], tuple[tuple, dict[str, Any]]],
    tags: tuple[str, ...] = (),
):
    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _MODELS[name] = ModelSpec(name, factory, make_inputs, tags)
        return factory

    return deco


def image_inputs(channels: int, size: int) -> Callable[[int], tuple[tuple, dict[str, Any]]]:
    def make(batch: int) -> tuple[tuple, dict[str, Any]]:
        return (torch.randn(batch, channels, size, size),), {}

    return make


def model_spec(name: str) -> ModelSpec:
    """The registered :class:`ModelSpec` (factory, inputs, tags) of zoo model ``name``."""
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def get_model(name: str, **kwargs: Any) -> nn.Module:
    return model_spec(name).factory(**kwargs)


def list_models(tag: str | None = None) -> list[str]:
    return sorted(n for n, s in _MODELS.items() if tag is None or tag in s.tags)


def example_inputs(name: str, batch: int = 2) -> tuple[tuple, dict[str, Any]]:
    """Example ``(args, kwargs)`` for a zoo model at its default configuration."""
    return _MODELS[name].make_inputs(batch)
