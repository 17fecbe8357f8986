"""The ``config.json`` a pruned transformers model is saved with: one that builds the pruned
shapes exactly where such a config exists, so that plain ``transformers`` loads the checkpoint.

The sizes come from the family adapters where a family registers one
(:mod:`geta.hf.families`), and are otherwise inferred: every dim pruning changed did so by a
ratio (kept / dense), and a config field related to such a dim is scaled by its ratio where
that makes more of the model's tensors come out at their pruned shapes (built on the meta
device). Layers pruned differently have no such config; the checkpoint then records every
shape in ``geta.json`` and :func:`geta.hf.from_pretrained` rebuilds it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import torch
from torch import nn

from geta.hf.families import LayerFields

__all__ = ["saved_config", "float_shapes", "build", "changed_attributes"]


def float_shapes(model: nn.Module) -> dict[str, list[int]]:
    """Shapes of every stored tensor under its float (unprepared) name."""
    from geta.export.artifact import _float_state

    return {name: list(t.shape) for name, t in _float_state(model)[0].items()}


def _counterpart(config: Any, model_type: str | None) -> Any:
    """The config (or sub-config) of ``config`` with this ``model_type``."""
    pending = [config]
    while pending:
        cfg = pending.pop()
        if cfg is None:
            continue
        if cfg.model_type == model_type:
            return cfg
        pending.extend(getattr(cfg, key, None) for key in cfg.sub_configs)
    return None


def build(cls: type, config: Any, **kwargs: Any) -> nn.Module:
    with torch.device("meta"):
        return cls(config, **kwargs)


def saved_config(model: nn.Module, layers: list[LayerFields]) -> tuple[Any, bool]:
    """The config to save and whether it builds the pruned model's exact shapes (then plain
    transformers loads the checkpoint)."""
    candidate = copy.deepcopy(model.config)
    values: dict[tuple[int, str], set[int]] = {}
    targets: dict[int, Any] = {}
    representable = True
    for layer in layers:
        target = _counterpart(candidate, getattr(layer.config, "model_type", None))
        if target is None:
            representable = False
            continue
        targets[id(target)] = target
        for key, value in layer.fields.items():
            values.setdefault((id(target), key), set()).add(int(value))
    if representable and all(len(v) == 1 for v in values.values()):
        for (target_id, key), value in values.items():
            setattr(targets[target_id], key, next(iter(value)))
        if float_shapes(build(type(model), candidate)) == float_shapes(model):
            return candidate, True
    inferred = _inferred_config(model)
    if inferred is not None:
        return inferred, True
    return copy.deepcopy(model.config), False


def _config_fields(config: Any) -> Iterator[tuple[Any, str, int]]:
    """Every integer field of ``config`` and its sub-configs: (config, name, value)."""
    pending, seen = [config], set()
    while pending:
        cfg = pending.pop()
        if cfg is None or id(cfg) in seen:
            continue
        seen.add(id(cfg))
        for key, value in sorted(vars(cfg).items()):
            if not key.startswith("_") and isinstance(value, int) and not isinstance(value, bool):
                yield cfg, key, value
        pending.extend(getattr(cfg, key, None) for key in getattr(cfg, "sub_configs", {}))


def _inferred_config(model: nn.Module, rounds: int = 4, builds: int = 64) -> Any | None:
    """A config that builds the pruned model's exact shapes, found without a family adapter:
    every dim that pruning changed did so by some ratio (kept / dense); a config field related
    to such a dim (one divides the other) is scaled by its ratio where that makes more of the
    model's tensors come out at their pruned shapes (built on the meta device), field by field,
    until all do. None where no such config exists (layers pruned differently, or sizes the
    config derives, such as BERT's head size = hidden / heads), or when ``builds`` models
    did not find it (saving stays fast for layers pruned to different sizes)."""
    target = float_shapes(model)
    config = copy.deepcopy(model.config)
    spent = 0

    def misses() -> int:
        nonlocal spent
        spent += 1
        try:
            built = float_shapes(build(type(model), config))
        except Exception:  # a field combination the model class rejects
            return len(target) + 1
        return sum(built.get(name) != shape for name, shape in target.items()) + len(
            set(built) - set(target)
        )

    dense = float_shapes(build(type(model), config))
    changed: set[tuple[int, Any]] = set()
    for name, shape in target.items():
        for before, after in zip(dense.get(name, shape), shape, strict=False):
            if before != after and before > 0:
                changed.add((before, Fraction(after, before)))
    best = misses()
    added = []
    for key, value in _derived_sizes(model, config).items():
        setattr(config, key, value)  # a size the config derives unless it names it (head_dim)
        score = misses()
        if score <= best:  # the same shapes so far: it may let a scaled field land
            best = score
            added.append(key)
        else:
            delattr(config, key)
    for _ in range(rounds):
        if best == 0 or not changed or spent >= builds:
            break
        improved = False
        for cfg, key, value in list(_config_fields(config)):
            options = {
                value * ratio
                for size, ratio in changed
                if value and (size % value == 0 or value % size == 0)
            }
            for new in sorted(o for o in options if o.denominator == 1 and 0 < o != value):
                if spent >= builds:
                    break
                setattr(cfg, key, int(new))
                score = misses()
                if score < best:
                    best, improved = score, True
                    break
                setattr(cfg, key, value)
        if not improved:
            break
    if best:
        return None
    for key in added:  # keep only the derived sizes the config needs
        value = getattr(config, key)
        delattr(config, key)
        if misses():
            setattr(config, key, value)
    return config


def _derived_sizes(model: nn.Module, config: Any) -> dict[str, int]:
    """The module sizes that are one value in every module that has them, under names the
    config does not have: fields a config may take to say what it otherwise derives (Qwen2
    derives ``head_dim`` from hidden / heads unless its config names one, which a pruned
    head count needs)."""
    from geta.export.artifact import _module_attributes

    values: dict[str, set[int]] = {}
    names = {name for name, _ in model.named_modules()}
    for attrs in _module_attributes(model, names).values():
        for key, value in attrs.items():
            if isinstance(value, int) and "." not in key:
                values.setdefault(key, set()).add(value)
    return {
        key: next(iter(found))
        for key, found in sorted(values.items())
        if len(found) == 1 and not hasattr(config, key)
    }


def changed_attributes(model: nn.Module, reference: nn.Module) -> dict[str, dict[str, Any]]:
    """Integer attributes of ``model``'s modules that differ from the freshly built reference."""
    from geta.export.artifact import _module_attributes

    names = {name for name, _ in reference.named_modules()}
    before, after = _module_attributes(reference, names), _module_attributes(model, names)
    out = {}
    for name, attrs in after.items():
        changed = {k: v for k, v in attrs.items() if before.get(name, {}).get(k, v) != v}
        if changed:
            out[name] = changed
    return out
