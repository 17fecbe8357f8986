"""all-MiniLM-L6-v2 on BBC News, deployed: geta's compressed encoder on integer kernels against
the dense model under torch's and onnxruntime's dynamic int8, probe accuracy and CPU latency.

Protocol: the data, teacher, distillation and probe of ``minilm_bbc.py`` (same split, same
GetaTrainer run); the student is compressed under ``--budget`` (default a latency budget,
``latency=2.5x`` at 8 x 128 tokens, with quantized activations) and deployed with
``geta.deploy`` on the table's kernels. Every variant embeds the same training and test
documents; the probe is fitted and scored per variant; latency is the median of interleaved
forwards at 8 x 128 tokens on 1 thread and on ``--threads``, each variant against the dense
fp32 teacher of the same run. Variants:

- teacher fp32 (the dense model), teacher under ``torch.ao.quantization.quantize_dynamic``
  (int8 linear layers), the teacher in onnxruntime (fp32, and after onnxruntime's own
  ``quantize_dynamic`` to int8 weights and activations);
- the geta student as its checkpoint reloads (float, pruned) and as ``geta.deploy`` runs it.

    python benchmarks/minilm_deploy.py                                   # the study
    python benchmarks/minilm_deploy.py --docs 100 --epochs 0.2 --no-write  # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import minilm_bbc as bbc  # sets the offline environment first
import torch
from _common import record
from deploy_speed import time_interleaved
from torch import nn

import geta

STUDY = "minilm-deploy"


class OrtEncoder:
    """An encoder exported to ONNX at 8 x 128 tokens and run in onnxruntime (optionally after
    its ``quantize_dynamic`` to int8): called like the HF model, it pads a smaller batch to
    that shape and cuts the output back. One session per thread count."""

    def __init__(self, model: nn.Module, path: Path, int8: bool) -> None:
        ids = torch.ones(bbc.LATENCY_BATCH, bbc.MAX_TOKENS, dtype=torch.long)
        mask = ids.clone()
        mask[-1, bbc.MAX_TOKENS // 2 :] = 0  # padding in the example: an all-ones mask is
        # dropped by the model's attention fast path and the export would ignore it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (), str(path), kwargs={"input_ids": ids, "attention_mask": mask},
                dynamo=True, verbose=False,
            )  # fmt: skip
            if int8:
                from onnxruntime.quantization import QuantType, quantize_dynamic

                quantized = path.with_name(path.stem + "-int8.onnx")
                quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8)
                path = quantized
        self.path = path
        self.sessions: dict[int, object] = {}

    def eval(self) -> OrtEncoder:
        return self

    def _session(self):
        import onnxruntime as ort

        threads = torch.get_num_threads()
        if threads not in self.sessions:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            self.sessions[threads] = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        return self.sessions[threads]

    def __call__(self, input_ids, attention_mask, **_):
        rows, tokens = input_ids.shape
        ids = torch.zeros(bbc.LATENCY_BATCH, bbc.MAX_TOKENS, dtype=torch.long)
        mask = torch.zeros_like(ids)
        ids[:rows, :tokens], mask[:rows, :tokens] = input_ids, attention_mask
        ids[rows:], mask[rows:] = ids[0], mask[0]  # filler rows, cut off below
        session = self._session()
        names = [i.name for i in session.get_inputs()]
        out = session.run(None, dict(zip(names, [ids.numpy(), mask.numpy()], strict=True)))[0]
        return SimpleNamespace(last_hidden_state=torch.from_numpy(out[:rows, :tokens]))


def dynamic_int8(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model), {nn.Linear}, torch.qint8
        )


@torch.inference_mode()
def latencies(models: dict, tokenizer, texts: list[str], runs: int, threads: int) -> dict:
    """Milliseconds per forward at 8 x 128 tokens on ``threads`` threads, the variants
    interleaved, and each one's speed-up over the teacher of the same run."""
    enc = tokenizer(
        (texts * bbc.LATENCY_BATCH)[: bbc.LATENCY_BATCH], truncation=True,
        max_length=bbc.MAX_TOKENS, padding="max_length", return_tensors="pt",
    )  # fmt: skip
    enc = {k: enc[k] for k in ("input_ids", "attention_mask")}
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        seconds = time_interleaved({n: (lambda m=m: m(**enc)) for n, m in models.items()}, runs)
    finally:
        torch.set_num_threads(previous)
    return {n: {"ms": 1e3 * s, "speedup": seconds["teacher fp32"] / s} for n, s in seconds.items()}


