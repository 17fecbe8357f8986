"""The dependency-graph explorer: HTML, SVG, DOT, GraphML, the layout, and the page in a real
(headless) browser."""

import json
import os
import re
import shutil
import subprocess
import time
import warnings
import xml.etree.ElementTree as ET

import networkx as nx
import pytest
import torch

import geta
from geta.graph.explore import layout as layout_mod
from geta.graph.explore.layout import compute_layout, layered_layout
from geta.graph.explore.view import group_color
from geta.models import example_inputs, get_model
from tests.graph.test_capture import CustomOpNet  # an op with no rule

SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def dense():
    """DenseNet-style concatenations: nodes in several groups, nodes in none, modules."""
    args, _ = example_inputs("dense_concat", 1)
    return geta.trace(get_model("dense_concat").eval(), args, validate=False)


@pytest.fixture(scope="module")
def mystery():
    """An op without a rule (it must be marked) and one prunable group."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = geta.trace(CustomOpNet().eval(), torch.randn(2, 6), validate=False)
    assert len(graph.groups) == 1 and len(graph.unsupported_ops) == 1
    return graph


def _page_data(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="geta-data">(.*?)</script>', html, re.S)
    return json.loads(match.group(1))


def _svg_nodes(root: ET.Element) -> list[ET.Element]:
    return [
        el
        for el in root.iter(f"{SVG_NS}g")
        if "node" in el.get("class", "").split() and el.get("data-id")
    ]


# ------------------------------------------------------------------ HTML


def test_html_is_self_contained_with_every_node_and_group(dense, tmp_path):
    path = dense.to_html(tmp_path / "g.html")
    html = path.read_text()
    nxg = dense.to_networkx()
    for node in nxg.nodes:
        assert f'data-id="{node}"' in html
    data = _page_data(html)
    assert {n["id"] for n in data["nodes"]} == set(nxg.nodes)
    assert [g["id"] for g in data["groups"]] == [g.id for g in dense.groups]
    assert {g["cost"] for g in data["groups"]} == {g.params_per_unit * g.size for g in dense.groups}
    # nothing is fetched: no URL at all, no external src/href
    assert "http:" not in html and "https:" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(//|[a-z]+:)""", html, re.I)
    assert "<script src" not in html and "<link" not in html


def test_show_displays_in_a_notebook_frame(dense):
    view = dense.show(fold=1, highlight=0)
    frame = view._repr_html_()
    assert frame.startswith("<iframe srcdoc=") and "&lt;svg" in frame
    data = _page_data(view.html)
    assert data["folded"] == [m["path"] for m in data["modules"] if m["depth"] == 1]
    assert data["highlight"] == 0
    with pytest.raises(ValueError, match="no foldable module"):
        dense.show(fold=["no.such.module"])


# ------------------------------------------------------------------ SVG, DOT, GraphML


def test_svg_parses_with_one_element_per_node(dense, tmp_path):
    root = ET.parse(dense.to_svg(tmp_path / "g.svg")).getroot()
    assert root.tag == f"{SVG_NS}svg"
    drawn = _svg_nodes(root)
    assert sorted(el.get("data-id") for el in drawn) == sorted(dense.to_networkx().nodes)
    fills = {el.get("data-id"): el.find(f"{SVG_NS}rect").get("fill") for el in drawn}
    classes = {el.get("data-id"): el.get("class").split() for el in drawn}
    multi = [n for n, c in classes.items() if "multi-group" in c]
    none = [n for n, c in classes.items() if "no-group" in c]
    assert multi and none  # dense_concat's concatenations are in several groups
    assert all(fills[n].startswith("url(#stripes-") for n in multi)
    assert all(fills[n] == "#ffffff" for n in none)
    single = {fills[n] for n, c in classes.items() if not {"multi-group", "no-group"} & set(c)}
    assert len(single) == len(dense.groups)  # one colour per group, all different
    assert all(el.find(f"{SVG_NS}title").text for el in drawn)  # tooltips


