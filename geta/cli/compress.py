"""``geta compress``: train (or reuse) a dense baseline, compress it under a budget, write the
artifact, a JSON report and plots. Every epoch is checkpointed, so an interrupted run resumes.

    result = run_compress(CompressSpec(), "geta-out")          # the embedded demo
    result = run_compress(CompressSpec(), "geta-out", resume=True)
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from geta.cli.baseline import baseline_key, load_baseline, store_baseline
from geta.cli.data import Data, load_data
from geta.cli.methods import MethodRun, SearchSetup, start_method
from geta.cli.models import LoadedModel, load_model
from geta.cli.run_state import (
    CHECKPOINT,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from geta.cli.spec import CompressSpec
from geta.errors import ConfigError
from geta.optim.mode import SearchData, mode_named, registered_modes
from geta.optim.report import CompressionReport
from geta.training import evaluate_metrics, train_epoch

__all__ = ["RunHistory", "RunResult", "run_compress", "ARTIFACT"]

ARTIFACT = "artifact"
SEARCH_STATE = "search.pt"  # a searching mode's state after its last episode (for --resume)
SAMPLES_PER_EPOCH = 20  # loss / cost samples per epoch for the plots
MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4
DENSE, COMPRESS = "dense", "compress"


@dataclass
class RunHistory:
    """Per-epoch rows (phase, epoch, train and test loss, test accuracy, seconds; in the
    compression phase also the measured cost and the stage) and finer samples over training
    (``trace``: mean training loss over each twentieth of an epoch, and the cost)."""

    epochs: list[dict[str, Any]] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)

    def seconds(self, phase: str) -> float:
        return float(sum(row["seconds"] for row in self.epochs if row["phase"] == phase))

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": list(self.epochs), "trace": list(self.trace)}


@dataclass
class RunResult:
    """What a run achieved; :mod:`geta.cli.results` writes it as ``report.json`` and a table."""

    spec: CompressSpec
    out: Path
    artifact: Path
    dense: dict[str, Any]
    accuracy: float
    loss: float
    artifact_accuracy: float
    accuracy_before_finalize: float
    validation_accuracy: float | None
    method_settings: dict[str, Any]
    report: CompressionReport
    history: RunHistory
    seconds: dict[str, float]
    data_shape: tuple[int, ...]
    samples: dict[str, int]
    num_classes: int
    steps_per_epoch: int


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _fit_data(loaded: LoadedModel, data: Data, spec: CompressSpec) -> Data:
    """The data as the model takes it: as is, or single-channel images repeated to three
    channels (torchvision models); the model's outputs must cover the data's classes."""
    candidates = [data] + ([data.with_channels(3)] if data.sample_shape[0] == 1 else [])
    model = loaded.model
    was_training = model.training
    model.eval()
    first_error: Exception | None = None
    try:
        for candidate in candidates:
            try:
                with torch.no_grad():
                    out = model(candidate.test.tensors[0][:2])
            except Exception as err:
                first_error = first_error or err
                continue
            if not (isinstance(out, torch.Tensor) and out.dim() == 2 and len(out) == 2):
                raise ConfigError(
                    f"{spec.model} returns {type(out).__name__}"
                    f"{list(out.shape) if isinstance(out, torch.Tensor) else ''}, not class "
                    "scores (batch x classes)"
                )
            if out.shape[1] < data.num_classes:
                raise ConfigError(
                    f"{spec.model} has {out.shape[1]} outputs; {spec.data} has "
                    f"{data.num_classes} classes"
                )
            return candidate
    finally:
        model.train(was_training)
    shape = "x".join(map(str, data.sample_shape))
    raise ConfigError(
        f"{spec.model} does not run on {spec.data} images ({shape}): {first_error}"
    ) from None


class _Sampler:
    """Called after every step of one epoch: every twentieth of the epoch it records the mean
    training loss since the last sample and ``measure()`` (the cost) in the history's trace."""

    def __init__(
        self,
        phase: str,
        epoch: int,
        steps: int,
        measure: Callable[[], dict[str, Any]],
        history: RunHistory,
        bar: tqdm,
        target: float | None,
    ) -> None:
        self.phase, self.epoch, self.steps = phase, epoch, steps
        self.every = max(1, steps // SAMPLES_PER_EPOCH)
        self.measure, self.history, self.bar = measure, history, bar
        self.window: list[float] = []
        self.target = target

    def __call__(self, i: int, loss: float) -> None:
        self.window.append(loss)
        if (i + 1) % self.every and i + 1 != self.steps:
            return
        row = {"phase": self.phase, "epoch": self.epoch + (i + 1) / self.steps}
        row.update(loss=_mean(self.window), **self.measure())
        self.history.trace.append(row)
        self.window.clear()
        self.bar.set_postfix(_postfix(row, self.target), refresh=False)


class _Run:
    """One invocation of ``geta compress``: state shared by its phases."""

    def __init__(
        self,
        spec: CompressSpec,
        out: Path,
        progress: bool,
        log: Callable[[str], None],
        on_epoch: Callable[[str, int], None] | None,
    ) -> None:
        self.spec = spec
        self.out = out
        self.progress = progress
        self.log = log
        self.on_epoch = on_epoch
        self.history = RunHistory()
        self.generator = torch.Generator()
        self.dense_info: dict[str, Any] | None = None
        self.dense_state: dict[str, torch.Tensor] | None = None
        self.target: float | None = None  # the budget in cost units, once compressing
        self.checkpoints = True  # every epoch, unless the method cannot resume

        torch.manual_seed(spec.dense_seed_or_seed)
        self.generator.manual_seed(spec.dense_seed_or_seed)
        data, self.validation = split_validation(load_data(spec.data, spec.limit), spec.validation)
        if spec.train_limit is not None:
            images, labels = data.train.tensors
            subset = TensorDataset(images[: spec.train_limit], labels[: spec.train_limit])
            data = Data(data.spec, subset, data.test)
        self.loaded = load_model(
            spec.model,
            num_classes=data.num_classes,
            in_channels=data.sample_shape[0],
            image_size=data.sample_shape[-1],
        )
        if self.loaded.hf:
            raise ConfigError(
                "run_compress trains image classifiers; an hf: model on text runs through "
                "geta.hf.run.run_hf_compress (on the command line: geta compress --model "
                "hf:PATH --task ... --data FILE)"
            )
        self.data = _fit_data(self.loaded, data, spec)
        self.loaded.model.to(spec.device)  # batches follow the model (geta.training)
        self.example = (self.data.test.tensors[0][:2].clone().to(spec.device),)
        drop_last = len(self.data.train) >= spec.batch_size
        self.train_loader = DataLoader(
            self.data.train,
            batch_size=spec.batch_size,
            shuffle=True,
            generator=self.generator,
            drop_last=drop_last,
        )
        self.test_loader = DataLoader(self.data.test, batch_size=1000)
        self.validation_loader = (
            DataLoader(self.validation.with_channels(self.data.sample_shape[0]).train, 1000)
            if self.validation is not None
            else None
        )
        self.steps = len(self.train_loader)

    def validation_accuracy(self, model: nn.Module) -> float | None:
        """Accuracy on the held-out training samples (``None`` without a validation split)."""
        if self.validation_loader is None:
            return None
        return evaluate_metrics(model, self.validation_loader)[1]

    # ------------------------------------------------------------ epochs
    def _bar(self, phase: str, epochs: int, done: int) -> tqdm:
        desc = DENSE if phase == DENSE else f"compress {self.spec.budget}"
        return tqdm(
            total=epochs * self.steps,
            initial=done * self.steps,
            desc=desc,
            unit="step",
            disable=not self.progress,
            dynamic_ncols=True,
        )

    def _epochs(
        self,
        phase: str,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        start: int,
        total: int,
        measure: Callable[[], dict[str, Any]],
    ) -> None:
        """Epochs ``start .. total - 1`` of ``phase``, each one evaluated, recorded and
        checkpointed."""
        with self._bar(phase, total, start) as bar:
            for epoch in range(start, total):
                began = time.perf_counter()
                sampler = _Sampler(
                    phase, epoch, self.steps, measure, self.history, bar, self.target
                )
                losses = train_epoch(
                    model,
                    self.train_loader,
                    optimizer,
                    scheduler=scheduler,
                    on_step=sampler,
                    bar=bar,
                )
                test_loss, accuracy = evaluate_metrics(model, self.test_loader)
                row = {
                    "phase": phase,
                    "epoch": epoch + 1,
                    "train_loss": _mean(losses),
                    "test_loss": test_loss,
                    "test_accuracy": accuracy,
                }
                row.update(measure(), seconds=time.perf_counter() - began)
                self.history.epochs.append(row)
                bar.set_postfix(_postfix(row, self.target))
                if self.checkpoints:
                    self._checkpoint(phase, epoch + 1, model, optimizer, scheduler)
                if self.on_epoch is not None:
                    self.on_epoch(phase, epoch + 1)

    def _checkpoint(self, phase: str, epoch: int, model, optimizer, scheduler) -> None:
        save_checkpoint(
            self.out / CHECKPOINT,
            {
                "spec": self.spec.to_dict(),
                "phase": phase,
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "dense_model": self.dense_state,
                "dense": self.dense_info,
                "history": self.history.to_dict(),
                "rng": rng_state(self.generator),
            },
        )

    def _restore(self, state: dict[str, Any], model, optimizer, scheduler) -> None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"], self.generator)

    # ------------------------------------------------------------ phases
    def dense(self, state: dict[str, Any] | None) -> None:
        """Train the dense baseline (or take it from the cache or the checkpoint)."""
        spec, model = self.spec, self.loaded.model
        if state is not None and state["phase"] == COMPRESS:
            self.dense_info, self.dense_state = state["dense"], state["dense_model"]
            return
        settings = {
            "model": spec.model,
            "data": self.data.fingerprint(),
            "epochs": spec.dense_epochs,
            "lr": spec.dense_lr,
            "batch_size": spec.batch_size,
            "seed": spec.dense_seed_or_seed,
        }
        key = baseline_key(model, settings)
        info = load_baseline(key, model) if state is None and spec.dense_epochs else None
        if info is not None:
            self.log(f"dense baseline from the cache: {info['accuracy']:.2%} test accuracy")
            info["cached"] = True
            self.history = RunHistory(**info.get("history", {}))
        else:
            if spec.dense_epochs:
                self._train_dense(state)
            loss, accuracy = evaluate_metrics(model, self.test_loader)
            info = {
                "accuracy": accuracy,
                "loss": loss,
                "validation_accuracy": self.validation_accuracy(model),
                "epochs": spec.dense_epochs,
                "seconds": self.history.seconds(DENSE),
                "history": self.history.to_dict(),
            }
            if spec.dense_epochs:
                store_baseline(key, model, info)
            info["cached"] = False
        info["key"] = key
        self.dense_info = info
        self.dense_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def _dense_optimizer(self) -> tuple[torch.optim.Optimizer, Any]:
        spec, model = self.spec, self.loaded.model
        optimizer = torch.optim.SGD(
            model.parameters(), lr=spec.dense_lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
        )
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, spec.dense_lr, total_steps=max(spec.dense_epochs, 1) * self.steps
        )
        return optimizer, scheduler

    def _train_dense(self, state: dict[str, Any] | None) -> None:
        spec, model = self.spec, self.loaded.model
        optimizer, scheduler = self._dense_optimizer()
        start = 0
        if state is not None:
            self._restore(state, model, optimizer, scheduler)
            self.history = RunHistory(**state["history"])
            start = state["epoch"]
        self.log(f"training the dense baseline: {spec.dense_epochs} epochs")
        self._epochs(DENSE, model, optimizer, scheduler, start, spec.dense_epochs, dict)

    def compress(self, state: dict[str, Any] | None) -> MethodRun:
        """Compress the baseline under the budget with the spec's method; returns the finished
        (not yet finalized) run."""
        spec, model = self.spec, self.loaded.model
        model.load_state_dict(self.dense_state)
        # the compression phase depends on the baseline and the seed only, not on whether the
        # baseline was trained now or read from the cache
        torch.manual_seed(spec.seed + 1)
        self.generator.manual_seed(spec.seed + 1)
        total = spec.epochs * self.steps
        run = start_method(spec, model, self.example, total, self._search_setup(state))
        self.target = run.target
        optimizer = run.optimizer
        scheduler = _scheduler(optimizer, spec.optimizer.schedule, total)
        start = 0
        if state is not None and state["phase"] == COMPRESS:
            self._restore(state, model, optimizer, scheduler)
            self.history = RunHistory(**state["history"])
            start = state["epoch"]
        self.checkpoints = run.resumable
        self.log(f"compressing to {spec.budget} ({spec.mode}): {spec.epochs} epochs")
        self._epochs(COMPRESS, model, optimizer, scheduler, start, spec.epochs, run.measure)
        return run

    def _search_setup(self, state: dict[str, Any] | None) -> SearchSetup | None:
        """The data a searching mode scores policies on (recovery on the training batches,
        reward on the validation split), resumed from ``search.pt`` when the run resumes; none
        once the compression phase has begun (its checkpoint holds the chosen policy)."""
        if not _searches(self.spec) or (state is not None and state["phase"] == COMPRESS):
            return None
        path = self.out / SEARCH_STATE
        saved = load_checkpoint(path) if state is not None and path.exists() else None
        if not (self.out / CHECKPOINT).exists():  # a cached baseline wrote none: --resume
            optimizer, scheduler = self._dense_optimizer()  # needs one to find the run
            self._checkpoint(DENSE, self.spec.dense_epochs, self.loaded.model, optimizer, scheduler)

        def checkpoint(search_state: dict[str, Any]) -> None:
            save_checkpoint(path, {"search": search_state})

        return SearchSetup(
            SearchData(self.train_loader, self.validation_loader or []),
            state=saved["search"] if saved is not None else None,
            on_episode=checkpoint,
            progress=self.progress,
        )


