"""A study's README.md, generated from its runs.jsonl and study.json.

A study is one folder ``benchmarks/results/<study>/``:

- ``runs.jsonl``: one JSON object per line, one per run (or per measured row of a run): what was
  run (``run``: the settings or arguments that produced it), its numbers (``result``), and where
  and when (``command``, ``machine``, ``date``); ``label`` names the row. Benchmark scripts add
  rows with ``_common.record(study, rows)``, which then regenerates the README.
- ``study.json``: what the README shows, and nothing per study in this script:

  - ``title``, ``intro`` (markdown, a string or a list of paragraphs);
  - ``columns`` (one table of every row) or ``tables`` (each with ``title``, ``text``,
    ``columns``, ``notes``, and the rows it shows: ``where``, ``{"dotted.path": value or
    [values]}``, and ``has``, paths that must be present); a column is ``{"title", "path",
    "format"}`` or just a path;
  - ``counts``: ``[{"label", "path"}]``, lines "label: n/N" (rows where the path is truthy);
  - ``details``: ``{"title", "label", "items": [{"title", "path", "as", "columns"}]}``, a
    section per row with its ``items`` (``as``: ``table`` for a list of records, ``code``,
    ``markdown`` or ``json``); rows that have none of the items are left out;
  - ``notes``: markdown paragraphs after the tables.

A path is dotted keys into a row (``result.accuracy``, ``result.latency.1.speedup``); ``*``
maps over a list or dict (``result.layers.*.bits``: every layer's bits, shown joined by ``/``).
A format is a name in :data:`FORMATS` or a Python format string (``"{:.1f}x"``).

    python benchmarks/study_report.py benchmarks/results/size-accounting [more studies...]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
RUNS, STUDY, README = "runs.jsonl", "study.json", "README.md"

FORMATS = {
    "percent": "{:.2%}",
    "percent1": "{:.1%}",
    "percent0": "{:.0%}",
    "ratio": "{:.1f}x",
    "ratio2": "{:.2f}x",
    "seconds": "{:.0f} s",
    "seconds1": "{:.1f} s",
    "seconds2": "{:.2f} s",
    "ms": "{:.1f} ms",
    "int": "{:,.0f}",
    "float2": "{:.2f}",
    "float3": "{:.3f}",
    "code": "`{}`",
}


def read_rows(study_dir: Path) -> list[dict[str, Any]]:
    path = Path(study_dir) / RUNS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def add_rows(
    study_dir: Path, rows: Iterable[dict[str, Any]], key: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Append ``rows`` to the study's runs.jsonl; earlier rows with the same values at every
    ``key`` path (when given) are dropped: the newer measurement replaces them."""
    study_dir = Path(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    new = list(rows)
    old = read_rows(study_dir)
    if key:
        fresh = {tuple(json.dumps(lookup(r, k)) for k in key) for r in new}
        old = [r for r in old if tuple(json.dumps(lookup(r, k)) for k in key) not in fresh]
    everything = old + new
    (study_dir / RUNS).write_text("".join(json.dumps(r, default=str) + "\n" for r in everything))
    return everything


def lookup(row: Any, path: str) -> Any:
    """The value at a dotted path (``None`` where missing); ``*`` maps over a list or dict."""

    def walk(value: Any, parts: list[str]) -> Any:
        if not parts:
            return value
        head, rest = parts[0], parts[1:]
        if head == "*":
            items = value.values() if isinstance(value, dict) else value
            return [walk(v, rest) for v in items] if isinstance(items, Iterable) else None
        if isinstance(value, dict):
            return walk(value[head], rest) if head in value else None
        if isinstance(value, list) and head.lstrip("-").isdigit() and -len(value) <= int(head):
            return walk(value[int(head)], rest) if int(head) < len(value) else None
        return None

    return walk(row, path.split(".") if path else [])


def fmt(value: Any, spec: str | None = None, join: str = "/") -> str:
    """``value`` as a table cell: formatted by ``spec``; lists joined by ``join``."""
    if value is None:
        return ""
    if isinstance(value, list):
        return join.join(fmt(v, spec) for v in value)
    pattern = FORMATS.get(spec, spec) if spec else None
    if pattern and not isinstance(value, bool):
        try:
            return pattern.format(value)
        except (ValueError, TypeError):
            pass
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _column(spec: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(spec, str):
        return {"title": spec.rsplit(".", 1)[-1], "path": spec}
    return {"title": spec.get("title", spec["path"].rsplit(".", 1)[-1]), **spec}


def table(rows: list[dict[str, Any]], columns: list[str | dict[str, Any]]) -> str:
    cols = [_column(c) for c in columns]
    lines = [
        "| " + " | ".join(c["title"] for c in cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for row in rows:
        cells = [fmt(lookup(row, c["path"]), c.get("format"), c.get("join", "/")) for c in cols]
        lines.append(
            "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"
        )
    return "\n".join(lines) + "\n"


def _matches(row: dict[str, Any], where: dict[str, Any], has: str | list[str] = ()) -> bool:
    if any(lookup(row, path) is None for path in ([has] if isinstance(has, str) else has)):
        return False
    for path, wanted in where.items():
        value = lookup(row, path)
        if value not in (wanted if isinstance(wanted, list) else [wanted]):
            return False
    return True


def _paragraphs(text: str | list[str] | None) -> str:
    if not text:
        return ""
    return "\n\n".join([text] if isinstance(text, str) else text) + "\n\n"


def _item(row: dict[str, Any], item: dict[str, Any]) -> str:
    value = lookup(row, item["path"])
    if value in (None, "", [], {}):
        return ""
    kind = item.get("as", "table" if isinstance(value, list) else "markdown")
    title = f"{item['title']}:\n\n" if item.get("title") else ""
    if kind == "table":
        return title + table(value, item["columns"]) + "\n"
    if kind == "code":
        return title + f"```\n{str(value).rstrip()}\n```\n\n"
    if kind == "json":
        return title + f"```json\n{json.dumps(value, indent=1)}\n```\n\n"
    return title + f"{str(value).rstrip()}\n\n"


def _provenance(rows: list[dict[str, Any]]) -> str:
    """Where the rows come from: one line per (command, machine, date), with its rows."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for i, row in enumerate(rows):
        where = tuple(str(row.get(k, "") or "") for k in ("command", "machine", "date"))
        groups.setdefault(where, []).append(str(row.get("label", i)))
    lines = []
    for (command, machine, date), labels in groups.items():
        what = "; ".join(labels) if len(labels) <= 6 else f"{len(labels)} rows"
        head = f"`{command}`" if command else "(command not recorded)"
        lines.append(f"- {head}: {what} ({'; '.join(x for x in (machine, date) if x)})")
    return "\n".join(lines) + "\n"


def render(study_dir: Path) -> str:
    study_dir = Path(study_dir)
    rows = read_rows(study_dir)
    path = study_dir / STUDY
    spec = json.loads(path.read_text()) if path.exists() else {}
    md = (
        f"# {spec.get('title', study_dir.name)}\n\n"
        f"<!-- generated by benchmarks/study_report.py from {RUNS} and {STUDY}: edit those -->\n\n"
    )
    md += _paragraphs(spec.get("intro"))
    md += "".join(
        f"- {c['label']}: {sum(bool(lookup(r, c['path'])) for r in rows)}/{len(rows)}\n"
        for c in spec.get("counts", [])
    )
    md += "\n" if spec.get("counts") else ""
    tables = spec.get("tables") or [{"columns": spec.get("columns") or _default_columns(rows)}]
    for t in tables:
        selected = [r for r in rows if _matches(r, t.get("where", {}), t.get("has", ()))]
        md += f"## {t['title']}\n\n" if t.get("title") else ""
        md += _paragraphs(t.get("text"))
        md += table(selected, t["columns"]) + "\n"
        md += _paragraphs(t.get("notes"))
    if spec.get("notes"):
        md += "## Notes\n\n" + _paragraphs(spec["notes"])
    details = spec.get("details")
    if details:
        sections = []
        for i, row in enumerate(rows):
            body = "".join(_item(row, item) for item in details["items"])
            if body:
                label = lookup(row, details.get("label", "label"))
                sections.append(f"### {label if label is not None else i}\n\n{body}")
        if sections:
            md += f"## {details.get('title', 'Details')}\n\n" + "".join(sections)
    md += f"## Runs\n\n{len(rows)} rows in [{RUNS}]({RUNS}), each with its full settings.\n\n"
    return md + _provenance(rows)


def _default_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Without study.json: the label and every scalar number of ``result``."""
    keys: dict[str, None] = {}
    for r in rows:
        for k, v in (r.get("result") or {}).items():
            if isinstance(v, int | float | str | bool):
                keys[f"result.{k}"] = None
    return ["label", *keys]


def write(study_dir: Path) -> Path:
    path = Path(study_dir) / README
    path.write_text(render(study_dir).rstrip() + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", type=Path, help="study folders (or names)")
    args = parser.parse_args(argv)
    for study in args.studies:
        print(write(study if study.is_dir() else RESULTS / study))


if __name__ == "__main__":
    main()
