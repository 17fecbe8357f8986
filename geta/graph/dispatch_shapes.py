"""Shapes of a trial forward, read at the dispatcher and matched to the captured graph's nodes.

The trial prune (:mod:`geta.graph.validate`) must see the shapes the model's own forward code
produces once a unit is removed: a size the code hard-codes shows up as a shape that differs
from the prediction. Capturing the pruned copy again with ``torch.export`` tells, but costs as
much as the first capture (seconds for a 7B model, several times Torch-Pruning's whole build
for a CNN). The same facts are in the aten calls of a fake-tensor run of the forward, which
the trial makes anyway to catch crashes:

1. once, the captured graph is interpreted on fake tensors, recording which aten calls each
   node makes (a composite node such as ``aten.linear`` makes several), and the unpruned model
   is run the same way; when the two call sequences agree, every call of the forward is
   attributed to a node;
2. per trial, the pruned fake run's calls are read against that attribution: the last call of
   a node gives the node's trial shape (and a slice's bounds).

Where the sequences do not agree (a forward whose calls depend on values export specialises,
or on the training mode) there is no attribution and the trial captures again, as before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

logger = logging.getLogger(__name__)

__all__ = ["Call", "CallRecorder", "DispatchShapes", "TrialNode"]

_NOT_CALLS = {"_assert_tensor_metadata", "_assert_scalar", "sym_constrain_range_for_size"}


@dataclass(frozen=True)
class Call:
    """One aten call: its op (in-place and out-of-place forms alike), output shapes, and for a
    slice its source shape and arguments."""

    op: str
    shapes: tuple[tuple[int, ...] | None, ...]
    slice_args: tuple[Any, ...] | None = None


def _op_name(func) -> str:
    name = func.overloadpacket.__name__
    return name[:-1] if name.endswith("_") and not name.endswith("__") else name


def _shape(x: Any) -> tuple[int, ...] | None:
    return tuple(int(s) for s in x.shape) if isinstance(x, torch.Tensor) else None


class CallRecorder(TorchDispatchMode):
    """Record every aten call made inside ``with CallRecorder() as r:`` (enter it inside the
    fake mode), and during a graph interpretation the node each belongs to."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []
        self.owners: list[str | None] = []
        self.node: str | None = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = _op_name(func)
        leaves = pytree.tree_leaves(out)
        if name not in _NOT_CALLS and any(isinstance(o, torch.Tensor) for o in leaves):
            slice_args = None
            if func.overloadpacket is torch.ops.aten.slice:
                slice_args = (_shape(args[0]), *args[1:])
            shapes = tuple(_shape(o) for o in leaves)
            self.calls.append(Call(name, shapes, slice_args))
            self.owners.append(self.node)
        return out


class _Interpreter(fx.Interpreter):
    def __init__(self, module: fx.GraphModule, recorder: CallRecorder) -> None:
        super().__init__(module)
        self.recorder = recorder

    def run_node(self, n: fx.Node) -> Any:
        self.recorder.node = n.name
        try:
            return super().run_node(n)
        finally:
            self.recorder.node = None


def _fake_like(val: Any) -> Any:
    """A fresh tensor (fake, under the fake mode) like a placeholder's recorded value."""
    if not isinstance(val, torch.Tensor):
        return val
    out = torch.empty_strided(val.shape, val.stride(), dtype=val.dtype, device=val.device)
    return out.requires_grad_(val.requires_grad)


def _graph_calls(program: torch.export.ExportedProgram) -> CallRecorder | None:
    """The aten calls of the captured graph run on fake tensors, each with its node."""
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    try:
        with mode:
            inputs = [
                _fake_like(node.meta.get("val"))
                for node in program.graph_module.graph.nodes
                if node.op == "placeholder"
            ]
            with CallRecorder() as recorder:
                _Interpreter(program.graph_module, recorder).run(*inputs)
    except Exception as err:  # an unusual graph: the trial captures instead
        logger.debug("captured graph does not run on fake tensors: %s", err, exc_info=True)
        return None
    return recorder


@dataclass(frozen=True)
class TrialNode:
    """What the trial's shape check reads of a node of the pruned copy (the shape of
    an ``fx.Node`` the pruned copy's capture would have had)."""

    meta: dict[str, Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def _trial_node(call: Call, outputs: int) -> TrialNode:
    vals = [None if s is None else torch.empty(s, device="meta") for s in call.shapes[:outputs]]
    val = vals[0] if len(vals) == 1 else tuple(vals)
    args: tuple[Any, ...] = ()
    if call.slice_args is not None:
        source, *rest = call.slice_args
        src = TrialNode({"val": torch.empty(source, device="meta")}, (), {})
        args = (src, *rest)
    return TrialNode({"val": val}, args, {})


class DispatchShapes:
    """The attribution of a model's forward calls to its captured graph's nodes (see module
    doc); :meth:`trial_nodes` reads a pruned run against it."""

    def __init__(self, reference: list[Call], last_call: dict[str, tuple[int, int]]) -> None:
        self.reference = reference
        self.last_call = last_call  # node -> (index of its last call, outputs that are its own)

    @classmethod
    def build(
        cls, program: torch.export.ExportedProgram, forward_calls: list[Call]
    ) -> DispatchShapes | None:
        """Match the calls of the unpruned forward (``forward_calls``) with those of the
        captured graph; None when they differ."""
        graph = _graph_calls(program)
        if graph is None or graph.calls != forward_calls:
            logger.debug(
                "forward and captured graph make different aten calls (%s vs %d); trial "
                "prunes capture again",
                None if graph is None else len(graph.calls),
                len(forward_calls),
            )
            return None
        last: dict[str, int] = {}
        for i, owner in enumerate(graph.owners):
            if owner is not None:
                last[owner] = i
        nodes = {n.name: n for n in program.graph_module.graph.nodes}
        checked = {}
        for name, i in last.items():
            node = nodes[name]
            if node.op != "call_function":
                continue
            expected = tuple(_shape(v) for v in pytree.tree_leaves(node.meta.get("val")))
            # the node's output is that call's (first) output: batch_norm's last call is
            # native_batch_norm, whose saved statistics follow
            if expected and graph.calls[i].shapes[: len(expected)] == expected:
                checked[name] = (i, len(expected))
        return cls(forward_calls, checked)

    def trial_nodes(self, calls: list[Call]) -> dict[str, TrialNode | None] | None:
        """The trial's view of every attributed node, from a pruned run's ``calls`` (None for
        a node whose call now has another number of outputs); None when that run made other
        calls than the unpruned one (its graph would differ)."""
        if len(calls) != len(self.reference) or any(
            a.op != b.op for a, b in zip(calls, self.reference, strict=True)
        ):
            return None
        return {
            name: _trial_node(calls[i], outputs)
            if len(calls[i].shapes) == len(self.reference[i].shapes)
            else None
            for name, (i, outputs) in self.last_call.items()
        }
