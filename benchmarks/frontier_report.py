"""The README table and the frontier plot of a study, generated from its runs.jsonl.

For each method and budget the chosen candidate (best validation accuracy on the first seed,
as :mod:`frontier` chose it) is reported as mean +- std over its seeds: test accuracy, the
delivered papers' ratio (and its ratio to the asked one), the real bytes, wall time. The plot
shows test accuracy against the delivered papers' ratio (log x), one line per method.

    python benchmarks/frontier_report.py lenet5-mnist        # or a study directory
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FRONTIER = Path(__file__).parent / "results" / "frontier"
PLOT = "frontier.png"
NOTES = "NOTES.md"  # optional, hand-written, put under the generated README's header
SECTIONS = ("structured", "structured, BOPs", "unstructured")  # a BOPs ratio is not a size one


NO_MODEL = ("infeasible", "diverged")  # a run's result without a model: why


def no_model(result: dict[str, Any]) -> str | None:
    """Why a run's ``result`` holds no model (``infeasible``, ``diverged``); None if it does."""
    return next((why for why in NO_MODEL if why in result), None)


def _budget_value(budget: str) -> float:
    return float(budget.rstrip("x").split("=")[-1])


@dataclass
class Cell:
    """One method at one budget: the chosen candidate's runs over the seeds."""

    method: str
    kind: str
    budget: str
    baseline: bool
    choice: dict[str, Any]
    runs: list[dict[str, Any]]
    candidates: list[dict[str, Any]]

    def values(self, key: str) -> list[float]:
        return [float(r["result"][key]) for r in self.runs if r["result"].get(key) is not None]

    def mean(self, key: str) -> float:
        v = self.values(key)
        return statistics.fmean(v) if v else float("nan")

    def std(self, key: str) -> float:
        v = self.values(key)
        return statistics.stdev(v) if len(v) > 1 else 0.0

    @property
    def landing(self) -> float:
        return self.mean("papers_ratio") / _budget_value(self.budget)


def _choice_text(choice: dict[str, Any]) -> str:
    parts = []
    for section in choice.values():
        for key, value in section.items():
            parts.append(f"{key}={value}")
    return ", ".join(parts) or "-"


def cells(rows: list[dict[str, Any]]) -> list[Cell]:
    """The chosen candidate per (method, budget): the one with the most seeds (the winner is
    the one run on every seed), ties broken by validation accuracy."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["method"], row["budget"])].append(row)
    out = []
    for (method, budget), group in groups.items():
        by_choice: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in group:
            by_choice[json.dumps(row["choice"], sort_keys=True)].append(row)
        feasible = {k: v for k, v in by_choice.items() if not any(no_model(r["result"]) for r in v)}
        if not feasible:
            continue
        key = max(
            feasible,
            key=lambda k: (
                len(feasible[k]),
                min(
                    (r["result"].get("validation_accuracy") or 0.0)
                    for r in feasible[k]
                    if r["seed"] == min(x["seed"] for x in feasible[k])
                ),
            ),
        )
        first = feasible[key][0]
        candidates = [
            {
                "choice": json.loads(k),
                "validation_accuracy": v[0]["result"].get("validation_accuracy"),
                "no_model": no_model(v[0]["result"]),
            }
            for k, v in by_choice.items()
        ]
        runs = sorted(feasible[key], key=lambda r: r["seed"])
        out.append(
            Cell(
                method,
                first["kind"] + (", BOPs" if budget.startswith("bops") else ""),
                budget,
                first["baseline"],
                runs[0]["choice"],
                runs,
                candidates,
            )
        )
    return sorted(out, key=lambda c: (c.kind, c.method, _budget_value(c.budget)))


def _pm(cell: Cell, key: str, scale: float = 100.0, digits: int = 2) -> str:
    return f"{scale * cell.mean(key):.{digits}f} ± {scale * cell.std(key):.{digits}f}"


def commands(rows: list[dict[str, Any]]) -> list[str]:
    """How each method's rows were made: the distinct frontier.py command lines, per method."""
    by_method: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        command = row.get("command")
        if command and command not in by_method[row["method"]]:
            by_method[row["method"]].append(command)
    return [
        f"- {method}: " + "; ".join(f"`{c}`" for c in cmds)
        for method, cmds in sorted(by_method.items())
    ]


