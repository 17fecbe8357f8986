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

import torch
from _common import RESULTS, header, write
from torch.utils.data import DataLoader

import geta
from geta.data import fashion_mnist
from geta.models import get_model
from geta.training import evaluate, fit

CACHE = Path(__file__).parent / ".cache"
MODEL_KWARGS = {"resnet20": {"in_channels": 1}}


def loaders(batch: int, train_subset: int | None):
    train, test = fashion_mnist()
    if train_subset:
        train = torch.utils.data.Subset(train, range(train_subset))
    g = torch.Generator().manual_seed(0)
    return (
        DataLoader(train, batch_size=batch, shuffle=True, generator=g, drop_last=True),
        DataLoader(test, batch_size=1000),
    )


def dense_baseline(name: str, epochs: int, lr: float, train, test, tag: str = ""):
    """The dense model trained ``epochs`` (cached by name, epochs and ``tag``, e.g. the
    training subset), and its test accuracy."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"{name}_dense_{epochs}ep{tag}.pt"
    model = get_model(name, **MODEL_KWARGS.get(name, {}))
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model, json.loads(path.with_suffix(".json").read_text())
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * len(train))
    hist = fit(model, train, opt, epochs, scheduler=sched, description=f"{name} dense")
    info = {"accuracy": evaluate(model, test), "seconds": hist.seconds, "epochs": epochs}
    torch.save(model.state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps(info))
    return model, info


def compress(name, dense, ratio, epochs, lr, train, test, config):
    model = copy.deepcopy(dense)
    x = next(iter(test))[0][:2]
    start = time.perf_counter()
    c = geta.Compressor(model, (x,), budget=geta.Budget.size(ratio=ratio), config=config)
    steps = epochs * len(train)
    opt = c.optimizer(
        base="sgd", lr=lr, momentum=0.9, weight_decay=5e-4, total_steps=steps, lr_quant=lr / 10
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    fit(model, train, opt, epochs, scheduler=sched, description=f"{name} {ratio}x")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--ratios", type=float, nargs="+", default=[10, 30, 100])
    parser.add_argument("--dense-epochs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--train-subset", type=int, default=None)
    parser.add_argument("--bit-range", type=int, nargs=2, default=[2, 8])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    logging.basicConfig(level=logging.WARNING)
    train, test = loaders(args.batch, args.train_subset)
    dense, dense_info = dense_baseline(args.model, args.dense_epochs, args.lr, train, test)
    config = geta.CompressorConfig(bit_range=tuple(args.bit_range))
    rows = [
        compress(args.model, dense, r, args.epochs, args.lr / 2, train, test, config)
        for r in args.ratios
    ]
    md = header(f"GETA mode on Fashion-MNIST: {args.model}")
    md += (
        f"Dense baseline: {dense_info['accuracy']:.2%} test accuracy after "
        f"{dense_info['epochs']} epochs ({dense_info['seconds']:.0f} s). Each compressed run starts "
        f"from it and trains {args.epochs} epochs (batch {args.batch}, SGD momentum 0.9, cosine "
        f"lr from {args.lr / 2}), bit range {args.bit_range}, 10% warm-up, 10% bit reduction, "
        "50% joint in 5 periods, 30% cool-down; accuracy is measured on the physically pruned "
        "model after `finalize()`.\n\n"
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
    name = f"fashion_mnist_geta_{args.model}"
    write(name, md, {"dense": dense_info, "runs": rows, "args": vars(args)})
    print(md)
    print(f"written to {RESULTS / name}.md")


if __name__ == "__main__":
    main()
