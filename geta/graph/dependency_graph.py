"""The dependency graph a user works with: captured program, channel spaces, groups."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
from torch.export import ExportedProgram

from geta.graph.analysis import Analysis, UnsupportedOp
from geta.graph.groups import BlockedSpace, PruningGroup, build_groups
from geta.graph.rewrites import AttributeRewrite

if TYPE_CHECKING:
    import networkx

    from geta.graph.explore import GraphView

__all__ = ["DependencyGraph"]


class DependencyGraph:
    """Which channels, heads and features of a model are coupled, and which can be removed.

    Built by :func:`geta.trace`. ``groups`` lists the prunable groups; each group's members
    are every parameter and buffer slice tied to it. ``unsupported_ops`` lists ops without a
    rule (their dims were blocked, so nothing wrong is ever pruned).

    Example:
        >>> import torch, geta
        >>> from geta.models import lenet5
        >>> graph = geta.trace(lenet5(), (torch.randn(1, 1, 28, 28),))
        >>> [g.size for g in graph.groups]
        [6, 16, 120, 84]
    """

    def __init__(self, program: ExportedProgram, analysis: Analysis) -> None:
        self.program = program
        self.analysis = analysis
        self.groups: list[PruningGroup] = []
        self.blocked: list[BlockedSpace] = []
        # attributes the forward reads as sizes, rewritten with a group: by the group's leaf
        self.rewrites: dict[int, tuple[AttributeRewrite, ...]] = {}
        self.stale = False
        self._rebuild_groups()

    def _rebuild_groups(self) -> None:
        self.groups, self.blocked = build_groups(self.analysis)

    # ------------------------------------------------------------ queries
    @property
    def unsupported_ops(self) -> list[UnsupportedOp]:
        return list(self.analysis.unsupported)

    @property
    def spaces(self):
        return self.analysis.spaces

    def group(self, group_id: int) -> PruningGroup:
        for g in self.groups:
            if g.id == group_id:
                return g
        raise KeyError(f"no prunable group with id {group_id}")

    def rewrites_of(self, group: PruningGroup) -> tuple[AttributeRewrite, ...]:
        """The module attributes :func:`geta.prune` sets when it prunes ``group`` (sizes the
        forward reads, found by the trial prune: :mod:`geta.graph.rewrites`)."""
        return self.rewrites.get(self.spaces.find(group.leaf), ())

    def groups_of(self, tensor: str) -> list[PruningGroup]:
        """The groups that have a slice of parameter or buffer ``tensor``."""
        return [g for g in self.groups if any(m.name == tensor for m in g.members)]

    def prunable_fraction(self) -> float:
        """Share of weight scalars (tensors with 2+ dims) that sit in some prunable group."""
        weights = {
            n: t for n, t in self.analysis.tensors.items() if len(t.shape) >= 2 and not t.is_buffer
        }
        total = sum(int(np.prod(t.shape)) for t in weights.values())
        covered = 0
        for name, info in weights.items():
            mask = np.zeros(info.shape, dtype=bool)
            for g in self.groups_of(name):
                for m in g.members:
                    if m.name == name:
                        index = [slice(None)] * len(info.shape)
                        index[m.dim] = m.positions.ravel()
                        mask[tuple(index)] = True
            covered += int(mask.sum())
        return covered / total if total else 0.0

    def block_groups(self, reasons: dict[int, str]) -> None:
        """Make groups unprunable, each with a reason (kept in ``graph.blocked``). The
        remaining groups are renumbered."""
        spaces = self.spaces
        for g in self.groups:
            if g.id in reasons:
                spaces.block(g.leaf, reasons[g.id])
        self._rebuild_groups()

    # ------------------------------------------------------------ display
    def summary_table(self) -> str:
        rows = [("group", "kind", "size", "params", "layers")]
        for g in self.groups:
            layers = g.layers
            shown = ", ".join(layers[:3]) + (
                f", +{len(layers) - 3} more" if len(layers) > 3 else ""
            )
            kind = g.kind if g.exact else f"{g.kind}*"
            rows.append((str(g.id), kind, str(g.size), f"{g.numel:,}", shown))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [
            "  ".join(
                c.rjust(w) if i in (0, 2, 3) else c.ljust(w)
                for i, (c, w) in enumerate(zip(r[:4], widths, strict=True))
            )
            + "  "
            + r[4]
            for r in rows
        ]
        lines.insert(1, "-" * max(len(x) for x in lines))
        total = sum(
            int(np.prod(t.shape)) for t in self.analysis.tensors.values() if not t.is_buffer
        )
        lines.append("")
        lines.append(
            f"{len(self.groups)} prunable groups; {self.prunable_fraction():.1%} of weight scalars "
            f"prunable; {total:,} parameters; {len(self.unsupported_ops)} unsupported ops"
        )
        if any(not g.exact for g in self.groups):
            lines.append("  * inexact: prunes through a LayerNorm / RMSNorm (fine-tune after)")
        for op in self.unsupported_ops:
            lines.append(
                f"  unsupported: {op.op} at {op.node} ({op.module or 'top level'}): {op.reason}"
            )
        return "\n".join(lines)

    def summary(self, file: TextIO | None = None) -> None:
        """Print the group table: id, kind, size, scalars in the group, layers."""
        print(self.summary_table(), file=file or sys.stdout)

    def to_networkx(self) -> networkx.MultiDiGraph:
        """The op graph: nodes carry op, shape and group ids; edges carry the tensor shape.

        Node attributes (all strings, so the graph writes to GraphML as it is): ``op``,
        ``shape``, ``groups`` (comma-separated group ids), ``module`` (the submodule that ran
        the op), ``tensor`` (the parameter or buffer name of a placeholder) and ``unsupported``
        (why the op has no rule; empty for supported ops).
        """
        import networkx as nx

        spaces = self.spaces
        tensor_of = {node.name: name for node, name in self.analysis.node_tensor.items()}
        unsupported = {u.node: u.reason for u in self.analysis.unsupported}
        leaf_to_group = {spaces.find(g.leaf): g.id for g in self.groups}
        graph = nx.MultiDiGraph()
        for node in self.program.graph.nodes:
            atoms = self.analysis.node_atoms.get(node.name)
            dims = (
                atoms if isinstance(atoms, list) and all(isinstance(a, int) for a in atoms) else []
            )
            group_ids = sorted(
                {
                    leaf_to_group[leaf]
                    for a in dims
                    for leaf in spaces.leaves(a)
                    if leaf in leaf_to_group
                }
            )
            val = node.meta.get("val")
            shape = tuple(val.shape) if hasattr(val, "shape") else None
            graph.add_node(
                node.name,
                op=str(node.target) if node.op == "call_function" else node.op,
                shape=str(shape) if shape is not None else "",
                groups=",".join(map(str, group_ids)),
                module=_module_of(node),
                tensor=tensor_of.get(node.name, ""),
                unsupported=unsupported.get(node.name, ""),
            )
            for arg in node.all_input_nodes:
                arg_val = arg.meta.get("val")
                graph.add_edge(
                    arg.name,
                    node.name,
                    shape=str(tuple(arg_val.shape)) if hasattr(arg_val, "shape") else "",
                )
        return graph

    # ------------------------------------------------------------ explorer and export
    def show(self, **options: Any) -> GraphView:
        """The interactive view: zoom, pan, hover for op, shapes, groups and their cost; nodes
        coloured by group; click a node or pick a group to highlight it; fold modules;
        unsupported ops outlined in red and listed. Displays itself in Jupyter (an iframe),
        needs no network and no system binary.

        Options: ``fold`` (module paths, or ``1`` to fold the top-level modules),
        ``highlight`` (a group id), ``layout`` (``"auto"``, ``"dot"``, ``"layered"``),
        ``title``, ``height`` (px, of the notebook frame).

        Example:
            >>> graph.show(fold=1)                    # doctest: +SKIP
            >>> graph.show(highlight=3).save("g.html")  # doctest: +SKIP
        """
        from geta.graph.explore import GraphView

        return GraphView(self, **options)

    def to_html(self, path: str | Path, **options: Any) -> Path:
        """Write the interactive view (see :meth:`show`) as one self-contained HTML file.

        Example:
            >>> graph.to_html("graph.html")   # doctest: +SKIP
        """
        from geta.graph.explore import write

        return write(self, path, "html", **options)

    def to_svg(self, path: str | Path, layout: str = "auto") -> Path:
        """Write the graph as a static SVG (group colours, tooltips as ``<title>``).

        Example:
            >>> graph.to_svg("graph.svg", layout="layered")   # doctest: +SKIP
        """
        from geta.graph.explore import write

        return write(self, path, "svg", layout=layout)

    def to_dot(self, path: str | Path) -> Path:
        """Write the op graph in graphviz's DOT (render it with ``dot -Tpdf``).

        Example:
            >>> graph.to_dot("graph.dot")   # then: dot -Tpdf graph.dot -o graph.pdf  # doctest: +SKIP
        """
        from geta.graph.explore import write

        return write(self, path, "dot")

    def to_graphml(self, path: str | Path) -> Path:
        """Write :meth:`to_networkx` as GraphML (yEd, Gephi, ``networkx.read_graphml``).

        Example:
            >>> graph.to_graphml("graph.graphml")   # doctest: +SKIP
        """
        from geta.graph.explore import write

        return write(self, path, "graphml")

    def __repr__(self) -> str:
        return f"DependencyGraph({len(self.groups)} groups, {len(self.unsupported_ops)} unsupported ops)"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython
        p.text(self.summary_table())


def _module_of(node) -> str:
    from geta.graph.analysis import _module_path

    return _module_path(node)