def test_unsupported_op_is_marked_everywhere(mystery, tmp_path):
    (bad,) = mystery.unsupported_ops
    assert mystery.to_networkx().nodes[bad.node]["unsupported"]
    root = ET.parse(mystery.to_svg(tmp_path / "g.svg")).getroot()
    marked = [el.get("data-id") for el in _svg_nodes(root) if "unsupported" in el.get("class")]
    assert marked == [bad.node]
    data = _page_data(mystery.show().html)
    assert [u["node"] for u in data["unsupported"]] == [bad.node]
    dot = mystery.to_dot(tmp_path / "g.dot").read_text()
    line = next(x for x in dot.splitlines() if x.strip().startswith(f'"{bad.node}" ['))
    assert 'color="red"' in line and "mystery_mix" in line


def test_dot_round_trips(dense, tmp_path):
    path = dense.to_dot(tmp_path / "g.dot")
    text = path.read_text()
    nxg = dense.to_networkx()
    nodes = re.findall(r'^  "([^"]+)" \[', text, re.M)
    edges = re.findall(r'^  "([^"]+)" -> "([^"]+)"', text, re.M)
    assert sorted(nodes) == sorted(nxg.nodes)
    assert sorted(edges) == sorted((u, v) for u, v, _ in nxg.edges)
    try:
        import pydot  # noqa: F401
    except ImportError:
        pass
    else:
        back = nx.nx_pydot.read_dot(path)
        assert {n.strip('"') for n in back.nodes} >= set(nxg.nodes)
        assert back.number_of_edges() == nxg.number_of_edges()
    if shutil.which("dot"):
        proc = subprocess.run(["dot", "-Tsvg", str(path)], capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr


def test_graphml_round_trips(dense, tmp_path):
    back = nx.read_graphml(dense.to_graphml(tmp_path / "g.graphml"))
    nxg = dense.to_networkx()
    assert set(back.nodes) == set(nxg.nodes)
    assert back.number_of_edges() == nxg.number_of_edges()
    for node, attrs in nxg.nodes(data=True):
        assert {k: back.nodes[node].get(k, "") for k in attrs} == attrs


# ------------------------------------------------------------------ layout


def _no_overlaps(lay, sizes):
    boxes = [(lay.positions[n], sizes[n]) for n in sizes]
    by_row: dict[float, list] = {}
    for (x, y), (w, _) in boxes:
        by_row.setdefault(round(y, 1), []).append((x - w / 2, x + w / 2))
    for row in by_row.values():
        row.sort()
        assert all(a[1] <= b[0] + 1e-6 for a, b in zip(row, row[1:], strict=False))


def test_layout_without_graphviz(dense, monkeypatch):
    monkeypatch.setattr(layout_mod.shutil, "which", lambda name: None)
    view = dense.show()
    assert view.layout.engine == "layered"
    lay = view.layout
    sizes = {n.id: n.size for n in view.data.nodes}
    assert set(lay.positions) == set(sizes)
    _no_overlaps(lay, sizes)
    for e in view.data.edges:  # every edge goes down, from its source to its target
        (_, ys), (_, yt) = lay.positions[e.source], lay.positions[e.target]
        assert ys < yt
        pts = lay.edges[(e.source, e.target)]
        assert pts[0][1] < pts[-1][1]
    with pytest.raises(RuntimeError, match="graphviz"):
        compute_layout(["a"], {"a": (10, 10)}, [], engine="dot")


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz is optional")
def test_layout_uses_graphviz_when_installed(dense):
    view = dense.show()
    assert view.layout.engine == "dot" and view.layout.curve == "bezier"
    assert set(view.layout.positions) == {n.id for n in view.data.nodes}


def test_layered_layout_is_fast_on_a_large_graph():
    # 400 residual blocks of a conv-like op with two parameters each: ~2,000 nodes
    nodes, edges, prev = ["x"], [], "x"
    for i in range(400):
        w, b, op, add = f"w{i}", f"b{i}", f"op{i}", f"add{i}"
        nodes += [w, b, op, add]
        edges += [(prev, op), (w, op), (b, op), (op, add), (prev, add)]
        prev = add
    sizes = {n: (60.0 + len(n) * 7, 42.0) for n in nodes}
    start = time.perf_counter()
    lay = layered_layout(nodes, sizes, edges)
    assert time.perf_counter() - start < 10.0
    _no_overlaps(lay, sizes)
    assert lay.positions["add399"][1] > lay.positions["x"][1]


def test_layered_layout_survives_a_cycle():
    lay = layered_layout(
        ["a", "b", "c"], dict.fromkeys("abc", (20.0, 20.0)), [("a", "b"), ("b", "c"), ("c", "a")]
    )
    assert set(lay.positions) == {"a", "b", "c"}


# ------------------------------------------------------------------ in a real browser


def _chromium() -> str:
    if os.environ.get("GETA_SKIP_BROWSER_TESTS") == "1":
        pytest.skip("GETA_SKIP_BROWSER_TESTS=1")
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail(
            "the browser test needs headless Chromium: `apt-get install chromium` "
            "(or set GETA_SKIP_BROWSER_TESTS=1 to skip it)"
        )
    return exe


def _browser(exe: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1280,800",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )


# After the page's own script: use the page like a person would and record what it shows.
PROBE = """<script>
(function () {
  const b = document.body.dataset, shown = (sel) => Array.from(document.querySelectorAll(sel))
    .filter((el) => el.style.display !== "none").length;
  b.legendEntries = document.querySelectorAll("#legend .legend-entry").length;
  b.unsupportedEntries = document.querySelectorAll("#unsupported .unsupported-entry").length;
  document.querySelector("#legend .legend-entry").click();
  b.highlighted = document.querySelectorAll("g.node.hl").length;
  const node = document.querySelector("g.node[data-groups]:not([data-groups=''])");
  const r = node.getBoundingClientRect();
  node.dispatchEvent(new MouseEvent("mousemove", {bubbles: true, clientX: r.x + 2, clientY: r.y + 2}));
  b.tooltip = document.getElementById("tooltip").textContent.split("\\n").join(" | ");
  document.getElementById("btn-fold1").click();
  b.foldedModules = shown("g.module-node");
  b.nodesAfterFold = shown("g.node");
  b.edgesAfterFold = document.querySelectorAll("path.dyn-edge").length;
  document.getElementById("btn-unfold").click();
  b.nodesAfterUnfold = shown("g.node");
})();
</script></body>"""


def test_page_runs_in_headless_chromium(mystery, tmp_path):
    exe = _chromium()
    html = mystery.show(title="mystery").html
    page = tmp_path / "page.html"
    page.write_text(html.replace("</body>", PROBE))
    result = _browser(exe, tmp_path, "--dump-dom", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    body = re.search(r"<body([^>]*)>", dom).group(1)
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body))
    nxg = mystery.to_networkx()
    group0 = [n for n, d in nxg.nodes(data=True) if "0" in d["groups"].split(",")]
    assert attrs["explorer"] == "ready"  # the page's script ran to the end
    assert int(attrs["shown-nodes"]) == nxg.number_of_nodes()
    assert len(re.findall(r'<g class="node[ "]', dom)) == nxg.number_of_nodes()
    assert int(attrs["legend-entries"]) == len(mystery.groups)
    assert int(attrs["unsupported-entries"]) == 1
    assert int(attrs["highlighted"]) == len(group0)
    assert "group 0" in attrs["tooltip"] and "params/unit" in attrs["tooltip"]
    assert int(attrs["folded-modules"]) == 3  # fc1, fc2, fc3
    assert int(attrs["nodes-after-fold"]) < nxg.number_of_nodes()
    assert int(attrs["edges-after-fold"]) > 0
    assert int(attrs["nodes-after-unfold"]) == nxg.number_of_nodes()


def test_page_screenshot_shows_the_graph(dense, tmp_path):
    from PIL import Image

    exe = _chromium()
    page = dense.to_html(tmp_path / "page.html")
    shot = tmp_path / "shot.png"
    result = _browser(exe, tmp_path, f"--screenshot={shot}", page.as_uri())
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 800)
    colors = set(image.getdata())
    assert len(colors) > 50  # not a blank page
    for g in dense.groups:  # every group's colour is on screen
        rgb = tuple(int(h, 16) for h in re.findall("..", group_color(g.id)[1:]))
        assert any(max(abs(a - b) for a, b in zip(c, rgb, strict=True)) <= 3 for c in colors)
