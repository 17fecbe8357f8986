"""The one-shot mode on all-MiniLM-L6-v2 and BBC News: calibration only, no training, against
round-to-nearest at the same bits, in one harness.

Protocol (fixed): the data, split, tokenisation, embeddings and probe of ``minilm_bbc.py``
(2,225 BBC News documents, stratified 70/30 split, 128 tokens, mean-pooled normalised
embeddings, logistic-regression probe C=10 fitted per model on its own training embeddings);
calibration: ``--calibration`` training documents drawn with the seed, batches of 8; every
method quantizes every counted layer, embeddings included, and is compared at the same papers'
budget ``32 x numel / sum bits x nonzeros``:

- ``rtn``: every layer at ``32 / ratio`` bits, per channel, each channel's clip searched for
  the least squared error, rounded to nearest (the simple baseline; oneshot mode with
  ``gptq=False``, no pruning, bits fixed);
- ``gptq``: the same bits, rounded with GPTQ on the calibration inputs;
- ``geta-bits``: bits per layer (2..8) by the budget projection with the distortion measured
  on the calibration activations, GPTQ rounding, no pruning;
- ``geta``: the same plus head and FFN channel removal by FLAP saliency with bias compensation.

Metrics: probe accuracy on the test documents, mean cosine of the student's test embeddings
to the teacher's, the papers' ratio and the bytes of the ``geta.hf.save_pretrained``
checkpoint, calibration seconds.

    python benchmarks/oneshot_minilm.py                                # rows of results/oneshot-minilm
    python benchmarks/oneshot_minilm.py --docs 200 --calibration 16 --no-write   # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import record  # noqa: E402
from _oneshot import METHODS, compress, settings  # noqa: E402
from minilm_bbc import (  # noqa: E402
    MAX_TOKENS,
    bbc_news,
    embed,
    model_path,
    probe,
    require,
    split,
)

import geta  # noqa: E402


def calibration_batches(tokenizer, texts: list[str], count: int, seed: int) -> list[dict]:
    picked = np.random.default_rng(seed).choice(
        len(texts), size=min(count, len(texts)), replace=False
    )
    docs = [texts[i] for i in sorted(picked)]
    return [
        dict(
            tokenizer(
                docs[i : i + 8],
                truncation=True,
                max_length=MAX_TOKENS,
                padding=True,
                return_tensors="pt",
            )
        )
        for i in range(0, len(docs), 8)
    ]


def run(method, ratio, teacher, tokenizer, batches, data, t_test) -> dict:
    (train_x, train_y), (test_x, test_y) = data
    example = dict(
        tokenizer(
            train_x[:2], truncation=True, max_length=MAX_TOKENS, padding=True, return_tensors="pt"
        )
    )
    reloaded, sizes = compress(copy.deepcopy(teacher), method, ratio, batches, example)
    s_train, s_test = embed(reloaded, tokenizer, train_x), embed(reloaded, tokenizer, test_x)
    return {
        "probe_accuracy": probe(s_train, train_y, s_test, test_y),
        "cosine_to_teacher": float((s_test * t_test).sum(axis=1).mean()),
        **sizes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[8.0, 10.6])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--calibration", type=int, default=128, help="calibration documents")
    parser.add_argument("--docs", type=int, default=None, help="a stratified subset (smoke runs)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    require()
    import transformers

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    texts, labels, _ = bbc_news(args.docs)
    data = split(texts, labels)
    (train_x, train_y), (test_x, test_y) = data
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_path())
    teacher = geta.hf.distill.make_teacher(transformers.AutoModel.from_pretrained(model_path()))
    t_train, t_test = embed(teacher, tokenizer, train_x), embed(teacher, tokenizer, test_x)
    dense = probe(t_train, train_y, t_test, test_y)
    logging.info("teacher probe %.4f", dense)
    rows = []
    for seed in args.seeds:
        batches = calibration_batches(tokenizer, train_x, args.calibration, seed)
        for ratio in args.budgets:
            for method in args.methods:
                result = run(method, ratio, teacher, tokenizer, batches, data, t_test)
                result["teacher_probe_accuracy"] = dense
                logging.info("%s %.2fx seed %d: %s", method, ratio, seed, result)
                run_desc = {
                    "method": method, "budget": f"{ratio}x", "seed": seed,
                    "calibration_documents": args.calibration, "docs": args.docs,
                    "compressor": settings(method, ratio).to_dict(),
                    "data": {"train": len(train_x), "test": len(test_x)},
                }  # fmt: skip
                row = {
                    "label": f"{method} {ratio:g}x seed {seed}",
                    "run": run_desc,
                    "result": result,
                }
                rows.append(row)
                if not args.no_write:  # row by row: a later failure keeps what finished
                    record("oneshot-minilm", row, key=("label",))
    print(json.dumps(rows, default=str))


if __name__ == "__main__":
    main()
