"""Coverage of every torchvision classification model, geta beside Torch-Pruning.

For each model (random weights, eval mode): does geta trace it, how many groups, what share of
conv/linear weight scalars sit in prunable groups, does zero-then-prune of ~30% of every group
reproduce the zeroed model's outputs, and how long the graph took (trace + trial prune).
Inputs are small (see geta.models.torchvision_zoo) so the sweep runs on 2 CPU cores.
Torch-Pruning, in the same run: does its DependencyGraph build (and how long), and does a
30% MetaPruner step leave a model that runs.

    python benchmarks/coverage_torchvision.py            # all models
    python benchmarks/coverage_torchvision.py resnet18 vit_b_16
    python benchmarks/coverage_torchvision.py --resume   # skip models already measured
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings

import torch

import geta
from geta.graph.equivalence import check_prune_equivalence
from geta.models.torchvision_zoo import build_small, classification_models, small_input

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from _common import RESULTS, header, write  # noqa: E402


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_small(name)


def run_geta(name: str) -> dict:
    model = build(name)
    x = small_input(name)
    row: dict = {"model": name}
    try:
        start = time.perf_counter()
        graph = geta.trace(model, x)
        row["geta_seconds"] = round(time.perf_counter() - start, 2)
    except Exception as err:
        row["geta_traced"] = False
        row["geta_error"] = f"{type(err).__name__}: {err}"[:200]
        return row
    row["geta_traced"] = True
    row["groups"] = len(graph.groups)
    row["prunable_share"] = round(graph.prunable_fraction(), 3)
    row["unsupported_ops"] = len(graph.unsupported_ops)
    result = check_prune_equivalence(model, graph, (x,))
    row["equivalent"] = result.passed
    row["max_abs_diff"] = result.max_abs_diff
    row["params_kept"] = round(result.params_after / result.params_before, 3)
    return row


def run_torch_pruning(name: str) -> dict:
    import torch_pruning as tp

    model = build(name)
    x = small_input(name)
    row: dict = {}
    try:
        start = time.perf_counter()
        tp.DependencyGraph().build_dependency(model, example_inputs=x)
        row["tp_seconds"] = round(time.perf_counter() - start, 2)
        row["tp_graph"] = True
    except Exception as err:
        row["tp_graph"] = False
        row["tp_error"] = f"{type(err).__name__}: {err}"[:160]
        return row
    try:  # Torch-Pruning out of the box: no per-model configuration
        heads = [
            m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 1000
        ]
        pruner_cls = getattr(tp.pruner, "MetaPruner", None) or tp.pruner.BasePruner
        pruner = pruner_cls(
            model,
            x,
            importance=tp.importance.MagnitudeImportance(p=2),
            pruning_ratio=0.3,
            ignored_layers=heads,
        )
        pruner.step()
        with torch.no_grad():
            model(x)
        row["tp_pruned_runs"] = True
    except Exception as err:
        row["tp_pruned_runs"] = False
        row["tp_error"] = f"{type(err).__name__}: {err}"[:160]
    return row


def run_isolated(name: str, timeout: float) -> dict:
    """geta then Torch-Pruning for one model in a fresh process: a hang or a crash costs only
    that row (geta's result is kept if Torch-Pruning is the part that hangs)."""
    cmd = [sys.executable, __file__, "--one", name]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        stdout, failed = out.stdout, out.returncode != 0
    except subprocess.TimeoutExpired as err:
        stdout, failed = (
            (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or ""),
            True,
        )
    row: dict = {"model": name}
    for line in stdout.splitlines():
        if line.startswith("{"):
            row.update(json.loads(line))
    if failed:
        part = "tp" if "geta_traced" in row else "geta"
        row.setdefault(f"{part}_error", f"did not finish within {timeout:.0f} s or crashed")
    return row


def main(names: list[str], timeout: float = 300, resume: bool = False) -> None:
    """Rows are written after every model; with ``resume`` models already in the results
    JSON (complete or partial) are not run again."""
    done: dict[str, dict] = {}
    if resume:
        for stem in ("coverage_torchvision", "coverage_torchvision_partial"):
            path = RESULTS / f"{stem}.json"
            if path.exists():
                done.update({r["model"]: r for r in json.loads(path.read_text())})
    rows = []
    for name in names:
        row = done.get(name) or run_isolated(name, timeout)
        rows.append(row)
        print(row, flush=True)
        report(rows, final=len(rows) == len(names) and len(names) == len(classification_models()))


def report(rows: list[dict], final: bool) -> None:
    n = len(rows)
    traced = sum(r.get("geta_traced", False) for r in rows)
    grouped = sum(r.get("groups", 0) > 0 for r in rows)
    equivalent = sum(r.get("equivalent", False) for r in rows)
    tp_graph = sum(r.get("tp_graph", False) for r in rows)
    tp_runs = sum(r.get("tp_pruned_runs", False) for r in rows)
    md = header("torchvision coverage: geta vs Torch-Pruning")
    md += (
        f"**geta**: {traced}/{n} traced, {grouped}/{n} with prunable groups, {equivalent}/{n} pass "
        f"zero-then-prune equivalence (30% of every group, tolerance 1e-4 x max|y|).  \n"
        f"**Torch-Pruning**: DependencyGraph built for {tp_graph}/{n}; 30% MetaPruner step left a "
        f"running model for {tp_runs}/{n}.\n\n"
        "Inputs are small (64x64; ViT at 4x4 patches; MaxViT 224; Inception 96) so the whole "
        "sweep fits a 2-core machine; architectures are unchanged. Prunable share = conv/linear "
        "weight scalars inside some prunable group. geta seconds include the trial prune.\n\n"
        "| model | geta groups | prunable share | equivalent | geta s | TP graph | TP s | TP pruned runs |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    for r in rows:
        md += (
            f"| {r['model']} | {r.get('groups', 'trace failed')} | {r.get('prunable_share', '')} | "
            f"{r.get('equivalent', '')} | {r.get('geta_seconds', '')} | {r.get('tp_graph', '')} | "
            f"{r.get('tp_seconds', '')} | {r.get('tp_pruned_runs', '')} |\n"
        )
    errors = [r for r in rows if any(k.endswith("_error") for k in r)]
    if errors:
        md += "\nErrors:\n\n" + "".join(
            f"- {r['model']}: "
            + "; ".join(f"{k}: {v}" for k, v in r.items() if k.endswith("_error"))
            + "\n"
            for r in errors
        )
    path = write("coverage_torchvision" if final else "coverage_torchvision_partial", md, rows)
    if final:
        (RESULTS / "coverage_torchvision_partial.json").unlink(missing_ok=True)
        (RESULTS / "coverage_torchvision_partial.md").unlink(missing_ok=True)
        print(path)


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(run_geta(sys.argv[2])), flush=True)
        print(json.dumps(run_torch_pruning(sys.argv[2])), flush=True)
    else:
        resume = "--resume" in sys.argv
        names = [a for a in sys.argv[1:] if not a.startswith("--")]
        main(names or classification_models(), resume=resume)
