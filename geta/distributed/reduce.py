"""Reductions across the ranks of a process group, for statistics every rank must agree on."""

from __future__ import annotations

import torch

__all__ = ["is_distributed", "sum_across_ranks"]


def is_distributed() -> bool:
    """Whether a process group with more than one rank is running."""
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )


def _collective_device() -> torch.device:
    """Where the default group's backend reduces: the current GPU for NCCL, else the CPU."""
    if "nccl" in str(torch.distributed.get_backend()) and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@torch.no_grad()
def sum_across_ranks(tensors: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """Each entry summed over the ranks, in its dtype; a rank without the entry (``None``)
    adds zeros of the shape another rank has, and an entry no rank has stays ``None``.
    Every rank passes the same number of entries. Outside a process group of several ranks
    the tensors come back as they are."""
    if not is_distributed():
        return list(tensors)
    mine = [None if t is None else (tuple(t.shape), t.dtype) for t in tensors]
    every: list[list | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(every, mine)
    out: list[torch.Tensor | None] = []
    for i, t in enumerate(tensors):
        layout = next((rank[i] for rank in every if rank[i] is not None), None)
        if layout is None:
            out.append(None)
            continue
        shape, dtype = layout
        home = t.device if t is not None else torch.device("cpu")
        value = t.detach().clone() if t is not None else torch.zeros(shape, dtype=dtype)
        value = value.to(_collective_device())
        torch.distributed.all_reduce(value)
        out.append(value.to(home))
    return out
