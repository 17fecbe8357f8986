"""What ``geta compress`` writes and prints: ``report.json`` (settings, versions, date, the
result table's values, per-layer rows, per-epoch history), the plots, and the result table."""

from __future__ import annotations

import datetime
import json
import math
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from geta.cli.plots import PLOTS, SEARCH_PLOT, plot_cost, plot_layers, plot_search, plot_training

__all__ = [
    "REPORT",
    "PLOT_DIR",
    "layer_rows",
    "library_versions",
    "result_dict",
    "write_outputs",
    "result_table",
    "run_stamp",
]

if TYPE_CHECKING:
    from geta.cli.compress import RunResult
    from geta.optim.report import CompressionReport

REPORT = "report.json"
PLOT_DIR = "plots"


def library_versions() -> dict[str, str]:
    import torchvision

    import geta

    return {
        "geta": geta.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def finite_json(value: Any) -> Any:
    """JSON without NaN/Infinity: non-finite floats become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


def run_stamp() -> dict[str, str]:
    """The date (UTC) and the ``geta`` command line of this run, for its report."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["geta", *sys.argv[1:]]) if sys.argv else "geta compress",
    }


def layer_rows(report: CompressionReport) -> list[dict[str, Any]]:
    """The report's per-layer rows as JSON-ready dicts (what the layers plot draws)."""
    return [
        {
            "name": row.name,
            "dense_shape": list(row.dense_shape),
            "shape": list(row.shape),
            "dense_numel": row.dense_numel,
            "nonzeros": row.nonzeros,
            "density": row.density,
            "bits": row.bits,
            "bit_histogram": {str(b): n for b, n in row.bit_histogram.items()},
            "bits_label": row.bits_label,
        }
        for row in report.layers
    ]


def result_dict(result: RunResult) -> dict[str, Any]:
    """Everything in the result table, the per-layer rows, the history, the settings, the
    versions and the date, as JSON-ready values."""
    r = result.report
    dense = {k: v for k, v in result.dense.items() if k != "history"}
    return finite_json(
        {
            **run_stamp(),
            "run": result.spec.to_dict(),
            "versions": library_versions(),
            "data": {
                "spec": result.spec.data,
                "shape": list(result.data_shape),
                "samples": result.samples,
                "classes": result.num_classes,
            },
            "dense": dense,
            "compressed": {
                "mode": r.mode,
                "accuracy": result.accuracy,
                "loss": result.loss,
                "accuracy_before_finalize": result.accuracy_before_finalize,
                "validation_accuracy": result.validation_accuracy,
                "method_settings": result.method_settings,
                "artifact_accuracy": result.artifact_accuracy,
                "budget": r.budget,
                "metric": r.metric,
                "target": r.target,
                "achieved": r.achieved,
                "dense_cost": r.dense_cost,
                "papers_ratio": r.ratio,
                "measured_ms": r.measured,
                "within_budget": r.within_budget,
                "artifact_bytes": r.artifact_bytes,
                "fp32_bytes": r.fp32_bytes,
                "real_ratio": r.real_ratio,
                "removed_units": r.removed_units,
                "total_units": r.total_units,
                "layers": layer_rows(r),
            },
            "plans": list(r.extra.get("history", [])),
            "search": r.extra.get("search"),
            "history": result.history.to_dict(),
            "seconds": result.seconds,
            "files": {
                "artifact": result.artifact.name,
                "plots": [f"{PLOT_DIR}/{name}" for name in PLOTS.values()]
                + ([f"{PLOT_DIR}/{SEARCH_PLOT}"] if r.extra.get("search") else []),
            },
        }
    )


def write_outputs(result: RunResult) -> dict[str, Any]:
    """Write ``report.json`` and the plots into the run's directory; returns the report."""
    data = result_dict(result)
    (result.out / REPORT).write_text(json.dumps(data, indent=1))
    plots = result.out / PLOT_DIR
    plots.mkdir(exist_ok=True)
    name = f"{result.spec.model}, {result.spec.data}"
    c = data["compressed"]
    plot_layers(
        c["layers"], plots / PLOTS["layers"], f"{name}: {c['papers_ratio']:.1f}x ({c['budget']})"
    )
    plot_training(
        data["history"],
        int(result.dense.get("epochs", 0)),
        plots / PLOTS["training"],
        f"{name}: accuracy and loss",
    )
    plot_cost(
        data["history"]["trace"],
        data["plans"],
        c["target"],
        c["dense_cost"],
        result.steps_per_epoch,
        c["metric"],
        plots / PLOTS["cost"],
        f"{name}: cost against the budget ({c['budget']})",
    )
    if data.get("search"):
        plot_search(data["search"], plots / SEARCH_PLOT, f"{name}: policy search ({c['budget']})")
    return data


def _pct(x: float | None) -> str:
    return f"{x:.2%}" if x is not None else "-"


def result_table(data: dict[str, Any], out: Path) -> str:
    """The table ``geta compress`` prints at the end (from :func:`result_dict`'s values)."""
    d, c, s, spec = data["dense"], data["compressed"], data["seconds"], data["run"]
    size, latency = c["metric"] == "size", c["metric"] == "latency"
    unit = (lambda v: f"{v / 8:,.0f} B") if size else (lambda v: f"{v:.3g}")
    cost_label = "weights, papers' way" if size else "BOPs per sample"
    ratio_label = "papers' ratio"
    if latency:
        cost_label, ratio_label = "ms per forward, predicted", "speed-up, predicted"
    drop = 100 * (c["accuracy"] - d["accuracy"])
    real = f"{c['artifact_bytes']:,} B ({c['real_ratio']:.1f}x smaller)"
    rows = [
        ("", "dense", "compressed"),
        ("test accuracy", _pct(d["accuracy"]), f"{_pct(c['accuracy'])} ({drop:+.2f} pt)"),
        (ratio_label, "1.0x", f"{c['papers_ratio']:.1f}x (budget {c['budget']})"),
        (cost_label, unit(c["dense_cost"]), unit(c["achieved"])),
        ("real bytes", f"{c['fp32_bytes']:,} B (fp32)", real),
        *(
            [("ms per forward, measured", "", f"{c['measured_ms']:.3g} (deployed)")]
            if latency and c.get("measured_ms")
            else []
        ),
        (
            "time",
            f"{s['dense']:.0f} s" + (" (cached)" if d.get("cached") else ""),
            f"{s['compress']:.0f} s"
            + (f" + {s['search']:.0f} s search" if s.get("search") else ""),
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [
        f"geta compress: {spec['model']} on {spec['data']}, {c['mode']} mode, budget "
        f"{c['budget']}{'' if c['within_budget'] else ' (OVER BUDGET)'}",
        "",
    ]
    lines += [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    lines += ["", f"{'layer':<24} {'shape':>16} {'density':>8} {'bits':>4}"]
    for row in c["layers"]:
        shape = "x".join(map(str, row["shape"]))
        bits = row.get("bits_label", row["bits"])
        lines.append(f"{row['name']:<24} {shape:>16} {row['density']:>8.1%} {bits:>4}")
    files = ", ".join([data["files"]["artifact"] + "/", REPORT, *data["files"]["plots"]])
    lines += ["", f"wrote {out}/: {files}  (total {s['wall']:.0f} s)"]
    return "\n".join(lines)
