"""Graph build at scale.

1. A Llama-2-7B-shaped LlamaForCausalLM built from its config on the meta device (no weights):
   time to the full graph with head and MLP groups (trace + trial prune) and peak RSS, measured
   in a fresh subprocess. Targets: <= 10 s and <= 3 GB on 2 cores.
2. resnet50 and vit_b_16 (random weights): geta build time and Torch-Pruning's DependencyGraph
   build time in the same run, as a ratio (target: <= 5x).

    python benchmarks/graph_scale.py     # adds rows to the study results/graph-scale
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import record  # noqa: E402

LLAMA_CHILD = r"""
import json, resource, time, warnings
warnings.filterwarnings("ignore")
import torch
from transformers import LlamaConfig, LlamaForCausalLM
import geta
cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                  max_position_embeddings=4096, use_cache=False)
with torch.device("meta"):
    model = LlamaForCausalLM(cfg).eval()
ids = torch.zeros(1, 128, dtype=torch.long, device="meta")
start = time.perf_counter()
graph = geta.trace(model, (), {"input_ids": ids})
seconds = time.perf_counter() - start
kinds = {}
for g in graph.groups:
    kinds[g.kind] = kinds.get(g.kind, 0) + 1
print(json.dumps({"seconds": seconds, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "groups": len(graph.groups), "kinds": kinds, "unsupported": len(graph.unsupported_ops),
                  "params": sum(p.numel() for p in model.parameters())}))
"""


def llama() -> dict:
    out = subprocess.run(
        [sys.executable, "-c", LLAMA_CHILD], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def versus_torch_pruning(name: str, repeats: int = 5) -> dict:
    import torch
    import torch_pruning as tp
    import torchvision

    import geta

    model = torchvision.models.get_model(name, weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    from geta.graph.capture import export_program

    geta_times, tp_times, export_times = [], [], []
    for _ in range(repeats):  # interleaved, best of n: these machines are noisy
        start = time.perf_counter()
        graph = geta.trace(model, x)
        geta_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        export_program(model, (x,), None)  # the capture alone: the floor of any build on it
        export_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        tp.DependencyGraph().build_dependency(model, example_inputs=x)
        tp_times.append(time.perf_counter() - start)
    return {
        "model": name,
        "geta_seconds": min(geta_times),
        "tp_seconds": min(tp_times),
        "ratio": min(geta_times) / min(tp_times),
        "export_seconds": min(export_times),
        "export_ratio": min(export_times) / min(tp_times),
        "groups": len(graph.groups),
    }


def main() -> None:
    warnings.filterwarnings("ignore")
    big = llama()
    print(big, flush=True)
    rows = [versus_torch_pruning(n) for n in ("resnet50", "vit_b_16")]
    for r in rows:
        print(r, flush=True)
    llama_run = {
        "benchmark": "llama2-7b-meta",
        "model": "LlamaForCausalLM",
        "config": {
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "vocab_size": 32000,
            "max_position_embeddings": 4096,
            "use_cache": False,
        },
        "inputs": "input_ids 1x128 on the meta device",
        "process": "fresh subprocess",
    }
    versus = [
        {
            "label": r["model"],
            "run": {
                "benchmark": "versus-torch-pruning",
                "model": r["model"],
                "weights": None,
                "inputs": "1x3x224x224",
                "repeats": 5,
            },
            "result": r,
        }
        for r in rows
    ]
    print(
        record(
            "graph-scale",
            [{"label": "Llama-2-7B-shaped, meta device", "run": llama_run, "result": big}, *versus],
        )
    )


if __name__ == "__main__":
    main()
