"""Where geta keeps what it downloads or trains once: dense baselines, dataset archives."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """``$GETA_CACHE``, else ``$XDG_CACHE_HOME/geta``, else ``~/.cache/geta``.

    Example:
        >>> cache_dir().name                         # doctest: +SKIP
        'geta'
    """
    if os.environ.get("GETA_CACHE"):
        return Path(os.environ["GETA_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "geta"
