"""Exceptions raised by geta. Each one says what went wrong and what to do about it."""

from __future__ import annotations

__all__ = ["GetaError", "TraceError", "PruneError", "ArtifactError"]


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
