"""DOT text of the op graph (for graphviz, or any tool that reads DOT)."""

from __future__ import annotations

from geta.graph.explore.view import GraphViewData

__all__ = ["render_dot", "dot_quote"]


def dot_quote(text: str) -> str:
    """A DOT double-quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _attrs(pairs: dict[str, str]) -> str:
    return ", ".join(f"{k}={dot_quote(v)}" for k, v in pairs.items())


def render_dot(view: GraphViewData, name: str = "geta") -> str:
    """The op graph in DOT: nodes filled with their group's colour (striped when in several),
    dashed when in none, red and thick when unsupported; the data as extra attributes
    (``op``, ``tensor_shape``, ``groups``, ``module``, ``tensor``, ``unsupported``).
    Parallel edges are written once per use, as in :meth:`DependencyGraph.to_networkx`."""
    colors = {g.id: g.color for g in view.groups}
    lines = [
        f"digraph {dot_quote(name)} {{",
        "  graph [rankdir=TB];",
        '  node [shape=box, fontname="monospace", fontsize=10];',
    ]
    for n in view.nodes:
        known = [colors[g] for g in n.groups if g in colors]
        attrs = {"label": n.label + (f"\n{n.shape}" if n.shape else "")}
        if len(known) > 1:
            attrs.update(style="striped", fillcolor=":".join(known))
        elif known:
            attrs.update(style="filled", fillcolor=known[0])
        else:
            attrs.update(style="dashed")
        if n.unsupported:
            attrs.update(color="red", penwidth="3")
        attrs.update(
            op=n.op,
            tensor_shape=n.shape,
            groups=",".join(map(str, n.groups)),
            module=n.module,
            tensor=n.tensor,
            unsupported=n.unsupported,
        )
        lines.append(f"  {dot_quote(n.id)} [{_attrs(attrs)}];")
    for e in view.edges:
        for _ in range(e.count):
            lines.append(
                f"  {dot_quote(e.source)} -> {dot_quote(e.target)} "
                f"[{_attrs({'tensor_shape': e.shape})}];"
            )
    lines.append("}")
    return "\n".join(lines) + "\n"
