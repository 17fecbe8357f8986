"""Model-family adapters for HuggingFace transformers: the extension point for a family whose
sizes geta cannot work out by itself.

None ships with geta. The dependency graph finds heads and FFN channels from op semantics
alone, the trial prune rewrites the sizes a forward reads from module or config attributes
(:mod:`geta.graph.rewrites`), and the saved config's fields are inferred from the pruned shapes
(:mod:`geta.hf.saved_config`). Those cover every family the test suite names. A family whose
forward derives a size in a form neither can follow registers an adapter: it recomputes a
module's size attributes from its new weight shapes after every prune and reports the config
fields they stand for (a saved config then uses those)::

    register_family("gpt_neox", "transformers.models.gpt_neox.modeling_gpt_neox",
                    GPTNeoXAttention=attention, GPTNeoXMLP=mlp)

A family is keyed by its config's ``model_type``; classes are resolved only once the user's
model has imported its modeling module, so geta does not import transformers itself.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from geta.graph.module_adapters import register_model_adapter

__all__ = [
    "Family",
    "FamilyAdapter",
    "LayerFields",
    "register_family",
    "family_of",
    "families",
    "adapt",
    "heads",
]

FamilyAdapter = Callable[[nn.Module], dict[str, int]]
"""Updates one module's size attributes from its weights; returns the config fields (name to
value) that its sizes stand for, e.g. ``{"n_head": 3}``."""


@dataclass(frozen=True, eq=False)
class Family:
    """The adapters of one model family (a config ``model_type`` and its modeling module)."""

    model_types: tuple[str, ...]
    module: str
    adapters: dict[str, FamilyAdapter] = field(default_factory=dict)

    def resolved(self) -> list[tuple[type, FamilyAdapter]]:
        """(class, adapter) for the classes of an already imported modeling module."""
        library = sys.modules.get(self.module)
        if library is None:
            return []
        return [
            (getattr(library, name), fn)
            for name, fn in self.adapters.items()
            if isinstance(getattr(library, name, None), type)
        ]


@dataclass(frozen=True)
class LayerFields:
    """What one adapted module reports: its name, the config it belongs to, and its fields."""

    module: str
    config: Any
    fields: dict[str, int]


_FAMILIES: dict[str, Family] = {}


def register_family(
    model_types: str | Sequence[str], module: str, **adapters: FamilyAdapter
) -> Family:
    """Register the adapters of a model family, keyed by its config ``model_type``(s).

    Args:
        model_types: ``config.model_type`` value(s) of the family (CLIP: the model, its text and
            its vision config).
        module: the modeling module that defines the classes, e.g.
            ``"transformers.models.gpt_neox.modeling_gpt_neox"``.
        adapters: class name to adapter: ``adapter(module)`` updates the module's size
            attributes from its (pruned) weights and returns the config fields they stand for.

    Example:
        >>> register_family("gpt_neox",                                        # doctest: +SKIP
        ...                 "transformers.models.gpt_neox.modeling_gpt_neox",
        ...                 GPTNeoXMLP=lambda m: {"intermediate_size": m.dense_h_to_4h.out_features})
    """
    types = (model_types,) if isinstance(model_types, str) else tuple(model_types)
    family = Family(types, module, dict(adapters))
    for t in types:
        _FAMILIES[t] = family
    return family


def family_of(model_type: str | None) -> Family | None:
    """The family registered for a ``model_type``, if any."""
    return _FAMILIES.get(model_type) if model_type else None


def families() -> dict[str, Family]:
    """Every registered ``model_type`` and its family."""
    return dict(_FAMILIES)


def heads(width: int, head_dim: int) -> int:
    """Number of heads in a projection of ``width`` features."""
    return width // head_dim


def _is_hf_config(value: Any) -> bool:
    transformers = sys.modules.get("transformers")
    return transformers is not None and isinstance(value, transformers.PretrainedConfig)


def adapt(model: nn.Module) -> list[LayerFields]:
    """Run the family adapter of every module of ``model`` that has one.

    Returns what each adapted module reports, with the nearest HF config above it (the
    module's own ``config`` where it has one: CLIP's text and vision towers have their own).
    """
    lookup: dict[type, FamilyAdapter] = {}
    for family in dict.fromkeys(_FAMILIES.values()):
        lookup.update(family.resolved())
    if not lookup:
        return []
    out: list[LayerFields] = []
    stack: list[tuple[str, nn.Module, Any]] = [("", model, None)]
    while stack:
        name, module, config = stack.pop()
        own = getattr(module, "config", None)
        if _is_hf_config(own):
            config = own
        fn = next((lookup[t] for t in type(module).__mro__ if t in lookup), None)
        if fn is not None:
            out.append(LayerFields(name, config, fn(module)))
        children = list(module.named_children())
        for child_name, child in reversed(children):
            stack.append((f"{name}.{child_name}" if name else child_name, child, config))
    return out


@register_model_adapter
def _adapt_families(model: nn.Module) -> None:
    adapt(model)
