"""The V-step of the ADMM modes: project the weights onto the budget set (Yang et al.) or onto
per-layer targets (Ye et al.) (ALGORITHMS.md sections 2 and 3).

Unstructured (every weight a unit), vectorised over all layers:

1. sparsity with bits fixed (:func:`keep_top`): score every weight by ``z^2 / (coef_l b_l)``,
   sort all layers together and keep the best while the running cost stays within the budget
   (exact with one bit-width, otherwise the 0-1 knapsack greedy);
2. bits with the mask fixed: each layer's total uniform-quantization error of its kept weights
   at every bit option (clip re-fitted per bit-width), then the multiple-choice knapsack greedy
   (:func:`geta.optim.bit_allocation.allocate_bits`).

Which shared bit-width to start step 1 from is searched: every option is tried, each followed by
two rounds of (1, 2), and the pair with the least ``||Z - V||^2`` wins. Structured (the graph's
groups) goes through the shared :func:`geta.optim.projection.project` with the units' energy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from geta.errors import BudgetError
from geta.optim.admm.config import LayerTarget
from geta.optim.bit_allocation import allocate_bits
from geta.optim.cost import FLOAT_BITS
from geta.optim.problem import CompressionProblem
from geta.optim.projection import bit_distortion, keep_top, nonzero_code_share, project
from geta.quant.functional import clip_search, fake_quantize, step_for_bits

__all__ = [
    "LayerSpec",
    "WeightProjection",
    "uniform_clip",
    "uniform_quantize",
    "level_quantize",
    "project_budget",
    "project_targets",
    "project_groups",
    "unit_energy",
]


def _one(x: torch.Tensor) -> torch.Tensor:
    """``t = 1`` (GETA's quantizer exponent) on ``x``'s device."""
    return torch.ones(1, device=x.device)


@dataclass(frozen=True)
class LayerSpec:
    """How one counted layer's weights are quantized: not at all (32-bit float), or with a
    per-tensor / per-channel uniform quantizer along ``axis``."""

    quantized: bool
    per_channel: bool = False
    axis: int = 0


@dataclass
class WeightProjection:
    """The projection ``V``: per layer the kept weights (``masks``), their quantized values,
    the quantizer bits and clip that reproduce them exactly (``clip`` ``None``: float), and
    the cost (size: bits x kept weights) and squared distance ``||Z - V||^2``. ``removed`` is
    the unit removal mask of a structured projection."""

    masks: list[torch.Tensor]
    values: list[torch.Tensor]
    bits: np.ndarray
    clips: list[torch.Tensor | None]
    cost: float
    error: float
    removed: np.ndarray | None = None

    def nonzeros(self) -> np.ndarray:
        return np.array([float(m.sum()) for m in self.masks])


# ---------------------------------------------------------------------------- quantizers
def uniform_clip(x: torch.Tensor, bits: float, spec: LayerSpec) -> tuple[torch.Tensor, float]:
    """The clip of least squared error for GETA's quantizer at ``t = 1`` (one value, or one
    per channel) and the total squared error of ``x`` at ``bits``; a per-tensor clip is fitted
    on the nonzeros only (zeros stay zero, error-free)."""
    x = x.detach().float()
    if spec.per_channel:
        clip, err = clip_search(x, bits, _one(x), spec.axis, True)
        return clip, float(err.sum()) * (x.numel() / max(x.shape[spec.axis], 1))
    nz = x[x != 0]
    if nz.numel() == 0:
        return _one(x), 0.0
    clip, err = clip_search(nz, bits, _one(x))
    return clip, float(err.sum()) * nz.numel()


def uniform_quantize(
    x: torch.Tensor, bits: float, spec: LayerSpec
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``x`` quantized with :func:`uniform_clip`'s clip: the values, the clip, the error."""
    clip, error = uniform_clip(x, bits, spec)
    x = x.detach().float()
    shape = [1] * x.dim()
    if spec.per_channel:
        shape[spec.axis % x.dim()] = -1
    view = clip.to(x.device).reshape(shape)
    one = _one(x)
    d = step_for_bits(bits, view, one)
    return fake_quantize(x, d, view, one.reshape([1] * x.dim())), clip, error


