"""The channel-coupling pass: walk a captured graph once, apply each op's rule, and collect
the channel spaces of every node, parameter and buffer."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

import geta.quant.ops  # noqa: F401  (torch.ops.geta.quantize)
from geta.graph.rules import lookup_rule
from geta.graph.rules.base import RuleContext, iter_nodes, tensor_shape
from geta.graph.spaces import ChannelSpaces

logger = logging.getLogger(__name__)

__all__ = ["Analysis", "UnsupportedOp", "TensorInfo", "analyze"]


@dataclass(frozen=True)
class UnsupportedOp:
    """An op the engine has no rule for (or whose rule declined): its dims are blocked."""

    node: str
    op: str
    module: str
    reason: str


@dataclass
class TensorInfo:
    """A parameter or buffer as the graph sees it."""

    name: str
    shape: tuple[int, ...]
    is_buffer: bool
    atoms: list[int]
    node: str


@dataclass
class Binding:
    """A structural argument of an op (e.g. a convolution's ``groups``) tied to an atom."""

    module: str
    quantity: str
    atom: int


@dataclass
class Analysis:
    spaces: ChannelSpaces
    node_atoms: dict[str, Any]
    tensors: dict[str, TensorInfo]
    contracted: set[int] = field(default_factory=set)
    bindings: list[Binding] = field(default_factory=list)
    tags: list[tuple[int, str]] = field(default_factory=list)
    tensor_nodes: set[fx.Node] = field(default_factory=set, repr=False)
    attachments: dict[str, list[str]] = field(default_factory=dict)
    node_tensor: dict[fx.Node, str] = field(default_factory=dict, repr=False)
    roles: dict[str, str] = field(default_factory=dict)
    unsupported: list[UnsupportedOp] = field(default_factory=list)
    inexact: list[tuple[int, str]] = field(default_factory=list)
    options: frozenset[str] = frozenset()


def _module_path(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return _clean_path(path)


def _clean_path(path: str) -> str:
    # torch.export writes submodule paths like "L['self'].layer1[0]" or "layer1.0".
    if path.startswith("L['self']"):
        path = path[len("L['self']") :]
    path = path.replace("[", ".").replace("]", "").replace("'", "").lstrip(".")
    return path


def _fresh_atoms(spaces: ChannelSpaces, val: Any, reason: str) -> Any:
    shape = tensor_shape(val)
    if shape is not None:
        return [spaces.new(s, reason) for s in shape]
    if isinstance(val, (tuple, list)):
        return [_fresh_atoms(spaces, v, reason) for v in val]
    return None


def _all_atoms(value: Any) -> list[int]:
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [a for v in value for a in _all_atoms(v)]
    return []


_aten = torch.ops.aten
_VIEW_OPS = {
    _aten.t, _aten.transpose, _aten.permute, _aten.view, _aten.reshape, _aten._unsafe_view,
    _aten.unsqueeze, _aten.squeeze, _aten.expand, _aten.alias, _aten.clone, _aten.contiguous,
    _aten._to_copy, _aten.to, _aten.detach, _aten.lift_fresh_copy, torch.ops.geta.quantize,
}  # fmt: skip


def _parameter_source(node: fx.Node, tensors: set[fx.Node]) -> fx.Node | None:
    """The parameter/buffer placeholder ``node`` is a (reshaped) view of, if any."""
    while node.op == "call_function":
        packet = getattr(node.target, "overloadpacket", None)
        if packet not in _VIEW_OPS or not node.args or not isinstance(node.args[0], fx.Node):
            return None
        node = node.args[0]
    return node if node in tensors else None


def _touches_tensors(node: fx.Node, node_atoms: dict[fx.Node, Any]) -> list[fx.Node]:
    return [n for n in iter_nodes((node.args, node.kwargs)) if node_atoms.get(n) is not None]


def analyze(
    program: ExportedProgram,
    aliases: dict[str, str] | None = None,
    options: frozenset[str] = frozenset(),
) -> Analysis:
    """Run every op rule over ``program``'s graph and return the resulting channel spaces.

    ``aliases`` maps the name of a tied parameter or buffer to the name of the first tensor it
    is shared with; tied tensors get one set of atoms. ``options`` are handed to the rules
    (``"through_norms"``: normalised dims stay prunable, inexactly).
    """
    aliases = aliases or {}
    spaces = ChannelSpaces()
    sig = program.graph_signature
    specs = {spec.arg.name: spec for spec in sig.input_specs if hasattr(spec.arg, "name")}
    atoms_of: dict[fx.Node, Any] = {}
    result = Analysis(spaces=spaces, node_atoms={}, tensors={}, options=frozenset(options))

    for node in program.graph.nodes:
        if node.op == "placeholder":
            val = node.meta.get("val")
            shape = tensor_shape(val)
            spec = specs.get(node.name)
            kind = spec.kind if spec is not None else InputKind.USER_INPUT
            if shape is None:
                atoms_of[node] = None
            elif kind in (InputKind.PARAMETER, InputKind.BUFFER):
                name = aliases.get(spec.target, spec.target)
                result.tensor_nodes.add(node)
                result.node_tensor[node] = name
                if name in result.tensors:  # tied to a tensor seen before
                    atoms_of[node] = result.tensors[name].atoms
                    continue
                atoms = [spaces.new(s) for s in shape]
                atoms_of[node] = atoms
                result.tensors[name] = TensorInfo(
                    name=name,
                    shape=shape,
                    is_buffer=kind is InputKind.BUFFER,
                    atoms=atoms,
                    node=node.name,
                )
            elif kind is InputKind.USER_INPUT:
                atoms_of[node] = [spaces.new(s, "model input") for s in shape]
            else:
                atoms_of[node] = [spaces.new(s, f"{kind.name.lower()} tensor") for s in shape]
        elif node.op == "call_function":
            if not _walk_subgraph(program.graph_module, node, atoms_of, result):
                _apply_rule(node, atoms_of, result)
        elif node.op == "output":
            user_outputs = [
                i for i, spec in enumerate(sig.output_specs) if spec.kind is OutputKind.USER_OUTPUT
            ]
            outs = node.args[0]
            for i in user_outputs:
                value = atoms_of.get(outs[i]) if isinstance(outs[i], fx.Node) else None
                for a in _all_atoms(value):
                    spaces.block(a, "model output")
        elif node.op == "get_attr":
            atoms_of[node] = _fresh_atoms(spaces, node.meta.get("val"), "graph attribute")

    outer = set(program.graph.nodes)
    result.node_atoms = {n.name: a for n, a in atoms_of.items() if n in outer}
    return result


def _walk_subgraph(
    root: fx.GraphModule, node: fx.Node, atoms_of: dict[fx.Node, Any], result: Analysis
) -> bool:
    """Higher-order ops that just run a body under a context (``torch.no_grad()``, autocast):
    walk the body with its placeholders bound to the operands. False if ``node`` is not one."""
    if not isinstance(node.target, torch._ops.HigherOrderOperator):
        return False
    if node.target.name() not in ("wrap_with_set_grad_enabled", "wrap_with_autocast"):
        return False
    body_at = next(
        (i for i, a in enumerate(node.args) if isinstance(a, fx.Node) and a.op == "get_attr"), None
    )
    if body_at is None:
        return False
    body = getattr(root, node.args[body_at].target, None)
    if not isinstance(body, fx.GraphModule):
        return False
    operands = list(node.args[body_at + 1 :])
    placeholders = [n for n in body.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(operands):
        return False
    for ph, op in zip(placeholders, operands, strict=True):
        atoms_of[ph] = atoms_of.get(op) if isinstance(op, fx.Node) else None
    for inner in body.graph.nodes:
        if inner.op == "call_function":
            if not _walk_subgraph(body, inner, atoms_of, result):
                _apply_rule(inner, atoms_of, result)
        elif inner.op == "output":
            outs = inner.args[0]
            outs = outs if isinstance(outs, (tuple, list)) else [outs]
            atoms_of[node] = [atoms_of.get(o) if isinstance(o, fx.Node) else None for o in outs]
        elif inner.op == "get_attr":
            atoms_of[inner] = _fresh_atoms(result.spaces, inner.meta.get("val"), "graph attribute")
    return True


def _apply_rule(node: fx.Node, atoms_of: dict[fx.Node, Any], result: Analysis) -> None:
    spaces = result.spaces
    rule = lookup_rule(node.target)
    ctx = RuleContext(spaces, atoms_of, node, result.options)
    op_name = ctx.op_name
    reason = None
    if rule is None:
        reason = "no rule registered for this op"
    else:
        try:
            rule(ctx, node)
        except NotImplementedError as err:
            reason = f"rule declined: {err}"
        except Exception as err:  # a rule bug must not break tracing: block and report
            logger.warning("op rule for %s failed on node %s: %r", op_name, node.name, err)
            reason = f"rule failed: {type(err).__name__}: {err}"
    if reason is not None:
        touched = _touches_tensors(node, atoms_of)
        if (
            not touched
            and tensor_shape(node.meta.get("val")) is None
            and not isinstance(node.meta.get("val"), (tuple, list))
        ):
            return  # nothing tensor-valued involved (e.g. integer arithmetic on sizes)
        for t in touched:
            for a in _all_atoms(atoms_of[t]):
                spaces.block(a, f"used by unsupported op {op_name}")
        atoms_of[node] = _fresh_atoms(
            spaces, node.meta.get("val"), f"output of unsupported op {op_name}"
        )
        result.unsupported.append(UnsupportedOp(node.name, op_name, _module_path(node), reason))
        return
    if not ctx.output_set:
        atoms_of[node] = _fresh_atoms(spaces, node.meta.get("val"), f"created by {op_name}")
    for operand, atom in ctx.contracted:
        if _parameter_source(operand, result.tensor_nodes) is not None:
            result.contracted.add(atom)
    result.tags.extend(ctx.tags)
    result.inexact.extend(ctx.inexact)
    for operand, role in ctx.roles:
        source = _parameter_source(operand, result.tensor_nodes)
        if source is not None:
            result.roles[result.node_tensor[source]] = role
    for operand, tensors in ctx.attachments:
        source = _parameter_source(operand, result.tensor_nodes)
        if source is None:
            continue
        names = [result.node_tensor[t] for t in tensors if t in result.node_tensor]
        result.attachments.setdefault(result.node_tensor[source], []).extend(names)
    module = _module_path(node)
    for quantity, atom in ctx.bindings:
        result.bindings.append(Binding(module, quantity, atom))


def is_tensor_node(node: fx.Node) -> bool:
    return isinstance(node.meta.get("val"), torch.Tensor)
