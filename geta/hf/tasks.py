"""What each ``geta compress --task`` means for a HuggingFace model: its model class, its batches,
its distillation loss and its scores (see :mod:`geta.hf.run`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from geta.errors import ConfigError
from geta.hf.data import TextData
from geta.hf.distill import DistillationLoss, mean_pool

if TYPE_CHECKING:
    from geta.hf.run import HfRunSpec

__all__ = ["load_model", "encode", "batches", "distillation", "evaluate", "probe_accuracy"]

PROBE_C = 10.0


# ---------------------------------------------------------------------------- model
def load_model(spec: HfRunSpec, data: TextData) -> tuple[Any, nn.Module, bool]:
    """Tokenizer, model and whether the checkpoint had every weight of the model (a
    classification head made for the file's classes is new)."""
    import transformers

    kwargs: dict[str, Any] = {"local_files_only": True}
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(spec.path, **kwargs)
        if spec.task == "classification":
            cls = transformers.AutoModelForSequenceClassification
            kwargs.update(
                num_labels=len(data.classes),
                id2label=dict(enumerate(data.classes)),
                label2id={c: i for i, c in enumerate(data.classes)},
            )
        else:
            cls = {"embedding": transformers.AutoModel, "lm": transformers.AutoModelForCausalLM}[
                spec.task
            ]
        model, info = cls.from_pretrained(spec.path, output_loading_info=True, **kwargs)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load {spec.path} for --task {spec.task}: {err}") from None
    if tokenizer.pad_token is None:  # decoder tokenizers often have none
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    complete = not info.get("missing_keys")
    return tokenizer, model.float().eval(), complete


def encode(tokenizer, texts: list[str], spec: HfRunSpec) -> dict[str, torch.Tensor]:
    batch = tokenizer(
        texts, padding=True, truncation=True, max_length=spec.max_length, return_tensors="pt"
    )
    return {k: batch[k] for k in ("input_ids", "attention_mask") if k in batch}


def batches(
    tokenizer, texts: list[str], labels: np.ndarray | None, spec: HfRunSpec, order: np.ndarray
) -> list[dict[str, torch.Tensor]]:
    out = []
    for start in range(0, len(order), spec.batch_size):
        idx = order[start : start + spec.batch_size]
        batch = encode(tokenizer, [texts[i] for i in idx], spec)
        if spec.task == "classification":
            batch["labels"] = torch.as_tensor(labels[idx])
        elif spec.task == "lm":
            batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        out.append(batch)
    return out


def distillation(teacher: nn.Module, spec: HfRunSpec, complete: bool) -> DistillationLoss:
    if spec.task == "embedding":
        return DistillationLoss(teacher, logits=0.0, embedding="cosine", hidden="cosine")
    if spec.task == "classification" and not complete:  # a new head: nothing to learn from
        return DistillationLoss(teacher, logits=0.0, hidden="cosine")
    return DistillationLoss(teacher)


# ---------------------------------------------------------------------------- scores
def _embeddings(
    model: nn.Module, tokenizer, texts: list[str], spec: HfRunSpec, bar: tqdm
) -> torch.Tensor:
    out = []
    for start in range(0, len(texts), spec.batch_size):
        batch = encode(tokenizer, texts[start : start + spec.batch_size], spec)
        hidden = model(**batch).last_hidden_state
        out.append(F.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1))
        bar.update(1)
    return torch.cat(out)


def probe_accuracy(
    train: torch.Tensor, train_y: np.ndarray, test: torch.Tensor, test_y: np.ndarray
) -> float:
    """Test accuracy of an L2-regularised multinomial logistic regression (``C = 10``, as
    scikit-learn counts it) fitted on the training embeddings."""
    classes = int(max(train_y.max(), test_y.max())) + 1
    y = torch.as_tensor(train_y)
    linear = nn.Linear(train.shape[1], classes).double()
    x, xt = train.double(), test.double()
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(linear(x), y) + linear.weight.square().sum() / (2 * PROBE_C * len(y))
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    predicted = linear(xt).argmax(1).numpy()
    return float((predicted == test_y).mean())


@torch.no_grad()
def evaluate(
    model: nn.Module,
    tokenizer,
    data: TextData,
    spec: HfRunSpec,
    reference: torch.Tensor | None = None,
    *,
    progress: bool = False,
    desc: str = "scoring",
) -> tuple[dict[str, float], torch.Tensor | None]:
    """The task's scores on the test documents (and the test embeddings, for ``reference``);
    ``progress`` shows a bar over the batches."""
    model.eval()
    if spec.task == "embedding":
        steps = math.ceil(len(data.test_texts) / spec.batch_size)
        if data.labelled:
            steps += math.ceil(len(data.train_texts) / spec.batch_size)
        with tqdm(total=steps, desc=desc, disable=not progress, leave=False) as bar:
            test = _embeddings(model, tokenizer, data.test_texts, spec, bar)
            scores: dict[str, float] = {}
            if reference is not None:
                scores["cosine"] = float((test * reference).sum(-1).mean())
            if data.labelled:
                train = _embeddings(model, tokenizer, data.train_texts, spec, bar)
                scores["probe_accuracy"] = probe_accuracy(
                    train, data.train_labels, test, data.test_labels
                )
        return scores, test
    order = np.arange(len(data.test_texts))
    total, count, correct = 0.0, 0, 0
    test_batches = batches(tokenizer, data.test_texts, data.test_labels, spec, order)
    for batch in tqdm(test_batches, desc=desc, disable=not progress, leave=False):
        outputs = model(**batch)
        if spec.task == "classification":
            correct += int((outputs.logits.argmax(-1) == batch["labels"]).sum())
            count += len(batch["labels"])
        else:
            tokens = int((batch["labels"][:, 1:] != -100).sum())
            total += float(outputs.loss) * tokens
            count += tokens
    if spec.task == "classification":
        return {"accuracy": correct / max(count, 1)}, None
    return {"perplexity": math.exp(total / max(count, 1))}, None
