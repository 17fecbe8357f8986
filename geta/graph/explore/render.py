"""The op graph as SVG: one ``<g class="node">`` per node, coloured by group (stripes for a
node in several groups, white with a dashed outline for a node in none), unsupported ops with
a red outline, a ``<title>`` tooltip on each node."""

from __future__ import annotations

from html import escape

from geta.graph.explore.layout import Layout, Point
from geta.graph.explore.view import GraphViewData, ViewGroup, ViewModule, ViewNode

__all__ = ["render_svg", "SVG_STYLE", "edge_path", "node_tooltip"]

SVG_STYLE = """
.geta-graph { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: 11px; background: #fff; }
.geta-graph .edge { fill: none; stroke: #8a8f98; stroke-width: 1.2; }
.geta-graph .node rect, .geta-graph .module-node rect { stroke: #4b5563; stroke-width: 1; }
.geta-graph .node.no-group rect { fill: #fff; stroke: #9ca3af; stroke-dasharray: 4 3; }
.geta-graph .node.param rect, .geta-graph .node.buffer rect { stroke-width: 0.8; }
.geta-graph .node.input rect, .geta-graph .node.output rect { stroke: #111827;
  stroke-width: 2; }
.geta-graph .node.unsupported rect { stroke: #dc2626; stroke-width: 3.5;
  stroke-dasharray: none; }
.geta-graph .module-node rect { fill: #eef2f7; stroke-width: 1.5; stroke-dasharray: 6 2; }
.geta-graph .module-node.unsupported rect { stroke: #dc2626; stroke-width: 3.5; }
.geta-graph text { fill: #111827; text-anchor: middle; dominant-baseline: central; }
.geta-graph text .sub { fill: #4b5563; font-size: 10px; }
"""