def table(study: str, rows: list[dict[str, Any]], notes: str = "") -> str:
    """The study's README: header, a table per section with the comparison against the best
    baseline, candidates, the commands and the plot; ``notes`` (the study's hand-written
    NOTES.md, e.g. what each ablation tag changes) goes under the header."""
    first = rows[0]
    run = first["run"]
    if str(run["model"]).startswith("hf:"):
        return _hf_table(study, rows, notes)
    denses = sorted(
        {r["result"]["dense_accuracy"] for r in rows if r["result"].get("dense_accuracy")}
    )
    dense_line = (
        f"{100 * denses[0]:.2f}% test accuracy ({run['dense_epochs']} epochs, dense seed "
        f"{run['dense_seed']}); every method starts from it"
        if len(denses) == 1
        else "retrained between runs with the same settings ("
        + ", ".join(f"{100 * d:.2f}%" for d in denses)
        + f" test accuracy; {run['dense_epochs']} epochs, dense seed {run['dense_seed']}): "
        "each run starts from its own, so compare the drop column"
    )
    lines = [
        f"# Frontier: {run['model']} on {run['data']}",
        "",
        "Generated by `python benchmarks/frontier_report.py "
        f"{study}` from `runs.jsonl` ({len(rows)} runs); the runs by "
        f"`python benchmarks/frontier.py {study}`.",
        "",
        f"- dense model: {dense_line}",
        f"- every run: {run['epochs']} epochs, batch {run['batch_size']}, "
        f"{run['optimizer']['base']} lr {run['lr']} ({run['optimizer']['schedule']}), "
        f"{run['validation']} training images held out for validation",
        f"- machines: {', '.join(sorted({r['machine'] for r in rows}))}",
        f"- dates: {min(r['date'] for r in rows)} to {max(r['date'] for r in rows)}",
        "",
        "Accuracy: test, mean ± std over the seeds, in %. Ratio: the papers' "
        "(32 x numel / sum bits x nonzeros), delivered; 'landing' is delivered / asked. Real: "
        "fp32 bytes / artifact bytes on disk. Time: the compression epochs; a search before them "
        "(AJPQ's, on the validation split) is timed apart. Free choices (in brackets) were "
        "picked on the validation split with seed 0.",
        "",
    ]
    return "\n".join(lines + _body(rows, notes))


def _hf_table(study: str, rows: list[dict[str, Any]], notes: str) -> str:
    """:func:`table` for a HuggingFace study: the original model's scores instead of a dense
    model's, the distillation run's settings, and the cosine to the original as a column."""
    run = rows[0]["run"]
    original = sorted(
        {r["result"]["dense_accuracy"] for r in rows if "dense_accuracy" in r["result"]}
    )
    model = run["model"].rstrip("/").split("/")
    lines = [
        f"# Frontier: {model[-2] if model[-1] == 'model' else model[-1]} on "
        f"{run['data'].rstrip('/').split('/')[-2]} ({run['task']})",
        "",
        "Generated by `python benchmarks/frontier_report.py "
        f"{study}` from `runs.jsonl` ({len(rows)} runs); the runs by "
        f"`python benchmarks/frontier.py {study}`.",
        "",
        f"- original model: probe accuracy {', '.join(f'{100 * a:.2f}%' for a in original)} "
        "on the test documents; every method starts from it and distils from it",
        f"- every run: {run['epochs']} epoch(s), batch {run['batch_size']}, adamw lr {run['lr']} "
        f"(cosine), {run['max_length']} tokens per document, {run['test_fraction']:.0%} of the "
        "documents held out for the test (seeded split); no validation split",
        f"- machines: {', '.join(sorted({r['machine'] for r in rows}))}",
        f"- dates: {min(r['date'] for r in rows)} to {max(r['date'] for r in rows)}",
        "",
        "Accuracy: the probe's on the test documents (a logistic regression on the embeddings, "
        "fitted on the training documents), mean ± std over the seeds, in %; cosine: of the "
        "test documents' embeddings to the original model's. Ratio: the papers' (32 x numel / "
        "sum bits x nonzeros), delivered; 'landing' is delivered / asked. Real: fp32 bytes / "
        "artifact bytes on disk. Time: the whole compression run.",
        "",
    ]
    return "\n".join(lines + _body(rows, notes))


