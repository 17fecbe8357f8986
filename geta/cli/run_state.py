"""Per-epoch checkpoints of a ``geta compress`` run: written with ``torch.save``, read back with
``torch.load(weights_only=True)`` (tensors, numbers, strings, lists and dicts only: nothing
is unpickled), so ``--resume`` continues where an interrupted run stopped."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geta.errors import CheckpointError

__all__ = ["CHECKPOINT", "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]

CHECKPOINT = "checkpoint.pt"
VERSION = 1


def rng_state(loader_generator: torch.Generator) -> dict[str, Any]:
    """Every random state a run draws from: torch's global generator, the data loader's
    shuffling generator, Python's ``random`` and NumPy's legacy global generator."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "loader": loader_generator.get_state(),
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
    }


def set_rng_state(state: dict[str, Any], loader_generator: torch.Generator) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    loader_generator.set_state(state["loader"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (plus the checkpoint version) atomically: a crash while writing
    leaves the previous checkpoint in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({**state, "version": VERSION}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: missing, damaged, or of another version.
    """
    if not path.exists():
        raise CheckpointError(f"no checkpoint to resume from: {path} does not exist")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:
        raise CheckpointError(f"{path} cannot be read ({err}); start the run again") from None
    if not isinstance(state, dict) or state.get("version") != VERSION:
        raise CheckpointError(f"{path} was written by another geta version; start the run again")
    return state
