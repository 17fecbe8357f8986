// geta graph explorer: zoom, pan, tooltips, group highlight, folding modules.
// Reads the JSON in #geta-data and the SVG drawn by geta/graph/explore/render.py.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("geta-data").textContent);
  const svg = document.querySelector("#canvas svg.geta-graph");
  const viewport = svg.querySelector("#viewport");
  const dynEdges = svg.querySelector("g.dyn-edges");
  const tooltip = document.getElementById("tooltip");
  const canvas = document.getElementById("canvas");

  const nodes = new Map(data.nodes.map((n) => [n.id, n]));
  const modules = new Map(data.modules.map((m) => [m.path, m]));
  const groups = new Map(data.groups.map((g) => [g.id, g]));
  const nodeEls = new Map();
  const moduleEls = new Map();
  const tips = new Map();
  const edgeEls = [];
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  const fmt = (v) => Number(v).toLocaleString("en-US");

  function takeTitle(el, key) {
    const title = el.querySelector("title");
    if (title) {
      tips.set(key, title.textContent);
      title.remove(); // our own tooltip replaces the browser's
    }
  }
  svg.querySelectorAll("g.node").forEach((el) => {
    nodeEls.set(el.dataset.id, el);
    takeTitle(el, "n:" + el.dataset.id);
  });
  svg.querySelectorAll("g.module-node").forEach((el) => {
    moduleEls.set(el.dataset.module, el);
    takeTitle(el, "m:" + el.dataset.module);
  });
  svg.querySelectorAll("path.edge").forEach((el) => edgeEls.push({ el: el }));

  // modules each node is in, outermost first; members of each module
  const members = new Map(data.modules.map((m) => [m.path, []]));
  data.nodes.forEach((n) => {
    n.ancestors = [];
    if (!n.module) return;
    const parts = n.module.split(".");
    for (let i = 1; i <= parts.length; i++) {
      const p = parts.slice(0, i).join(".");
      if (modules.has(p)) {
        n.ancestors.push(p);
        members.get(p).push(n);
      }
    }
  });

  // ------------------------------------------------------------ zoom and pan
  svg.removeAttribute("viewBox");
  svg.setAttribute("width", "100%");
  svg.setAttribute("height", "100%");
  svg.style.height = "100%";
  const view = { x: 0, y: 0, k: 1 };
  let bounds = { x: 0, y: 0, w: data.width, h: data.height };
  function applyView() {
    viewport.setAttribute("transform", `translate(${view.x},${view.y}) scale(${view.k})`);
  }
  function fit() {
    const r = svg.getBoundingClientRect();
    const w = r.width || 800, h = r.height || 600;
    view.k = Math.min(w / bounds.w, h / bounds.h, 1.5) * 0.96;
    view.x = (w - bounds.w * view.k) / 2 - bounds.x * view.k;
    view.y = (h - bounds.h * view.k) / 2 - bounds.y * view.k;
    applyView();
  }
  function centreOn(x, y) {
    const r = svg.getBoundingClientRect();
    view.k = Math.max(view.k, 1);
    view.x = r.width / 2 - x * view.k;
    view.y = r.height / 2 - y * view.k;
    applyView();
  }
  svg.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const r = svg.getBoundingClientRect();
    const px = ev.clientX - r.left, py = ev.clientY - r.top;
    const f = Math.exp(-ev.deltaY * 0.0015);
    const k = Math.min(8, Math.max(0.02, view.k * f));
    view.x = px - ((px - view.x) * k) / view.k;
    view.y = py - ((py - view.y) * k) / view.k;
    view.k = k;
    applyView();
  }, { passive: false });
  let drag = null;
  svg.addEventListener("pointerdown", (ev) => {
    drag = { x: ev.clientX, y: ev.clientY, vx: view.x, vy: view.y, moved: false };
  });
  window.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (!drag.moved && Math.abs(dx) + Math.abs(dy) < 4) return;
    drag.moved = true;
    svg.classList.add("panning");
    view.x = drag.vx + dx;
    view.y = drag.vy + dy;
    applyView();
  });
  window.addEventListener("pointerup", () => {
    svg.classList.remove("panning");
    setTimeout(() => { drag = null; }, 0);
  });

  // ------------------------------------------------------------ folding modules
  // Unfolded, the page shows the positions computed in Python (graphviz or the layered
  // layout of geta/graph/explore/layout.py). With modules folded, the smaller graph is laid
  // out again here by the same layered method, in short.
  const folded = new Set(data.folded || []);
  let items = new Map(); // "n:id" / "m:path" -> {x, y, w, h}
  let itemOf = new Map(); // node id -> item key
  const RANK_SEP = data.rank_sep, NODE_SEP = data.node_sep, MARGIN = 20;

  function outerFolded(n) {
    for (const p of n.ancestors) if (folded.has(p)) return p;
    return null;
  }
  function topological(ids, succ) {
    const rank = new Map(ids.map((n, i) => [n, i]));
    const indeg = new Map(ids.map((n) => [n, 0]));
    ids.forEach((n) => succ.get(n).forEach((s) => indeg.set(s, indeg.get(s) + 1)));
    const ready = ids.filter((n) => indeg.get(n) === 0);
    const out = [], done = new Set();
    while (ready.length) {
      ready.sort((a, b) => rank.get(b) - rank.get(a)); // small enough graphs: a sorted list
      const n = ready.pop();
      out.push(n);
      done.add(n);
      succ.get(n).forEach((s) => {
        indeg.set(s, indeg.get(s) - 1);
        if (indeg.get(s) === 0) ready.push(s);
      });
    }
    ids.forEach((n) => { if (!done.has(n)) out.push(n); }); // a cycle: the rest in order
    return out;
  }
  function isotonic(targets, seps, weights) {
    const off = [0];
    seps.forEach((s) => off.push(off[off.length - 1] + s));
    const blocks = [];
    targets.forEach((t, i) => {
      blocks.push([t - off[i], weights[i], 1]);
      while (blocks.length > 1 && blocks[blocks.length - 2][0] > blocks[blocks.length - 1][0]) {
        const [m2, w2, c2] = blocks.pop(), [m1, w1, c1] = blocks.pop();
        blocks.push([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2]);
      }
    });
    const xs = [];
    blocks.forEach(([m, , c]) => { for (let i = 0; i < c; i++) xs.push(m + off[xs.length]); });
    return xs;
  }
  function layered(ids, size, edgeList) {
    // layers by longest path, sources pulled down to their consumers, dummy nodes on long
    // edges, barycenter sweeps, x by isotonic regression toward the neighbours' mean
    const succ0 = new Map(ids.map((n) => [n, []]));
    edgeList.forEach(([u, v]) => succ0.get(u).push(v));
    const order = topological(ids, succ0);
    const rank = new Map(order.map((n, i) => [n, i]));
    const fwd = edgeList.filter(([u, v]) => rank.get(u) < rank.get(v));
    const pred = new Map(ids.map((n) => [n, []])), succ = new Map(ids.map((n) => [n, []]));
    fwd.forEach(([u, v]) => { succ.get(u).push(v); pred.get(v).push(u); });
    const layer = new Map();
    order.forEach((n) => layer.set(n, Math.max(-1, ...pred.get(n).map((p) => layer.get(p))) + 1));
    order.slice().reverse().forEach((n) => {
      const s = succ.get(n);
      if (s.length && s.length >= pred.get(n).length) layer.set(n, Math.max(layer.get(n), Math.min(...s.map((m) => layer.get(m))) - 1));
    });
    const lp = new Map(ids.map((n) => [n, []])), ls = new Map(ids.map((n) => [n, []]));
    const chains = new Map(), dims = new Map(ids.map((n) => [n, size.get(n)])), key = new Map();
    fwd.forEach(([u, v]) => {
      let prev = u;
      const chain = [];
      for (let l = layer.get(u) + 1; l < layer.get(v); l++) {
        const d = `\u0000${u}\u0000${v}\u0000${l}`;
        layer.set(d, l);
        dims.set(d, [2, 0]);
        lp.set(d, [prev]);
        ls.set(d, []);
        ls.get(prev).push(d);
        key.set(d, rank.get(u) + 0.5);
        chain.push(d);
        prev = d;
      }
      ls.get(prev).push(v);
      lp.get(v).push(prev);
      chains.set(u + "\u0000" + v, chain);
    });
    const nl = Math.max(-1, ...layer.values()) + 1;
    const layers = Array.from({ length: nl }, () => []);
    layer.forEach((l, n) => layers[l].push(n));
    layers.forEach((m) => m.sort((a, b) => (key.has(a) ? key.get(a) : rank.get(a)) - (key.has(b) ? key.get(b) : rank.get(b))));
    for (let sweep = 0; sweep < 6; sweep++) {
      const down = sweep % 2 === 0;
      for (let k = 1; k < nl; k++) {
        const li = down ? k : nl - 1 - k;
        const ref = new Map(layers[down ? li - 1 : li + 1].map((n, i) => [n, i]));
        const keyed = layers[li].map((n, i) => {
          const ps = (down ? lp : ls).get(n).filter((m) => ref.has(m)).map((m) => ref.get(m));
          return [ps.length ? ps.reduce((a, b) => a + b, 0) / ps.length : i, i, n];
        });
        keyed.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
        layers[li] = keyed.map((t) => t[2]);
      }
    }
    const x = new Map();
    layers.forEach((m) => {
      let c = 0;
      m.forEach((n) => { x.set(n, c + dims.get(n)[0] / 2); c += dims.get(n)[0] + NODE_SEP; });
    });
    const real = (n) => rank.has(n);
    const seps = layers.map((m) => m.slice(1).map((b, i) => (dims.get(m[i])[0] + dims.get(b)[0]) / 2 + (real(m[i]) && real(b) ? NODE_SEP : 8)));
    for (let sweep = 0; sweep < 8; sweep++) {
      const down = sweep % 2 === 0;
      for (let k = 0; k < nl; k++) {
        const li = down ? k : nl - 1 - k;
        const m = layers[li];
        const targets = m.map((n) => {
          let nb = (down ? lp : ls).get(n);
          if (!nb.length) nb = (down ? ls : lp).get(n);
          return nb.length ? nb.reduce((a, b) => a + x.get(b), 0) / nb.length : x.get(n);
        });
        isotonic(targets, seps[li], m.map((n) => (real(n) ? 1 : 2))).forEach((v, i) => x.set(m[i], v));
      }
    }
    const y = new Map();
    let top = MARGIN;
    layers.forEach((m) => {
      const h = Math.max(0, ...m.map((n) => dims.get(n)[1]));
      m.forEach((n) => y.set(n, top + h / 2));
      top += h + RANK_SEP;
    });
    const left = Math.min(...Array.from(x.keys()).map((n) => x.get(n) - dims.get(n)[0] / 2));
    const pos = new Map(ids.map((n) => [n, [x.get(n) - left + MARGIN, y.get(n)]]));
    const routes = edgeList.map(([u, v]) => {
      const [xu, yu] = pos.get(u), [xv, yv] = pos.get(v);
      const pts = [[xu, yu + size.get(u)[1] / 2]];
      (chains.get(u + "\u0000" + v) || []).forEach((d) => pts.push([x.get(d) - left + MARGIN, y.get(d)]));
      pts.push([xv, yv - size.get(v)[1] / 2]);
      return [u, v, pts];
    });
    return { pos: pos, routes: routes };
  }
  function pathThrough(pts) {
    // as edge_path() in render.py: curves that leave and enter each point vertically
    const f = (v) => Math.round(v * 10) / 10;
    let d = `M${f(pts[0][0])},${f(pts[0][1])}`;
    for (let i = 1; i < pts.length; i++) {
      const [px, py] = pts[i - 1], [qx, qy] = pts[i], mid = (py + qy) / 2;
      d += `C${f(px)},${f(mid)} ${f(qx)},${f(mid)} ${f(qx)},${f(qy)}`;
    }
    return d;
  }
  function place(el, it) {
    el.style.display = it ? "" : "none";
    if (it) el.setAttribute("transform", `translate(${it.x},${it.y})`);
  }
  function relayout() {
    items = new Map();
    itemOf = new Map();
    const ids = [], size = new Map();
    data.nodes.forEach((n) => {
      const p = outerFolded(n);
      const key = p === null ? "n:" + n.id : "m:" + p;
      itemOf.set(n.id, key);
      if (!items.has(key)) {
        const m = p === null ? n : modules.get(p);
        items.set(key, { x: n.x, y: n.y, w: m.w, h: m.h });
        ids.push(key);
        size.set(key, [m.w, m.h]);
      }
    });
    const pairs = new Map();
    data.edges.forEach((e) => {
      const ks = itemOf.get(e.s), kt = itemOf.get(e.t);
      if (ks !== kt) pairs.set(ks + "\u0000" + kt, [ks, kt]);
    });
    dynEdges.textContent = "";
    if (folded.size) {
      const lay = layered(ids, size, Array.from(pairs.values()));
      lay.pos.forEach(([px, py], k) => { const it = items.get(k); it.x = px; it.y = py; });
      lay.routes.forEach(([ks, kt, pts]) => {
        const path = document.createElementNS(svg.namespaceURI, "path");
        path.setAttribute("class", "dyn-edge");
        path.dataset.s = ks;
        path.dataset.t = kt;
        path.setAttribute("marker-end", "url(#arrow)");
        path.setAttribute("d", pathThrough(pts));
        dynEdges.appendChild(path);
      });
    }
    nodeEls.forEach((el, id) => place(el, items.get("n:" + id)));
    moduleEls.forEach((el, p) => place(el, items.get("m:" + p)));
    edgeEls.forEach((x) => { x.el.style.display = folded.size ? "none" : ""; });
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    items.forEach((it) => {
      x0 = Math.min(x0, it.x - it.w / 2);
      x1 = Math.max(x1, it.x + it.w / 2);
      y0 = Math.min(y0, it.y - it.h / 2);
      y1 = Math.max(y1, it.y + it.h / 2);
    });
    if (items.size) bounds = { x: x0 - 20, y: y0 - 20, w: x1 - x0 + 40, h: y1 - y0 + 40 };
    updateModuleList();
    highlight(current);
  }
  function setFolded(paths) {
    folded.clear();
    paths.forEach((p) => folded.add(p));
    relayout();
    fit();
  }
  function toggle(p) {
    if (folded.has(p)) folded.delete(p); else folded.add(p);
    relayout();
  }

  // ------------------------------------------------------------ highlighting a group
  let current = null;
  const select = document.getElementById("group-select");
  const info = document.getElementById("group-info");
  function highlight(gid) {
    current = gid;
    const on = gid !== null && groups.has(gid);
    svg.classList.toggle("highlighting", on);
    const hot = new Set();
    data.nodes.forEach((n) => {
      const yes = on && n.groups.includes(gid);
      nodeEls.get(n.id).classList.toggle("hl", yes);
      if (yes) hot.add(itemOf.get(n.id));
    });
    moduleEls.forEach((el, p) => el.classList.toggle("hl", hot.has("m:" + p)));
    edgeEls.forEach((x) => x.el.classList.toggle("hl", hot.has("n:" + x.el.dataset.s) && hot.has("n:" + x.el.dataset.t)));
    dynEdges.querySelectorAll("path").forEach((el) => el.classList.toggle("hl", hot.has(el.dataset.s) && hot.has(el.dataset.t)));
    select.value = on ? String(gid) : "";
    document.querySelectorAll(".legend-entry").forEach((el) => el.classList.toggle("active", on && el.dataset.group === String(gid)));
    if (on) {
      const g = groups.get(gid);
      const layers = g.layers.slice(0, 12).map(esc).join(", ") + (g.layers.length > 12 ? `, +${g.layers.length - 12} more` : "");
      info.innerHTML = `<b>group ${g.id}</b>: ${esc(g.kind)} &times; ${g.size}<br>` +
        `${fmt(g.params_per_unit)} params per unit, cost ${fmt(g.cost)} params<br>` +
        `${hot.size} nodes shown; layers: ${layers || "-"}`;
    }
    info.classList.toggle("shown", on);
  }
  data.groups.forEach((g) => {
    const opt = document.createElement("option");
    opt.value = String(g.id);
    opt.textContent = `group ${g.id}: ${g.kind} x ${g.size} (cost ${fmt(g.cost)})`;
    select.appendChild(opt);
  });
  select.addEventListener("change", () => highlight(select.value === "" ? null : Number(select.value)));

  const legend = document.getElementById("legend");
  data.groups.forEach((g) => {
    const li = document.createElement("li");
    li.className = "legend-entry";
    li.dataset.group = String(g.id);
    li.innerHTML = `<span class="swatch" style="background:${g.color}"></span><span>group ${g.id}: ${esc(g.kind)} &times; ${g.size}, cost ${fmt(g.cost)}</span>`;
    li.addEventListener("click", () => highlight(current === g.id ? null : g.id));
    legend.appendChild(li);
  });
  [["multi", "node in several groups (stripes)"], ["none", "node in no prunable group"], ["bad", "unsupported op (no rule)"]].forEach(([cls, text]) => {
    const li = document.createElement("li");
    li.className = "legend-key";
    li.innerHTML = `<span class="swatch ${cls}"></span><span>${text}</span>`;
    legend.appendChild(li);
  });

  // ------------------------------------------------------------ side lists
  function focusNode(id) {
    const n = nodes.get(id);
    if (!n) return;
    let changed = false;
    n.ancestors.forEach((p) => { if (folded.delete(p)) changed = true; });
    if (changed) relayout();
    const it = items.get("n:" + id);
    centreOn(it.x, it.y);
    const el = nodeEls.get(id);
    el.classList.add("flash");
    setTimeout(() => el.classList.remove("flash"), 1500);
  }
  const bad = document.getElementById("unsupported");
  data.unsupported.forEach((u) => {
    const li = document.createElement("li");
    li.className = "unsupported-entry";
    li.dataset.node = u.node;
    li.innerHTML = `${esc(u.op)} <small>at ${esc(u.node)} in ${esc(u.module || "top level")}: ${esc(u.reason)}</small>`;
    li.addEventListener("click", () => focusNode(u.node));
    bad.appendChild(li);
  });
  if (!data.unsupported.length) bad.innerHTML = "<li class='help'>none: every op has a rule</li>";
  const blocked = document.getElementById("blocked");
  const seen = new Map(); // the same reason on the same tensors (e.g. both kernel dims): once
  data.blocked.forEach((b) => {
    const t = b.tensors.slice(0, 4).map(esc).join(", ") + (b.tensors.length > 4 ? ", ..." : "");
    const text = `${b.size} of ${t}<small>${esc(b.reason)}</small>`;
    if (seen.has(text)) {
      seen.get(text).n += 1;
      return;
    }
    const li = document.createElement("li");
    li.className = "blocked-entry";
    seen.set(text, { li: li, n: 1 });
    blocked.appendChild(li);
  });
  seen.forEach(({ li, n }, text) => { li.innerHTML = (n > 1 ? `${n} &times; ` : "") + text; });
  document.getElementById("blocked-count").textContent = `(${data.blocked.length})`;
  if (!data.blocked.length) blocked.innerHTML = "<li class='help'>none</li>";

  const moduleRoot = document.getElementById("modules");
  const moduleEntries = new Map();
  const holders = new Map();
  data.modules.forEach((m) => {
    const hasChildren = data.modules.some((c) => c.parent === m.path);
    const holder = hasChildren ? document.createElement("details") : document.createElement("div");
    const row = hasChildren ? document.createElement("summary") : holder;
    const entry = document.createElement("span");
    entry.className = "module-entry";
    entry.dataset.module = m.path;
    entry.title = "fold / unfold";
    entry.textContent = `${m.path.split(".").pop()} (${m.count})`;
    entry.addEventListener("click", (ev) => {
      ev.preventDefault();
      toggle(m.path);
    });
    row.appendChild(entry);
    if (hasChildren) holder.appendChild(row);
    if (!hasChildren) holder.style.marginLeft = "14px";
    (m.parent && holders.get(m.parent) ? holders.get(m.parent) : moduleRoot).appendChild(holder);
    holders.set(m.path, holder);
    moduleEntries.set(m.path, entry);
  });
  if (!data.modules.length) moduleRoot.innerHTML = "<span class='help'>no submodules</span>";
  function updateModuleList() {
    moduleEntries.forEach((el, p) => {
      el.classList.toggle("folded", folded.has(p));
      el.textContent = `${folded.has(p) ? "[+]" : "[-]"} ${p.split(".").pop()} (${modules.get(p).count})`;
    });
  }

  // ------------------------------------------------------------ clicks and tooltips
  svg.addEventListener("click", (ev) => {
    if (drag && drag.moved) return;
    const mod = ev.target.closest("g.module-node");
    if (mod) {
      toggle(mod.dataset.module);
      return;
    }
    const el = ev.target.closest("g.node");
    if (!el) {
      highlight(null);
      return;
    }
    const n = nodes.get(el.dataset.id);
    if (ev.shiftKey || ev.altKey) {
      if (n.ancestors.length) toggle(n.ancestors[n.ancestors.length - 1]);
      return;
    }
    if (!n.groups.length) highlight(null);
    else highlight(n.groups[(n.groups.indexOf(current) + 1) % n.groups.length]);
  });
  svg.addEventListener("mousemove", (ev) => {
    const el = ev.target.closest("g.node, g.module-node");
    if (!el) {
      tooltip.style.display = "none";
      return;
    }
    const key = el.classList.contains("node") ? "n:" + el.dataset.id : "m:" + el.dataset.module;
    const text = tips.get(key) || "";
    tooltip.innerHTML = text.split("\n").map((line) => (line.startsWith("UNSUPPORTED") ? `<span class="bad">${esc(line)}</span>` : esc(line))).join("\n");
    tooltip.style.display = "block";
    const r = canvas.getBoundingClientRect();
    let left = ev.clientX - r.left + 14, top = ev.clientY - r.top + 14;
    if (left + tooltip.offsetWidth > r.width) left = Math.max(0, ev.clientX - r.left - tooltip.offsetWidth - 14);
    if (top + tooltip.offsetHeight > r.height) top = Math.max(0, ev.clientY - r.top - tooltip.offsetHeight - 14);
    tooltip.style.left = left + "px";
    tooltip.style.top = top + "px";
  });
  svg.addEventListener("mouseleave", () => { tooltip.style.display = "none"; });
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") highlight(null); });

  document.getElementById("btn-fit").addEventListener("click", fit);
  document.getElementById("btn-fold1").addEventListener("click", () => setFolded(data.modules.filter((m) => m.depth === 1).map((m) => m.path)));
  document.getElementById("btn-fold2").addEventListener("click", () => setFolded(data.modules.filter((m) => m.depth === 2).map((m) => m.path)));
  document.getElementById("btn-unfold").addEventListener("click", () => setFolded([]));

  relayout();
  fit();
  if (data.highlight !== null && data.highlight !== undefined) highlight(data.highlight);
  document.body.dataset.explorer = "ready";
  document.body.dataset.shownNodes = String(Array.from(nodeEls.values()).filter((el) => el.style.display !== "none").length);
})();
