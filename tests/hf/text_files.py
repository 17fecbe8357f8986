"""Tiny HuggingFace models saved to disk with a word-piece tokenizer (no download) and a
labelled JSON-lines file of two topics, for the runs of ``geta compress --model hf:PATH``."""

import json
import random
from pathlib import Path

import torch
import transformers

WORDS = {
    "sport": "ball goal team match score win player coach".split(),
    "money": "bank price market stock trade rate cash fund".split(),
}
SIZES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=64)  # fmt: skip


def write_text_files(root: Path, *, llama: bool = True) -> Path:
    """``root/docs.jsonl`` (40 documents, labels ``sport`` / ``money``) and a tiny BERT in
    ``root/bert`` (and a tiny Llama in ``root/llama``), each with the tokenizer."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "of"]
    vocab += sorted({w for ws in WORDS.values() for w in ws})
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(root / "vocab.txt"))
    rng = random.Random(0)
    with open(root / "docs.jsonl", "w") as f:
        for i in range(40):
            label = "sport" if i % 2 else "money"
            words = WORDS[label] + ["the", "a", "of"]
            text = " ".join(rng.choice(words) for _ in range(rng.randint(5, 12)))
            f.write(json.dumps({"text": text, "label": label}) + "\n")
    torch.manual_seed(0)
    sizes = dict(vocab_size=len(vocab), **SIZES)
    models = {"bert": transformers.BertModel(transformers.BertConfig(**sizes))}
    if llama:
        models["llama"] = transformers.LlamaForCausalLM(
            transformers.LlamaConfig(**sizes, num_key_value_heads=2, pad_token_id=0)
        )
    for name, model in models.items():
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root
