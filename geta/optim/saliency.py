"""Group saliency, vectorised over every unit of every group.

Per unit (one channel / head of a group, all its member slices together) we accumulate
``||x||^2``, ``||g||^2`` and ``<x, g>`` with one reduction and one ``index_add_`` per
(tensor, dim) pair, never a Python loop over groups. From those:

- ``"magnitude"``: ``||x_u||^2``;
- ``"taylor"``: first-order Taylor, ``|<x_u, g_u>|``, averaged over the steps observed so far
  (:meth:`UnitStatistics.observe`, a running mean as :class:`Curvature`'s; Molchanov et al.
  2019 average it over mini-batches too): one batch's value ranks units by noise;
- ``"geta"`` (default): GETA's five criteria, each divided by its largest value over all units
  and averaged with weight 0.2: ``||x||``, ``||x|| / |u|``, ``cos(x, g) + 1``, ``|<x, g>|``,
  ``0.5 <x, g>^2``;
- ``"fisher"``: Optimal Brain Damage with the diagonal empirical Fisher ``F`` (a running mean
  of squared gradients, :class:`Curvature`): ``0.5 sum_u F x^2``, the loss a unit's removal
  costs to second order. It is already in loss units, and the projection then weighs the
  quantization distortion of each layer by the same curvature, so removing units and lowering
  bits are traded on one scale: the loss, not the weight error.

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

__all__ = [
    "UnitStatistics",
    "Curvature",
    "SALIENCY",
    "LOSS_SCALED",
    "AVERAGED",
    "RunningMean",
    "saliency",
    "importance",
    "register_saliency",
]


@dataclass
class _Slice:
    tensor: str
    dim: int
    positions: torch.Tensor  # indices along dim
    unit_ids: torch.Tensor  # the unit each index belongs to

    def on(self, device: torch.device) -> _Slice:
        """This slice with its index tensors on ``device``."""
        return _Slice(self.tensor, self.dim, self.positions.to(device), self.unit_ids.to(device))


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
        self._slices_on: dict[torch.device, list[_Slice]] = {}  # the slices' copies per device
        self.taylor = RunningMean(self.units.count)
        self.count = torch.zeros(self.units.count, dtype=torch.float64)
        for s in self.slices:
            shape = params[s.tensor].shape
            per_index = int(np.prod(shape)) // shape[s.dim]
            self.count.index_add_(
                0, s.unit_ids, torch.full((len(s.unit_ids),), float(per_index), dtype=torch.float64)
            )

    @torch.no_grad()
    def observe(self) -> None:
        """Add this step's ``|<x_u, g_u>|`` (the gradients in place) to the running mean.
        The sums and the slices' index tensors (copied once per device) stay on the
        parameters' device: no copy between host and device at each step."""
        if not self.slices:
            return
        device = self.params[self.slices[0].tensor].device
        if device not in self._slices_on:
            self._slices_on[device] = [s.on(device) for s in self.slices]
        xg = torch.zeros(self.units.count, dtype=torch.float64, device=device)
        for s in self._slices_on[device]:
            p = self.params[s.tensor]
            if p.grad is not None:
                _add_to_units(xg, s, _per_index(p.detach().float() * p.grad.detach().float(), s))
        self.taylor.add(xg.abs())

    @torch.no_grad()
    def compute(
        self, with_grad: bool = True, curvature: Curvature | None = None
    ) -> dict[str, torch.Tensor]:
        """``x2``, ``g2``, ``xg`` (float64 tensors of one value per unit) and ``n``; with
        ``curvature`` also ``fx2``, the curvature-weighted energy ``sum F x^2``; once steps
        were observed also ``axg``, the running mean of ``|<x, g>|``."""
        n = self.units.count
        keys = ("x2", "g2", "xg", "fx2") if curvature is not None else ("x2", "g2", "xg")
        out = {k: torch.zeros(n, dtype=torch.float64) for k in keys}
        for s in self.slices:
            p = self.params[s.tensor]
            x = p.detach().float()
            sums = {"x2": x.square()}
            if with_grad and p.grad is not None:
                g = p.grad.detach().float()
                sums["g2"] = g.square()
                sums["xg"] = x * g
            if curvature is not None:
                sums["fx2"] = curvature.of(s.tensor, p) * x.square()
            for key, values in sums.items():
                _add_to_units(out[key], s, _per_index(values, s))
        out["n"] = self.count
        if self.taylor.steps:
            out["axg"] = self.taylor.value.to("cpu", copy=True)
        return out