def _body(rows: list[dict[str, Any]], notes: str) -> list[str]:
    """The tables, comparisons, candidates, commands and plot link under a header."""
    cs = cells(rows)
    lines: list[str] = []
    cosine = any(r["result"].get("cosine") is not None for r in rows)
    if notes.strip():
        lines += [notes.strip(), ""]
    for kind in SECTIONS:
        part = [c for c in cs if c.kind == kind]
        if not part:
            continue
        lines += [
            f"## {kind[0].upper()}{kind[1:]}",
            "",
            "| budget | method | seeds | accuracy | drop (pt) | papers' ratio | landing | real ratio | time (s) | search (s) | choice |"
            + (" cosine |" if cosine else ""),
            "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if cosine else ""),
        ]
        for c in sorted(part, key=lambda c: (_budget_value(c.budget), c.method)):
            drop = 100 * (c.mean("accuracy") - c.mean("dense_accuracy"))
            seconds = statistics.fmean(r["result"]["seconds"]["compress"] for r in c.runs)
            search = statistics.fmean(r["result"]["seconds"].get("search", 0.0) for r in c.runs)
            lines.append(
                f"| {c.budget} | {c.method} | {len(c.runs)} | {_pm(c, 'accuracy')} | "
                f"{drop:+.2f} | {c.mean('papers_ratio'):,.1f} | {c.landing:.2f} | "
                f"{c.mean('real_ratio'):,.1f} | {seconds:,.0f} | "
                f"{f'{search:,.0f}' if search else '-'} | {_choice_text(c.choice)} |"
                + (f" {_pm(c, 'cosine', 1.0, 4)} |" if cosine else "")
            )
        lines += ["", *comparison(part), ""]
    if any(len(c.candidates) > 1 for c in cs):
        lines += ["## Candidates (seed 0, validation accuracy)", ""]
    for c in cs:
        if len(c.candidates) > 1:
            text = "; ".join(
                f"{_choice_text(x['choice'])}: "
                + (x["no_model"] or f"{100 * x['validation_accuracy']:.2f}")
                for x in c.candidates
            )
            lines.append(f"- {c.method} {c.budget}: {text}")
    lines += ["", "## Commands", "", *commands(rows)]
    lines += ["", f"![frontier]({PLOT})", ""] if cs else [""]
    return lines


def _tag(method: str) -> str | None:
    """An ablation's tag: ``ep20`` of ``admm[ep20]``; None for a method as the study runs it."""
    return method[method.index("[") + 1 : -1] if method.endswith("]") else None


def best_rival(cell: Cell, baselines: list[Cell]) -> Cell | None:
    """The best baseline (mean accuracy) to set ``cell`` against: among the baselines run
    with the same ablation tag (``admm[ep20]`` against ``magnitude-qat[ep20]``), or else the
    longest tag it extends (``admm[ep20-bits3]`` against ``magnitude-qat[ep20]``), or else
    among the untagged ones."""
    tag = _tag(cell.method)
    parts = tag.split("-") if tag else []
    for k in range(len(parts), -1, -1):
        wanted = "-".join(parts[:k]) or None
        pool = [b for b in baselines if _tag(b.method) == wanted]
        if pool:
            return max(pool, key=lambda b: b.mean("accuracy"))
    return None


