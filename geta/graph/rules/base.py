"""The op-rule registry and the context a rule works in.

A rule says, for one ATen op, how the dimensions of its inputs map to the dimensions of its
outputs, by relating atoms of a :class:`~geta.graph.spaces.ChannelSpaces`. Rules are looked up
by the op of a graph node (an ``OpOverload``, or its ``OpOverloadPacket`` for every overload).

Adding an op is one decorated function::

    from geta.graph.rules import broadcast_rule, register_rule
    register_rule(torch.ops.mylib.scale_channels)(broadcast_rule)   # an elementwise op

An op without a rule is handled conservatively: every dimension it touches is blocked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.fx as fx

from geta.graph.spaces import ChannelSpaces

__all__ = ["OpRule", "RuleContext", "register_rule", "lookup_rule", "registered_ops"]

OpRule = Callable[["RuleContext", fx.Node], None]
_RULES: dict[Any, OpRule] = {}


def register_rule(*ops: Any) -> Callable[[OpRule], OpRule]:
    """Register a rule for ops (``torch.ops.aten.add`` covers every overload of ``add``)."""

    def deco(fn: OpRule) -> OpRule:
        for op in ops:
            _RULES[op] = fn
        return fn

    return deco


def lookup_rule(target: Any) -> OpRule | None:
    rule = _RULES.get(target)
    if rule is None and isinstance(target, torch._ops.OpOverload):
        rule = _RULES.get(target.overloadpacket)
    return rule


def registered_ops() -> list[str]:
    return sorted(str(op) for op in _RULES)


def iter_nodes(value: Any):
    """The fx.Nodes inside nested lists, tuples and dicts of node arguments."""
    if isinstance(value, fx.Node):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from iter_nodes(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from iter_nodes(v)


def tensor_shape(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, torch.Tensor):
        return tuple(int(s) if not isinstance(s, torch.SymInt) else -1 for s in value.shape)
    return None


class RuleContext:
    """What a rule sees: atoms of the node's tensor inputs, and ways to relate them.

    ``atoms_of`` maps every already-visited node to its output atoms: a list of atoms (one per
    dim) for a tensor, a list of those for a tuple of tensors, or None.
    """

    def __init__(
        self,
        spaces: ChannelSpaces,
        atoms_of: dict[fx.Node, Any],
        node: fx.Node,
        options: frozenset[str] = frozenset(),
    ):
        self.spaces = spaces
        self.atoms_of = atoms_of
        self.node = node
        self.options = options
        self.inexact: list[tuple[int, str]] = []
        self.contracted: set[tuple[fx.Node, int]] = set()
        self.bindings: list[tuple[str, int]] = []
        self.tags: list[tuple[int, str]] = []
        self.attachments: list[tuple[fx.Node, list[fx.Node]]] = []
        self.roles: list[tuple[fx.Node, str]] = []
        self._output_set = False

    # -------------------------------------------------------------- reading
    def dims(self, arg: Any) -> list[int] | None:
        """Atoms of a tensor argument (an fx.Node), or None for anything else."""
        if isinstance(arg, fx.Node):
            atoms = self.atoms_of.get(arg)
            if atoms and all(isinstance(a, int) for a in atoms):
                return list(atoms)
            if atoms == [] and tensor_shape(arg.meta.get("val")) == ():
                return []
        return None

    def shape(self, arg: Any) -> tuple[int, ...] | None:
        if isinstance(arg, fx.Node):
            return tensor_shape(arg.meta.get("val"))
        return None

    def out_shape(self, index: int | None = None) -> tuple[int, ...]:
        val = self.node.meta.get("val")
        if index is not None:
            val = val[index]
        shape = tensor_shape(val)
        assert shape is not None
        return shape

    def arg(self, index: int, name: str, default: Any = None) -> Any:
        """A node argument by position or keyword."""
        if index < len(self.node.args):
            return self.node.args[index]
        return self.node.kwargs.get(name, default)

    def named(self, name: str, default: Any = None) -> Any:
        """An argument by its name in the op's schema, wherever it was passed."""
        schema = getattr(self.node.target, "_schema", None)
        if schema is not None:
            for i, a in enumerate(schema.arguments):
                if a.name == name:
                    if i < len(self.node.args):
                        return self.node.args[i]
                    break
        return self.node.kwargs.get(name, default)

    def tensor_args(self) -> list[fx.Node]:
        """Every tensor argument, including those inside lists (``cat``'s inputs)."""
        return [
            n for n in iter_nodes((self.node.args, self.node.kwargs)) if self.dims(n) is not None
        ]

    # -------------------------------------------------------------- writing
    def fresh(self, size: int, reason: str | None = None) -> int:
        return self.spaces.new(size, reason or f"created by {self.op_name}")

    def unify(self, a: int, b: int) -> None:
        self.spaces.unify(a, b)

    def block(self, atoms: int | Iterable[int], reason: str) -> None:
        for a in [atoms] if isinstance(atoms, int) else atoms:
            self.spaces.block(a, f"{reason} ({self.op_name})")

    def mark_contracted(self, operand: Any, atom: int) -> None:
        """``operand``'s axis ``atom`` is summed over by this op: where the operand is a
        parameter (or a view of one), its slices on that axis are consumers."""
        if isinstance(operand, fx.Node):
            self.contracted.add((operand, atom))

    def mark_role(self, operand: Any, role: str) -> None:
        """Give the parameter behind ``operand`` a member role other than producer/consumer
        (``"quantizer"``: zeroing a group leaves it alone)."""
        if isinstance(operand, fx.Node):
            self.roles.append((operand, role))

    def attach(self, operand: Any, tensors: list[fx.Node]) -> None:
        """Tie whole tensors (e.g. a per-tensor quantizer's parameters) to ``operand``: every
        group that slices the parameter behind ``operand`` carries them along, unsliced."""
        if isinstance(operand, fx.Node) and tensors:
            self.attachments.append((operand, list(tensors)))

    def normalised(self, atoms: int | Iterable[int], reason: str) -> None:
        """Dims a norm averages over: blocked, unless the trace opted in to pruning through
        norms (``through_norms``); then they stay prunable, tagged ``hidden``, and their
        groups are marked inexact (removing a unit changes the norm's statistics)."""
        atoms = [atoms] if isinstance(atoms, int) else list(atoms)
        if "through_norms" not in self.options:
            self.block(atoms, reason)
            return
        for a in atoms:
            self.inexact.append((a, f"{reason} ({self.op_name})"))
            self.tag(a, "hidden")

    def tag(self, atom: int, kind: str) -> None:
        """Name what an axis is (``"head"``, ``"head_dim"``); groups on it report that kind."""
        self.tags.append((atom, kind))

    def bind(self, quantity: str, atom: int) -> None:
        """Record that a structural argument of this op (``"groups"`` of a convolution,
        ``"num_groups"`` of a group norm) is the size of ``atom``. Surgery hands the new sizes
        to the module that ran the op, through its module adapter."""
        self.bindings.append((quantity, atom))

    def set_output(self, atoms: list[int]) -> None:
        self.atoms_of[self.node] = list(atoms)
        self._output_set = True

    def set_outputs(self, atoms: list[list[int] | None]) -> None:
        self.atoms_of[self.node] = list(atoms)
        self._output_set = True

    @property
    def output_set(self) -> bool:
        return self._output_set

    @property
    def op_name(self) -> str:
        t = self.node.target
        if isinstance(t, torch._ops.OpOverload):
            return str(t)
        return getattr(t, "__name__", None) or str(t)

    def norm_dim(self, dim: int, rank: int) -> int:
        return dim + rank if dim < 0 else dim
