"""The central invariant, as a reusable check: zeroing units and then removing them gives the
same outputs as the zeroed full model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.utils._pytree as pytree
from torch import nn

from geta.graph.dependency_graph import DependencyGraph
from geta.graph.surgery import Plan, prune, zero_groups

__all__ = ["EquivalenceResult", "random_plan", "check_prune_equivalence"]


@dataclass(frozen=True)
class EquivalenceResult:
    max_abs_diff: float
    output_scale: float
    params_before: int
    params_after: int
    plan: dict[int, list[int]]

    @property
    def tolerance(self) -> float:
        return 1e-4 * max(1.0, self.output_scale)

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.params_after < self.params_before


def random_plan(
    graph: DependencyGraph, fraction: float = 0.3, seed: int = 0
) -> dict[int, list[int]]:
    """Remove a random ``fraction`` (at least one unit, never all) of every exact group
    (inexact ones, pruned through a norm, cannot keep the outputs)."""
    rng = np.random.default_rng(seed)
    plan = {}
    for g in graph.groups:
        if not g.exact:
            continue
        k = min(max(1, int(round(fraction * g.size))), g.size - 1)
        if k > 0:
            plan[g.id] = sorted(rng.choice(g.size, k, replace=False).tolist())
    return plan


def _outputs(model: nn.Module, args: tuple, kwargs: Mapping[str, Any]) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(*args, **kwargs)
    return [
        t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor) and t.is_floating_point()
    ]


def check_prune_equivalence(
    model: nn.Module,
    graph: DependencyGraph,
    args: tuple,
    kwargs: Mapping[str, Any] | None = None,
    plan: Plan | None = None,
    *,
    producers_only: bool = False,
) -> EquivalenceResult:
    """Zero ``plan`` (default: a random 30% of every group) in ``model``, run it, prune the same
    units, run again and compare. ``model`` ends up pruned."""
    kwargs = kwargs or {}
    plan = dict(plan) if plan is not None else random_plan(graph)
    before = sum(p.numel() for p in model.parameters())
    zero_groups(model, graph, plan, producers_only=producers_only)
    zeroed = _outputs(model, args, kwargs)
    prune(model, graph, plan)
    pruned = _outputs(model, args, kwargs)
    after = sum(p.numel() for p in model.parameters())
    diff = max(
        ((a - b).abs().max().item() for a, b in zip(zeroed, pruned, strict=True)), default=0.0
    )
    scale = max((a.abs().max().item() for a in zeroed), default=0.0)
    return EquivalenceResult(diff, scale, before, after, {k: list(v) for k, v in plan.items()})