def level_quantize(x: torch.Tensor, levels: int, iterations: int = 4) -> tuple[torch.Tensor, float]:
    """Ye et al.'s quantizer: the nonzeros of ``x`` onto ``{+-k q, k = 1..levels}`` (zeros stay
    zero, nonzeros never become zero), ``q`` of least squared error (exact for one level:
    the mean magnitude; else Lloyd iterations from a grid). Returns the values and ``q``."""
    x = x.detach().float()
    a = x[x != 0].abs()
    if a.numel() == 0:
        return torch.zeros_like(x), 1.0

    def assign(q: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.round(a / q), 1, levels)

    if levels == 1:
        q = a.mean()
    else:
        grid = a.max() / levels * torch.linspace(0.25, 1.0, 16, device=a.device)
        errors = torch.stack([(assign(g) * g - a).square().sum() for g in grid])
        q = grid[int(errors.argmin())]
        for _ in range(iterations):
            k = assign(q)
            q = (a * k).sum() / k.square().sum()
    k = torch.clamp(torch.round(x.abs() / q), 1, levels)
    return torch.sign(x) * q * k, float(q)


# ---------------------------------------------------------------------------- budget
def _options(specs: Sequence[LayerSpec], bit_options: np.ndarray) -> list[np.ndarray]:
    return [
        np.asarray(bit_options, dtype=np.float64) if s.quantized else np.array([float(FLOAT_BITS)])
        for s in specs
    ]


def _distortion(
    kept: Sequence[torch.Tensor], specs: Sequence[LayerSpec], options: Sequence[np.ndarray]
) -> list[np.ndarray]:
    return [
        np.array([uniform_clip(x, b, s)[1] if s.quantized else 0.0 for b in opts])
        for x, s, opts in zip(kept, specs, options, strict=True)
    ]


def _curvature_weights(
    z: Sequence[torch.Tensor], curvature: Sequence[torch.Tensor] | None
) -> list[torch.Tensor | float]:
    """Per weight, what a squared change of it costs: ``F`` (as float64 on ``z``'s device), or
    1 for the Euclidean projection."""
    if curvature is None:
        return [1.0] * len(z)
    return [f.detach().to(zl.device, torch.float64) for f, zl in zip(curvature, z, strict=True)]


def _weighted(
    table: list[np.ndarray], weight: Sequence[torch.Tensor | float], masks: Sequence[torch.Tensor]
) -> list[np.ndarray]:
    """Each layer's quantization errors times the mean weight of its kept weights."""
    out = []
    for row, w, m in zip(table, weight, masks, strict=True):
        if isinstance(w, torch.Tensor):
            kept = w[m.to(w.device)]
            w = float(kept.mean()) if kept.numel() else 0.0
        out.append(row * w)
    return out


def project_budget(
    z: Sequence[torch.Tensor],
    specs: Sequence[LayerSpec],
    coef: np.ndarray,
    budget: float,
    bit_options: np.ndarray,
    *,
    min_keep: np.ndarray | None = None,
    frozen: Sequence[torch.Tensor | None] | None = None,
    curvature: Sequence[torch.Tensor] | None = None,
) -> WeightProjection:
    """Yang et al.'s V-step, unstructured: masks and bits with ``sum_l coef_l b_l nnz_l <=
    budget`` and small ``||Z - V||^2`` (see the module docstring). With ``curvature`` (the
    diagonal Fisher ``F`` per weight) the distance is ``||Z - V||_F^2 = sum F (z - v)^2``, the
    loss the projection costs to second order: removed weights count ``F z^2`` and a layer's
    quantization error is weighed by the mean ``F`` of its kept weights.

    Raises:
        BudgetError: no bit-width lets the weights every layer keeps fit the budget.

    Example:
        >>> p = project_budget([w1, w2], [LayerSpec(True)] * 2, np.ones(2), 4000.0,
        ...                    np.arange(2.0, 9.0))                          # doctest: +SKIP
        >>> p.cost <= 4000                                                   # doctest: +SKIP
        True
    """
    options = _options(specs, bit_options)
    weight = _curvature_weights(z, curvature)
    energy = sum(
        float((w * zl.detach().double().square()).sum()) for zl, w in zip(z, weight, strict=True)
    )
    best: tuple[float, list, np.ndarray, list] | None = None
    failure: BudgetError | None = None
    seen: set[tuple[float, ...]] = set()
    for start in np.asarray(bit_options, dtype=np.float64):
        bits = np.array([start if s.quantized else float(FLOAT_BITS) for s in specs])
        try:
            for round_ in range(2):
                masks = keep_top(
                    z, coef * bits, budget, min_keep=min_keep, frozen=frozen, curvature=curvature
                )
                kept = [zl.detach() * m for zl, m in zip(z, masks, strict=True)]
                table = _weighted(_distortion(kept, specs, options), weight, masks)
                nnz = np.array([float(m.sum()) for m in masks])
                bits = allocate_bits(options, table, coef * nnz, budget)
                if round_ == 0:
                    if tuple(bits) in seen:  # this start leads where another one did
                        break
                    seen.add(tuple(bits))
        except BudgetError as err:
            failure = err
            continue
        if round_ == 0:
            continue
        kept_energy = sum(
            float((w * k.double().square()).sum()) for k, w in zip(kept, weight, strict=True)
        )
        chosen = [
            t[int(np.searchsorted(o, b))] for t, o, b in zip(table, options, bits, strict=True)
        ]
        error = energy - kept_energy + float(sum(chosen))
        if best is None or error < best[0]:
            best = (error, masks, bits, kept)
    if best is None:
        raise BudgetError(f"the budget cannot be met: {failure}", min_cost=failure.min_cost)
    error, masks, bits, kept = best
    values, clips = [], []
    for x, s, b in zip(kept, specs, bits, strict=True):
        if s.quantized:
            v, clip, _ = uniform_quantize(x, float(b), s)
            values.append(v.to(x.dtype))
            clips.append(clip)
        else:
            values.append(x.clone())
            clips.append(None)
    nnz = np.array([float(m.sum()) for m in masks])
    return WeightProjection(masks, values, bits, clips, float((coef * bits * nnz).sum()), error)


