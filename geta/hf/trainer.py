"""Compress inside a HuggingFace ``Trainer`` run: geta's optimizer, distillation, and the
compressed model saved when training ends.

    teacher = geta.hf.distill.make_teacher(model)                 # optional, before the Compressor
    c = geta.Compressor(model, (), "10x", example_kwargs=geta.hf.example_inputs(model))
    trainer = GetaTrainer(
        model=model, args=TrainingArguments("run", max_steps=1000, learning_rate=5e-5),
        train_dataset=ds, compressor=c,
        distillation=geta.hf.distill.DistillationLoss(teacher),     # or None: the model's own loss
        save_dir="small/",                                      # geta.hf.save_pretrained at the end
    )
    trainer.train()           # ends finalized: c.model is pruned and quantized, c.report() holds

:class:`GetaTrainerMixin` does the work and goes in front of any ``Trainer`` subclass
(:func:`with_geta` builds such a class); :class:`GetaTrainer` is it on ``transformers.Trainer``.
It supplies ``compressor.optimizer(...)`` as the Trainer's optimizer, for exactly the run's
optimizer steps (``state.max_steps``: epochs, gradient accumulation and the number of processes
already counted); the Trainer's learning-rate scheduler, gradient clipping
(``max_grad_norm``), gradient accumulation and ``accelerate`` / DDP launches (the optimizer is
wrapped in accelerate's ``AcceleratedOptimizer``, which steps it once per optimizer step) work
as usual. :class:`GetaCallback` finalizes at the end of training, and saves on the main process.

The optimizer takes its settings from the ``TrainingArguments`` (``learning_rate``,
``weight_decay``, ``adam_beta1/2``, ``adam_epsilon``); ``optimizer_kwargs`` override them and
reach :meth:`geta.Compressor.optimizer` (``lr_quant``, ``momentum``...). ``args.optim`` is not
used: the base optimizer is ``base`` (``"adamw"``, ``"adam"``, ``"sgd"`` or a class).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

from geta.compressor import Compressor
from geta.hf.distill import DistillationLoss

__all__ = ["GetaCallback", "GetaTrainer", "GetaTrainerMixin", "optimizer_kwargs", "with_geta"]

log = logging.getLogger("geta")


def optimizer_kwargs(args: transformers.TrainingArguments, base: str | type) -> dict[str, Any]:
    """The base optimizer's settings from ``TrainingArguments``, as ``transformers.Trainer``
    would give them (betas and eps only to Adam-type optimizers)."""
    kwargs: dict[str, Any] = {"lr": args.learning_rate, "weight_decay": args.weight_decay}
    if base in ("adam", "adamw"):
        kwargs.update(betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
    return kwargs


def _unwrap(model: nn.Module) -> nn.Module:
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


class GetaCallback(transformers.TrainerCallback):
    """Finalize ``compressor`` when training ends (pruned groups removed, bits frozen) and,
    with ``save_dir``, save the compressed model from the main process:
    :func:`geta.hf.save_pretrained` for a transformers model, :meth:`geta.Compressor.export`
    otherwise. Every process finalizes its own copy (under DDP all hold the same plan).

    Example:
        >>> trainer = transformers.Trainer(model, args, optimizers=(opt, None),            # doctest: +SKIP
        ...                                callbacks=[GetaCallback(c, save_dir="small/")])
    """

    def __init__(self, compressor: Compressor, save_dir: str | Path | None = None) -> None:
        self.compressor = compressor
        self.save_dir = Path(save_dir) if save_dir is not None else None

    def on_train_end(self, args, state, control, **kwargs):  # noqa: D102 (TrainerCallback hook)
        c = self.compressor
        if state.global_step < state.max_steps:
            log.warning(
                "geta: training stopped after %d of %d optimizer steps; finalizing now "
                "(the remaining planned groups are zeroed at once)",
                state.global_step,
                state.max_steps,
            )
        c.finalize()
        if self.save_dir is not None and state.is_world_process_zero:
            if isinstance(c.model, transformers.PreTrainedModel):
                from geta.hf import save_pretrained

                save_pretrained(c.model, self.save_dir)
            else:
                c.export(self.save_dir)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # the saved model is there for every process after
        return control


class GetaTrainerMixin:
    """Put in front of a ``transformers.Trainer`` (sub)class to train with geta's optimizer,
    optionally distil, and finalize at the end. Keyword arguments it adds:

    - ``compressor``: the :class:`geta.Compressor` built on the Trainer's ``model``;
    - ``base``: the base optimizer (``"adamw"`` by default), ``optimizer_kwargs``: overrides;
    - ``distillation``: a :class:`geta.hf.distill.DistillationLoss` to train with instead of the
      model's own loss (it mixes in the task loss when the batch has labels);
    - ``finalize`` (default True): add a :class:`GetaCallback`; ``save_dir``: where it saves.

    Example:
        >>> class MyTrainer(GetaTrainerMixin, MySeq2SeqTrainer): ...                   # doctest: +SKIP
        >>> MyTrainer(model=model, args=args, train_dataset=ds, compressor=c).train()  # doctest: +SKIP
    """

    def __init__(
        self,
        *args: Any,
        compressor: Compressor,
        base: str | type = "adamw",
        optimizer_kwargs: dict[str, Any] | None = None,
        distillation: DistillationLoss | None = None,
        finalize: bool = True,
        save_dir: str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        optimizers = kwargs.get("optimizers", (None, None))
        if optimizers and optimizers[0] is not None:
            raise ValueError(
                "GetaTrainer makes its optimizer from the compressor; do not pass optimizers= "
                "(use transformers.Trainer with GetaCallback for an optimizer of your own)"
            )
        super().__init__(*args, **kwargs)
        if _unwrap(self.model) is not compressor.model:
            raise ValueError(
                "the Trainer's model is not the compressor's model: build the Compressor on the "
                "model you give the Trainer (Compressor prepares it in place)"
            )
        self.compressor = compressor
        self.geta_base = base
        self.geta_optimizer_kwargs = dict(optimizer_kwargs or {})
        self.distillation = distillation
        if distillation is not None:
            self.loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides it
        if finalize:
            self.add_callback(GetaCallback(compressor, save_dir))
        self._geta_steps: int | None = None

    def create_optimizer_and_scheduler(self, num_training_steps: int) -> None:
        self._geta_steps = num_training_steps
        super().create_optimizer_and_scheduler(num_training_steps)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """The compressor's optimizer for the run's ``max_steps`` optimizer steps."""
        if self.optimizer is None:
            steps = self.state.max_steps or self._geta_steps
            if not steps or steps < 1:
                raise ValueError(
                    "the number of training steps is not known yet; the optimizer is made "
                    "inside trainer.train()"
                )
            kwargs = {**optimizer_kwargs(self.args, self.geta_base), **self.geta_optimizer_kwargs}
            self.optimizer = self.compressor.optimizer(
                base=self.geta_base, total_steps=int(steps), **kwargs
            )
        return self.optimizer

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        if self.distillation is None:
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        return self.distillation(model, inputs, return_outputs=return_outputs)


class GetaTrainer(GetaTrainerMixin, transformers.Trainer):
    """``transformers.Trainer`` with geta's optimizer, optional distillation and finalization
    at the end (see :class:`GetaTrainerMixin` for the added arguments).

    Example:
        >>> c = geta.Compressor(model, (), "10x", example_kwargs=geta.hf.example_inputs(model))  # doctest: +SKIP
        >>> GetaTrainer(model=model, args=args, train_dataset=ds, compressor=c).train()        # doctest: +SKIP
        >>> geta.hf.save_pretrained(model, "small/")                                           # doctest: +SKIP
    """


def with_geta(trainer_cls: type[transformers.Trainer]) -> type[transformers.Trainer]:
    """``trainer_cls`` with :class:`GetaTrainerMixin` in front, for Trainer subclasses of other
    libraries.

    Example:
        >>> Seq2SeqGeta = with_geta(transformers.Seq2SeqTrainer)                # doctest: +SKIP
    """
    return type(f"Geta{trainer_cls.__name__}", (GetaTrainerMixin, trainer_cls), {})
