"""The one-shot plan: unit importance and per-layer distortion measured on calibration
activations, projected onto the budget; then applied (bias compensation, removed units zeroed,
bits set, weights rounded with error compensation)."""

from __future__ import annotations

import functools

import numpy as np
import torch

from geta.optim.oneshot.calibration import InputStats
from geta.optim.oneshot.config import OneshotConfig
from geta.optim.oneshot.gptq import gptq
from geta.optim.problem import CompressionProblem
from geta.optim.projection import Projection, nonzero_code_share, project
from geta.quant.functional import clip_search, fake_quantize, step_for_bits
from geta.quant.prepare import QuantizableLayer

__all__ = ["unit_importance", "layer_distortion", "plan", "apply_plan"]


def _centred(layer: QuantizableLayer, cfg: OneshotConfig) -> bool:
    """Whether a removed input's mean goes into the layer's bias (FLAP), so only its variance
    is lost."""
    return cfg.saliency == "flap" and isinstance(getattr(layer.module, "bias", None), torch.Tensor)


def _out_axis(layer: QuantizableLayer) -> int:
    return layer.kind.output_axis % layer.weight.dim()


@torch.no_grad()
def output_energy(layer: QuantizableLayer, stats: InputStats | None) -> float | None:
    """The layer's mean output energy per input row (``tr(W H W^T) / rows`` for a linear
    layer, ``sum energy x w^2`` otherwise): what its errors are measured against. ``None``
    when the layer saw no input."""
    if stats is None:
        return None
    w = layer.weight.detach().float()
    if stats.kind == "linear" and stats.hessian is not None and w.dim() == 2:
        rows = w if _out_axis(layer) == 0 else w.T
        h = stats.hessian.to(w.device) / stats.count
        return float(((rows @ h) * rows).sum())
    energy = stats.energy(layer, centred=False)
    return None if energy is None else float((energy.float() * w.square()).sum())


@torch.no_grad()
def unit_importance(
    problem: CompressionProblem, stats: list[InputStats | None], cfg: OneshotConfig
) -> np.ndarray:
    """Per unit, the share of a layer's output energy its removal costs: over the weights that
    read it (the input-side slices of the layers it feeds), ``energy x w^2`` (Wanda-sp / FLAP)
    over the layer's output energy; a unit no layer reads (a last layer's outputs) is priced
    by its share of the energy of the outputs it writes (``sum_j E[x_j^2] w_rj^2``) instead.
    Shares, not absolute energies: a layer whose output a norm rescales (an embedding under
    LayerNorm) matters downstream as much as its relative error, whatever its scale."""
    cm = problem.cost_model
    by_tensor = {layer.tensor_name: i for i, layer in enumerate(cm.layers)}
    reads = torch.zeros(problem.units.count, dtype=torch.float64)
    writes = torch.zeros_like(reads)
    scales = [output_energy(layer, s) or 1.0 for layer, s in zip(cm.layers, stats, strict=True)]
    for s in problem.stats.slices:
        i = by_tensor.get(s.tensor)
        if i is None or stats[i] is None:
            continue
        layer = cm.layers[i]
        reading = s.dim != _out_axis(layer) and not layer.kind.embedding
        energy = stats[i].energy(layer, centred=reading and _centred(layer, cfg))
        if energy is None:
            continue
        w = layer.weight.detach().float()
        per_weight = energy.float() * w.square() / scales[i]
        dims = [d for d in range(w.dim()) if d != s.dim]
        summed = per_weight.sum(dims).index_select(0, s.positions.to(w.device)).double().cpu()
        (reads if reading else writes).index_add_(0, s.unit_ids, summed)
    return torch.where(reads > 0, reads, writes).numpy()


