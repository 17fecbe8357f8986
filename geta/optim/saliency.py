"""Group saliency, vectorised over every unit of every group.

Per unit (one channel / head of a group, all its member slices together) we accumulate
``||x||^2``, ``||g||^2`` and ``<x, g>`` with one reduction and one ``index_add_`` per
(tensor, dim) pair, never a Python loop over groups. From those:

- ``"magnitude"``: ``||x_u||^2``;
- ``"taylor"``: first-order Taylor, ``|<x_u, g_u>|``;
- ``"geta"`` (default): GETA's five criteria, each divided by its largest value over all units
  and averaged with weight 0.2: ``||x||``, ``||x|| / |u|``, ``cos(x, g) + 1``, ``|<x, g>|``,
  ``0.5 <x, g>^2``.

The budget projection trades removing units against losing bits, so it needs importances in
one unit, squared weight error: :func:`importance` gives unit ``u`` the importance
``c * saliency_u * |u|`` (saliency read as a per-scalar score, times the unit's scalars), with
``c`` chosen so the importances sum to the total weight energy ``sum_u ||x_u||^2``. That keeps
the saliency's order within equal-sized units and puts it on the scale of the quantization
distortion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from geta.graph.dependency_graph import DependencyGraph
from geta.optim.cost import UnitIndex

__all__ = ["UnitStatistics", "SALIENCY", "saliency", "importance", "register_saliency"]


@dataclass
class _Slice:
    tensor: str
    dim: int
    positions: torch.Tensor  # indices along dim
    unit_ids: torch.Tensor  # the unit each index belongs to


class UnitStatistics:
    """Per-unit sums over the member slices of every group.

    Example:
        >>> stats = UnitStatistics(model, graph)                  # doctest: +SKIP
        >>> s = stats.compute()                                   # doctest: +SKIP
        >>> s["x2"].shape == (stats.units.count,)                 # doctest: +SKIP
        True
    """

    def __init__(self, model: nn.Module, graph: DependencyGraph) -> None:
        self.units = UnitIndex.from_graph(graph)
        params = dict(model.named_parameters(remove_duplicate=False))
        self.params = params
        slices: dict[tuple[str, int], tuple[list, list]] = {}
        for gi, group in enumerate(graph.groups):
            base = int(self.units.offsets[gi])
            for m in group.members:
                if m.is_buffer or m.role == "quantizer" or m.name not in params:
                    continue
                pos, ids = slices.setdefault((m.name, m.dim), ([], []))
                pos.append(m.positions.ravel())
                ids.append(np.repeat(base + np.arange(group.size), m.width))
        self.slices = [
            _Slice(
                name,
                dim,
                torch.as_tensor(np.concatenate(p), dtype=torch.long),
                torch.as_tensor(np.concatenate(u), dtype=torch.long),
            )
            for (name, dim), (p, u) in slices.items()
        ]
        self.count = torch.zeros(self.units.count, dtype=torch.float64)
        for s in self.slices:
            shape = params[s.tensor].shape
            per_index = int(np.prod(shape)) // shape[s.dim]
            self.count.index_add_(
                0, s.unit_ids, torch.full((len(s.unit_ids),), float(per_index), dtype=torch.float64)
            )

    @torch.no_grad()
    def compute(self, with_grad: bool = True) -> dict[str, torch.Tensor]:
        """``x2``, ``g2``, ``xg`` (float64 tensors of one value per unit) and ``n``."""
        n = self.units.count
        out = {k: torch.zeros(n, dtype=torch.float64) for k in ("x2", "g2", "xg")}
        for s in self.slices:
            p = self.params[s.tensor]
            dims = [d for d in range(p.dim()) if d != s.dim]
            x = p.detach().float()
            sums = {"x2": x.square().sum(dims) if dims else x.square()}
            if with_grad and p.grad is not None:
                g = p.grad.detach().float()
                sums["g2"] = g.square().sum(dims) if dims else g.square()
                sums["xg"] = (x * g).sum(dims) if dims else x * g
            for key, vec in sums.items():
                picked = vec.index_select(0, s.positions.to(vec.device)).double().cpu()
                out[key].index_add_(0, s.unit_ids, picked)
        out["n"] = self.count
        return out


def _normalise(v: torch.Tensor) -> torch.Tensor:
    top = v.abs().max()
    return v / top if top > 0 else v


def _geta(s: dict[str, torch.Tensor]) -> torch.Tensor:
    norm_x = s["x2"].sqrt()
    cos = s["xg"] / (norm_x * s["g2"].sqrt()).clamp_min(1e-30)
    criteria = (
        norm_x,
        norm_x / s["n"].clamp_min(1),
        cos + 1,
        s["xg"].abs(),
        0.5 * s["xg"].square(),
    )
    return sum(0.2 * _normalise(c) for c in criteria)


SALIENCY: dict[str, Callable[[dict[str, torch.Tensor]], torch.Tensor]] = {
    "magnitude": lambda s: s["x2"],
    "taylor": lambda s: s["xg"].abs(),
    "geta": _geta,
}


def register_saliency(name: str, fn: Callable[[dict[str, torch.Tensor]], torch.Tensor]) -> None:
    """Add a saliency criterion: a function of the unit statistics returning one score per
    unit (higher = more important)."""
    SALIENCY[name] = fn


def saliency(stats: dict[str, torch.Tensor], criterion: str = "geta") -> torch.Tensor:
    if criterion not in SALIENCY:
        raise ValueError(f"unknown saliency {criterion!r}; known: {', '.join(SALIENCY)}")
    return SALIENCY[criterion](stats)


def importance(stats: dict[str, torch.Tensor], criterion: str = "geta") -> np.ndarray:
    """Saliency on the scale of squared weight error (see the module docstring)."""
    if criterion == "magnitude":
        return stats["x2"].numpy().copy()
    weighted = saliency(stats, criterion).clamp_min(0) * stats["n"]
    total = weighted.sum()
    if not torch.isfinite(total) or total <= 0:
        return stats["x2"].numpy().copy()
    return (weighted * (stats["x2"].sum() / total)).numpy()
