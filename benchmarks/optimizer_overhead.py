"""Time per training step of the GETA optimizer against its base optimizer, same run.

Both train the same prepared (quantized) model; the GETA run sits in its joint stage (groups
being pulled to zero, bits projected every step), the most expensive one. Reported as ratios
of medians over interleaved rounds (these machines are noisy).

    python benchmarks/optimizer_overhead.py     # adds rows to the study results/optimizer-overhead
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from _common import record
from transformers import BertConfig, BertModel

import geta
from geta.models import get_model


def resnet20():
    model = get_model("resnet20", in_channels=1)
    x = torch.randn(32, 1, 28, 28)
    return model, (x,), lambda m: torch.nn.functional.cross_entropy(m(x), torch.zeros(32).long())


def small_bert():
    cfg = BertConfig(
        hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024
    )
    model = BertModel(cfg)
    ids = torch.randint(0, cfg.vocab_size, (8, 128))
    return model, (ids,), lambda m: m(ids).last_hidden_state.square().mean()


def time_steps(model, opt, loss_fn, steps):
    total, step_only = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss_fn(model).backward()
        t1 = time.perf_counter()
        opt.step()
        opt.zero_grad()
        t2 = time.perf_counter()
        total.append(t2 - t0)
        step_only.append(t2 - t1)
    return statistics.median(total), statistics.median(step_only)


def measure(name, factory, rounds, steps):
    model, args, loss_fn = factory()
    geta_model = copy.deepcopy(model)
    c = geta.Compressor(
        geta_model,
        args,
        budget="8x",
        config=geta.CompressorConfig(
            warmup=0, bit_reduction=0, joint=1.0, periods=1, quantize_embeddings=True
        ),
    )
    opt = c.optimizer(lr=1e-3, momentum=0.9, total_steps=10_000)
    base_model = copy.deepcopy(geta_model)  # same prepared model, plain SGD
    base_opt = torch.optim.SGD(base_model.parameters(), lr=1e-3, momentum=0.9)
    time_steps(geta_model, opt, loss_fn, 2)  # warm-up (first plan)
    time_steps(base_model, base_opt, loss_fn, 2)
    rows = []
    for _ in range(rounds):
        rows.append(
            (
                time_steps(base_model, base_opt, loss_fn, steps),
                time_steps(geta_model, opt, loss_fn, steps),
            )
        )
    base_total = statistics.median(r[0][0] for r in rows)
    geta_total = statistics.median(r[1][0] for r in rows)
    base_step = statistics.median(r[0][1] for r in rows)
    geta_step = statistics.median(r[1][1] for r in rows)
    return {
        "model": name,
        "base_step_ms": 1e3 * base_total,
        "geta_step_ms": 1e3 * geta_total,
        "ratio": geta_total / base_total,
        "optimizer_step_only_ratio": geta_step / base_step,
        "base_opt_step_ms": 1e3 * base_step,
        "geta_opt_step_ms": 1e3 * geta_step,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    results = [
        measure("resnet20 (batch 32, 1x28x28)", resnet20, args.rounds, args.steps),
        measure("BERT 4x256 (batch 8 x 128 tokens)", small_bert, args.rounds, args.steps),
    ]
    rows = [
        {
            "label": r["model"],
            "run": {
                "model": r["model"],
                "rounds": args.rounds,
                "steps": args.steps,
                "threads": torch.get_num_threads(),
                "base": "torch.optim.SGD(lr=1e-3, momentum=0.9)",
                "geta": "Compressor(budget='8x', joint stage only), c.optimizer(lr=1e-3, momentum=0.9)",
            },
            "result": {k: v for k, v in r.items() if k != "model"},
        }
        for r in results
    ]
    print(record("optimizer-overhead", rows))


if __name__ == "__main__":
    main()
