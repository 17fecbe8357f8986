"""Knowledge distillation from the uncompressed model: a frozen teacher and the loss that pulls
the compressed student towards it.

    teacher = geta.hf.distill.make_teacher(model)       # before geta.Compressor(model, ...)
    kd = geta.hf.distill.DistillationLoss(teacher, temperature=2.0, alpha=0.5)
    loss = kd(model, batch)                          # task loss (if labels) mixed with KD
    loss.backward(); opt.step(); opt.zero_grad()

Three terms, each on when asked for:

- ``logits``: Hinton's soft-target loss ``T^2 * KL(softmax(t / T) || softmax(s / T))`` on the
  models' logits (mean over samples, or over unpadded tokens for per-token logits); the
  ``T^2`` keeps its gradients on the scale of a hard-label loss whatever the temperature;
- ``hidden``: the last hidden state, token by token (padding masked out), by ``"mse"`` or
  ``"cosine"`` (``1 - cos``);
- ``embedding``: the mean-pooled last hidden state (the sentence embedding of models such as
  all-MiniLM-L6-v2, which have no head), by ``"mse"`` or ``"cosine"``.

With labels in the batch the student's own loss (``outputs.loss``) is mixed in as
``(1 - alpha) * task + alpha * distillation``; for a model that returns plain logits, pass
``labels=`` and the task loss is their cross-entropy; without labels, the loss is the
distillation alone.
The teacher runs under ``torch.no_grad`` in eval mode, so gradients reach only the student.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DistillationLoss",
    "hidden_loss",
    "logits_kl",
    "make_teacher",
    "mean_pool",
]

KINDS = ("mse", "cosine")


def make_teacher(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` to distil from: deep-copied, in eval mode, no gradients.

    Make it *before* handing ``model`` to :class:`geta.Compressor` (which prepares the model
    in place with quantizers), so the teacher is the uncompressed float model.

    Example:
        >>> teacher = geta.hf.distill.make_teacher(model)               # doctest: +SKIP
        >>> c = geta.Compressor(model, (), "10x", example_kwargs=inputs)  # doctest: +SKIP
    """
    teacher = copy.deepcopy(model).eval()
    teacher.requires_grad_(False)
    return teacher


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``hidden`` (batch, tokens, features) over the tokens where ``mask`` is nonzero
    (all tokens without a mask): sentence-transformers' mean pooling."""
    if mask is None:
        return hidden.mean(dim=1)
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-9)


