"""Channel alignment: removal plans that leave every pruned dimension a multiple of ``N`` wide.

Dense kernels run fastest when channel counts are multiples of their vector width (on a CPU,
oneDNN's convolutions block channels by 8 or 16 fp32 lanes; GPU tensor cores want 8 or 16
too): a layer pruned to 61 channels may run no faster than, or slower than, one at 64
(``benchmarks/channel_alignment.py`` measures it). ``CompressorConfig(channel_multiple=N)``
makes every mode's removal plan keep, along every tensor dimension it prunes, a multiple of
``N`` indices, or the dimension's full size.

A group's unit may span several indices of a tensor (a head spans ``head_dim`` indices of the
query projection's outputs, a channel flattened into a linear layer ``H * W`` of its inputs).
A group therefore keeps a multiple of ``m = lcm_i(N / gcd(N, w_i))`` units over the widths
``w_i`` of its member slices: ``N`` for a group of plain channels, one head when ``head_dim``
is a multiple of ``N`` (every common model: 64 or 128), two heads at ``head_dim = 4`` and
``N = 8``. Heads stay whole because a head is one unit, and under grouped-query attention a
unit is a key/value head with its query heads, so every plan keeps them consistent.

The allowed kept counts of a group are the multiples of ``m`` and the group's full size (a
group smaller than ``m``, or whose size is no multiple of it, may stay whole); its minimum
(``max_group_sparsity``) is rounded up to the next allowed count, so the feasibility check
(:func:`geta.optim.projection.minimum_cost`) sees the aligned minimum.

:func:`align_removal` rounds a removal plan onto the allowed counts without breaking a
budget: first every unaligned group goes *down* to the allowed count below (removing its least
important kept units never raises the cost), then groups come back *up* to the allowed count
above (restoring their most important removed units) by importance regained per cost, while
the budget holds. The budget projection takes those ups in the greedy that spends its slack,
against raising a layer's bits, on the one scale of loss per cost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np

__all__ = [
    "RemovalState",
    "align_down",
    "align_removal",
    "aligned_keep_counts",
    "best_up",
    "check_channel_multiple",
    "is_aligned",
    "kept_counts",
    "nearest_allowed",
    "next_allowed_below",
    "restore_cost",
    "unit_multiples",
    "up_moves",
]


def check_channel_multiple(value: object) -> int:
    """``value`` as a channel multiple: an int of at least 1 (``1``: no alignment).

    Raises:
        ValueError: anything else (a bool, a float, zero, a negative number).
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"channel_multiple is an int of at least 1, got {value!r}")
    return int(value)


