"""Zeroing groups in place, and removing them physically from a live ``nn.Module``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from geta.errors import PruneError
from geta.graph.dependency_graph import DependencyGraph
from geta.graph.groups import PruningGroup
from geta.graph.module_adapters import adapt_model, adapt_module
from geta.graph.rewrites import apply_rewrites

__all__ = ["Plan", "zero_groups", "prune", "apply_plan"]

Plan = Mapping[int, Sequence[int]]


def _resolve_plan(graph: DependencyGraph, plan: Plan) -> list[tuple[PruningGroup, np.ndarray]]:
    if graph.stale:
        raise PruneError(
            "this graph describes the model before an earlier prune(); trace the pruned model again"
        )
    resolved = []
    for gid, indices in plan.items():
        try:
            group = graph.group(int(gid))
        except KeyError:
            raise PruneError(
                f"plan names group {gid}, which is not a prunable group of this graph "
                f"(valid ids: 0..{len(graph.groups) - 1})"
            ) from None
        idx = np.asarray(list(indices), dtype=np.int64)
        if idx.size == 0:
            continue
        if idx.min() < 0 or idx.max() >= group.size:
            raise PruneError(
                f"plan for group {gid} has index {int(idx.max() if idx.max() >= group.size else idx.min())} "
                f"out of range: the group has {group.size} units (0..{group.size - 1}); "
                f"members include {group.members[0].name}"
            )
        if len(np.unique(idx)) != idx.size:
            raise PruneError(f"plan for group {gid} repeats an index")
        if idx.size >= group.size:
            raise PruneError(
                f"plan removes all {group.size} units of group {gid} ({group.layers[0]}); keep at least one"
            )
        resolved.append((group, np.unique(idx)))
    return resolved


def _tensor(model: nn.Module, name: str) -> torch.Tensor:
    module_name, _, attr = name.rpartition(".")
    try:
        module = model.get_submodule(module_name)
    except AttributeError as err:
        raise PruneError(f"{name} is in the graph but not in this model: {err}") from None
    tensor = module._parameters.get(attr, module._buffers.get(attr))
    if tensor is None:
        raise PruneError(
            f"{name} is in the graph but not in this model (was it traced from another model?)"
        )
    return tensor


def zero_groups(
    model: nn.Module, graph: DependencyGraph, plan: Plan, *, producers_only: bool = False
) -> None:
    """Set every member slice of the planned units to zero, in place.

    ``plan`` maps a group id to the unit indices to zero. Quantizer parameters are never
    zeroed (a quantizer maps zero to zero). With ``producers_only`` the consumer slices
    (in-channels of the next layers) are left alone too.

    Example:
        >>> geta.zero_groups(model, graph, {0: [1, 4]})  # doctest: +SKIP
    """
    with torch.no_grad():
        for group, idx in _resolve_plan(graph, plan):
            for m in group.members:
                if m.role == "quantizer" or (producers_only and m.role == "consumer"):
                    continue
                t = _tensor(model, m.name)
                pos = torch.as_tensor(m.positions[idx].ravel(), device=t.device)
                t.index_fill_(m.dim, pos, 0)


def _owners(model: nn.Module) -> dict[int, list[tuple[nn.Module, str, bool]]]:
    """Every (module, attribute, is buffer) holding each tensor, by the tensor's id (a tied
    tensor has several owners)."""
    found: dict[int, list[tuple[nn.Module, str, bool]]] = {}
    for module in model.modules():
        for attr, p in module._parameters.items():
            if p is not None:
                found.setdefault(id(p), []).append((module, attr, False))
        for attr, b in module._buffers.items():
            if b is not None:
                found.setdefault(id(b), []).append((module, attr, True))
    return found


def prune(model: nn.Module, graph: DependencyGraph, plan: Plan) -> nn.Module:
    """Physically remove the planned units from ``model`` (in place) and return it.

    Every member tensor is sliced, and each affected module's attributes are updated by its
    module adapter, so the model stays an ordinary ``nn.Module`` that runs, trains, saves
    and can be traced again. The graph is stale afterwards.

    Raises:
        PruneError: an unknown group, an index out of range, a plan that removes a whole
            group, or a module whose structural sizes conflict.

    Example:
        >>> graph = geta.trace(model, x)                     # doctest: +SKIP
        >>> geta.prune(model, graph, {0: [1, 4], 3: [0]})    # doctest: +SKIP
    """
    resolved = _resolve_plan(graph, plan)
    if resolved:
        apply_plan(model, graph, resolved)
        graph.stale = True
    return model


def apply_plan(
    model: nn.Module, graph: DependencyGraph, resolved: list[tuple[PruningGroup, np.ndarray]]
) -> None:
    """Slice every member tensor and update module attributes: each touched module's adapter,
    the model adapters, then the groups' attribute rewrites (the graph stays usable)."""
    spaces = graph.spaces
    keep: dict[tuple[str, int], np.ndarray] = {}
    for group, idx in resolved:
        for m in group.members:
            size = graph.analysis.tensors[m.name].shape[m.dim]
            mask = keep.setdefault((m.name, m.dim), np.ones(size, dtype=bool))
            mask[m.positions[idx].ravel()] = False

    by_tensor: dict[str, list[tuple[int, np.ndarray]]] = {}
    for (name, dim), mask in keep.items():
        by_tensor.setdefault(name, []).append((dim, np.nonzero(mask)[0]))

    touched: dict[nn.Module, dict[str, int]] = {}
    owners = _owners(model)
    with torch.no_grad():
        for name, dims in by_tensor.items():
            old = _tensor(model, name)
            new = old.detach()
            for dim, kept in dims:
                new = new.index_select(dim, torch.as_tensor(kept, device=old.device))
            new = new.contiguous()
            if isinstance(old, nn.Parameter):
                new = nn.Parameter(new, requires_grad=old.requires_grad)
            for module, attr, is_buffer in owners.get(id(old), []):  # each owner of a tied one
                (module._buffers if is_buffer else module._parameters)[attr] = new
                touched.setdefault(module, {})

    for (
        module
    ) in model.modules():  # a parametrized weight lives in the module's ParametrizationList
        if parametrize.is_parametrized(module) and any(
            plist in touched for plist in module.parametrizations.values()
        ):
            touched.setdefault(module, {})

    removed = {spaces.find(g.leaf): idx for g, idx in resolved}
    for binding in graph.analysis.bindings:
        mask = spaces.keep_mask(binding.atom, removed)
        if mask is None:
            continue
        try:
            module = model.get_submodule(binding.module)
        except AttributeError:
            continue
        quantities = touched.setdefault(module, {})
        value = int(mask.sum())
        if quantities.get(binding.quantity, value) != value:
            raise PruneError(
                f"module {binding.module or type(model).__name__} is used with two different "
                f"{binding.quantity} after pruning ({quantities[binding.quantity]} and {value})"
            )
        quantities[binding.quantity] = value
    for module, quantities in touched.items():
        adapt_module(module, quantities)
    adapt_model(model)
    apply_rewrites(
        model,
        [
            (r, group.size, group.size - len(idx))
            for group, idx in resolved
            for r in graph.rewrites_of(group)
        ],
    )
