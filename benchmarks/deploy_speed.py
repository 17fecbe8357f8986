"""Do compressed models run faster and hold less memory once deployed? CPU latency of dense,
pruned and deployed variants of one model, measured in one process: median of interleaved
repeats, ratios against the dense float32 model of the same run, torch threads stated.

Models (random weights: speed depends on shapes, not values):

- ``resnet50``: torchvision ResNet-50, batch 1 at 224 x 224, pruned to half its MACs by geta's
  graph (the least-L2 units of every group, one fraction for all groups, found by bisection)
  and, side by side, by Torch-Pruning at the same MACs;
- ``minilm``: a BERT encoder of all-MiniLM-L6-v2's shape (6 layers, 384 wide, 12 heads),
  batch 1 x 128 tokens;
- ``llama``: a small Llama (4 layers, 512 wide, 8 heads, 4 KV heads), tokens per second of
  ``generate`` (32 new tokens, greedy).

Each is pruned to half its MACs the same way (heads, FFN channels, KV groups: whatever its
graph's groups are).

Variants: ``dense`` (float32), ``dense-dynamic-int8`` (torch's dynamic int8 of the linear
layers), ``dense-ort`` / ``dense-ort-int8`` (the dense model in onnxruntime, float32 / its own
dynamic int8 quantization), ``pruned`` (float32), ``tp-pruned``
(Torch-Pruning, ResNet-50 only), ``deployed-w8``/``deployed-w4`` (:func:`geta.deploy`
weight-only, the pruned model quantized to 8 / 4 bits per channel), ``deployed-a8w8``
(int8 dynamic activations), ``deployed-ort`` (the ONNX backend in onnxruntime). Each row also
gives the weight bytes in RAM, the artifact's file bytes and the papers' ratio.

    python benchmarks/deploy_speed.py --models resnet50 minilm llama --threads 1 2
    python benchmarks/deploy_speed.py --models minilm --quick      # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import _common
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import geta
import geta.quant as quant
from geta.deployment import DeployConfig, deploy
from geta.export.size import size_report

STUDY = "deploy_speed"


# ---------------------------------------------------------------------------- models
def macs(model: nn.Module, args: tuple, kwargs: dict) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*args, **kwargs)
    return counter.get_total_flops() / 2


def magnitude_plan(graph: geta.DependencyGraph, model: nn.Module, fraction: float) -> dict:
    """The ``fraction`` of every exact group's units with the least L2 norm over the group's
    parameter slices (``member.positions[i]``: unit ``i``'s indices along ``member.dim``)."""
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    plan = {}
    for group in graph.groups:
        k = min(int(round(fraction * group.size)), group.size - 1)
        if not group.exact or k <= 0:
            continue
        norms = torch.zeros(group.size)
        for member in group.members:
            tensor = tensors.get(member.name)
            if member.is_buffer or tensor is None or not tensor.is_floating_point():
                continue
            moved = tensor.detach().movedim(member.dim, 0)
            index = torch.as_tensor(member.positions)  # [units, width]
            norms += moved[index.reshape(-1)].reshape(group.size, -1).square().sum(1)
        plan[group.id] = sorted(torch.argsort(norms)[:k].tolist())
    return plan


def prune_to_macs(model, args, kwargs, target: float) -> tuple[nn.Module, float]:
    """A copy of ``model`` pruned by :func:`magnitude_plan` to at most ``target`` of its MACs
    (bisection on the fraction)."""
    dense = macs(model, args, kwargs)
    lo, hi, best = 0.0, 0.95, None
    for _ in range(6):
        mid = (lo + hi) / 2
        candidate = copy.deepcopy(model)
        graph = geta.trace(candidate, args, kwargs)
        geta.prune(candidate, graph, magnitude_plan(graph, candidate, mid))
        share = macs(candidate, args, kwargs) / dense
        if share <= target:
            best, hi = (candidate, share), mid
        else:
            lo = mid
    assert best is not None, "bisection found no pruning under the MACs target"
    return best


def tp_prune_to_macs(model, args, target: float) -> tuple[nn.Module, float]:
    """Torch-Pruning (magnitude importance, uniform ratio) at ``target`` of the MACs."""
    import torch_pruning as tp

    dense = macs(model, args, {})
    lo, hi, best = 0.0, 0.95, None
    for _ in range(6):
        mid = (lo + hi) / 2
        candidate = copy.deepcopy(model)
        ignored = [m for m in candidate.modules() if isinstance(m, nn.Linear)]
        pruner = tp.pruner.MagnitudePruner(
            candidate, args[0], importance=tp.importance.MagnitudeImportance(p=2),
            pruning_ratio=mid, ignored_layers=ignored,
        )  # fmt: skip
        pruner.step()
        share = macs(candidate, args, {}) / dense
        if share <= target:
            best, hi = (candidate, share), mid
        else:
            lo = mid
    assert best is not None
    return best


def build(name: str, quick: bool) -> tuple[nn.Module, tuple, dict, str]:
    """The model, its example inputs and the workload (``forward`` or ``generate``)."""
    torch.manual_seed(0)
    if name == "resnet50":
        import torchvision

        size = 96 if quick else 224
        return torchvision.models.resnet50().eval(), (torch.randn(1, 3, size, size),), {}, "forward"
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

    if name == "minilm":
        config = BertConfig(
            hidden_size=384, num_hidden_layers=2 if quick else 6, num_attention_heads=12,
            intermediate_size=1536, vocab_size=30522,
        )  # fmt: skip
        model = BertModel(config).eval()
        tokens = 32 if quick else 128
        inputs = {"input_ids": torch.randint(0, 30522, (1, tokens))}
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        return model, (), inputs, "forward"
    if name == "llama":
        config = LlamaConfig(
            hidden_size=512, num_hidden_layers=2 if quick else 4, num_attention_heads=8,
            num_key_value_heads=4, intermediate_size=1408, vocab_size=8000,
        )  # fmt: skip
        model = LlamaForCausalLM(config).eval()
        inputs = {"input_ids": torch.randint(0, 8000, (1, 16))}
        return model, (), inputs, "generate"
    raise ValueError(f"unknown model {name}")


# ---------------------------------------------------------------------------- variants
def quantized(model: nn.Module, bits: int) -> nn.Module:
    prepared = copy.deepcopy(model)
    quant.prepare(prepared, init_bits=bits, per_channel=True)
    return prepared


def runner(model, args, kwargs, workload: str, new_tokens: int) -> Callable[[], object]:
    if workload == "generate":
        return lambda: model.generate(
            **kwargs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
        )
    return lambda: model(*args, **kwargs)


def dynamic_int8(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model), {nn.Linear}, torch.qint8
        )