def _fmt(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def edge_path(points: list[Point], curve: str) -> str:
    """SVG path data: graphviz's Bézier control points as they are; through-points joined by
    curves that leave and enter vertically."""
    if not points:
        return ""
    (x0, y0), rest = points[0], points[1:]
    d = [f"M{_fmt(x0)},{_fmt(y0)}"]
    if curve == "bezier" and len(rest) % 3 == 0:
        for i in range(0, len(rest), 3):
            (x1, y1), (x2, y2), (x3, y3) = rest[i : i + 3]
            d.append(f"C{_fmt(x1)},{_fmt(y1)} {_fmt(x2)},{_fmt(y2)} {_fmt(x3)},{_fmt(y3)}")
        return "".join(d)
    px, py = x0, y0
    for x, y in rest:
        mid = (py + y) / 2
        d.append(f"C{_fmt(px)},{_fmt(mid)} {_fmt(x)},{_fmt(mid)} {_fmt(x)},{_fmt(y)}")
        px, py = x, y
    return "".join(d)


def _group_line(g: ViewGroup) -> str:
    return (
        f"group {g.id}: {g.kind} x {g.size}, {g.params_per_unit:,} params/unit, "
        f"cost {g.cost:,} params"
    )


def node_tooltip(node: ViewNode, groups: dict[int, ViewGroup]) -> str:
    """Plain-text tooltip: op, module, shapes, tensor, groups with their cost, why unsupported."""
    lines = [f"{node.id}  [{node.op}]"]
    if node.module:
        lines.append(f"module: {node.module}")
    if node.tensor:
        lines.append(f"tensor: {node.tensor} ({node.numel:,} scalars)")
    if node.shape:
        lines.append(f"shape: {node.shape}")
    if node.inputs:
        lines.append("inputs: " + ", ".join(s or "?" for s in node.inputs))
    lines += [_group_line(groups[g]) for g in node.groups if g in groups]
    if not node.groups:
        lines.append("in no prunable group")
    if node.unsupported:
        lines.append(f"UNSUPPORTED: {node.unsupported}")
    return "\n".join(lines)


def _fill(node: ViewNode, colors: dict[int, str], gradients: dict[tuple[int, ...], str]) -> str:
    known = tuple(g for g in node.groups if g in colors)
    if not known:
        return "#ffffff"
    if len(known) == 1:
        return colors[known[0]]
    return f"url(#{gradients.setdefault(known, f'stripes-{len(gradients)}')})"


def _gradient(gid: str, groups: tuple[int, ...], colors: dict[int, str]) -> str:
    stops = []
    n = len(groups)
    for i, g in enumerate(groups):
        a, b = 100 * i / n, 100 * (i + 1) / n
        stops.append(f'<stop offset="{a:.1f}%" stop-color="{colors[g]}"/>')
        stops.append(f'<stop offset="{b:.1f}%" stop-color="{colors[g]}"/>')
    return (
        f'<linearGradient id="{gid}" x1="0" y1="0" x2="1" y2="0">'
        + "".join(stops)
        + "</linearGradient>"
    )


def _box(cls: str, attrs: str, w: float, h: float, fill: str, title: str, lines: list[str]) -> str:
    text = f'<tspan x="0" dy="{-7 * (len(lines) - 1)}">{escape(lines[0])}</tspan>'
    for extra in lines[1:]:
        text += f'<tspan class="sub" x="0" dy="14">{escape(extra)}</tspan>'
    return (
        f'<g class="{cls}" {attrs}><title>{escape(title)}</title>'
        f'<rect x="{_fmt(-w / 2)}" y="{_fmt(-h / 2)}" width="{_fmt(w)}" height="{_fmt(h)}" '
        f'rx="{6 if "module" in cls else 4}" fill="{fill}"/><text>{text}</text></g>'
    )


def _module_box(module: ViewModule) -> str:
    w, h = module.size
    cls = "module-node" + (" unsupported" if module.unsupported else "")
    attrs = f'data-module="{escape(module.path)}" style="display:none"'
    title = (
        f"module {module.path} (folded; click to unfold)\n"
        f"{module.count} nodes, {module.ops} ops, {module.params:,} parameter scalars\n"
        f"groups: {', '.join(map(str, module.groups)) or 'none'}"
        + ("\nUNSUPPORTED ops inside" if module.unsupported else "")
    )
    return _box(cls, attrs, w, h, "#eef2f7", title, [f"[+] {module.path}", f"{module.count} nodes"])


def render_svg(view: GraphViewData, layout: Layout, *, standalone: bool = True) -> str:
    """The SVG document (``standalone``) or the ``<svg>`` element to inline in HTML, which also
    carries hidden boxes for folded modules."""
    colors = {g.id: g.color for g in view.groups}
    groups = {g.id: g for g in view.groups}
    gradients: dict[tuple[int, ...], str] = {}
    node_parts = []
    for node in view.nodes:
        x, y = layout.positions[node.id]
        w, h = node.size
        fill = _fill(node, colors, gradients)
        cls = ["node", node.kind]
        if not node.groups:
            cls.append("no-group")
        elif len(node.groups) > 1:
            cls.append("multi-group")
        if node.unsupported:
            cls.append("unsupported")
        attrs = (
            f'id="n-{escape(node.id)}" data-id="{escape(node.id)}" '
            f'data-groups="{" ".join(map(str, node.groups))}" '
            f'transform="translate({_fmt(x)},{_fmt(y)})"'
        )
        lines = [node.label] + ([node.shape] if node.shape else [])
        node_parts.append(_box(" ".join(cls), attrs, w, h, fill, node_tooltip(node, groups), lines))
    edge_parts = []
    for e in view.edges:
        pts = layout.edges.get((e.source, e.target))
        if pts is None:
            continue
        edge_parts.append(
            f'<path class="edge" data-s="{escape(e.source)}" data-t="{escape(e.target)}" '
            f'd="{edge_path(pts, layout.curve)}" marker-end="url(#arrow)"/>'
        )
    module_parts = []
    if not standalone:
        module_parts = [_module_box(m) for m in view.modules]
    defs = [
        '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" '
        'fill="#8a8f98"/></marker>'
    ]
    defs += [_gradient(gid, combo, colors) for combo, gid in gradients.items()]
    w, h = _fmt(layout.width), _fmt(layout.height)
    ns = ' xmlns="http://www.w3.org/2000/svg"' if standalone else ""
    return (
        f'<svg{ns} class="geta-graph" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
        f'data-engine="{layout.engine}"><style>{SVG_STYLE}</style><defs>{"".join(defs)}</defs>'
        f'<g id="viewport"><g class="edges">{"".join(edge_parts)}</g>'
        f'<g class="dyn-edges"></g><g class="nodes">{"".join(node_parts)}</g>'
        f'<g class="modules">{"".join(module_parts)}</g></g></svg>'
    )
