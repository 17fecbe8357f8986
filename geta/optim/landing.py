"""Landing on the budget: spend it at the freeze, enforce it exactly afterwards.

Once a run holds its zero codes (GETA mode's cool-down, ADMM's masked fine-tuning), SGD
jitters some kept weights into the zero bin, where they stay: on LeNet-5 at 300x about a tenth
of the kept codes within a few dozen steps (0.999 -> 0.88 of the budget). A plan made to the
budget exactly therefore delivers 10-20% more compression than asked, budget given away. So
the plan at the freeze spends :data:`HEADROOM` times the budget, and :func:`trim_to_budget`
enforces the budget exactly at a few points after it and at the end. When the jitter runs the
other way (weights drifting into the zero bin leave the cost under the budget),
:func:`raise_bits_within_budget` spends the room on bits.
"""

from __future__ import annotations

import numpy as np
import torch

from geta.optim.cost import CostModel
from geta.optim.projection import keep_top
from geta.optim.report import measure_layers, measured_cost
from geta.quant.codes import channel_code_bits, channel_nonzeros, quantized_codes
from geta.quant.prepare import QuantizableLayer

__all__ = [
    "HEADROOM",
    "quantized_values",
    "trim_to_budget",
    "raise_bits_within_budget",
    "land_on_budget",
    "trim_steps",
]

HEADROOM = 1.1


def quantized_values(cost_model: CostModel) -> list[torch.Tensor]:
    """Each counted layer's weight as its quantizer outputs it (the float weight if none)."""
    values = []
    for layer in cost_model.layers:
        q, w = layer.quantizer, layer.weight.detach()
        values.append(q(w).detach() if q is not None else w)
    return values


@torch.no_grad()
def trim_to_budget(
    cost_model: CostModel, held: list[torch.Tensor], target: float, *, hold_zero_codes: bool = True
) -> list[torch.Tensor] | None:
    """New keep masks (``held`` narrowed) if the model's measured cost is over ``target``:
    the weights of least ``w_q^2 / cost`` across layers are dropped until it holds; the weights
    whose code is zero now are dropped too, or, with ``hold_zero_codes=False``, stay in the
    masks (free to leave the zero bin). ``None`` when the budget already holds (nothing to
    change)."""
    rows, _, bits = measure_layers(cost_model)
    if measured_cost(cost_model, rows) <= target:
        return None
    values = quantized_values(cost_model)
    keep = keep_top(values, cost_model.coefficients() * bits, target)  # zero codes never kept
    if not hold_zero_codes:
        keep = [k | (v == 0) for k, v in zip(keep, values, strict=True)]
    return [h.bool() & k.to(h.device) for h, k in zip(held, keep, strict=True)]


def _channel_state(layer: QuantizableLayer) -> tuple[np.ndarray, np.ndarray]:
    """Each channel's payload (its bits x its nonzero codes) and squared quantization error,
    with the layer's quantizer as it is now (one channel for a per-tensor quantizer)."""
    w, q = layer.weight.detach(), layer.quantizer
    codes, _ = quantized_codes(w, q)
    bits, nonzeros = channel_code_bits(codes, q), channel_nonzeros(codes, q)
    error = (q(w) - w).double().square()
    if q.per_channel:
        error = error.movedim(q.axis % w.dim(), 0).reshape(len(bits), -1).sum(1)
    else:
        error = error.sum().reshape(1)
    return (bits * nonzeros).astype(np.float64), error.cpu().numpy()


def _set_channel_bits(
    layer: QuantizableLayer, bits: torch.Tensor, raised: torch.Tensor, refit_clip: bool
) -> None:
    """Give the ``raised`` channels ``bits``, with their clips re-fitted to them when
    ``refit_clip``; the other channels keep their clips (learned ones stay learned)."""
    q, w = layer.quantizer, layer.weight.detach()
    if refit_clip:
        kept_clip = q.q_m.detach().clone()
        q.calibrate(w, bits)
        q.q_m.copy_(torch.where(raised.to(q.q_m.device), q.q_m, kept_clip))
    q.set_bits(bits)