def _searches(spec: CompressSpec) -> bool:
    """Whether the run's mode searches its policy before training (AJPQ)."""
    return spec.mode in registered_modes() and mode_named(spec.mode).searches


def _check_search_data(spec: CompressSpec) -> None:
    """A mode that searches its policy scores it on held-out training data: refuse a run
    without a validation split before the dense baseline trains."""
    if _searches(spec) and mode_named(spec.mode).scores_on_heldout and not spec.validation:
        raise ConfigError(
            f"mode {spec.mode!r} scores candidate policies on held-out training data: pass "
            "--validation N (e.g. --validation 5000; never the test set)"
        )


def _scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, total: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total)


def split_validation(data: Data, count: int) -> tuple[Data, Data | None]:
    """``count`` training samples held out for validation (a fixed random draw: the same for
    every seed and method), as ``(data without them, their Data)``; ``count=0``: no split.

    Raises:
        ConfigError: ``count`` leaves no training data.
    """
    if count == 0:
        return data, None
    images, labels = data.train.tensors
    if count >= len(labels):
        raise ConfigError(
            f"--validation {count} leaves no training data ({len(labels)} training samples)"
        )
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    held, kept = order[:count].sort().values, order[count:].sort().values
    train = TensorDataset(images[kept], labels[kept])
    validation = TensorDataset(images[held], labels[held])
    return Data(data.spec, train, data.test), Data(data.spec, validation, validation)


