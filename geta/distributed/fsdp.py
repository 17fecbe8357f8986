"""FSDP2 (``torch.distributed.fsdp.fully_shard``) models under geta's optimizers.

A fully sharded model holds each parameter as a ``DTensor``: every rank stores a slice.
geta's planning is global (one ranking of every unit, one budget over every layer), so the
parts of an optimizer step that read or write the model run on the gathered parameters:
:func:`gathered` swaps each sharded parameter (and its gradient) for its full value, every
rank computes the same plan from the same values, and on exit each rank writes its own slice
back. The base optimizer's step, the forward and the backward stay sharded. At the end,
:func:`unsharded_copy` gives a plain model (full parameters on every rank) that surgery can
shrink, built from :func:`structure_copy`, a parameter-free copy taken before sharding.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["is_sharded", "gathered", "structure_copy", "unsharded_copy"]

Rebind = Callable[[dict[str, torch.Tensor]], None]


def _dtensor_type() -> type | None:
    if not torch.distributed.is_available():
        return None
    from torch.distributed.tensor import DTensor

    return DTensor


def is_sharded(model: nn.Module) -> bool:
    """Whether any parameter of ``model`` is a ``DTensor`` (FSDP2 or another sharding)."""
    dtensor = _dtensor_type()
    return dtensor is not None and any(isinstance(p, dtensor) for p in model.parameters())


def _qualified(prefix: str, leaf: str) -> str:
    return f"{prefix}.{leaf}" if prefix else leaf


def _sharded_slots(model: nn.Module) -> list[tuple[nn.Module, str, str, nn.Parameter]]:
    """``(module, attribute, qualified name, parameter)`` of every registration of a
    sharded parameter (a tied parameter appears once per module holding it)."""
    dtensor = _dtensor_type()
    slots = []
    for prefix, module in model.named_modules(remove_duplicate=False):
        for leaf, p in module._parameters.items():
            if dtensor is not None and isinstance(p, dtensor):
                slots.append((module, leaf, _qualified(prefix, leaf), p))
    return slots


def _local_part(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This rank's slice of ``full`` in the layout of the ``DTensor`` ``like``."""
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full, like.device_mesh, like.placements, src_data_rank=None).to_local()


@contextmanager
@torch.no_grad()
def gathered(model: nn.Module, rebind: Rebind | None = None) -> Iterator[bool]:
    """Within the block every sharded parameter of ``model`` is a plain ``nn.Parameter``
    holding its full value (and its gradient's), so code written for ordinary tensors runs
    unchanged; on exit each rank copies its own slice back (gradients too) and the sharded
    parameters are registered again. ``rebind`` receives ``{qualified name: parameter}``
    on entry and exit, for holders of parameter references (a
    :class:`geta.optim.problem.CompressionProblem`). Yields whether anything was gathered;
    without sharded parameters it does nothing. Every rank must enter it together (the
    gathers are collectives), and code inside must act identically on every rank.

    Example:
        >>> with gathered(model, problem.rebind):           # doctest: +SKIP
        ...     plan = problem.plan()
    """
    slots = _sharded_slots(model)
    if not slots:
        yield False
        return
    full: dict[int, nn.Parameter] = {}
    for _, _, _, p in slots:
        if id(p) in full:
            continue
        value = nn.Parameter(p.full_tensor(), requires_grad=p.requires_grad)
        if p.grad is not None:
            value.grad = p.grad.full_tensor()
        full[id(p)] = value
    for module, leaf, _, p in slots:
        module._parameters[leaf] = full[id(p)]
    if rebind is not None:
        rebind({name: full[id(p)] for _, _, name, p in slots})
    try:
        yield True
    finally:
        done: set[int] = set()
        for module, leaf, _, p in slots:
            module._parameters[leaf] = p
            if id(p) in done:
                continue
            done.add(id(p))
            value = full[id(p)]
            p.to_local().copy_(_local_part(value.detach(), p))
            if p.grad is not None and value.grad is not None:
                p.grad.to_local().copy_(_local_part(value.grad, p.grad))
        if rebind is not None:
            rebind({name: p for _, _, name, p in slots})


def structure_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s modules whose parameters and buffers are empty tensors on the
    meta device (no memory): what :func:`unsharded_copy` fills once ``model`` is sharded
    (a sharded module cannot be copied)."""
    memo: dict[int, object] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


@torch.no_grad()
def unsharded_copy(model: nn.Module, structure: nn.Module) -> nn.Module:
    """``structure`` (a :func:`structure_copy` of ``model`` before sharding) filled with
    ``model``'s values: sharded parameters gathered in full on every rank (a collective),
    the others and every buffer taken as they are. The result is a plain module."""
    dtensor = _dtensor_type()
    values: dict[int, nn.Parameter] = {}
    params = dict(model.named_parameters(remove_duplicate=False))
    buffers = dict(model.named_buffers(remove_duplicate=False))
    for prefix, module in structure.named_modules(remove_duplicate=False):
        for leaf in list(module._parameters):
            source = params[_qualified(prefix, leaf)]
            if id(source) not in values:
                data = source.full_tensor() if isinstance(source, dtensor) else source.detach()
                values[id(source)] = nn.Parameter(data.clone(), source.requires_grad)
            module._parameters[leaf] = values[id(source)]
        for leaf, buffer in list(module._buffers.items()):
            if buffer is not None:
                module._buffers[leaf] = buffers[_qualified(prefix, leaf)].detach().clone()
    return structure
