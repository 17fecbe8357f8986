"""What channel alignment (``CompressorConfig(channel_multiple=N)``) buys on this CPU.

Two measurements, each as medians of interleaved rounds (every variant timed once per round,
in turn), so a background load slows every variant alike and the ratios stay comparable:

- layers: a ResNet-50 bottleneck's three convolutions (1x1 in, 3x3, 1x1 out, batch 1 at the
  stage's resolution) with its inner width pruned to ``b - k`` for ``k`` in 0..8 (``b`` the
  stage's width, 64 .. 512), and a BERT-base feed-forward block (768 -> w -> 768, 128 tokens)
  at ``w = 1536 - k`` (half of its 3072 pruned); each time as a ratio to the aligned width
  ``b`` measured in the same rounds;
- models: torchvision's ResNet-50 (224x224) and a 4-layer encoder of BERT-base's widths (128
  tokens), random weights, batch 1, pruned by geta's budget projection to half of their MACs
  (``Budget.bops(ratio=2)`` on the float model: pruning only, magnitude importance), planned
  with ``channel_multiple`` 1 and 8, against the dense model.

Each is timed at every torch thread count of ``--threads`` (default 1 and every core). Rows
go to ``benchmarks/results/channel-alignment/`` (runs.jsonl, README.md)::

    python benchmarks/channel_alignment.py                  # about five minutes on 2 cores
    python benchmarks/channel_alignment.py --threads 1      # one thread only
    python benchmarks/channel_alignment.py --rounds 3 --no-model --no-record   # a quick look
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import _common
import numpy as np
import torch
from torch import nn

STUDY = "channel-alignment"
OFFSETS = (0, 1, 2, 3, 4, 5, 6, 7, 8)  # widths b - k
RESNET50_STAGES = ((1, 64, 56), (2, 128, 28), (3, 256, 14), (4, 512, 7))  # stage, width, size


def bottleneck(width: int, inner: int) -> nn.Module:
    """A ResNet-50 bottleneck's convolutions with its inner width ``inner`` (BN folded away:
    inference cost is the convolutions')."""
    return nn.Sequential(
        nn.Conv2d(4 * width, inner, 1, bias=True), nn.ReLU(),
        nn.Conv2d(inner, inner, 3, padding=1, bias=True), nn.ReLU(),
        nn.Conv2d(inner, 4 * width, 1, bias=True),
    ).eval()  # fmt: skip


def feed_forward(inner: int, hidden: int = 768) -> nn.Module:
    """A transformer feed-forward block with ``inner`` intermediate units."""
    return nn.Sequential(nn.Linear(hidden, inner), nn.GELU(), nn.Linear(inner, hidden)).eval()


def interleaved(
    calls: dict[str, Callable[[], object]], rounds: int, min_seconds: float = 0.05
) -> dict[str, float]:
    """Median seconds of one call of each variant over ``rounds`` rounds, every variant timed
    once per round in turn (each timing repeats the call until ``min_seconds`` passed)."""
    repeats = {}
    for name, call in calls.items():  # warm-up, and how many calls one timing takes
        call()
        began = time.perf_counter()
        call()
        repeats[name] = max(1, int(min_seconds / max(time.perf_counter() - began, 1e-6)))
    seen: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            began = time.perf_counter()
            for _ in range(repeats[name]):
                call()
            seen[name].append((time.perf_counter() - began) / repeats[name])
    return {name: statistics.median(times) for name, times in seen.items()}


def _runner(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def call() -> object:
        with torch.inference_mode():
            return model(x)

    return call


def layer_rows(threads: int, rounds: int) -> list[dict]:
    """One row per layer shape: the time at each width ``b - k`` against ``b``."""
    torch.set_num_threads(threads)
    rows = []
    cases = [
        (
            f"ResNet-50 stage {stage} bottleneck ({width} inner, {size}x{size})",
            width,
            lambda w, width=width: bottleneck(width, w),
            torch.randn(1, 4 * width, size, size),
        )
        for stage, width, size in RESNET50_STAGES
    ]
    cases.append(("BERT-base FFN (768-w-768, 128 tokens)", 1536, feed_forward, None))
    for label, base, build, x in cases:
        torch.manual_seed(0)
        x = x if x is not None else torch.randn(1, 128, 768)
        calls = {base - k: _runner(build(base - k), x) for k in OFFSETS}
        times = interleaved({str(w): c for w, c in calls.items()}, rounds)
        ms = {w: 1e3 * times[str(w)] for w in calls}
        rows.append(
            {
                "label": f"{label}, {threads} thread{'s' * (threads > 1)}",
                "run": {
                    "part": "layers",
                    "layer": label,
                    "aligned_width": base,
                    "widths": sorted(calls),
                    "threads": threads,
                    "rounds": rounds,
                    "dtype": "float32",
                    "layout": "contiguous (NCHW), torch.inference_mode",
                },
                "result": {
                    "aligned_ms": ms[base],
                    "ms": {str(w): ms[w] for w in sorted(ms)},
                    "vs_aligned": {str(k): ms[base - k] / ms[base] for k in OFFSETS},
                    "worst_unaligned_vs_aligned": max(
                        ms[base - k] / ms[base] for k in OFFSETS[1:8]
                    ),
                    "macs_saved_at_minus_8": 1 - (base - 8) / base,
                },
            }
        )
        print(f"{rows[-1]['label']}: " + " ".join(f"{w}:{ms[w]:.2f}" for w in sorted(ms)))
    return rows


@dataclass(frozen=True)
class ModelCase:
    """A model to prune to half its MACs: how to build it and its inputs (batch 1), and
    whether it is a transformers model (traced with :func:`geta.hf.trace`)."""

    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[], tuple[tuple, dict]]
    hf: bool = False


