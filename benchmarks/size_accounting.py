"""Papers' compression ratio against the real bytes of the exported artifact.

1. Pruned + quantized CNNs (ResNet-20 and VGG7-BN, 1-channel 28x28 inputs, freshly
   initialised weights): 50% of every channel group removed, 4-bit per-channel weights.
   Target: real ratio >= 0.8x the papers' ratio. The artifact entropy-codes the codes and
   compresses the float tensors, so sizes depend on the values: fresh weights are uniform
   (the codes' worst case), but fresh norm layers are constants (1, 0, 0, 1), which compress
   to nothing. The row "norms as trained" gives every norm layer random affine parameters
   and running statistics, as training leaves them.
2. LeNet-5 with 1% of its weights kept (the largest, per layer: unstructured) and 2-bit
   weights. Target from the issue: real ratio >= 0.5x the papers' ratio.

    python benchmarks/size_accounting.py     # adds rows to the study results/size-accounting
"""

from __future__ import annotations

import copy
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import geta
from geta.graph.equivalence import random_plan
from geta.models import get_model

sys.path.insert(0, str(Path(__file__).parent))
from _common import record  # noqa: E402


def structured(name: str, trained_norms: bool = False) -> dict:
    torch.manual_seed(0)
    model = get_model(name, in_channels=1).eval()
    reference = copy.deepcopy(model)
    x = torch.randn(1, 1, 28, 28) if name != "vgg7_bn" else torch.randn(1, 1, 32, 32)
    geta.quant.prepare(model, init_bits=4, per_channel=True)
    graph = geta.trace(model, x)
    geta.prune(model, graph, random_plan(graph, 0.5))
    setting = "50% channels pruned, 4-bit per-channel"
    if trained_norms:
        setting += ", norms as trained"
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.normal_(0, 0.1)
                    module.running_mean.normal_(0, 0.1)
                    module.running_var.uniform_(0.5, 2.0)
                    module.num_batches_tracked.fill_(78_200)
    with tempfile.TemporaryDirectory() as out:
        geta.export.save(model, out)
        report = geta.size_report(model, out, reference=reference)
        parts = _parts(out, report)
    return {"model": name, "setting": setting, **_numbers(report), **parts}


def unstructured_lenet(density: float = 0.01, bits: int = 2) -> dict:
    torch.manual_seed(0)
    model = get_model("lenet5").eval()
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:  # keep the largest `density` share of each layer
                threshold = p.abs().flatten().kthvalue(int(p.numel() * (1 - density))).values
                p.mul_(p.abs() > threshold)
    geta.quant.prepare(model, init_bits=bits)
    with tempfile.TemporaryDirectory() as out:
        geta.export.save(model, out)
        report = geta.size_report(model, out, reference=reference)
        parts = _parts(out, report)
        manifest = geta.export.read_manifest(out)
    entropy = -(density * np.log2(density) + (1 - density) * np.log2(1 - density))
    weights = [e for e in manifest["tensors"].values() if e["encoding"] == "quantized"]
    positions_entropy = sum(e["numel"] * _h(e["nonzeros"] / e["numel"]) / 8 for e in weights)
    biases = [e for e in manifest["tensors"].values() if e["encoding"] == "raw"]
    return {
        "model": "lenet5",
        "setting": f"{density:.0%} unstructured, {bits}-bit",
        **_numbers(report),
        **parts,
        "entropy_bound_ratio": 32 / (entropy + bits * density),
        "positions_bytes": sum(e["streams"]["unary"] + e["streams"]["remainders"] for e in weights),
        "positions_entropy_bytes": positions_entropy,
        "values_bytes": sum(e["streams"]["values"] for e in weights),
        "bias_fp32_bytes": sum(e["bytes"] for e in biases),
    }


