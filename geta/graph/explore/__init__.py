"""The dependency-graph explorer: an interactive, self-contained HTML view of a traced model
(zoom, pan, tooltips, nodes coloured by prunable group, one group highlighted, modules folded,
unsupported ops marked), plus SVG, DOT and GraphML export.

Needs nothing beyond geta's own dependencies; graphviz's ``dot`` lays the graph out when it is
installed, a built-in layered layout otherwise.

Example:
    >>> import torch, geta
    >>> from geta.models import lenet5
    >>> graph = geta.trace(lenet5(), (torch.randn(1, 1, 28, 28),))
    >>> view = graph.show()           # in Jupyter: the interactive view
    >>> path = graph.to_html("lenet5.html")  # open it in any browser, offline
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from geta.graph.explore.formats import render_dot
from geta.graph.explore.html import render_html
from geta.graph.explore.layout import Layout, compute_layout
from geta.graph.explore.render import render_svg
from geta.graph.explore.view import GraphViewData, build_view

if TYPE_CHECKING:
    from geta.graph.dependency_graph import DependencyGraph

__all__ = ["GraphView", "FORMATS", "lay_out", "write"]

FORMATS = {
    ".html": "html",
    ".htm": "html",
    ".svg": "svg",
    ".dot": "dot",
    ".gv": "dot",
    ".graphml": "graphml",
}


def lay_out(view: GraphViewData, engine: str = "auto") -> Layout:
    """Positions for every node of ``view`` (graphviz when installed, see :mod:`.layout`)."""
    linked = {e.source for e in view.edges} | {e.target for e in view.edges}
    top_level = {  # graphviz clusters; unused buffers (num_batches_tracked) stay outside
        n.id: n.module.split(".")[0] for n in view.nodes if n.module and n.id in linked
    }
    return compute_layout(
        [n.id for n in view.nodes],
        {n.id: n.size for n in view.nodes},
        [(e.source, e.target) for e in view.edges],
        engine=engine,
        clusters=top_level,
    )


def _folded(view: GraphViewData, fold: int | Sequence[str] | None) -> list[str]:
    if fold is None:
        return []
    if isinstance(fold, int):
        return [m.path for m in view.modules if m.depth == fold]
    known = {m.path for m in view.modules}
    unknown = [p for p in fold if p not in known]
    if unknown:
        raise ValueError(f"no foldable module named {', '.join(map(repr, unknown))}")
    return list(fold)


class GraphView:
    """The explorer page for one graph; displays itself in Jupyter.

    ``fold``: modules shown folded at first (their paths, or an int depth: ``1`` folds every
    top-level module). ``highlight``: a group id to highlight at first. ``layout``: ``"auto"``,
    ``"dot"`` or ``"layered"``. ``height``: of the frame in a notebook, in px.

    Example:
        >>> view = graph.show(fold=1, highlight=0)   # doctest: +SKIP
        >>> view.save("graph.html")                   # doctest: +SKIP
    """

    def __init__(
        self,
        graph: DependencyGraph,
        *,
        fold: int | Sequence[str] | None = None,
        highlight: int | None = None,
        layout: str = "auto",
        title: str | None = None,
        height: int = 640,
    ) -> None:
        self.data = build_view(graph)
        self.layout = lay_out(self.data, layout)
        self.height = height
        self.html = render_html(
            self.data,
            self.layout,
            title=title or f"geta dependency graph ({len(self.data.groups)} groups)",
            folded=_folded(self.data, fold),
            highlight=highlight,
        )

    def save(self, path: str | Path) -> Path:
        """Write the page; it opens in any browser without network access."""
        path = Path(path)
        path.write_text(self.html, encoding="utf-8")
        return path

    def _repr_html_(self) -> str:
        # An iframe keeps the page's script and styles apart from the notebook's.
        return (
            f'<iframe srcdoc="{escape(self.html, quote=True)}" '
            f'style="width:100%;height:{self.height}px;border:1px solid #e5e7eb" '
            'sandbox="allow-scripts"></iframe>'
        )

    def __repr__(self) -> str:
        return (
            f"GraphView({len(self.data.nodes)} nodes, {len(self.data.groups)} groups, "
            f"layout={self.layout.engine})"
        )


def write(graph: DependencyGraph, path: str | Path, fmt: str | None = None, **options) -> Path:
    """Write ``graph`` as html, svg, dot or graphml, by ``fmt`` or the file's extension.

    ``options`` go to :class:`GraphView` for html; svg takes ``layout=`` only, dot and
    graphml none.

    Example:
        >>> write(graph, "resnet.svg")   # doctest: +SKIP
    """
    path = Path(path)
    fmt = fmt or FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"cannot tell the format of {str(path)!r}: use one of {', '.join(sorted(FORMATS))}"
        )
    if fmt == "html":
        return GraphView(graph, **options).save(path)
    allowed = {"layout"} if fmt == "svg" else set()
    if set(options) - allowed:
        raise TypeError(f"{fmt} takes no option {', '.join(sorted(set(options) - allowed))}")
    if fmt == "graphml":
        import networkx as nx

        nx.write_graphml(graph.to_networkx(), path)
        return path
    view = build_view(graph)
    if fmt == "svg":
        text = render_svg(view, lay_out(view, options.get("layout", "auto")))
    elif fmt == "dot":
        text = render_dot(view)
    else:
        raise ValueError(f"unknown format {fmt!r}: html, svg, dot or graphml")
    path.write_text(text, encoding="utf-8")
    return path
