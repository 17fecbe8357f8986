"""Node positions for a directed acyclic graph, drawn top to bottom.

Graphviz's ``dot`` is used when it is on ``PATH``; otherwise (or when it fails or takes too
long) a small layered layout in pure Python: longest-path layers, sources pulled down next to
their consumers, long edges split by dummy nodes, barycenter sweeps against crossings, and
x positions by isotonic regression toward the neighbours' mean. ResNet-50's op graph (497
nodes) takes under 0.1 s, graphviz about 0.2 s; BERT-base (525 nodes) 0.1 s and 0.6 s.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from geta.graph.explore.formats import dot_quote

logger = logging.getLogger(__name__)

__all__ = ["Layout", "compute_layout", "layered_layout", "graphviz_layout"]

Point = tuple[float, float]

NODE_SEP = 22.0
RANK_SEP = 34.0
MARGIN = 20.0
DOT_TIMEOUT_S = 30.0


@dataclass
class Layout:
    """Centres of the node boxes and edge routes, in px (y grows downward).

    ``edges[(u, v)]`` is a list of points: for ``curve == "bezier"`` the control points of
    cubic Bézier pieces (graphviz), for ``curve == "through"`` points the edge passes through.
    """

    positions: dict[str, Point]
    edges: dict[tuple[str, str], list[Point]]
    width: float
    height: float
    engine: str  # "dot" or "layered"
    curve: str


def compute_layout(
    nodes: Sequence[str],
    sizes: Mapping[str, tuple[float, float]],
    edges: Sequence[tuple[str, str]],
    engine: str = "auto",
    clusters: Mapping[str, str] | None = None,
) -> Layout:
    """Lay out ``nodes`` (in topological order) with boxes of ``sizes`` (width, height).

    ``engine``: ``"auto"`` (graphviz if ``dot`` is installed, else the built-in layout),
    ``"dot"`` (graphviz; an error if missing) or ``"layered"`` (the built-in one).
    ``clusters`` maps nodes to a cluster name that graphviz keeps together.

    Example:
        >>> lay = compute_layout(["a", "b"], {"a": (40, 20), "b": (40, 20)}, [("a", "b")])
        >>> lay.positions["a"][1] < lay.positions["b"][1]
        True
    """
    if engine not in ("auto", "dot", "layered"):
        raise ValueError(f"layout engine must be 'auto', 'dot' or 'layered', not {engine!r}")
    dot = shutil.which("dot") if engine != "layered" else None
    if engine == "dot" and dot is None:
        raise RuntimeError("layout='dot' needs graphviz's dot on PATH")
    if dot is not None:
        try:
            return graphviz_layout(nodes, sizes, edges, clusters, dot=dot)
        except (OSError, RuntimeError, subprocess.TimeoutExpired, ValueError) as err:
            if engine == "dot":
                raise
            logger.warning("graphviz layout failed (%s); using the built-in layout", err)
    return layered_layout(nodes, sizes, edges)


# ------------------------------------------------------------------ graphviz


def _layout_dot_source(
    nodes: Sequence[str],
    sizes: Mapping[str, tuple[float, float]],
    edges: Sequence[tuple[str, str]],
    clusters: Mapping[str, str] | None,
) -> str:
    lines = [
        "digraph G {",
        f"  graph [rankdir=TB, nodesep={NODE_SEP / 72:.3f}, ranksep={RANK_SEP / 72:.3f}];",
        '  node [shape=box, fixedsize=true, label=""];',
    ]
    by_cluster: dict[str, list[str]] = {}
    for n in nodes:
        by_cluster.setdefault((clusters or {}).get(n, ""), []).append(n)
    for i, (cluster, members) in enumerate(by_cluster.items()):
        indent = "  "
        if cluster:
            lines.append(f"  subgraph cluster_{i} {{")
            indent = "    "
        for n in members:
            w, h = sizes[n]
            lines.append(f"{indent}{dot_quote(n)} [width={w / 72:.3f}, height={h / 72:.3f}];")
        if cluster:
            lines.append("  }")
    for u, v in dict.fromkeys(edges):
        lines.append(f"  {dot_quote(u)} -> {dot_quote(v)};")
    lines.append("}")
    return "\n".join(lines)


def graphviz_layout(
    nodes: Sequence[str],
    sizes: Mapping[str, tuple[float, float]],
    edges: Sequence[tuple[str, str]],
    clusters: Mapping[str, str] | None = None,
    dot: str = "dot",
    timeout: float = DOT_TIMEOUT_S,
) -> Layout:
    """Positions from ``dot -Tplain`` (inches, y up) converted to px, y down."""
    source = _layout_dot_source(nodes, sizes, edges, clusters)
    proc = subprocess.run(
        [dot, "-Tplain"], input=source, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip() or f"dot exited with {proc.returncode}")
    height = 0.0
    raw_nodes: dict[str, Point] = {}
    raw_edges: dict[tuple[str, str], list[Point]] = {}
    width = 0.0
    for line in proc.stdout.splitlines():
        fields = shlex.split(line)
        if not fields:
            continue
        if fields[0] == "graph":
            width, height = float(fields[2]) * 72, float(fields[3]) * 72
        elif fields[0] == "node":
            raw_nodes[fields[1]] = (float(fields[2]) * 72, float(fields[3]) * 72)
        elif fields[0] == "edge":
            n = int(fields[3])
            coords = [float(c) * 72 for c in fields[4 : 4 + 2 * n]]
            raw_edges[(fields[1], fields[2])] = list(zip(coords[0::2], coords[1::2], strict=True))
    missing = set(nodes) - raw_nodes.keys()
    if missing:
        raise ValueError(f"dot output lacks {len(missing)} nodes")

    def flip(p: Point) -> Point:
        return (p[0] + MARGIN, height - p[1] + MARGIN)

    return Layout(
        positions={n: flip(p) for n, p in raw_nodes.items()},
        edges={e: [flip(p) for p in pts] for e, pts in raw_edges.items()},
        width=width + 2 * MARGIN,
        height=height + 2 * MARGIN,
        engine="dot",
        curve="bezier",
    )


# ------------------------------------------------------------------ built-in layered layout


def _layers(
    order: list[str], preds: dict[str, list[str]], succs: dict[str, list[str]]
) -> dict[str, int]:
    """Longest-path layers; then, bottom-up, a node with at least as many out- as in-edges
    moves down next to its first consumer (parameters sit beside the op that reads them)."""
    layer: dict[str, int] = {}
    for n in order:
        layer[n] = max((layer[p] + 1 for p in preds[n]), default=0)
    for n in reversed(order):
        if succs[n] and len(succs[n]) >= len(preds[n]):
            layer[n] = max(layer[n], min(layer[s] for s in succs[n]) - 1)
    return layer


def _topological(nodes: list[str], succs: dict[str, list[str]]) -> list[str]:
    """Kahn's order, ties broken by the given order (for an fx graph: the same order)."""
    import heapq

    rank = {n: i for i, n in enumerate(nodes)}
    indeg = dict.fromkeys(nodes, 0)
    for n in nodes:
        for s in succs[n]:
            indeg[s] += 1
    heap = [rank[n] for n in nodes if indeg[n] == 0]
    heapq.heapify(heap)
    out: list[str] = []
    while heap:
        n = nodes[heapq.heappop(heap)]
        out.append(n)
        for s in succs[n]:
            indeg[s] -= 1
            if indeg[s] == 0:
                heapq.heappush(heap, rank[s])
    if len(out) < len(nodes):  # a cycle: the rest in the given order (back edges dropped)
        seen = set(out)
        out += [n for n in nodes if n not in seen]
    return out


