"""The ADMM modes on Fashion-MNIST: unstructured budget ADMM at increasing ratios, a fully
binarized network with progressive ADMM, and structured ADMM against GETA mode.

Every run starts from the dense baseline (trained once, cached under ``benchmarks/.cache``),
compresses with ``geta.Compressor``, finalizes, exports the artifact and measures test
accuracy, the papers' ratio, the real artifact bytes and wall time.

    python benchmarks/fashion_mnist_admm.py unstructured --model lenet5 --ratios 100 300 500
    python benchmarks/fashion_mnist_admm.py binary --model lenet5
    python benchmarks/fashion_mnist_admm.py structured --model resnet20 --ratio 10 \\
        --train-subset 5000 --epochs 3
"""

from __future__ import annotations

import argparse
import copy
import functools
import tempfile
import time

import torch
from _common import RESULTS, header, write
from fashion_mnist_geta import DATASETS, MODEL_KWARGS, add_shared_arguments, results_name, setup

import geta
from geta.training import evaluate, fit, model_device


def compress(args, dense, train, test, mode: str, budget, admm: geta.AdmmConfig) -> dict:
    """One compression run from the dense model; its measurements."""
    model = copy.deepcopy(dense)
    x = next(iter(test))[0][:2].to(model_device(model))
    start = time.perf_counter()
    config = geta.CompressorConfig(bit_range=tuple(args.bit_range), admm=admm)
    c = geta.Compressor(model, (x,), budget=budget, mode=mode, config=config)
    steps = args.epochs * len(train)
    opt = c.optimizer(
        base="sgd",
        lr=args.lr,
        momentum=0.9,
        weight_decay=5e-4,
        total_steps=steps,
        lr_quant=args.lr / 10,
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    label = f"{args.model} {mode} {budget or 'targets'}"
    fit(model, train, opt, args.epochs, scheduler=sched, description=label, progress=False)
    c.finalize()
    accuracy = evaluate(model, test)
    with tempfile.TemporaryDirectory() as tmp:
        c.export(tmp)
        report = c.report()
    nonzeros = sum(r.nonzeros for r in report.layers)
    numel = sum(r.dense_numel for r in report.layers)
    # Yang et al. count b bits as 2^b nonzero levels (zeros are in the nonzero count): a
    # 2-bit geta layer (levels +-1) is a 1-bit layer there
    yang_bits = sum(r.nonzeros * (1 if r.bits == 2 else r.bits) for r in report.layers)
    return {
        "mode": mode,
        "budget": str(budget) if budget else "per-layer targets",
        "target_ratio": budget.ratio if budget is not None else None,
        "accuracy": accuracy,
        "paper_ratio": report.ratio,
        "yang_ratio": 32 * numel / max(yang_bits, 1),
        "artifact_bytes": report.artifact_bytes,
        "real_ratio": report.real_ratio,
        "within_budget": report.within_budget,
        "density": nonzeros / numel,
        "layers": [
            {"name": r.name, "shape": r.shape, "density": r.density, "bits": r.bits}
            for r in report.layers
        ],
        "seconds": time.perf_counter() - start,
    }


def admm_config(args, train, **kwargs) -> geta.AdmmConfig:
    return geta.AdmmConfig(
        rho=args.rho,
        rho_growth=args.rho_growth,
        update_every=max(1, round(args.update_epochs * len(train))),
        finetune=args.finetune,
        min_layer_density=args.min_layer_density,
        **kwargs,
    )


def table(rows: list[dict], dense_accuracy: float) -> str:
    md = (
        "| mode | budget | papers' ratio | Yang's count | accuracy | drop (pt) | nonzeros | "
        "artifact bytes | real ratio | time (s) | bits | density |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    for r in rows:
        bits = "/".join(str(layer["bits"]) for layer in r["layers"])
        density = "/".join(f"{layer['density']:.1%}" for layer in r["layers"])
        md += (
            f"| {r['mode']} | {r['budget']} | {r['paper_ratio']:.1f}x | {r['yang_ratio']:.1f}x | "
            f"{r['accuracy']:.2%} | {100 * (dense_accuracy - r['accuracy']):.2f} | "
            f"{r['density']:.2%} | {r['artifact_bytes']:,} | {r['real_ratio']:.1f}x | "
            f"{r['seconds']:.0f} | {bits} | {density} |\n"
        )
    return md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=["unstructured", "binary", "structured"])
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--ratios", type=float, nargs="+", default=[100, 300, 500, 1000])
    parser.add_argument("--ratio", type=float, default=10, help="structured: the budget")
    parser.add_argument("--dense-epochs", type=int, default=4)
    parser.add_argument("--dense-lr", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.01)
    add_shared_arguments(parser)
    parser.add_argument("--rho", type=float, default=None)
    parser.add_argument("--rho-growth", type=float, default=None)
    parser.add_argument("--update-epochs", type=float, default=1.0, help="V/U update interval")
    parser.add_argument("--finetune", type=float, default=0.3)
    parser.add_argument("--min-layer-density", type=float, default=0.0)
    args = parser.parse_args()
    train, test, dense, dense_info = setup(args, args.dense_lr)
    run = functools.partial(compress, args, dense, train, test)
    if args.experiment == "unstructured":
        config = admm_config(args, train)
        rows = [run("admm", geta.Budget.size(ratio=r), config) for r in args.ratios]
        title = f"unstructured ADMM (mode='admm'), {args.model}"
    elif args.experiment == "binary":
        config = admm_config(args, train, targets=geta.LayerTarget.binary())
        rows = [run("admm-progressive", None, config)]
        title = f"fully binarized {args.model} (mode='admm-progressive')"
    else:
        budget = geta.Budget.size(ratio=args.ratio)
        structured = admm_config(args, train, granularity="group")
        rows = [run("geta", budget, geta.AdmmConfig()), run("admm", budget, structured)]
        title = f"structured ADMM vs GETA mode, {args.model}"
    md = header(f"ADMM modes on {DATASETS[args.data]}: {title}")
    md += (
        f"Dense baseline: {dense_info['accuracy']:.2%} test accuracy after "
        f"{dense_info['epochs']} epochs{f' on {args.train_subset} training images' if args.train_subset else ''}. "
        f"Each run starts from it and trains {args.epochs} epochs (batch {args.batch}, SGD "
        f"momentum 0.9, weight decay 5e-4, cosine lr from {args.lr}); ADMM: V/U update every "
        f"{args.update_epochs:g} epoch(s), rho {args.rho or 'mode default'}, growth "
        f"{args.rho_growth or 'mode default'}, last {args.finetune:.0%} masked fine-tuning; bit "
        f"range {args.bit_range}. Accuracy after `finalize()`. Papers' ratio = 32 x weights / "
        "sum(bits x nonzeros) with geta's bits (2 bits = levels {-1, 0, +1}); Yang's count "
        "charges 2-bit layers 1 bit per nonzero (b bits = 2^b nonzero levels, as in Yang et al.); "
        "real ratio = fp32 safetensors bytes / artifact bytes.\n\n"
    )
    md += table(rows, dense_info["accuracy"])
    name = results_name(f"admm_{args.experiment}", args)
    write(name, md, {"dense": dense_info, "runs": rows, "args": vars(args)})
    print(md)
    print(f"written to {RESULTS / name}.md")


MODEL_KWARGS.setdefault("resnet20", {"in_channels": 1})

if __name__ == "__main__":
    main()