def comparison(part: list[Cell]) -> list[str]:
    """geta's methods against the best baseline at each budget (mean over seeds; 'wins' means
    ahead by more than the larger of the two standard deviations)."""
    out = []
    budgets = sorted({c.budget for c in part}, key=_budget_value)
    for budget in budgets:
        here = [c for c in part if c.budget == budget]
        base = [c for c in here if c.baseline]
        for c in here:
            best = None if c.baseline else best_rival(c, base)
            if best is None:
                continue
            gap = 100 * (c.mean("accuracy") - best.mean("accuracy"))
            if min(len(c.runs), len(best.runs)) < 2:
                out.append(
                    f"- {budget}: {c.method} {gap:+.2f} pt against {best.method} "
                    "(one seed: no spread to judge it by)"
                )
                continue
            spread = 100 * max(c.std("accuracy"), best.std("accuracy"))
            verdict = "wins" if gap > spread else ("loses" if gap < -spread else "ties")
            out.append(
                f"- {budget}: {c.method} {gap:+.2f} pt against {best.method} ({verdict}; "
                f"spread {spread:.2f} pt)"
            )
    return out


def summary(study: str, rows: list[dict[str, Any]]) -> list[str]:
    """The README front page's rows for one study: at each budget, each of geta's methods
    against the best baseline of the same kind (mean +- std over seeds, delivered ratio)."""
    out = []
    cs = cells(rows)
    for kind in SECTIONS:
        part = [c for c in cs if c.kind == kind]
        for budget in sorted({c.budget for c in part}, key=_budget_value):
            here = [c for c in part if c.budget == budget]
            base = [c for c in here if c.baseline]
            for c in (c for c in here if not c.baseline):
                best = best_rival(c, base)
                against = (
                    f"{best.method} ({_choice_text(best.choice)}): {_pm(best, 'accuracy')} "
                    f"at {best.mean('papers_ratio'):,.0f}x"
                    if best
                    else "-"
                )
                gap = f"{100 * (c.mean('accuracy') - best.mean('accuracy')):+.2f}" if best else "-"
                out.append(
                    f"| {study} | {kind} | {budget} | {c.method} | {_pm(c, 'accuracy')} at "
                    f"{c.mean('papers_ratio'):,.0f}x | {against} | {gap} | {len(c.runs)} |"
                )
    return out


def selection(study: str, rows: list[dict[str, Any]]) -> list[str]:
    """How far each validation pick can be trusted: for every method and budget with two or
    more feasible candidates run on the first seed, the chosen one's validation lead over the
    runner-up next to the standard error of a difference of two accuracies on that many
    validation images (``sqrt(2 p (1 - p) / n)``, p the chosen one's validation accuracy;
    an upper bound, as both are scored on the same images), and its regret: the best
    candidate's test accuracy minus the chosen one's. The test set judges the pick here; it
    never makes it."""
    out = []
    for cell in cells(rows):
        first = cell.runs[0]["seed"]
        scored = [
            r
            for r in rows
            if (r["method"], r["budget"], r["seed"]) == (cell.method, cell.budget, first)
            and r["result"].get("validation_accuracy") is not None
        ]
        if len(scored) < 2:
            continue
        chosen = next(r for r in scored if r["choice"] == cell.choice)
        others = [r for r in scored if r is not chosen]
        p = chosen["result"]["validation_accuracy"]
        lead = p - max(r["result"]["validation_accuracy"] for r in others)
        n = chosen["run"].get("validation") or 0
        noise = math.sqrt(2 * p * (1 - p) / n) if n else math.nan
        regret = max(r["result"]["accuracy"] for r in scored) - chosen["result"]["accuracy"]
        out.append(
            f"| {study} | {cell.method} | {cell.budget} | {len(scored)} | {100 * lead:.2f} | "
            f"{100 * noise:.2f} | {100 * regret:.2f} |"
        )
    return out


SELECTION_HEADER = [
    "| study | method | budget | candidates | validation lead (pt) | its noise (pt) "
    "| test regret (pt) |",
    "|---|---|---|---|---|---|---|",
]


SUMMARY_HEADER = [
    "| study | kind | budget | geta | accuracy (%) | best baseline (%) | gap (pt) | seeds |",
    "|---|---|---|---|---|---|---|---|",
]


