"""The self-contained explorer page: the SVG, the graph as JSON, and a small script of our own
(``static/explorer.js``) for zoom, pan, tooltips, group highlight and folding modules. No
network access: nothing is loaded from anywhere."""

from __future__ import annotations

import json
from html import escape
from importlib import resources

from geta.graph.explore.layout import NODE_SEP, RANK_SEP, Layout
from geta.graph.explore.render import render_svg
from geta.graph.explore.view import GraphViewData

__all__ = ["render_html", "page_data"]

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="geta">
<title>{title}</title>
<style>{css}</style>
</head>
<body data-explorer="static">
<div id="canvas">
<div id="toolbar">
<button id="btn-fit" title="fit the graph in the window">Fit</button>
<button id="btn-fold1" title="fold every top-level module into one node">Fold level 1</button>
<button id="btn-fold2" title="fold the modules one level down">Fold level 2</button>
<button id="btn-unfold" title="show every op">Unfold all</button>
</div>
{svg}
<div id="tooltip"></div>
</div>
<aside id="panel">
<h1>{title}</h1>
<div class="stats">{stats}</div>
<noscript><p>Scripts are off: the graph is static.</p></noscript>
<h2>Groups</h2>
<select id="group-select"><option value="">highlight a group...</option></select>
<div id="group-info"></div>
<ul id="legend"></ul>
<h2>Unsupported ops</h2>
<ul id="unsupported"></ul>
<details><summary><h2 style="display:inline">Blocked dims</h2> <span id="blocked-count"></span></summary>
<p class="help">Dims of parameters that cannot be pruned, and why.</p>
<ul id="blocked"></ul></details>
<h2>Modules</h2>
<div id="modules"></div>
<h2>Help</h2>
<p class="help">Drag to pan, wheel to zoom, hover a node for its op, shapes and groups.
Click a node to highlight its group (again for its next group), Esc to clear.
Shift-click a node to fold its module; click a folded module to unfold it.</p>
</aside>
<script type="application/json" id="geta-data">{data}</script>
<script>{js}</script>
</body>
</html>
"""


def _static(name: str) -> str:
    return resources.files("geta.graph.explore").joinpath("static", name).read_text("utf-8")


def page_data(
    view: GraphViewData,
    layout: Layout,
    folded: list[str] | None = None,
    highlight: int | None = None,
) -> dict:
    """What the script needs besides the SVG: positions, edge routes, groups, modules."""
    return {
        "nodes": [
            {
                "id": n.id,
                "module": n.module,
                "groups": n.groups,
                "x": round(layout.positions[n.id][0], 1),
                "y": round(layout.positions[n.id][1], 1),
                "w": n.size[0],
                "h": n.size[1],
            }
            for n in view.nodes
        ],
        "edges": [{"s": e.source, "t": e.target} for e in view.edges],
        "groups": [
            {
                "id": g.id,
                "kind": g.kind,
                "size": g.size,
                "params_per_unit": g.params_per_unit,
                "cost": g.cost,
                "layers": g.layers,
                "color": g.color,
            }
            for g in view.groups
        ],
        "modules": [
            {
                "path": m.path,
                "parent": m.parent,
                "depth": m.depth,
                "count": m.count,
                "w": m.size[0],
                "h": m.size[1],
            }
            for m in view.modules
        ],
        "unsupported": view.unsupported,
        "blocked": view.blocked,
        "folded": folded or [],
        "highlight": highlight,
        "rank_sep": RANK_SEP,
        "node_sep": NODE_SEP,
        "width": layout.width,
        "height": layout.height,
    }


def _script_json(obj: object) -> str:
    text = json.dumps(obj, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(
    view: GraphViewData,
    layout: Layout,
    title: str = "geta dependency graph",
    folded: list[str] | None = None,
    highlight: int | None = None,
) -> str:
    """The whole page as one string."""
    n_ops = sum(1 for n in view.nodes if n.kind == "op")
    stats = (
        f"{len(view.nodes)} nodes ({n_ops} ops), {len(view.groups)} prunable groups, "
        f"{len(view.unsupported)} unsupported ops; layout: {layout.engine}"
    )
    return _PAGE.format(
        title=escape(title),
        css=_static("explorer.css"),
        svg=render_svg(view, layout, standalone=False),
        stats=escape(stats),
        data=_script_json(page_data(view, layout, folded, highlight)),
        js=_static("explorer.js"),
    )