def onnx_runner(model, args, kwargs, path: Path, int8: bool = False) -> Callable[[], object]:
    """The float ``model`` in onnxruntime (for the dense baselines); with ``int8`` after
    onnxruntime's own dynamic int8 quantization (``quantize_dynamic``)."""
    import onnxruntime as ort

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), kwargs=kwargs, dynamo=True, verbose=False)
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantized_path = path.with_name(path.stem + "-int8.onnx")
            quantize_dynamic(str(path), str(quantized_path), weight_type=QuantType.QInt8)
            path = quantized_path
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {
        i.name: t.numpy()
        for i, t in zip(session.get_inputs(), [*args, *kwargs.values()], strict=True)
    }
    return lambda: session.run(None, feed)


def time_interleaved(runners: dict[str, Callable], repeats: int) -> dict[str, float]:
    """Median seconds per call of each runner, the runners taking turns ``repeats`` times
    (after one warm-up call each)."""
    samples: dict[str, list[float]] = {name: [] for name in runners}
    with torch.no_grad():
        for fn in runners.values():
            fn()
        for _ in range(repeats):
            for name, fn in runners.items():
                start = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def bench(name: str, threads: int, repeats: int, quick: bool) -> list[dict]:
    torch.set_num_threads(threads)
    model, args, kwargs, workload = build(name, quick)
    new_tokens = 8 if quick else 32
    # a decoder is captured without its KV cache (generate still uses one)
    plain = {**kwargs, "use_cache": False} if workload == "generate" else kwargs
    pruned, share = prune_to_macs(model, args, plain, 0.5)
    dense_macs = macs(model, args, plain)
    variants: dict[str, tuple[Callable, dict]] = {}
    info = {"macs": dense_macs, "weight_bytes": sum(p.numel() * 4 for p in model.parameters())}
    variants["dense"] = (runner(model, args, kwargs, workload, new_tokens), info)
    variants["dense-dynamic-int8"] = (
        runner(dynamic_int8(model), args, kwargs, workload, new_tokens),
        {"macs": dense_macs},
    )
    pruned_info = {
        "macs": dense_macs * share,
        "weight_bytes": sum(p.numel() * 4 for p in pruned.parameters()),
    }
    variants["pruned"] = (runner(pruned, args, kwargs, workload, new_tokens), pruned_info)
    if name == "resnet50":
        tp_model, tp_share = tp_prune_to_macs(model, args, 0.5)
        variants["tp-pruned"] = (
            runner(tp_model, args, kwargs, workload, new_tokens),
            {"macs": dense_macs * tp_share},
        )
    with tempfile.TemporaryDirectory() as tmp:
        for bits, config, label in (
            (8, DeployConfig(), "deployed-w8"),
            (4, DeployConfig(), "deployed-w4"),
            (8, DeployConfig(activations="int8"), "deployed-a8w8"),
        ):
            prepared = quantized(pruned, bits)
            fast = deploy(prepared, config=config)
            artifact = geta.export.save(prepared, Path(tmp) / label)
            sizes = size_report(prepared, artifact, reference=model)  # ratios against dense
            report = fast.deploy_report
            variants[label] = (
                runner(fast, args, kwargs, workload, new_tokens),
                {
                    "macs": dense_macs * share,
                    "weight_bytes": report.weight_bytes,
                    "file_bytes": report_file_bytes(artifact),
                    "papers_ratio": sizes.paper_ratio,
                    "real_ratio": sizes.real_ratio,
                    "kernels": report.kernels(),
                    "rounding_bits": report.rounding_bits,
                },
            )
        if workload == "forward":
            variants["dense-ort"] = (
                onnx_runner(model, args, kwargs, Path(tmp) / "dense.onnx"),
                {"macs": dense_macs},
            )
            variants["dense-ort-int8"] = (
                onnx_runner(model, args, kwargs, Path(tmp) / "dense8.onnx", int8=True),
                {"macs": dense_macs},
            )
            if not kwargs:  # the onnx backend takes positional example inputs
                onnx_model = deploy(
                    quantized(pruned, 8), "onnx", example_inputs=args, out=Path(tmp) / "p.onnx"
                )
                onnx_model.session  # noqa: B018
                variants["deployed-ort"] = (
                    lambda: onnx_model(*args),
                    {
                        "macs": dense_macs * share,
                        "weight_bytes": onnx_model.deploy_report.weight_bytes,
                    },
                )
        seconds = time_interleaved({k: v[0] for k, v in variants.items()}, repeats)
    base = seconds["dense"]
    rows = []
    for label, (_, extra) in variants.items():
        result = {"seconds": seconds[label], "speedup": base / seconds[label], **extra}
        if workload == "generate":
            result["tokens_per_second"] = new_tokens / seconds[label]
        rows.append(
            {
                "label": f"{name}/{label}/t{threads}",
                "run": {"model": name, "variant": label, "threads": threads, "repeats": repeats,
                        "workload": workload, "quick": quick, "macs_target": 0.5},
                "result": result,
            }
        )  # fmt: skip
    return rows


