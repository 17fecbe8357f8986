"""Latency budgets: predicted vs measured. Each model is compressed in GETA mode under
``Budget.latency(speedup=S)`` (a short self-distillation run on random inputs: the speed, not
the accuracy, is measured here), deployed with the table's settings, and timed against the
dense fp32 model in the same process (median of interleaved repeats, threads stated).

    python benchmarks/latency_budget.py                       # the study
    python benchmarks/latency_budget.py --quick               # a smoke run, nothing recorded
"""

from __future__ import annotations

import argparse
import copy
import time

import _common
import deploy_speed
import torch
from torch import nn
from torch.nn import functional as F

import geta
from geta.deployment.latency import timed_inputs

STUDY = "latency-budget"


def build(name: str, quick: bool) -> tuple[nn.Module, tuple, dict, bool]:
    """The model, its example inputs and whether its activations are quantized (the int8
    dynamic kernels of linear layers need them; convolutions run weight-only)."""
    torch.manual_seed(0)
    if name == "resnet18":
        import torchvision

        size = 64 if quick else 112
        return torchvision.models.resnet18().eval(), (torch.randn(1, 3, size, size),), {}, False
    if name == "minilm":  # the MiniLM-shaped BERT of the deploy_speed study
        model, args, kwargs, _ = deploy_speed.build("minilm", quick)
        return model, args, kwargs, True
    raise ValueError(f"unknown model {name}")


def output(model: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
    out = model(*args, **kwargs)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out


def run(name: str, speedup: float, steps: int, repeats: int, quick: bool) -> dict:
    model, args, kwargs, activations = build(name, quick)
    dense = copy.deepcopy(model)
    budget = geta.Budget.latency(speedup=speedup)
    start = time.perf_counter()
    compressor = geta.Compressor(
        model,
        args,
        budget=budget,
        example_kwargs=kwargs,
        config=geta.CompressorConfig(quantize_activations=activations),
    )
    table_seconds = time.perf_counter() - start
    opt = compressor.optimizer("adam", lr=1e-4, total_steps=steps)
    model.train()
    for _ in range(steps):
        noise = {k: v for k, v in kwargs.items()}
        x = tuple(a + 0.1 * torch.randn_like(a) for a in args)
        with torch.no_grad():
            target = output(dense, x, noise)
        F.mse_loss(output(model, x, noise), target).backward()
        opt.step()
        opt.zero_grad()
    small = compressor.finalize().eval()
    report = compressor.report()
    table = compressor.latency_table
    deployed = geta.deploy(small, "torch", config=table.deploy_config).eval()
    targs, tkwargs = timed_inputs(args, kwargs, budget.batch)
    seconds = deploy_speed.time_interleaved(
        {
            "dense": lambda: dense(*targs, **tkwargs),
            "deployed": lambda: deployed(*targs, **tkwargs),
        },
        repeats,
    )
    kernels = deployed.deploy_report.kernels()
    return {
        "label": f"{name} {speedup:g}x",
        "run": {
            "model": name,
            "budget": str(budget),
            "steps": steps,
            "quantize_activations": activations,
            "threads": torch.get_num_threads(),
            "repeats": repeats,
            "deploy_config": table.config,
        },
        "result": {
            "dense_ms_table": table.dense_ms,
            "budget_ms": report.target,
            "predicted_ms": report.achieved,
            "measured_ms_finalize": report.measured,
            "dense_ms": seconds["dense"] * 1e3,
            "deployed_ms": seconds["deployed"] * 1e3,
            "speedup": seconds["dense"] / seconds["deployed"],
            "predicted_speedup": report.ratio,
            "prediction_error": report.achieved / (seconds["deployed"] * 1e3) - 1,
            "removed_units": report.removed_units,
            "total_units": report.total_units,
            "kernels": kernels,
            "table_seconds": table_seconds,
        },
    }


def plot(study_dir) -> None:
    """``speedup.png``: per run, the budget's speed-up, the plan's predicted one and the one
    measured in the same run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import study_report

    rows = study_report.read_rows(study_dir)
    labels = [r["label"] for r in rows]
    fig, ax = plt.subplots(figsize=(1.6 * len(rows) + 2, 3.6))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["result"]["predicted_speedup"] for r in rows], 0.4,
           color="#4c72b0", label="predicted (table)")  # fmt: skip
    ax.bar([x + 0.2 for x in xs], [r["result"]["speedup"] for r in rows], 0.4,
           color="#2a7", label="measured (same run)")  # fmt: skip
    for x, r in zip(xs, rows, strict=True):
        asked = float(r["run"]["budget"].split("x")[0])
        ax.plot([x - 0.45, x + 0.45], [asked, asked], color="k", lw=1.2)
    ax.axhline(1.0, color="gray", lw=0.8, ls=":")
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("speed-up over dense fp32 (line: budget)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(study_dir / "speedup.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "minilm"])
    parser.add_argument("--speedups", type=float, nargs="+", default=[1.5, 2.0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="small shapes, nothing recorded")
    parser.add_argument("--plot-only", action="store_true", help="redraw speedup.png")
    args = parser.parse_args()
    if args.plot_only:
        plot(_common.RESULTS / STUDY)
        return
    torch.set_num_threads(args.threads)
    for name in args.models:
        for speedup in args.speedups:
            steps, repeats = (3, 3) if args.quick else (args.steps, args.repeats)
            try:
                row = run(name, speedup, steps, repeats, args.quick)
            except geta.BudgetError as error:
                print(f"{name} {speedup:g}x: {error}")
                continue
            r = row["result"]
            print(
                f"{row['label']:<16} budget {r['budget_ms']:.2f} ms  predicted "
                f"{r['predicted_ms']:.2f} ms  measured {r['deployed_ms']:.2f} ms  "
                f"dense {r['dense_ms']:.2f} ms  x{r['speedup']:.2f}  {r['kernels']}"
            )
            if not args.quick:
                _common.record(STUDY, row, key=["label"])
    if not args.quick:
        plot(_common.RESULTS / STUDY)


if __name__ == "__main__":
    main()