def unit_multiples(widths: Sequence[Sequence[int]], channel_multiple: int) -> np.ndarray:
    """Per group, the count of units whose slices are a multiple of ``channel_multiple``
    indices in every member (``widths[g]``: the indices one unit of group ``g`` spans in each
    member slice): ``lcm_i(N / gcd(N, w_i))``; all ones for ``channel_multiple=1``."""
    n = check_channel_multiple(channel_multiple)
    out = np.ones(len(widths), dtype=np.int64)
    if n == 1:
        return out
    for g, group_widths in enumerate(widths):
        m = 1
        for w in group_widths:
            m = math.lcm(m, n // math.gcd(n, int(w)))
        out[g] = m
    return out


def aligned_keep_counts(
    sizes: np.ndarray, min_keep: int | np.ndarray, multiple: int | np.ndarray
) -> np.ndarray:
    """The fewest units each group may keep: ``min_keep`` rounded up to a multiple of the
    group's ``multiple``, capped at the group's size (a group that cannot reach an allowed
    count below its size stays whole)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    keep = np.broadcast_to(np.asarray(min_keep, dtype=np.int64), sizes.shape)
    m = np.broadcast_to(np.asarray(multiple, dtype=np.int64), sizes.shape)
    return np.minimum(-(-keep // m) * m, sizes)


def is_aligned(kept: np.ndarray, sizes: np.ndarray, multiple: int | np.ndarray) -> np.ndarray:
    """Per group: is the kept count allowed (a multiple of the group's ``multiple``, or the
    whole group)?"""
    kept = np.asarray(kept, dtype=np.int64)
    return (kept % np.asarray(multiple, dtype=np.int64) == 0) | (kept == np.asarray(sizes))


def next_allowed_below(kept: int, multiple: int) -> int:
    """The largest allowed kept count below ``kept`` (a multiple of ``multiple``; 0 when
    there is none above it)."""
    return ((int(kept) - 1) // int(multiple)) * int(multiple)


def nearest_allowed(kept: int, size: int, minimum: int, multiple: int) -> int:
    """The allowed kept count nearest to ``kept`` (ties go up: keeping more loses less) that
    is at least ``minimum`` (an allowed count itself, :func:`aligned_keep_counts`)."""
    below = (int(kept) // multiple) * multiple
    above = min(below + multiple, int(size)) if below != kept else below
    choice = above if (above - kept) <= (kept - below) else below
    return max(choice, int(minimum))


def kept_counts(removed: np.ndarray, group_of: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Units each group keeps under the removal mask."""
    return np.asarray(sizes, dtype=np.int64) - np.bincount(
        group_of[np.asarray(removed, dtype=bool)], minlength=len(sizes)
    )


class RemovalState(Protocol):
    """What :func:`align_removal` changes: a removal mask and its cost, updated unit by unit
    (:class:`geta.optim.projection._State` for a budget; a unit count for a share)."""

    removed: np.ndarray
    cost: float

    def remove(self, u: int) -> None: ...

    def restore(self, u: int) -> None: ...


def align_down(
    state: RemovalState,
    offsets: np.ndarray,
    importance: np.ndarray,
    multiple: int | np.ndarray,
    min_keep: int | np.ndarray = 1,
) -> list[int]:
    """Bring every unaligned group of ``state`` (in place) down to the allowed count below by
    removing its least important kept units, where that stays at or above ``min_keep`` (an
    aligned minimum, :func:`aligned_keep_counts`); this never raises the cost. Returns the
    groups lowered. A group that the caller's removals left below its minimum stays as it is.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    sizes = np.diff(offsets)
    m = np.broadcast_to(np.asarray(multiple, dtype=np.int64), sizes.shape)
    keep = np.broadcast_to(np.asarray(min_keep, dtype=np.int64), sizes.shape)
    kept = kept_counts(state.removed, np.repeat(np.arange(len(sizes)), sizes), sizes)
    lowered = []
    for g in np.nonzero(~is_aligned(kept, sizes, m))[0].tolist():
        target = next_allowed_below(kept[g], m[g])
        if target < max(int(keep[g]), 1):
            continue
        units = np.arange(offsets[g], offsets[g + 1])
        alive = units[~state.removed[units]]
        for u in alive[np.argsort(importance[alive], kind="stable")][: kept[g] - target].tolist():
            state.remove(u)
        lowered.append(g)
    return lowered


def up_moves(
    removed: np.ndarray,
    offsets: np.ndarray,
    importance: np.ndarray,
    multiple: int | np.ndarray,
    groups: Sequence[int],
    fixed: np.ndarray | None = None,
) -> dict[int, np.ndarray]:
    """For each of ``groups`` (aligned), the units that bring it up to its next allowed
    count: its most important removed units that are not ``fixed`` (already being pruned);
    groups with too few such units are left out."""
    offsets = np.asarray(offsets, dtype=np.int64)
    m = np.broadcast_to(np.asarray(multiple, dtype=np.int64), (len(offsets) - 1,))
    fixed = np.zeros(len(removed), dtype=bool) if fixed is None else np.asarray(fixed, bool)
    out = {}
    for g in groups:
        units = np.arange(offsets[g], offsets[g + 1])
        kept = int((~removed[units]).sum())
        want = min(kept + int(m[g]), len(units)) - kept
        free = units[removed[units] & ~fixed[units]]
        if 0 < want <= len(free):
            out[g] = free[np.argsort(-importance[free], kind="stable")][:want]
    return out


def restore_cost(state: RemovalState, units: np.ndarray) -> float:
    """What restoring ``units`` would add to ``state.cost`` (measured by restoring and
    removing them again; ``state`` is left as it was)."""
    before = state.cost
    for u in units.tolist():
        state.restore(u)
    extra = state.cost - before
    for u in units.tolist():
        state.remove(u)
    state.cost = before  # no rounding drift from the round trip
    return extra


def best_up(
    state: RemovalState, moves: dict[int, np.ndarray], importance: np.ndarray, budget: float
) -> tuple[int | None, float, float]:
    """Of the up ``moves`` that fit ``budget``, the one with the most importance regained per
    cost added: ``(group, gain per cost, cost added)``; ``(None, 0, 0)`` when none fits."""
    best, best_gain, best_extra = None, 0.0, 0.0
    for g, units in moves.items():
        extra = restore_cost(state, units)
        if state.cost + extra > budget:
            continue
        gained = float(importance[units].sum())
        gain = gained / extra if extra > 0 else np.inf
        if best is None or gain > best_gain:
            best, best_gain, best_extra = g, gain, extra
    return best, best_gain, best_extra


def align_removal(
    state: RemovalState,
    offsets: np.ndarray,
    importance: np.ndarray,
    multiple: int | np.ndarray,
    *,
    min_keep: int | np.ndarray = 1,
    fixed: np.ndarray | None = None,
    budget: float = np.inf,
) -> None:
    """Round ``state``'s removal plan (in place) onto kept counts that are multiples of each
    group's ``multiple`` (group ``g`` owns units ``offsets[g]:offsets[g + 1]``): every
    unaligned group goes down (:func:`align_down`), then groups come back up
    (:func:`up_moves`: never a ``fixed`` unit) by importance regained per cost, while
    ``state.cost <= budget``. :func:`geta.optim.projection.project` takes the ups in its
    slack greedy instead, against bit upgrades on the same scale."""
    lowered = align_down(state, offsets, importance, multiple, min_keep)
    moves = up_moves(state.removed, offsets, importance, multiple, lowered, fixed)
    while moves:
        g, _, _ = best_up(state, moves, importance, budget)
        if g is None:
            return
        for u in moves.pop(g).tolist():
            state.restore(u)