# ---------------------------------------------------------------------------- targets
def project_targets(
    z: Sequence[torch.Tensor],
    targets: Sequence[LayerTarget | None],
    float_bits: float,
    *,
    frozen: Sequence[torch.Tensor | None] | None = None,
) -> WeightProjection:
    """Ye et al.'s V-step: per layer, keep the ``density`` share of largest magnitudes (never a
    ``frozen`` weight) and put the kept ones on the target's levels. Layers without a target
    keep every weight, float (counted at ``float_bits``)."""
    masks, values, clips, bits, cost_bits = [], [], [], [], []
    error = 0.0
    for i, zl in enumerate(z):
        zl = zl.detach()
        target = targets[i]
        held = frozen[i] if frozen is not None else None
        if target is None:
            mask = torch.ones_like(zl, dtype=torch.bool) if held is None else ~held
            masks.append(mask)
            values.append(zl * mask)
            clips.append(None)
            bits.append(float(FLOAT_BITS))
            cost_bits.append(float_bits)
            error += float((zl * ~mask).double().square().sum())
            continue
        score = zl.abs().reshape(-1).clone()
        if held is not None:
            score[held.reshape(-1)] = -1.0
        k = max(1, int(round(target.density * zl.numel())))
        mask = torch.zeros(zl.numel(), dtype=torch.bool, device=zl.device)
        mask[torch.topk(score, k).indices] = True
        mask = mask.reshape(zl.shape)
        kept = zl * mask
        if target.levels is None:
            v, clip, b, cb = kept, None, float(FLOAT_BITS), float_bits
        else:
            if target.bits == 1:  # binary: every weight at +-q, zero ones on +q
                kept = torch.where(kept >= 0, kept.abs().clamp_min(1e-30), kept)
            v, q = level_quantize(kept, target.levels)
            clip = torch.tensor([q * target.levels])
            b = float(np.log2(target.levels + 1) + 1)
            cb = float(target.bits)  # binary: one bit a weight
        masks.append(mask)
        values.append(v.to(zl.dtype))
        clips.append(clip)
        bits.append(b)
        cost_bits.append(cb)
        error += float((zl - v).double().square().sum())
    nnz = np.array([float(m.sum()) for m in masks])
    cost = float((np.array(cost_bits) * nnz).sum())
    return WeightProjection(masks, values, np.array(bits), clips, cost, error)


# ---------------------------------------------------------------------------- groups
def unit_energy(
    problem: CompressionProblem,
    z: Sequence[torch.Tensor],
    curvature: Sequence[torch.Tensor] | None = None,
) -> np.ndarray:
    """``||Z_u||^2`` of every unit over the counted layers' weight slices it owns; with
    ``curvature`` (``F`` per weight of each counted layer) ``sum_u F z^2``."""
    energy = torch.zeros(problem.units.count, dtype=torch.float64)
    index = {layer.tensor_name: i for i, layer in enumerate(problem.cost_model.layers)}
    for mask in problem.masks:
        if mask.name not in index:
            continue
        i = index[mask.name]
        zl = z[i].detach().double().square()
        if curvature is not None:
            zl = zl * curvature[i].to(zl.device, torch.float64)
        dims = [d for d in range(zl.dim()) if d != mask.dim]
        per_index = zl.sum(dims).cpu() if dims else zl.cpu()
        hit = mask.unit_of >= 0
        energy.index_add_(0, mask.unit_of[hit], per_index[hit])
    return energy.numpy()