@torch.no_grad()
def raise_bits_within_budget(
    cost_model: CostModel,
    bits: list[torch.Tensor | None],  # one entry per counted layer
    limit: float,
    top: float,
    *,
    per_channel: bool = False,
    refit_clip: bool = True,
) -> list[torch.Tensor | None]:
    """Spend the room zero codes left under ``limit`` on bits: raise bits one at a time, the
    largest drop of squared quantization error per unit of measured cost first, while the
    measured cost stays within ``limit``.

    ``bits``: each counted layer's bits now (one value per channel of its quantizer, as
    :meth:`geta.quant.Quantizer.bits` gives them); a layer without a quantizer, or whose
    entry is ``None``, is left as it is.
    ``per_channel=False`` raises a layer's channels together (one bit width per layer, GETA
    mode's); ``True`` raises single channels (mixed precision, AJPQ's). ``refit_clip``: a
    raised channel's clip is re-fitted to its new bits (where the clip is still to be
    trained); off, it keeps its clip and only the step gets finer (where the clip was learned
    and too little training is left to learn a new one). Each round offers
    every layer (channel) one bit more, up to ``top``; rounds repeat while one is taken.
    Returns the new bits; the quantizers are left at them. A latency budget is left alone
    (its cost does not follow the zero codes).

    Example:
        >>> bits = raise_bits_within_budget(cm, bits, target, 8.0)  # doctest: +SKIP
    """
    bits = list(bits)
    if cost_model.metric == "latency":
        return bits
    coef, layers = cost_model.coefficients(), cost_model.layers

    def offers_of(i: int) -> list[tuple[float, float, int, int]]:
        """Layer ``i``'s one-bit-more offers: (gain, extra cost, layer, channel)."""
        now, q = bits[i], layers[i].quantizer
        if now is None or q is None:
            return []
        up = (now + 1).clamp_max(top)
        if not bool((up > now).any()):
            return []
        cost, error = _channel_state(layers[i])
        saved = (q.d.detach().clone(), q.q_m.detach().clone())
        if refit_clip:
            q.calibrate(layers[i].weight.detach(), up)
        else:
            q.set_bits(up)
        cost_up, error_up = _channel_state(layers[i])
        q.d.copy_(saved[0])
        q.q_m.copy_(saved[1])
        extra, drop = float(coef[i]) * (cost_up - cost), error - error_up
        movable = (up > now).cpu().numpy().reshape(-1)
        if not per_channel:
            extra, drop = extra.sum(keepdims=True), drop.sum(keepdims=True)
            movable = movable.any(keepdims=True)
        good = np.flatnonzero(movable & (extra > 0) & (drop > 0))
        return [(drop[c] / extra[c], float(extra[c]), i, c) for c in good]

    offers = {i: offers_of(i) for i in range(len(layers))}  # only a raised layer's change
    while True:
        total = measured_cost(cost_model)
        taken: dict[int, torch.Tensor] = {}
        ranked = sorted((o for layer in offers.values() for o in layer), key=lambda o: -o[0])
        for _, extra, i, c in ranked:
            if total + extra > limit:
                continue
            total += extra
            mask = taken.setdefault(i, torch.zeros_like(bits[i], dtype=torch.bool))
            if per_channel:
                mask.view(-1)[c] = True
            else:
                mask.fill_(True)
        if not taken:
            return bits
        for i, mask in taken.items():
            up = torch.where(mask, (bits[i] + 1).clamp_max(top), bits[i])
            _set_channel_bits(layers[i], up, mask, refit_clip)
            bits[i] = up
            offers[i] = offers_of(i)


def land_on_budget(
    cost_model: CostModel,
    held: list[torch.Tensor],
    bits: list[torch.Tensor | None],
    target: float,
    top: float,
    *,
    per_channel: bool = False,
    refit_clip: bool = True,
    hold_zero_codes: bool = True,
) -> tuple[list[torch.Tensor] | None, list[torch.Tensor | None]]:
    """The landing rule at a trim point: over ``target``, the narrowed keep masks
    (:func:`trim_to_budget`, with ``hold_zero_codes``) and ``bits`` as they are; under it,
    ``None`` and the bits raised into the room (:func:`raise_bits_within_budget`, with
    ``per_channel`` and ``refit_clip``).
    The caller holds the narrowed masks.

    Example:
        >>> narrowed, bits = land_on_budget(cm, held, bits, target, 8.0)  # doctest: +SKIP
    """
    narrowed = trim_to_budget(cost_model, held, target, hold_zero_codes=hold_zero_codes)
    if narrowed is not None:
        return narrowed, bits
    raised = raise_bits_within_budget(
        cost_model, bits, target, top, per_channel=per_channel, refit_clip=refit_clip
    )
    return None, raised


def trim_steps(start: int, end: int) -> set[int]:
    """The steps of ``[start, end)`` where the budget is enforced: its quarter points and its
    last step."""
    length = end - start
    return {start + k * length // 4 for k in (1, 2, 3)} | {end - 1}