def _h(p: float) -> float:
    return 0.0 if p in (0, 1) else -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def _parts(out: str, report) -> dict:
    """Where the artifact's bytes go: coded weights, the compressed plain section (steps,
    clips, biases, norms), and the rest (manifest.json, safetensors header, index)."""
    manifest = geta.export.read_manifest(out)
    plain_raw = sum(manifest["plain"]["groups"].values())
    coded = sum(e["bytes"] for e in manifest["tensors"].values()) - plain_raw
    plain = manifest["plain"]["bytes"]
    return {
        "coded_bytes": coded,
        "plain_bytes": plain,
        "plain_raw_bytes": plain_raw,
        "overhead_bytes": report.artifact_bytes - coded - plain,
        "tensors": len(manifest["tensors"]),
        # the clip_exponent streams hold q_m then t, one float32 each per channel
        "exponent_raw_bytes": sum(
            e["streams"].get("clip_exponent", 0) // 2 for e in manifest["tensors"].values()
        ),
    }


def _numbers(report) -> dict:
    return {
        "paper_ratio": report.paper_ratio,
        "real_ratio": report.real_ratio,
        "real_over_paper": report.real_ratio / report.paper_ratio,
        "artifact_bytes": report.artifact_bytes,
        "fp32_bytes": report.reference_fp32_bytes,
        "nonzeros": report.nonzeros,
        "average_bits": report.average_bits,
    }


def main() -> None:
    rows = [
        structured("resnet20"),
        structured("resnet20", trained_norms=True),
        structured("vgg7_bn"),
        unstructured_lenet(),
    ]
    for r in rows:
        print(r)
    trained = rows[1]
    worst = trained["fp32_bytes"] / (trained["artifact_bytes"] + trained["exponent_raw_bytes"])
    exponents = (
        "In every row the quantizers' exponents t are still at their initial 1.0 and compress "
        "away. Stored without any compression they would add "
        f"{trained['exponent_raw_bytes']:,} bytes to ResNet-20 with norms as trained: "
        f"{worst:.1f}x, {worst / trained['paper_ratio']:.3f} of the papers' ratio."
    )
    lenet = rows[-1]
    bound = lenet["entropy_bound_ratio"]
    with_biases = lenet["fp32_bytes"] / (
        lenet["positions_entropy_bytes"] + lenet["nonzeros"] / 8 + lenet["bias_fp32_bytes"]
    )
    positions = (
        f"For 1%-dense LeNet-5 at 2 bits the 0.5 target cannot be met by any coding. The "
        f"positions of the nonzeros alone cost at least the binary entropy H(0.01) = 0.081 bits "
        f"per weight, four times the 0.02 bits per weight of the values, so no position code can "
        f"reach more than {bound:.0f}x ({bound / lenet['paper_ratio']:.2f} of the papers' ratio) "
        "even with no file and no biases; the papers' metric ignores index overhead. The "
        f"artifact reaches {lenet['real_ratio']:.0f}x ({lenet['real_over_paper']:.3f}): its "
        f"Rice-coded positions take {lenet['positions_bytes']:,} bytes against the "
        f"{lenet['positions_entropy_bytes']:,.0f} of their entropy, the values "
        f"{lenet['values_bytes']:,} bytes (a nonzero ternary code is one sign bit), and the "
        f"{lenet['bias_fp32_bytes']:,} bytes of fp32 biases, which the papers do not count but an "
        "exact artifact must store, are more than positions and values together; the plain "
        f"section (biases, steps, clips) takes {lenet['plain_bytes']:,} bytes and manifest, "
        f"header and index {lenet['overhead_bytes']:,}. Entropy-coded positions, one-bit values "
        f"and the biases as they are would give at most {with_biases:.0f}x "
        f"({with_biases / lenet['paper_ratio']:.3f} of the papers' ratio), before any file "
        "overhead."
    )
    records = [
        {
            "label": f"{r['model']}, {r['setting']}",
            "run": {
                "model": r["model"],
                "setting": r["setting"],
                "inputs": "1x1x32x32" if r["model"] == "vgg7_bn" else "1x1x28x28",
                "seed": 0,
            },
            "result": {
                **{k: v for k, v in r.items() if k not in ("model", "setting")},
                "papers_bytes": r["nonzeros"] * r["average_bits"] / 8,
            },
        }
        for r in rows
    ]
    records[1]["text"], records[-1]["text"] = exponents, positions
    print(record("size-accounting", records))


if __name__ == "__main__":
    main()