@torch.no_grad()
def layer_distortion(problem: CompressionProblem, stats: list[InputStats | None]) -> np.ndarray:
    """``[layers, bit options]``: per weight, the output error of rounding each layer to each
    bit option (clip searched per channel) as a share of the layer's output energy:
    ``tr(E H E^T) / tr(W H W^T) / numel`` with the input Hessian for a linear layer,
    ``sum energy x E^2`` over the same for the others (on the scale of
    :func:`unit_importance`). A layer that saw no input is priced by its weights' relative
    error."""
    cm = problem.cost_model
    out = np.zeros((len(cm.layers), len(problem.bit_options)))
    for i, layer in enumerate(cm.layers):
        q = layer.quantizer
        if q is None:
            continue
        w = layer.weight.detach().float()
        s = stats[i]
        energy = s.energy(layer, centred=False) if s is not None else None
        for j, bits in enumerate(problem.bit_options):
            clip, _ = clip_search(w, float(bits), q.t.detach(), q.axis, q.per_channel)
            shape = [1] * w.dim()
            if q.per_channel:
                shape[q.axis % w.dim()] = -1
            clip = clip.reshape(shape).to(w.device)
            t = q.t.detach().float().reshape(shape if q.per_channel else [1] * w.dim())
            error = fake_quantize(w, step_for_bits(float(bits), clip, t), clip, t) - w
            if energy is None:
                out[i, j] = float(error.square().mean()) / max(float(w.square().mean()), 1e-30)
            elif s.kind == "linear" and s.hessian is not None:
                e = error if _out_axis(layer) == 0 else error.T
                h = s.hessian.to(e.device) / s.count
                out[i, j] = float(((e @ h) * e).sum()) / w.numel()
            else:
                out[i, j] = float((energy.float() * error.square()).sum()) / w.numel()
        if energy is not None:
            out[i] /= max(output_energy(layer, s) or 0.0, 1e-30)
    return out


def plan(
    problem: CompressionProblem, stats: list[InputStats | None], cfg: OneshotConfig
) -> Projection:
    """Removed units and bits per layer under ``problem.target``, traded on one scale: the
    output energy lost (:func:`unit_importance`, :func:`layer_distortion`)."""
    cm = problem.cost_model
    share = nonzero_code_share(cm, problem.bit_options) if problem.count_zero_codes else None
    return project(
        cm,
        float(problem.target),
        unit_importance(problem, stats, cfg),
        layer_distortion(problem, stats),
        problem.bit_options,
        min_keep=problem.min_keep,
        code_share=share,
        multiple=problem.unit_multiple,
    )


@torch.no_grad()
def _compensate_biases(
    problem: CompressionProblem, stats: list[InputStats | None], removed: np.ndarray, cfg
) -> None:
    """FLAP's bias compensation: a removed input's mean times the weights that read it goes
    into the layer's bias, so the layer's mean output is unchanged."""
    cm = problem.cost_model
    for i, layer in enumerate(cm.layers):
        s = stats[i]
        if s is None or s.kind == "embedding" or not _centred(layer, cfg):
            continue
        w = layer.weight.detach().float()
        out_axis = _out_axis(layer)
        in_axis = 1 - out_axis if w.dim() == 2 else (1 if out_axis == 0 else 0)
        gone = problem.removed_indices(layer.tensor_name, in_axis, removed)
        if not bool(gone.any()) or s.mean.numel() != w.shape[in_axis]:
            continue  # grouped convolutions read a slice of the inputs: not compensated
        mean = torch.where(gone, s.mean, torch.zeros_like(s.mean)).to(w.device)
        moved = w.movedim(out_axis, 0)  # [outputs, inputs, kernel...]
        shift = (moved.reshape(moved.shape[0], moved.shape[1], -1).sum(2) * mean).sum(1)
        bias = layer.module.bias
        bias.add_(shift.to(bias.dtype))


@torch.no_grad()
def apply_plan(
    problem: CompressionProblem,
    stats: list[InputStats | None],
    projection: Projection,
    cfg: OneshotConfig,
) -> None:
    """Compensate biases, zero the removed units, set each quantizer to its bits with the clip
    of least error, and round linear layers with GPTQ (on the kept inputs only)."""
    _compensate_biases(problem, stats, projection.removed, cfg)
    for p, factor in problem.removal_factors(projection.removed):
        p.mul_(factor)
    for i, layer in enumerate(problem.cost_model.layers):
        q = layer.quantizer
        if q is None:
            continue
        bits = float(projection.bits[i])
        w = layer.weight
        q.calibrate(w.detach(), bits)
        s = stats[i]
        if not cfg.gptq or s is None or s.kind != "linear" or s.hessian is None or w.dim() != 2:
            continue
        out_axis = _out_axis(layer)
        rows = w.detach() if out_axis == 0 else w.detach().T
        shape = (-1,) if q.per_channel else (1,)
        d, q_m, t = (p.detach().float().reshape(shape).to(w.device) for p in (q.d, q.q_m, q.t))
        round_column = functools.partial(fake_quantize, d=d, q_m=q_m, t=t)
        rounded = gptq(
            rows, s.hessian.to(w.device), round_column, damp=cfg.damp, block_size=cfg.block_size
        )
        w.copy_(rounded if out_axis == 0 else rounded.T)