def report_file_bytes(artifact: Path) -> int:
    from geta.deployment.report import artifact_bytes

    return artifact_bytes(artifact)


def plot(study_dir: Path) -> Path:
    """``speedup.png``: speed-up over dense float32 per variant, one panel per model, and the
    weights in RAM as labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import study_report

    rows = study_report.read_rows(study_dir)
    models = list(dict.fromkeys(r["run"]["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        mine = [r for r in rows if r["run"]["model"] == model]
        names = [r["run"]["variant"] for r in mine]
        speed = [r["result"]["speedup"] for r in mine]
        bars = ax.barh(names, speed, color=["#888" if "dense" in n else "#2a7" for n in names])
        for bar, r in zip(bars, mine, strict=True):
            ram = r["result"].get("weight_bytes")
            if ram:
                ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                        f" {ram / 1e6:.0f} MB", va="center", fontsize=8)  # fmt: skip
        ax.axvline(1.0, color="k", lw=0.8)
        ax.invert_yaxis()
        ax.set_title(model)
        ax.set_xlabel("speed-up over dense float32 (labels: weights in RAM)")
    fig.tight_layout()
    path = study_dir / "speedup.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "minilm", "llama"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    parser.add_argument("--plot-only", action="store_true", help="redraw speedup.png")
    args = parser.parse_args()
    if args.plot_only:
        plot(_common.RESULTS / STUDY)
        return
    for name in args.models:
        for threads in args.threads:
            rows = bench(name, threads, 3 if args.quick else args.repeats, args.quick)
            for row in rows:
                r = row["result"]
                print(f"{row['label']:<40} {r['seconds'] * 1e3:9.2f} ms  x{r['speedup']:.2f}")
            if not args.quick:
                _common.record(STUDY, rows, key=["label"])
    if not args.quick:
        plot(_common.RESULTS / STUDY)


if __name__ == "__main__":
    main()
