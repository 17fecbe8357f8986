"""Pruning groups: the leaf channel spaces that touch parameters, with every parameter and
buffer slice tied to them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from geta.graph.analysis import Analysis
from geta.graph.spaces import ChannelSpaces

__all__ = ["GroupMember", "PruningGroup", "BlockedSpace", "build_groups"]


@dataclass(frozen=True, eq=False)
class GroupMember:
    """One slice of one tensor tied to a group.

    ``positions[i]`` lists the indices along ``dim`` of tensor ``name`` that belong to unit
    ``i`` of the group (one index for a plain channel, ``head_dim`` indices for a head,
    ``H * W`` for a channel that was flattened into a linear layer).
    ``role`` is ``"consumer"`` where the tensor sums the channel away (the in-channels of a
    convolution or linear layer), ``"quantizer"`` for per-channel quantizer parameters, and
    ``"producer"`` otherwise (out-channels, biases, norm parameters and statistics).
    """

    name: str
    dim: int
    is_buffer: bool
    role: str
    positions: np.ndarray

    @property
    def width(self) -> int:
        return int(self.positions.shape[1])


@dataclass(eq=False)
class PruningGroup:
    """A set of channels (or heads) that can be removed together, index by index.

    ``members`` are the tensor slices removed with each unit (per-channel quantizer parameters
    among them); ``attached`` names whole tensors that travel with the group without being
    sliced (the parameters of per-tensor quantizers on its layers). ``inexact`` says why
    removing a unit changes the other units' values (a norm it goes through, with
    ``geta.trace(..., through_norms=True)``); it is empty for an exact group.
    """

    id: int
    size: int
    kind: str
    members: tuple[GroupMember, ...]
    params_per_unit: int
    leaf: int = field(repr=False)
    attached: tuple[str, ...] = ()
    inexact: tuple[str, ...] = ()

    @property
    def exact(self) -> bool:
        """Zeroing then removing units gives the zeroed model's outputs."""
        return not self.inexact

    @property
    def layers(self) -> list[str]:
        """The modules whose tensors belong to this group."""
        seen: dict[str, None] = {}
        for m in self.members:
            seen.setdefault(m.name.rsplit(".", 1)[0] if "." in m.name else "", None)
        return list(seen)

    @property
    def numel(self) -> int:
        """Scalars in all member slices of the whole group."""
        return self.params_per_unit * self.size

    def member(self, name: str, dim: int | None = None) -> GroupMember:
        for m in self.members:
            if m.name == name and (dim is None or m.dim == dim):
                return m
        raise KeyError(f"group {self.id} has no member {name!r}")


@dataclass(frozen=True)
class BlockedSpace:
    """A channel space that touches parameters but cannot be pruned, and why."""

    size: int
    reason: str
    tensors: tuple[str, ...]


def _positions(spaces: ChannelSpaces, atom: int, leaf: int, size: int) -> np.ndarray:
    pos_list, idx_list = [], []
    for arr in spaces.coords(atom).get(leaf, []):
        hit = np.nonzero(arr >= 0)[0]
        pos_list.append(hit)
        idx_list.append(arr[hit])
    pos = np.concatenate(pos_list)
    idx = np.concatenate(idx_list)
    order = np.lexsort((pos, idx))
    width = len(pos) // size
    return pos[order].reshape(size, width)


def _kind(members: list[GroupMember], tag: str | None) -> str:
    """``head`` / ``head_dim`` where an attention op named the axis; otherwise ``channel``
    when each unit is one index of every producer, ``block`` when it is several."""
    if tag is not None:
        return tag
    if any(m.role == "producer" and not m.is_buffer and m.width > 1 for m in members):
        return "block"
    return "channel"


def build_groups(analysis: Analysis) -> tuple[list[PruningGroup], list[BlockedSpace]]:
    """Form the prunable groups (in graph order) and list the blocked spaces."""
    spaces = analysis.spaces
    contracted = analysis.contracted
    by_leaf: dict[int, list[tuple[str, int, int]]] = {}
    for info in analysis.tensors.values():
        for dim, atom in enumerate(info.atoms):
            for leaf in dict.fromkeys(spaces.leaves(atom)):
                if spaces.size(leaf) > 1:
                    by_leaf.setdefault(leaf, []).append((info.name, dim, atom))

    leaf_tags: dict[int, str] = {}
    for atom, tag in analysis.tags:
        for leaf in spaces.leaves(atom):
            leaf_tags.setdefault(spaces.find(leaf), tag)
    inexact: dict[int, list[str]] = {}
    for atom, reason in analysis.inexact:
        for leaf in spaces.leaves(atom):
            inexact.setdefault(spaces.find(leaf), []).append(reason)
    groups: list[PruningGroup] = []
    blocked: list[BlockedSpace] = []
    for leaf, uses in by_leaf.items():
        size = spaces.size(leaf)
        if spaces.is_blocked(leaf):
            names = tuple(dict.fromkeys(name for name, _, _ in uses))
            blocked.append(BlockedSpace(size, spaces.blocked_reason(leaf) or "", names))
            continue
        members = []
        per_unit = 0
        for name, dim, atom in uses:
            info = analysis.tensors[name]
            role = analysis.roles.get(name) or ("consumer" if atom in contracted else "producer")
            positions = _positions(spaces, atom, leaf, size)
            members.append(GroupMember(name, dim, info.is_buffer, role, positions))
            if not info.is_buffer and role != "quantizer":
                other = int(np.prod(info.shape)) // info.shape[dim]
                per_unit += other * positions.shape[1]
        if per_unit == 0:  # only buffers (e.g. rotary frequencies): nothing to compress
            continue
        groups.append(
            PruningGroup(
                id=len(groups),
                size=size,
                kind=_kind(members, leaf_tags.get(spaces.find(leaf))),
                members=tuple(members),
                params_per_unit=per_unit,
                leaf=leaf,
                attached=tuple(
                    dict.fromkeys(a for m in members for a in analysis.attachments.get(m.name, ()))
                ),
                inexact=tuple(dict.fromkeys(inexact.get(spaces.find(leaf), ()))),
            )
        )
    return groups, blocked