def _crossings(upper_pos: dict[str, float], lower: list[str], preds: dict[str, list[str]]) -> int:
    """Edge crossings between two adjacent layers (inversions, counted with a Fenwick tree)."""
    pos = {n: i for i, n in enumerate(lower)}
    pairs = sorted((upper_pos[p], pos[n]) for n in lower for p in preds[n])
    tree = [0] * (len(lower) + 1)
    count = 0
    for seen, (_, j) in enumerate(pairs):
        i, below = j + 1, 0
        while i > 0:
            below += tree[i]
            i -= i & -i
        count += seen - below
        i = j + 1
        while i <= len(lower):
            tree[i] += 1
            i += i & -i
    return count


def _order_layers(
    layers: list[list[str]], preds: dict[str, list[str]], succs: dict[str, list[str]]
) -> list[list[str]]:
    """Barycenter sweeps down and up; keep the ordering with the fewest crossings."""

    def total(ls: list[list[str]]) -> int:
        result = 0
        for upper, lower in zip(ls, ls[1:], strict=False):
            result += _crossings({n: i for i, n in enumerate(upper)}, lower, preds)
        return result

    best, best_count = [list(layer) for layer in layers], total(layers)
    current = [list(layer) for layer in layers]
    for sweep in range(8):
        if best_count == 0:
            break
        down = sweep % 2 == 0
        indices = range(1, len(current)) if down else range(len(current) - 2, -1, -1)
        for li in indices:
            ref = current[li - 1] if down else current[li + 1]
            ref_pos = {n: i for i, n in enumerate(ref)}
            neigh = preds if down else succs
            keyed = []
            for i, n in enumerate(current[li]):
                ps = [ref_pos[m] for m in neigh[n] if m in ref_pos]
                keyed.append((sum(ps) / len(ps) if ps else float(i), i, n))
            keyed.sort()
            current[li] = [n for _, _, n in keyed]
        count = total(current)
        if count < best_count:
            best, best_count = [list(layer) for layer in current], count
    return best


