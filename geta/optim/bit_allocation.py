"""Per-layer bit choice as a multiple-choice knapsack (ALGORITHMS.md section 2, V-step 2).

One bit-width per layer, ``sum_l cost_per_bit_l * b_l <= B``, least total distortion. The greedy
works on the lower convex hull of each layer's (bits, distortion) points: start every layer at
its lowest bits, then repeatedly take the upgrade with the largest distortion drop per extra
cost that still fits. On convex hulls this is the LP relaxation's solution without its one
fractional item, so its distortion is within one upgrade's drop of the optimum.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from geta.errors import BudgetError

__all__ = ["lower_hull", "allocate_bits"]


def lower_hull(bits: np.ndarray, dist: np.ndarray) -> list[int]:
    """Indices of the lower convex hull of the points (bits, distortion), by bits, keeping only
    the decreasing part (more bits must buy less distortion).

    Example:
        >>> lower_hull(np.array([2.0, 3.0, 4.0]), np.array([1.0, 0.9, 0.0]))
        [0, 2]
    """
    hull: list[int] = []
    for i in range(len(bits)):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            cross = (bits[b] - bits[a]) * (dist[i] - dist[a]) - (dist[b] - dist[a]) * (
                bits[i] - bits[a]
            )
            if cross <= 0:
                hull.pop()
            else:
                break
        hull.append(i)
    while len(hull) >= 2 and dist[hull[-1]] >= dist[hull[-2]]:
        hull.pop()
    return hull


def allocate_bits(
    options: Sequence[np.ndarray],
    distortion: Sequence[np.ndarray],
    cost_per_bit: np.ndarray,
    budget: float,
) -> np.ndarray:
    """One bit-width per layer from ``options[l]`` (sorted ascending) with
    ``sum_l cost_per_bit[l] * bits[l] <= budget`` and small ``sum_l distortion[l][choice]``
    (the greedy above; ``distortion[l]`` is the layer's total error at each option).

    Raises:
        BudgetError: every layer at its lowest option is already over ``budget``.

    Example:
        >>> allocate_bits([np.array([2.0, 4.0])] * 2, [np.array([4.0, 0.0]), np.array([1.0, 0.0])],
        ...               np.array([1.0, 1.0]), budget=6)
        array([4., 2.])
    """
    hulls = [
        lower_hull(np.asarray(o), np.asarray(d)) for o, d in zip(options, distortion, strict=True)
    ]
    position = np.zeros(len(hulls), dtype=np.int64)
    bits = np.array([options[i][h[0]] for i, h in enumerate(hulls)], dtype=np.float64)
    cost = float((cost_per_bit * bits).sum())
    if cost > budget * (1 + 1e-12):
        raise BudgetError(
            f"even the lowest bits cost {cost:.4g}, over the budget of {budget:.4g}", min_cost=cost
        )
    while True:
        best, best_layer = -1.0, -1
        for layer, hull in enumerate(hulls):
            if position[layer] + 1 >= len(hull):
                continue
            lo, hi = hull[position[layer]], hull[position[layer] + 1]
            extra = cost_per_bit[layer] * (options[layer][hi] - options[layer][lo])
            if cost + extra > budget:
                continue
            drop = distortion[layer][lo] - distortion[layer][hi]
            gain = drop / extra if extra > 0 else np.inf
            if gain > best:
                best, best_layer = gain, layer
        if best_layer < 0:
            return bits
        position[best_layer] += 1
        new = options[best_layer][hulls[best_layer][position[best_layer]]]
        cost += cost_per_bit[best_layer] * (new - bits[best_layer])
        bits[best_layer] = new