def main() -> None:
    parser = bbc.arguments(budget="latency=2.5x")
    parser.add_argument("--activations", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    bbc.require()
    import transformers

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    texts, labels, _ = bbc.bbc_news(args.docs)
    (train_x, train_y), (test_x, test_y) = bbc.split(texts, labels)
    tokenizer = transformers.AutoTokenizer.from_pretrained(bbc.model_path())
    teacher = geta.hf.distill.make_teacher(transformers.AutoModel.from_pretrained(bbc.model_path()))

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        c, training = bbc.compress(teacher, tokenizer, train_x, args, out)
        report = c.report()
        logging.info("compressed:\n%s", report)
        table = getattr(c, "latency_table", None)
        config = table.deploy_config if table is not None else geta.deployment.DeployConfig()
        variants = {
            "teacher fp32": teacher,
            "teacher, torch dynamic int8": dynamic_int8(teacher),
            "teacher, onnxruntime fp32": OrtEncoder(teacher, out / "teacher.onnx", int8=False),
            "teacher, onnxruntime dynamic int8": OrtEncoder(
                teacher, out / "teacher.onnx", int8=True
            ),
            "geta student, float checkpoint": geta.hf.from_pretrained(out / "student"),
            "geta student, geta.deploy": geta.deploy(c.model, "torch", config=config),
        }
        kernels = variants["geta student, geta.deploy"].deploy_report.kernels()
        embedded = {}
        for name, model in variants.items():
            start = time.perf_counter()
            batch = bbc.LATENCY_BATCH if isinstance(model, OrtEncoder) else 32
            embedded[name] = (
                bbc.embed(model, tokenizer, train_x, batch),
                bbc.embed(model, tokenizer, test_x, batch),
            )
            logging.info("%s embedded in %.0f s", name, time.perf_counter() - start)
        reference = embedded["teacher fp32"][1]
        quality = {
            name: {
                "probe_accuracy": bbc.probe(tr, train_y, te, test_y),
                "cosine_to_teacher": float((te * reference).sum(axis=1).mean()),
            }
            for name, (tr, te) in embedded.items()
        }
        timing = {
            str(n): latencies(variants, tokenizer, test_x, args.latency_runs, n)
            for n in sorted({1, args.threads})
        }
    rows = []
    for name in variants:
        result = {**quality[name], "latency": {n: t[name] for n, t in timing.items()}}
        rows.append({
            "label": f"{args.budget}: {name}",
            "run": {"budget": args.budget, "variant": name, "args": vars(args),
                    "deploy_config": config.__dict__ if name.endswith("geta.deploy") else None},
            "result": result,
        })  # fmt: skip
    summary = {
        "papers_ratio": report.ratio if report.metric != "latency" else None,
        "predicted_speedup": report.ratio if report.metric == "latency" else None,
        "measured_ms_finalize": report.measured,
        "removed_units": report.removed_units,
        "total_units": report.total_units,
        "kernels": kernels,
        "training": {k: v for k, v in training.items() if k != "log"},
        "report_table": str(report),
    }
    for row in rows:
        if row["run"]["variant"].startswith("geta"):
            row["result"]["compression"] = summary
    print(json.dumps(rows, default=str, indent=1))
    for row in rows:
        r, lat = row["result"], row["result"]["latency"]
        print(
            f"{row['run']['variant']:<36} probe {100 * r['probe_accuracy']:.2f}%  cosine "
            f"{r['cosine_to_teacher']:.4f}  "
            + "  ".join(f"{n} thr {v['ms']:.0f} ms x{v['speedup']:.2f}" for n, v in lat.items())
        )
    if not args.no_write:
        print(record(STUDY, rows, key=["label"]))


if __name__ == "__main__":
    main()