def _isotonic(targets: list[float], seps: list[float], weights: list[float]) -> list[float]:
    """x minimising sum w (x - target)^2 with x[i+1] - x[i] >= seps[i] (pool adjacent
    violators on the shifted problem)."""
    offsets = [0.0]
    for s in seps:
        offsets.append(offsets[-1] + s)
    blocks: list[list[float]] = []  # [mean, weight, count]
    for t, o, w in zip(targets, offsets, weights, strict=True):
        blocks.append([t - o, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    xs: list[float] = []
    for mean, _, count in blocks:
        xs.extend([mean] * int(count))
    return [x + o for x, o in zip(xs, offsets, strict=True)]


def layered_layout(
    nodes: Sequence[str],
    sizes: Mapping[str, tuple[float, float]],
    edges: Sequence[tuple[str, str]],
) -> Layout:
    """The built-in layered (Sugiyama-style) layout; needs no graphviz."""
    node_list = list(dict.fromkeys(nodes))
    succs: dict[str, list[str]] = {n: [] for n in node_list}
    for u, v in dict.fromkeys(edges):
        if u != v:
            succs[u].append(v)
    order = _topological(node_list, succs)
    rank = {n: i for i, n in enumerate(order)}
    unique = [(u, v) for u in order for v in succs[u] if rank[u] < rank[v]]
    preds: dict[str, list[str]] = {n: [] for n in node_list}
    succs = {n: [] for n in node_list}
    for u, v in unique:
        succs[u].append(v)
        preds[v].append(u)
    layer = _layers(order, preds, succs)

    # Split long edges with dummy nodes so every edge joins adjacent layers.
    lpreds: dict[str, list[str]] = {n: [] for n in node_list}
    lsuccs: dict[str, list[str]] = {n: [] for n in node_list}
    chains: dict[tuple[str, str], list[str]] = {}
    width = dict(sizes)
    for u, v in unique:
        prev, chain = u, []
        for li in range(layer[u] + 1, layer[v]):
            d = f"\0{u}\0{v}\0{li}"
            layer[d] = li
            width[d] = (2.0, 0.0)
            lpreds[d], lsuccs[d] = [], []
            chain.append(d)
            lsuccs[prev].append(d)
            lpreds[d].append(prev)
            prev = d
        lsuccs[prev].append(v)
        lpreds[v].append(prev)
        chains[(u, v)] = chain

    n_layers = max(layer.values(), default=-1) + 1
    layers: list[list[str]] = [[] for _ in range(n_layers)]
    for n in layer:
        layers[layer[n]].append(n)
    for members in layers:  # initial order: graph order, a dummy just after its edge's source
        members.sort(key=lambda m: rank[m] if m in rank else rank[m.split("\0")[1]] + 0.5)
    layers = _order_layers(layers, lpreds, lsuccs)

    # x: start packed, then pull each node toward its neighbours' mean, keeping separations.
    x: dict[str, float] = {}
    for members in layers:
        cursor = 0.0
        for n in members:
            x[n] = cursor + width[n][0] / 2
            cursor += width[n][0] + NODE_SEP
    seps = []
    for members in layers:
        seps.append(
            [
                (width[a][0] + width[b][0]) / 2 + (NODE_SEP if a in rank and b in rank else 8.0)
                for a, b in zip(members, members[1:], strict=False)
            ]
        )
    weights = [[1.0 if n in rank else 2.0 for n in members] for members in layers]
    for sweep in range(8):
        down = sweep % 2 == 0
        indices = range(n_layers) if down else range(n_layers - 1, -1, -1)
        for li in indices:
            members = layers[li]
            targets = []
            for n in members:
                neigh = (lpreds[n] if down else lsuccs[n]) or (lsuccs[n] if down else lpreds[n])
                targets.append(sum(x[m] for m in neigh) / len(neigh) if neigh else x[n])
            for n, xi in zip(members, _isotonic(targets, seps[li], weights[li]), strict=True):
                x[n] = xi

    # y: one row per layer, as tall as its tallest box.
    y: dict[str, float] = {}
    top = MARGIN
    for members in layers:
        h = max((width[n][1] for n in members), default=0.0)
        for n in members:
            y[n] = top + h / 2
        top += h + RANK_SEP
    left = min((x[n] - width[n][0] / 2 for n in x), default=0.0)
    shift = MARGIN - left
    positions = {n: (x[n] + shift, y[n]) for n in node_list}
    right = max((x[n] + width[n][0] / 2 + shift for n in x), default=0.0)

    routes: dict[tuple[str, str], list[Point]] = {}
    for u, v in unique:
        (xu, yu), (xv, yv) = positions[u], positions[v]
        pts = [(xu, yu + sizes[u][1] / 2)]
        pts += [(x[d] + shift, y[d]) for d in chains[(u, v)]]
        pts.append((xv, yv - sizes[v][1] / 2))
        routes[(u, v)] = pts
    return Layout(
        positions=positions,
        edges=routes,
        width=right + MARGIN,
        height=max(top - RANK_SEP + MARGIN, 2 * MARGIN),
        engine="layered",
        curve="through",
    )