def _postfix(row: dict[str, Any], target: float | None) -> dict[str, str]:
    out = {"loss": f"{row.get('train_loss', row.get('loss', float('nan'))):.3f}"}
    if "test_accuracy" in row:
        out["acc"] = f"{row['test_accuracy']:.1%}"
    if row.get("cost") is not None and target:
        out["cost/budget"] = f"{row['cost'] / target:.2f}"
    if row.get("stage"):
        out["stage"] = row["stage"]
    return out


def prepare_out(
    out: Path, resume: bool, options: dict[str, Any], base: CompressSpec | None = None
) -> tuple[CompressSpec, dict | None]:
    """The spec of the run and its checkpoint (when resuming). A fresh run takes ``base`` (a
    description file's, default the demo's) with ``options`` over it, and refuses a directory
    holding an unfinished run; ``--resume`` takes the saved settings and refuses options that
    differ from them."""
    checkpoint = out / CHECKPOINT
    if not resume:
        if checkpoint.exists():
            raise ConfigError(
                f"{out} holds an unfinished run ({CHECKPOINT}): pass --resume to continue it, or "
                "choose another --out"
            )
        return (base or CompressSpec()).with_options(options), None
    if base is not None:
        raise ConfigError("--resume takes the settings of the run in --out; leave out --config")
    state = load_checkpoint(checkpoint)
    spec = CompressSpec.from_dict(state["spec"])
    spec.check_resumable_with(options, str(out))
    return spec, state