def logits_kl(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` over the last dim, averaged
    over the other positions (those where ``mask`` is nonzero, for per-token logits)."""
    log_p_s = F.log_softmax(student.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher.float() / temperature, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1)
    return temperature**2 * _masked_mean(kl, mask)


def hidden_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    kind: str = "mse",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Distance of ``student`` to ``teacher`` vectors (last dim): ``"mse"`` (mean squared
    difference per vector) or ``"cosine"`` (``1 - cos``), averaged over the other positions
    (those where ``mask`` is nonzero)."""
    if student.shape != teacher.shape:
        raise ValueError(
            f"student and teacher states differ in shape ({tuple(student.shape)} vs "
            f"{tuple(teacher.shape)}); the hidden and embedding terms need the same hidden size "
            "(do not prune the hidden size, or distil logits only)"
        )
    s, t = student.float(), teacher.float()
    if kind == "mse":
        per = (s - t).pow(2).mean(dim=-1)
    elif kind == "cosine":
        per = 1 - F.cosine_similarity(s, t, dim=-1)
    else:
        raise ValueError(f"unknown distance {kind!r}; use one of {KINDS}")
    return _masked_mean(per, mask)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean()
    if mask.shape != values.shape:
        raise ValueError(f"mask of shape {tuple(mask.shape)} for values of {tuple(values.shape)}")
    weights = mask.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def _call(model: nn.Module, inputs: Any, **extra: Any) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs, **extra)
    if isinstance(inputs, tuple | list):
        return model(*inputs, **extra)
    return model(inputs, **extra)


def _get(outputs: Any, name: str) -> Any:
    if isinstance(outputs, Mapping):
        return outputs.get(name)
    return getattr(outputs, name, None)


@dataclass
class DistillationLoss:
    """Distil ``teacher`` into the model being compressed.

    - ``temperature``: softens both logit distributions (``T``; the KL term is scaled by
      ``T^2``).
    - ``alpha``: the distillation share when the batch has labels:
      ``(1 - alpha) * task + alpha * distillation``.
    - ``logits``: weight of the logits KL term (used when the outputs have logits; a model
      returning a plain tensor counts as returning logits).
    - ``hidden`` / ``hidden_weight``: ``"mse"`` or ``"cosine"`` on the last hidden state per
      token, or ``None``.
    - ``embedding`` / ``embedding_weight``: ``"mse"`` or ``"cosine"`` on the mean-pooled last
      hidden state, or ``None``.

    Call it as ``loss = kd(model, batch)`` (``batch``: a dict of keyword inputs, a tuple of
    positional ones, or one tensor); ``kd(model, x, labels=y)`` mixes in the cross-entropy of a
    model that returns plain logits; ``kd(model, batch, return_outputs=True)`` also returns
    the student's outputs (the form of :meth:`transformers.Trainer.compute_loss`). The terms of
    the last call are in ``kd.last`` (floats, for logging).

    Example:
        >>> teacher = geta.hf.distill.make_teacher(model)              # doctest: +SKIP
        >>> kd = geta.hf.distill.DistillationLoss(teacher, logits=0.0, embedding="cosine")  # doctest: +SKIP
        >>> kd(model, {"input_ids": ids, "attention_mask": mask}).backward()            # doctest: +SKIP
    """

    teacher: nn.Module
    temperature: float = 2.0
    alpha: float = 0.5
    logits: float = 1.0
    hidden: str | None = None
    hidden_weight: float = 1.0
    embedding: str | None = None
    embedding_weight: float = 1.0
    last: dict[str, float] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        for name in ("hidden", "embedding"):
            kind = getattr(self, name)
            if kind is not None and kind not in KINDS:
                raise ValueError(f"unknown {name} distance {kind!r}; use one of {KINDS} or None")
        if not self.logits and self.hidden is None and self.embedding is None:
            raise ValueError("nothing to distil: set logits > 0, hidden or embedding")
        self.teacher.eval()
        self.teacher.requires_grad_(False)

    @property
    def needs_states(self) -> bool:
        return self.hidden is not None or self.embedding is not None

    def __call__(
        self,
        model: nn.Module,
        inputs: Any,
        return_outputs: bool = False,
        *,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        extra = {"output_hidden_states": True} if self.needs_states else {}
        teacher_inputs = inputs
        if isinstance(inputs, Mapping) and "labels" in inputs:
            teacher_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        outputs = _call(model, inputs, **extra)
        self._follow(model)
        with torch.no_grad():
            target = _call(self.teacher, teacher_inputs, **extra)
        mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
        loss = self.distillation(outputs, target, mask)
        task = _get(outputs, "loss") if not isinstance(outputs, torch.Tensor) else None
        if task is None and labels is not None:
            task = F.cross_entropy(_logits(outputs), labels)
        if task is not None:
            self.last["task"] = float(task.detach())
            loss = (1 - self.alpha) * task + self.alpha * loss
        self.last["loss"] = float(loss.detach())
        return (loss, outputs) if return_outputs else loss

    def distillation(
        self, outputs: Any, target: Any, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The weighted distillation terms between student ``outputs`` and teacher ``target``
        (model outputs of the same inputs); ``mask`` is the attention mask."""
        terms: list[torch.Tensor] = []
        self.last = {}
        s_logits, t_logits = _logits(outputs), _logits(target)
        if self.logits and s_logits is not None and t_logits is not None:
            kl = logits_kl(s_logits, t_logits, self.temperature, _token_mask(mask, s_logits))
            self.last["logits"] = float(kl.detach())
            terms.append(self.logits * kl)
        if self.needs_states:
            s_hidden, t_hidden = _last_hidden(outputs), _last_hidden(target)
            if self.hidden is not None:
                h = hidden_loss(s_hidden, t_hidden, self.hidden, mask)
                self.last["hidden"] = float(h.detach())
                terms.append(self.hidden_weight * h)
            if self.embedding is not None:
                e = hidden_loss(
                    mean_pool(s_hidden, mask), mean_pool(t_hidden, mask), self.embedding
                )
                self.last["embedding"] = float(e.detach())
                terms.append(self.embedding_weight * e)
        if not terms:
            raise ValueError(
                "the outputs have none of the asked-for terms: no logits to distil "
                "(set hidden= or embedding= for models without a head)"
            )
        return torch.stack(terms).sum()

    def _follow(self, model: nn.Module) -> None:
        """Keep the teacher on the student's device (Trainer and accelerate move the student)."""
        student = next(model.parameters(), None)
        teacher = next(self.teacher.parameters(), None)
        if student is not None and teacher is not None and teacher.device != student.device:
            self.teacher.to(student.device)


def _logits(outputs: Any) -> torch.Tensor | None:
    if isinstance(outputs, torch.Tensor):
        return outputs
    return _get(outputs, "logits")


def _last_hidden(outputs: Any) -> torch.Tensor:
    last = _get(outputs, "last_hidden_state")
    if last is None:
        states = _get(outputs, "hidden_states")
        last = states[-1] if states else None
    if last is None:
        raise ValueError(
            "the model returns no hidden states (last_hidden_state or hidden_states) for the "
            "hidden / embedding terms; use an HF model or distil logits only"
        )
    return last


def _token_mask(mask: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor | None:
    """The attention mask applies to per-token logits (batch, tokens, classes) only."""
    return mask if mask is not None and logits.dim() == 3 else None