def _per_index(values: torch.Tensor, s: _Slice) -> torch.Tensor:
    """``values`` (shaped like the slice's tensor) summed over every dim but the slice's."""
    dims = [d for d in range(values.dim()) if d != s.dim]
    return values.sum(dims) if dims else values


def _add_to_units(out: torch.Tensor, s: _Slice, per_index: torch.Tensor) -> None:
    """Add the slice's indices' values to the units they belong to (``out``: one per unit, on
    any device)."""
    picked = per_index.index_select(0, s.positions.to(per_index.device))
    out.index_add_(0, s.unit_ids.to(out.device), picked.to(out.device, torch.float64))


def _running_weight(steps: int, decay: float) -> float:
    """The newest value's weight in a bias-corrected running mean: the exact mean until
    ``1 / (1 - decay)`` steps, then an exponential decay."""
    return max(1.0 - decay, 1.0 / steps)


class RunningMean:
    """A bias-corrected running mean of one value per unit (:func:`_running_weight`), like
    :class:`Curvature`'s.

    Example:
        >>> m = RunningMean(2); m.add(torch.tensor([1.0, 0.0])); m.add(torch.tensor([3.0, 2.0]))
        >>> m.value.tolist(), m.steps
        ([2.0, 1.0], 2)
    """

    def __init__(self, count: int, decay: float = 0.99) -> None:
        self.decay = decay
        self.value = torch.zeros(count, dtype=torch.float64)
        self.steps = 0

    def add(self, x: torch.Tensor) -> None:
        """Add one value per unit; the mean moves to ``x``'s device (and stays there)."""
        self.value = self.value.to(x.device)
        self.steps += 1
        weight = _running_weight(self.steps, self.decay)
        self.value.mul_(1 - weight).add_(x.to(self.value), alpha=weight)

    def state_dict(self) -> dict[str, object]:
        return {"steps": self.steps, "value": self.value.to("cpu", copy=True)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.steps = int(state["steps"])
        self.value = state["value"].clone().to(torch.float64)


class Curvature:
    """A running mean of each parameter's squared gradient (the diagonal empirical Fisher):
    the loss a small change ``delta`` of a weight costs is about ``0.5 F delta^2``.

    :meth:`observe` is called once per optimizer step (before the step, gradients in place).
    A parameter not seen yet has curvature zero.

    Example:
        >>> p = torch.nn.Parameter(torch.ones(3)); p.grad = torch.tensor([1.0, 2.0, 0.0])
        >>> c = Curvature({"p": p}); c.observe(); c.of("p", p).tolist()
        [1.0, 4.0, 0.0]
    """

    def __init__(self, params: dict[str, torch.Tensor], decay: float = 0.99) -> None:
        self.params = params
        self.decay = decay
        self.state: dict[str, torch.Tensor] = {}
        self.steps = 0

    @torch.no_grad()
    def observe(self) -> None:
        self.steps += 1
        weight = _running_weight(self.steps, self.decay)
        for name, p in self.params.items():
            if p.grad is None:
                continue
            g2 = p.grad.detach().float().square()
            if name not in self.state:
                self.state[name] = g2.clone()
            else:
                self.state[name].mul_(1 - weight).add_(g2, alpha=weight)

    def of(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """The curvature of parameter ``name`` (zeros when never observed)."""
        value = self.state.get(name)
        if value is None or value.shape != like.shape:
            return torch.zeros(like.shape, device=like.device)
        return value.to(like.device)

    def state_dict(self) -> dict[str, object]:
        return {"steps": self.steps, "state": dict(self.state)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.steps = int(state["steps"])
        self.state = {k: v.clone() for k, v in state["state"].items()}


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
    "taylor": lambda s: s["axg"] if "axg" in s else s["xg"].abs(),
    "geta": _geta,
    "fisher": lambda s: 0.5 * s["fx2"],
}
LOSS_SCALED = {"fisher"}  # criteria already in loss units: distortion is weighed to match
AVERAGED = {"taylor"}  # criteria read from the running mean of UnitStatistics.observe


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
    if criterion in LOSS_SCALED:
        return saliency(stats, criterion).numpy().copy()
    weighted = saliency(stats, criterion).clamp_min(0) * stats["n"]
    total = weighted.sum()
    if not torch.isfinite(total) or total <= 0:
        return stats["x2"].numpy().copy()
    return (weighted * (stats["x2"].sum() / total)).numpy()
