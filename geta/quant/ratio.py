"""How much smaller a model is, defined once for every report: the papers' ratio (the dense
cost over the compressed cost, both in bits of weight payload or in BOPs) and the real ratio
(bytes of the fp32 checkpoint over bytes of the artifact on disk), and for latency budgets the
speed-up (dense milliseconds over compressed milliseconds)."""

from __future__ import annotations

__all__ = ["FLOAT_BITS", "papers_ratio", "real_ratio", "speedup"]

FLOAT_BITS = 32  # a dense weight's bits: what every ratio is measured against


def papers_ratio(dense_cost: float, compressed_cost: float) -> float:
    """``dense / compressed``: for size budgets ``32 x numel / sum bits x nonzeros`` (index and
    codebook overhead ignored, as the papers count). A cost below one unit counts as one.

    Example:
        >>> papers_ratio(32 * 1000, 4 * 100)
        80.0
    """
    return float(dense_cost) / max(float(compressed_cost), 1.0)


def real_ratio(reference_bytes: int | None, artifact_bytes: int | None) -> float | None:
    """``reference / artifact`` bytes on disk; ``None`` when either is unknown.

    Example:
        >>> real_ratio(4000, 250), real_ratio(4000, None)
        (16.0, None)
    """
    if not reference_bytes or not artifact_bytes:
        return None
    return reference_bytes / artifact_bytes


def speedup(dense_ms: float, compressed_ms: float) -> float:
    """``dense / compressed`` milliseconds (no floor: a latency may be below one unit).

    Example:
        >>> speedup(3.0, 1.5)
        2.0
    """
    return float(dense_ms) / max(float(compressed_ms), 1e-12)
