"""Exceptions raised by geta. Each one says what went wrong and what to do about it."""

from __future__ import annotations

__all__ = [
    "GetaError",
    "TraceError",
    "PruneError",
    "ArtifactError",
    "BudgetError",
    "DivergenceError",
    "ConfigError",
    "CheckpointError",
]


class GetaError(Exception):
    """Base class of every error geta raises on purpose."""


class TraceError(GetaError):
    """The model could not be captured with ``torch.export``.

    The message carries the underlying reason and a hint; the original exception is chained
    as ``__cause__``.
    """


class PruneError(GetaError):
    """A pruning plan cannot be applied (unknown group, index out of range, blocked group,
    or a module that cannot be resized)."""


class ArtifactError(GetaError):
    """An exported artifact is truncated, corrupted, of another format version, or does not
    match the model it is loaded into."""


class BudgetError(GetaError):
    """A budget cannot be met: even with every prunable group at its minimum and every layer at
    its lowest bit-width the model is larger. ``min_cost`` is the smallest cost that can be
    reached, in the budget's unit (bits of weight payload, or BOPs)."""

    def __init__(self, message: str, min_cost: float | None = None) -> None:
        super().__init__(message)
        self.min_cost = min_cost


class DivergenceError(GetaError):
    """Training diverged: a loss, gradient or weight became NaN or infinite. The optimizer
    stops before writing non-finite values into the model."""


class ConfigError(GetaError, ValueError):
    """An invalid setting: an unknown mode, a budget that cannot be read, a bad option. Also a
    ``ValueError``, so code that catches that keeps working."""


class CheckpointError(GetaError):
    """A run's checkpoint is missing, damaged, or was written by another version."""
