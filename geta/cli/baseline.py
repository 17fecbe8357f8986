"""The cache of dense baselines: a model trained once is reused by every later run with the
same model, data and training settings.

The cache lives in ``$GETA_CACHE``, else ``$XDG_CACHE_HOME/geta``, else ``~/.cache/geta``,
under ``baselines/``: per baseline a ``.pt`` state dict (read with ``weights_only=True``) and
a ``.json`` with its accuracy, loss and training history. Delete the directory to retrain.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geta.data.cache import cache_dir

__all__ = [
    "cache_dir",
    "baseline_key",
    "baseline_files",
    "baseline_folder",
    "load_baseline",
    "store_baseline",
]

log = logging.getLogger("geta.cli")


def baseline_key(model: nn.Module, settings: dict[str, Any]) -> str:
    """A name for the baseline trained from ``model``'s initial weights with ``settings``
    (model spec, data fingerprint, epochs, lr, batch size, seed, limit): the spec's readable
    part and a hash of the settings, the initial weights and the torch version."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    h.update(torch.__version__.encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(repr(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(settings.get("model", "model")))[-40:]
    return f"{readable}-{h.hexdigest()[:16]}"


def baseline_folder() -> Path:
    """The cache's folder of dense baselines: ``cache_dir() / "baselines"``."""
    return cache_dir() / "baselines"


def baseline_files(key: str) -> tuple[Path, Path]:
    """Where baseline ``key`` lives in the cache: its weights (``.pt``) and its info (``.json``)."""
    folder = baseline_folder()
    return folder / f"{key}.pt", folder / f"{key}.json"


def load_baseline(key: str, model: nn.Module) -> dict[str, Any] | None:
    """Load the cached baseline ``key`` into ``model`` and return its info, or ``None`` when
    there is none (or it cannot be read: then it is trained again)."""
    weights, info = baseline_files(key)
    if not (weights.exists() and info.exists()):
        return None
    try:
        model.load_state_dict(torch.load(weights, weights_only=True, map_location="cpu"))
        return json.loads(info.read_text())
    except Exception as err:  # a damaged cache entry is retrained, never fatal
        log.warning("ignoring the cached baseline %s: %s", weights, err)
        return None


def store_baseline(key: str, model: nn.Module, info: dict[str, Any]) -> Path:
    """Write ``model``'s weights and ``info`` as baseline ``key`` (atomically); returns the
    weights' path."""
    weights, info_path = baseline_files(key)
    weights.parent.mkdir(parents=True, exist_ok=True)
    for path, write in (
        (weights, lambda p: torch.save(model.state_dict(), p)),
        (info_path, lambda p: p.write_text(json.dumps(info, indent=1))),
    ):
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        write(tmp)
        os.replace(tmp, path)
    return weights