def group_masks(problem: CompressionProblem, removed: np.ndarray) -> list[torch.Tensor]:
    """Keep masks of the counted layers' weights when the ``removed`` units are gone."""
    masks = [torch.ones_like(layer.weight, dtype=torch.bool) for layer in problem.cost_model.layers]
    index = {id(layer.weight): i for i, layer in enumerate(problem.cost_model.layers)}
    for p, values in problem.removal_factors(removed):  # one entry per masked (tensor, dim)
        if id(p) in index:
            masks[index[id(p)]] &= values != 0
    return masks


def project_groups(
    problem: CompressionProblem,
    z: Sequence[torch.Tensor],
    specs: Sequence[LayerSpec],
    target: float | None = None,
    curvature: Sequence[torch.Tensor] | None = None,
    hold_zero_codes: bool = True,
) -> WeightProjection:
    """The structured V-step: the shared budget projection over the graph's groups, with each
    unit's energy in ``Z`` as its importance and the bit distortion measured on ``Z``, onto
    ``target`` (default: the problem's budget).

    With ``curvature`` (the diagonal Fisher ``F`` per weight of each counted layer) a unit's
    importance is ``sum_u F z^2`` and each layer's bit distortion is weighed by the mean ``F``
    of its nonzero weights: both are then the loss the projection costs to second order, as
    GETA mode's Fisher saliency. Energy alone compares units across layers by their weights'
    scale, which a normalisation after the layer sets freely: with batch norm, the layers
    with the largest fan-in have the smallest weights and lose the most units.

    With ``problem.count_zero_codes`` the plan counts the expected nonzero codes (as GETA
    mode does), and the projection's cost is then measured on its values: the weights whose
    code is zero are left out of the keep masks (so masked fine-tuning holds them at zero), and
    if the codes that are not zero cost more than the budget, the smallest are zeroed too.
    With ``hold_zero_codes=False`` the masks hold only the removed groups and those trimmed
    codes: a weight of a kept unit whose code is zero now stays free to leave the zero bin."""
    cm = problem.cost_model
    options = problem.bit_options
    target = float(problem.target if target is None else target)
    weights = list(z)
    distortion = bit_distortion(cm, options, weights=weights)
    if curvature is not None:
        nonzero = [w.detach() != 0 for w in weights]
        distortion = np.array(_weighted(list(distortion), list(curvature), nonzero))
    share = nonzero_code_share(cm, options, weights=weights) if problem.count_zero_codes else None
    p = project(
        cm,
        target,
        unit_energy(problem, z, curvature),
        distortion,
        options,
        min_keep=problem.min_keep,
        code_share=share,
        multiple=problem.unit_multiple,
    )
    masks = group_masks(problem, p.removed)
    values, clips = [], []
    for zl, m, s, b in zip(z, masks, specs, p.bits, strict=True):
        kept = zl.detach() * m
        if s.quantized:
            v, clip, _ = uniform_quantize(kept, float(b), s)
        else:
            v, clip = kept, None
        values.append(v.to(zl.dtype))
        clips.append(clip)
    cost = p.cost
    if problem.count_zero_codes:
        weight_cost = cm.coefficients() * np.where(cm.quantized, p.bits, float(FLOAT_BITS))
        kept = keep_top(values, weight_cost, target)  # zero codes never kept
        cost = float(sum(c * float(m.sum()) for c, m in zip(weight_cost, kept, strict=True)))
        if hold_zero_codes:
            masks = kept
        else:  # only the removed groups and the trimmed codes are held
            masks = [k | (m & (v == 0)) for k, m, v in zip(kept, masks, values, strict=True)]
        values = [v * k for v, k in zip(values, kept, strict=True)]
    error = sum(
        float((zl.detach() - v).double().square().sum()) for zl, v in zip(z, values, strict=True)
    )
    return WeightProjection(masks, values, p.bits.copy(), clips, cost, error, p.removed)