def _resnet50() -> nn.Module:
    import torchvision

    return torchvision.models.resnet50()


def _bert() -> nn.Module:
    """BERT-base's widths (768 hidden, 12 heads of 64, 3072 FFN) at 4 layers."""
    import transformers

    config = transformers.BertConfig(num_hidden_layers=4, attn_implementation="eager")
    return transformers.BertModel(config, add_pooling_layer=False)


MODEL_CASES = (
    ModelCase(
        "ResNet-50 (torchvision, 224x224)",
        _resnet50,
        lambda: ((torch.randn(1, 3, 224, 224),), {}),
    ),
    ModelCase(
        "BERT-base widths, 4 layers (128 tokens)",
        _bert,
        lambda: ((), {"input_ids": torch.randint(0, 30522, (1, 128))}),
        hf=True,
    ),
)


def pruned(case: ModelCase, multiple: int, ratio: float = 2.0) -> tuple[nn.Module, float]:
    """``case``'s model (random weights) pruned to ``1 / ratio`` of its MACs by geta's budget
    projection on the float model (BOPs are MACs x 32 x 32 there, so the budget is on MACs
    alone; magnitude importance), with ``channel_multiple``; returns the model and its share
    of the dense MACs."""
    import geta
    from geta.optim.cost import output_positions
    from geta.optim.problem import CompressionProblem

    torch.manual_seed(0)
    model = case.build().eval()
    args, kwargs = case.inputs()
    graph = geta.hf.trace(model, kwargs) if case.hf else geta.trace(model, args, kwargs)
    problem = CompressionProblem(
        model,
        graph,
        geta.Budget.bops(ratio=ratio),
        positions=output_positions(model, args, kwargs),
        saliency="magnitude",
        channel_multiple=multiple,
    )
    plan = problem.plan(criterion="magnitude")
    cm = problem.cost_model
    share = cm.cost(plan.removed, np.full(len(cm.layers), 32.0)) / cm.dense_cost()
    geta.prune(model, graph, problem.units.to_plan(plan.removed))
    return model.eval(), share


def widths(model: nn.Module) -> list[int]:
    """Output widths of the model's convolutions and linear layers."""
    return [
        m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]


def model_rows(case: ModelCase, threads_list: list[int], rounds: int) -> list[dict]:
    """``case`` dense and pruned to half its MACs with ``channel_multiple`` 1 and 8."""
    torch.manual_seed(0)
    variants: dict[str, tuple[nn.Module, float]] = {"dense": (case.build().eval(), 1.0)}
    for multiple in (1, 8):
        began = time.perf_counter()
        variants[str(multiple)] = pruned(case, multiple)
        seconds = time.perf_counter() - began
        print(f"planned {case.name} with channel_multiple {multiple}: {seconds:.0f} s")
    args, kwargs = case.inputs()
    rows = []
    for threads in threads_list:
        torch.set_num_threads(threads)
        calls = {}
        for name, (model, _) in variants.items():

            def call(model: nn.Module = model) -> object:
                with torch.inference_mode():
                    return model(*args, **kwargs)

            calls[name] = call
        ms = {name: 1e3 * t for name, t in interleaved(calls, rounds, min_seconds=0.2).items()}
        for multiple in (1, 8):
            model, share = variants[str(multiple)]
            found = widths(model)
            rows.append(
                {
                    "label": f"{case.name} at 50% MACs, channel_multiple {multiple}, "
                    f"{threads} thread{'s' * (threads > 1)}",
                    "run": {
                        "part": "model",
                        "model": case.name,
                        "weights": "random (seed 0), batch 1, float32, torch.inference_mode",
                        "plan": "CompressionProblem(Budget.bops(ratio=2), saliency='magnitude',"
                        f" channel_multiple={multiple}) on the float model (pruning only), "
                        "plan(criterion='magnitude'), geta.prune",
                        "channel_multiple": multiple,
                        "threads": threads,
                        "rounds": rounds,
                    },
                    "result": {
                        "ms": ms[str(multiple)],
                        "dense_ms": ms["dense"],
                        "speedup_vs_dense": ms["dense"] / ms[str(multiple)],
                        "macs_share": share,
                        "vs_multiple_1": ms[str(multiple)] / ms["1"],
                        "widths_multiple_of_8": f"{sum(w % 8 == 0 for w in found)}/{len(found)}",
                        "widths": found,
                    },
                }
            )
        print(
            f"{case.name}, {threads} threads: "
            + ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items())
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    parser.add_argument(
        "--threads",
        default=f"1,{os.cpu_count() or 1}",
        help="torch thread counts to time with, comma-separated (default: 1 and every core)",
    )
    parser.add_argument("--no-model", action="store_true", help="the layer timings only")
    parser.add_argument("--no-record", action="store_true", help="print, write no study rows")
    args = parser.parse_args()
    threads_list = sorted({int(t) for t in args.threads.split(",")})
    rows = []
    for threads in threads_list:
        rows += layer_rows(threads, args.rounds)
    if not args.no_model:
        for case in MODEL_CASES:
            rows += model_rows(case, threads_list, args.rounds)
    if not args.no_record:
        print(_common.record(STUDY, rows, key=("label",)))


if __name__ == "__main__":
    main()
