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

Each model's row goes into the study ``results/coverage-torchvision`` as soon as it is measured
(replacing that model's earlier row); its README.md counts and lists them.
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
import study_report  # noqa: E402
from _common import RESULTS, record  # noqa: E402

STUDY = "coverage-torchvision"


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
    """Each model's row is recorded as soon as it is measured; with ``resume`` models already in
    the study (complete or partial rows) are not run again."""
    done = {r["label"] for r in study_report.read_rows(RESULTS / STUDY)} if resume else set()
    for name in names:
        if name in done:
            continue
        row = run_isolated(name, timeout)
        print(row, flush=True)
        result = {k: v for k, v in row.items() if k != "model"}
        run = {
            "model": name,
            "inputs": "small (geta.models.torchvision_zoo.small_input)",
            "prune_share": 0.3,
            "timeout_s": timeout,
        }
        record(STUDY, {"label": name, "run": run, "result": result}, key=("label",))


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(run_geta(sys.argv[2])), flush=True)
        print(json.dumps(run_torch_pruning(sys.argv[2])), flush=True)
    else:
        resume = "--resume" in sys.argv
        names = [a for a in sys.argv[1:] if not a.startswith("--")]
        main(names or classification_models(), resume=resume)