def run_compress(
    spec: CompressSpec,
    out: str | Path,
    *,
    state: dict[str, Any] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    on_epoch: Callable[[str, int], None] | None = None,
) -> RunResult:
    """Run ``spec`` into ``out``: dense baseline, compression, artifact (``out/artifact``),
    ``report.json`` and plots; ``state`` is a checkpoint to resume from (see
    :func:`prepare_out`). ``on_epoch(phase, epoch)`` is called after each epoch's checkpoint.

    Example:
        >>> spec = CompressSpec(data="synthetic", epochs=1, dense_epochs=1, limit=256)  # doctest: +SKIP
        >>> run_compress(spec, "out/").report.ratio >= 30                                # doctest: +SKIP
        True
    """
    from geta.cli.results import write_outputs
    from geta.export import load

    began = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = _Run(spec, out, progress, log or (lambda _: None), on_epoch)
    if state is None or state["phase"] == DENSE:
        # an unreachable budget or unknown mode fails now, not after the dense baseline
        _check_search_data(spec)
        start_method(spec, copy.deepcopy(run.loaded.model), run.example, 1)
    run.dense(state)
    c = run.compress(state)
    finish_began = time.perf_counter()
    model = run.loaded.model
    _, before = evaluate_metrics(model, run.test_loader)
    c.finalize()
    loss, accuracy = evaluate_metrics(model, run.test_loader)
    validation = run.validation_accuracy(model)
    artifact = c.export(out / ARTIFACT, architecture=run.loaded.architecture)
    _, artifact_accuracy = evaluate_metrics(
        load(artifact, model=run.loaded.factory), run.test_loader
    )
    finishing = time.perf_counter() - finish_began
    result = RunResult(
        spec=spec,
        out=out,
        artifact=artifact,
        dense=run.dense_info,
        accuracy=accuracy,
        loss=loss,
        artifact_accuracy=artifact_accuracy,
        accuracy_before_finalize=before,
        validation_accuracy=validation,
        method_settings=dict(c.settings),
        report=c.report(),
        history=run.history,
        seconds={
            "dense": float(run.dense_info.get("seconds", 0.0)),
            "compress": run.history.seconds(COMPRESS) + finishing,
            "search": float(getattr(c, "search_seconds", 0.0)),
            "wall": time.perf_counter() - began,
        },
        data_shape=run.data.sample_shape,
        samples={
            "train": len(run.data.train),
            "validation": len(run.validation.train) if run.validation is not None else 0,
            "test": len(run.data.test),
        },
        num_classes=run.data.num_classes,
        steps_per_epoch=run.steps,
    )
    write_outputs(result)
    (out / CHECKPOINT).unlink(missing_ok=True)
    (out / SEARCH_STATE).unlink(missing_ok=True)
    return result
