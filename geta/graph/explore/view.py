"""What the explorer shows: the op graph of a :class:`DependencyGraph` as plain records
(nodes with labels, groups and box sizes; modules; groups with their cost), shared by the
SVG, HTML and DOT writers."""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from geta.graph.dependency_graph import DependencyGraph

__all__ = ["ViewNode", "ViewEdge", "ViewGroup", "ViewModule", "GraphViewData", "build_view"]

CHAR_W = 7.0  # px per character of the 11px monospace label font
LINE_H = 14.0
PAD_X = 10.0
PAD_Y = 7.0


def group_color(group_id: int) -> str:
    """A stable pastel colour per group id (golden-angle hues; no two neighbours alike)."""
    hue = (group_id * 137.508 + 24.0) % 360.0 / 360.0
    lightness = 0.74 if group_id % 2 == 0 else 0.64
    r, g, b = colorsys.hls_to_rgb(hue, lightness, 0.72)
    return "#{:02x}{:02x}{:02x}".format(*(round(c * 255) for c in (r, g, b)))


@dataclass
class ViewNode:
    """One node of the op graph as drawn."""

    id: str
    kind: str  # "op", "param", "buffer", "input", "output"
    op: str
    label: str
    shape: str
    module: str  # the module it is drawn in (a parameter's owner for placeholders)
    groups: list[int]
    tensor: str = ""
    numel: int = 0
    unsupported: str = ""
    inputs: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[float, float]:
        """Box width and height in px."""
        text = max(len(self.label), len(self.shape))
        lines = 2 if self.shape else 1
        return (max(text * CHAR_W + 2 * PAD_X, 48.0), lines * LINE_H + 2 * PAD_Y)


@dataclass
class ViewEdge:
    source: str
    target: str
    shape: str
    count: int = 1  # parallel edges (an op that reads one tensor twice)


@dataclass
class ViewGroup:
    id: int
    kind: str
    size: int
    params_per_unit: int
    cost: int  # params_per_unit * size: the scalars removed with the whole group
    layers: list[str]
    color: str


@dataclass
class ViewModule:
    """A submodule that can be folded into one node (it holds two or more nodes)."""

    path: str
    parent: str | None
    depth: int
    count: int  # nodes in it, its submodules included
    ops: int = 0
    params: int = 0  # parameter scalars
    groups: list[int] = field(default_factory=list)
    unsupported: bool = False

    @property
    def size(self) -> tuple[float, float]:
        return (max(len(self.path) + 4, len(f"{self.count} nodes")) * CHAR_W + 2 * PAD_X + 8, 44.0)


@dataclass
class GraphViewData:
    """Everything the writers need, independent of positions."""

    nodes: list[ViewNode]
    edges: list[ViewEdge]
    groups: list[ViewGroup]
    modules: list[ViewModule]
    unsupported: list[dict[str, str]]
    blocked: list[dict[str, object]]


def short_op(op: str) -> str:
    """``aten.conv2d.default`` -> ``conv2d``; ``ns.op.overload`` -> ``ns.op``."""
    if op.startswith("<built-in function "):
        return op[len("<built-in function ") : -1]
    parts = op.split(".")
    if len(parts) == 3:  # namespace.name.overload
        parts = parts[:2]
    if parts[0] == "aten":
        parts = parts[1:]
    return ".".join(parts)


def _owner(tensor: str) -> str:
    return tensor.rsplit(".", 1)[0] if "." in tensor else ""


def _tensor_label(tensor: str, width: int = 28) -> str:
    return tensor if len(tensor) <= width else "…" + tensor[-(width - 1) :]


def build_view(graph: DependencyGraph) -> GraphViewData:
    """The records of ``graph``'s op graph (from :meth:`DependencyGraph.to_networkx`)."""
    nxg = graph.to_networkx()
    tensors = graph.analysis.tensors
    nodes: list[ViewNode] = []
    for name, attrs in nxg.nodes(data=True):
        op = attrs["op"]
        tensor = attrs.get("tensor", "")
        groups = [int(g) for g in attrs["groups"].split(",") if g]
        inputs = [d["shape"] for _, _, d in nxg.in_edges(name, data=True)]
        if tensor:
            info = tensors.get(tensor)
            is_buffer = bool(info and info.is_buffer)
            numel = math.prod(info.shape) if info else 0
            nodes.append(
                ViewNode(
                    name,
                    "buffer" if is_buffer else "param",
                    op,
                    _tensor_label(tensor),
                    attrs["shape"],
                    _owner(tensor),
                    groups,
                    tensor=tensor,
                    numel=numel,
                )
            )
            continue
        kind = "input" if op == "placeholder" else "output" if op == "output" else "op"
        label = name if kind == "input" else "output" if kind == "output" else short_op(op)
        if attrs.get("unsupported"):
            label = "! " + label
        nodes.append(
            ViewNode(
                name,
                kind,
                op,
                label,
                attrs["shape"],
                attrs["module"] if kind == "op" else "",
                groups,
                unsupported=attrs.get("unsupported", ""),
                inputs=inputs,
            )
        )

    edges: dict[tuple[str, str], ViewEdge] = {}
    for u, v, attrs in nxg.edges(data=True):
        edge = edges.get((u, v))
        if edge is None:
            edges[(u, v)] = ViewEdge(u, v, attrs.get("shape", ""))
        else:
            edge.count += 1

    groups = [
        ViewGroup(g.id, g.kind, g.size, g.params_per_unit, g.numel, g.layers, group_color(g.id))
        for g in graph.groups
    ]
    unsupported = [
        {"node": u.node, "op": u.op, "module": u.module, "reason": u.reason}
        for u in graph.unsupported_ops
    ]
    blocked = [
        {"size": b.size, "reason": b.reason, "tensors": list(b.tensors)} for b in graph.blocked
    ]
    return GraphViewData(nodes, list(edges.values()), groups, _modules(nodes), unsupported, blocked)


def _modules(nodes: list[ViewNode]) -> list[ViewModule]:
    found: dict[str, ViewModule] = {}
    groups: dict[str, set[int]] = {}
    for node in nodes:
        parts = node.module.split(".") if node.module else []
        for depth in range(1, len(parts) + 1):
            path = ".".join(parts[:depth])
            m = found.get(path)
            if m is None:
                m = found[path] = ViewModule(path, ".".join(parts[: depth - 1]) or None, depth, 0)
                groups[path] = set()
            m.count += 1
            m.ops += node.kind == "op"
            m.params += node.numel if node.kind == "param" else 0
            m.unsupported |= bool(node.unsupported)
            groups[path].update(node.groups)
    # only modules with two or more nodes fold (an ancestor holds at least as many: foldable too)
    modules = [m for m in found.values() if m.count >= 2]
    for m in modules:
        m.groups = sorted(groups[m.path])
    return modules