def _metrics(rows: list[dict[str, Any]]) -> list[tuple[str, str, float, float, str]]:
    """``(result key, axis label, scale, reference line, its label)`` of each plotted score: accuracy
    against the dense model's; for studies that measure it, the cosine to the original
    model's outputs too (its reference is the original itself, 1)."""
    dense = statistics.fmean(
        r["result"]["dense_accuracy"] for r in rows if "dense_accuracy" in r["result"]
    )
    metrics = [("accuracy", "test accuracy (%)", 100.0, 100 * dense, "dense")]
    if any(r["result"].get("cosine") is not None for r in rows):
        metrics.append(("cosine", "cosine to the original's outputs", 1.0, 1.0, "original"))
    return metrics


def _budget_ticks(ax: Any, budgets: list[float]) -> None:
    """The asked budgets as the x ticks, written as plain numbers (30, not 3 x 10^1)."""
    from matplotlib import ticker

    ax.xaxis.set_major_locator(ticker.FixedLocator(budgets))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def plot(study: str, rows: list[dict[str, Any]], path: Path) -> None:
    """The frontier plot (accuracy, and the cosine where measured, against the papers' ratio).

    matplotlib is imported here, with the file-only Agg backend, so that the runner's workers,
    which read rows through this module, never load it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cs = cells(rows)
    kinds = [k for k in SECTIONS if any(c.kind == k for c in cs)]
    metrics = _metrics(rows)
    fig, axes = plt.subplots(
        len(metrics), len(kinds), figsize=(6.5 * len(kinds), 4.6 * len(metrics)), squeeze=False
    )
    for (key, label, scale, reference, name), axes_row in zip(metrics, axes, strict=True):
        for ax, kind in zip(axes_row, kinds, strict=True):
            for method in sorted({c.method for c in cs if c.kind == kind}):
                line = sorted(
                    (c for c in cs if c.kind == kind and c.method == method),
                    key=lambda c: c.mean("papers_ratio"),
                )
                baseline = line[0].baseline
                ax.errorbar(
                    [c.mean("papers_ratio") for c in line],
                    [scale * c.mean(key) for c in line],
                    xerr=[c.std("papers_ratio") for c in line],
                    yerr=[scale * c.std(key) for c in line],
                    marker="s" if baseline else "o",
                    linestyle="--" if baseline else "-",
                    capsize=3,
                    label=method,
                )
            ax.axhline(reference, color="grey", linewidth=0.8, linestyle=":", label=name)
            ax.set_xscale("log")
            _budget_ticks(ax, sorted({_budget_value(c.budget) for c in cs if c.kind == kind}))
            what = "BOPs reduction" if "BOPs" in kind else "papers' compression ratio"
            ax.set_xlabel(f"{what} (delivered, log scale)")
            ax.set_ylabel(label)
            ax.set_title(f"{study}: {kind}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def read_rows(study_dir: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in (study_dir / "runs.jsonl").read_text().splitlines()
        if line.strip()
    ]


def write(study_dir: Path) -> Path:
    rows = read_rows(study_dir)
    study = study_dir.name
    notes = study_dir / NOTES
    text = table(study, rows, notes.read_text() if notes.is_file() else "")
    (study_dir / "README.md").write_text(text)
    if cells(rows):  # a study of runs without a model only has nothing to plot
        plot(study, rows, study_dir / PLOT)
    return study_dir / "README.md"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", help="study names or directories")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument(
        "--summary", action="store_true", help="print the README front page's table instead"
    )
    shown.add_argument(
        "--selection",
        action="store_true",
        help="print how far each validation pick can be trusted (lead, noise, test regret)",
    )
    args = parser.parse_args(argv)
    paths = [Path(n) if Path(n).is_dir() else FRONTIER / n for n in args.studies]
    if args.summary or args.selection:
        header, lines_of = (
            (SUMMARY_HEADER, summary) if args.summary else (SELECTION_HEADER, selection)
        )
        lines = list(header)
        for path in paths:
            lines += lines_of(path.name, read_rows(path))
        print("\n".join(lines), file=sys.stdout)
        return
    for path in paths:
        print(write(path), file=sys.stdout)


if __name__ == "__main__":
    main()
