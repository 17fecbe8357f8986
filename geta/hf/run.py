"""``geta compress --model hf:PATH``: compress a HuggingFace model on a text file, distilling
from the original model, and write the checkpoint, the artifact, ``report.json`` and plots.

Three tasks, each with its model class, loss and score:

- ``embedding`` (``AutoModel``): distil the mean-pooled sentence embedding and every token's
  last hidden state (cosine); score: cosine of the student's embeddings to the original's on
  the test documents and, when the file has labels, the accuracy of a logistic-regression probe
  on the embeddings;
- ``classification`` (``AutoModelForSequenceClassification``, one output per class of the
  label column): cross-entropy on the labels mixed with distillation (of the logits when the
  checkpoint has a trained head, else of the hidden states); score: test accuracy;
- ``lm`` (``AutoModelForCausalLM``): next-token loss mixed with the logits' distillation;
  score: perplexity on the test documents.

Example:
    >>> spec = HfRunSpec(model="hf:path/to/all-MiniLM-L6-v2", task="embedding",   # doctest: +SKIP
    ...                  data="bbc.jsonl", budget="10x", epochs=2)
    >>> report = run_hf_compress(spec, Path("geta-out"))                             # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from geta import config
from geta.cli.plots import PLOTS, plot_cost, plot_layers, plot_scores
from geta.cli.results import PLOT_DIR, finite_json, layer_rows, library_versions, run_stamp
from geta.compressor import CompressorConfig
from geta.errors import CheckpointError, ConfigError
from geta.hf.data import load_texts
from geta.hf.distill import make_teacher
from geta.hf.tasks import batches, distillation, encode, evaluate, load_model

__all__ = ["HfRunSpec", "TASKS", "run_hf_compress", "hf_result_table", "HF_PREFIX"]

HF_PREFIX = "hf:"
TASKS = ("embedding", "classification", "lm")
SPEC, REPORT, CHECKPOINT = "hf_run.json", "report.json", "checkpoint.pt"
MODEL_DIR, ARTIFACT = "model", "artifact"


@dataclass
class HfRunSpec:
    """A ``geta compress`` run of a HuggingFace model: its full description (serialised as
    ``hf_run.json`` and into ``report.json``'s ``"spec"``; ``geta compress --config`` reads
    either back). ``config`` is the Compressor's (embeddings quantized by default)."""

    model: str
    task: str = "embedding"
    data: str = ""
    budget: str = "10x"
    mode: str = "geta"
    epochs: int = 2
    lr: float = 5e-5
    lr_quant: float | None = None
    batch_size: int = 16
    max_length: int = 128
    test_fraction: float = 0.2
    seed: int = 0
    limit: int | None = None
    text_column: str = "text"
    label_column: str = "label"
    calibration: int = 128
    config: CompressorConfig = field(
        default_factory=lambda: CompressorConfig(quantize_embeddings=True)
    )

    def __post_init__(self) -> None:
        if not self.model.startswith(HF_PREFIX):
            raise ConfigError(f"an hf run needs --model {HF_PREFIX}PATH, got {self.model!r}")
        if self.task not in TASKS:
            raise ConfigError(f"--task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if not self.data:
            raise ConfigError("an hf run needs --data FILE (text, CSV or JSON lines)")
        if self.epochs < 0 or self.batch_size < 1 or self.max_length < 8:
            raise ConfigError("--epochs >= 0, --batch-size >= 1 and a max length >= 8 please")

    @property
    def path(self) -> str:
        return self.model[len(HF_PREFIX) :]

    def to_dict(self) -> dict[str, Any]:
        return config.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HfRunSpec:
        """The spec :meth:`to_dict` wrote; unknown keys raise :class:`geta.ConfigError`."""
        return config.from_dict(cls, data)


# ---------------------------------------------------------------------------- the run
def _start(out: Path, spec: HfRunSpec | None, resume: bool) -> tuple[HfRunSpec, dict | None]:
    from geta.cli.run_state import load_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    saved = out / SPEC
    if not resume:
        if spec is None:
            raise ConfigError("a new run needs its settings (an HfRunSpec)")
        if (out / CHECKPOINT).exists():
            raise ConfigError(
                f"{out} holds an unfinished run ({CHECKPOINT}): pass --resume to continue it, or "
                "choose another --out"
            )
        saved.write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
        return spec, None
    if not saved.exists():
        raise CheckpointError(f"nothing to resume in {out}: it has no {SPEC}")
    spec = HfRunSpec.from_dict(json.loads(saved.read_text()))
    state = load_checkpoint(out / CHECKPOINT) if (out / CHECKPOINT).exists() else None
    return spec, state


def run_hf_compress(
    spec: HfRunSpec | None,
    out: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Compress ``spec.model`` on ``spec.data`` and write the outputs into ``out``; returns the
    report (also ``out/report.json``). With ``resume`` the run in ``out`` continues after its
    last finished epoch with its own settings (``out/hf_run.json``; ``spec`` may be None)."""
    import geta
    from geta.cli.run_state import save_checkpoint

    say = log or (lambda _: None)
    spec, state = _start(out, spec, resume)
    torch.manual_seed(spec.seed)
    data = load_texts(
        spec.data,
        text_column=spec.text_column,
        label_column=spec.label_column,
        test_fraction=spec.test_fraction,
        seed=spec.seed,
        limit=spec.limit,
    )
    if spec.task == "classification" and not data.labelled:
        raise ConfigError(
            f"--task classification needs labels: {spec.data} has no column "
            f"{spec.label_column!r} (name it with --label-column)"
        )
    tokenizer, model, complete = load_model(spec, data)
    teacher = make_teacher(model)
    say(f"{spec.path}: {len(data.train_texts)} training and {len(data.test_texts)} test documents")
    original, reference = evaluate(
        teacher, tokenizer, data, spec, progress=progress, desc="scoring the original"
    )
    if reference is not None:
        original["cosine"] = 1.0

    example = encode(tokenizer, data.train_texts[:2], spec)
    start = time.perf_counter()
    c = geta.Compressor(
        model, (), spec.budget, mode=spec.mode, config=spec.config, example_kwargs=example
    )
    if c.handler.searches:  # the one-shot mode calibrates on training documents
        order = np.random.default_rng(spec.seed).permutation(len(data.train_texts))
        calibration = batches(
            tokenizer, data.train_texts, data.train_labels, spec, order[: spec.calibration]
        )
        c.search(calibration, [], progress=progress)
    steps_per_epoch = math.ceil(len(data.train_texts) / spec.batch_size)
    opt = c.optimizer(
        "adamw",
        lr=spec.lr,
        total_steps=max(spec.epochs * steps_per_epoch, 1),
        lr_quant=spec.lr_quant,
        weight_decay=0.0,
    )
    kd = distillation(teacher, spec, complete)
    history: list[dict[str, Any]] = []
    first = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])  # dropout; batch order is fixed per seed and epoch
        history, first = state["history"], state["epoch"]
        say(f"resuming {out} after epoch {first}")
    for epoch in range(first, spec.epochs):
        model.train()
        order = np.random.default_rng([spec.seed, epoch]).permutation(len(data.train_texts))
        epoch_batches = batches(tokenizer, data.train_texts, data.train_labels, spec, order)
        bar = tqdm(epoch_batches, desc=f"epoch {epoch + 1}/{spec.epochs}", disable=not progress)
        losses, began = [], time.perf_counter()
        for batch in bar:
            loss = kd(model, batch)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.4f}", stage=getattr(opt, "stage", "") or "")
        seconds = time.perf_counter() - began
        scores, _ = evaluate(  # the model as training left it: zeroed, not yet pruned
            model, tokenizer, data, spec, reference, progress=progress, desc="scoring the epoch"
        )
        history.append(
            {
                "epoch": epoch + 1,
                "loss": float(np.mean(losses)),
                "scores": scores,
                "cost": c.current_cost(),
                "stage": getattr(opt, "stage", None),
                "seconds": seconds,
            }
        )
        save_checkpoint(
            out / CHECKPOINT,
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "rng": torch.get_rng_state(),
                "history": history,
                "epoch": epoch + 1,
            },
        )
    student = c.finalize()
    geta.hf.save_pretrained(student, out / MODEL_DIR)
    tokenizer.save_pretrained(out / MODEL_DIR)
    c.export(out / ARTIFACT)
    seconds = time.perf_counter() - start
    scores, _ = evaluate(
        student, tokenizer, data, spec, reference, progress=progress, desc="scoring the result"
    )
    report = c.report()
    result = {
        **run_stamp(),
        "spec": spec.to_dict(),
        "task": spec.task,
        "documents": {"train": len(data.train_texts), "test": len(data.test_texts)},
        "classes": data.classes,
        "original": original,
        "compressed": scores,
        "distillation": {"from_logits": kd.logits > 0, "head_from_checkpoint": complete},
        "report": {**report.to_dict(), "layers": layer_rows(report)},
        "plans": list(report.extra.get("history", [])),
        "history": history,
        "steps_per_epoch": steps_per_epoch,
        "seconds": seconds,
        "versions": library_versions(),
    }
    text = json.dumps(finite_json(result), indent=1, default=_plain, allow_nan=False)
    (out / REPORT).write_text(text + "\n")
    _plots(result, out)
    (out / CHECKPOINT).unlink(missing_ok=True)  # finished: nothing left to resume
    return result


def _plain(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _plots(result: dict[str, Any], out: Path) -> None:
    """``plots/layers.png`` (bits and density per layer), ``plots/cost.png`` (the cost per
    epoch against the budget), as the image path draws them, and ``plots/training.png`` (the
    task's scores and the training loss per epoch) when an epoch ran."""
    plots = out / PLOT_DIR
    plots.mkdir(exist_ok=True)
    report = result["report"]
    title = f"{result['spec']['model']} ({result['task']})"
    plot_layers(
        report["layers"],
        plots / PLOTS["layers"],
        f"{title}: {report['ratio']:.1f}x ({report['budget']})",
    )
    if result["history"]:
        plot_scores(
            result["history"],
            result["original"],
            result["compressed"],
            plots / PLOTS["training"],
            f"{title}: scores per epoch ({report['budget']})",
        )
    trace = [{"phase": "compress", **row} for row in result["history"]]
    plot_cost(
        trace,
        result["plans"],
        report["target"],
        report["dense_cost"],
        result["steps_per_epoch"],
        report["metric"],
        plots / PLOTS["cost"],
        f"{title}: cost against the budget ({report['budget']})",
    )


def hf_result_table(result: dict[str, Any], out: Path) -> str:
    """The run's scores and sizes as the text table ``geta compress`` prints."""
    report = result["report"]
    lines = [f"{'':<26} {'original':>12} {'compressed':>12}"]
    for key, value in result["compressed"].items():
        before = result["original"].get(key)
        fmt = "{:.2%}" if "accuracy" in key else "{:.4f}" if key == "cosine" else "{:.2f}"
        shown = fmt.format(before) if before is not None else "-"
        lines.append(f"{key.replace('_', ' '):<26} {shown:>12} {fmt.format(value):>12}")
    lines.append(
        f"{'papers ratio':<26} {'1.00x':>12} {report['ratio']:>11.2f}x"
        f"  ({'within' if report['within_budget'] else 'OVER'} budget {report['budget']})"
    )
    if report.get("real_ratio"):
        lines.append(f"{'real ratio (artifact)':<26} {'1.00x':>12} {report['real_ratio']:>11.2f}x")
    lines.append(f"model: {out / MODEL_DIR}  artifact: {out / ARTIFACT}  report: {out / REPORT}")
    return "\n".join(lines)
