"""The Compressor: one object from a float model and a budget to a small, quantized model and
its bit-packed artifact."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from geta import config
from geta.deployment.latency import LatencyTable, time_call, timed_inputs
from geta.distributed import is_sharded, structure_copy, unsharded_copy
from geta.errors import BudgetError, ConfigError, GetaError
from geta.export import artifact
from geta.graph import DependencyGraph, prune, trace
from geta.graph.capture import capture_context
from geta.optim.admm.config import AdmmConfig
from geta.optim.alignment import check_channel_multiple
from geta.optim.budget import Budget
from geta.optim.cost import output_positions
from geta.optim.mode import (
    CompressionMode,
    ModeOptimizer,
    ModeSearch,
    SearchData,
    mode_for_config,
    mode_named,
    registered_modes,
)
from geta.optim.oneshot.config import OneshotConfig
from geta.optim.problem import CompressionProblem
from geta.optim.projection import minimum_cost
from geta.optim.report import CompressionReport, measure_layers, measured_cost
from geta.quant import prepare, quantizers
from geta.quant.prepare import input_quantizers

__all__ = ["Compressor", "CompressorConfig"]

log = logging.getLogger("geta")

KERNEL_ACTIVATION_BITS = 8  # the int8 dynamic kernels' input width


@dataclass
class CompressorConfig:
    """Settings of a compression run; the defaults follow GETA's recipes except where a
    simpler rule measured better in the frontier benchmark (docs/compress.md, "Defaults and the
    published recipe"): per-channel quantizers, plans that count zero codes, Fisher saliency,
    plan bits instead of learned bits and a shorter warm-up. The published recipe stays one
    config away::

        CompressorConfig(per_channel=False, count_zero_codes=False, saliency="geta",
                         learned_bits=True, warmup=0.1, bit_reduction=0.1, joint=0.5)

    - ``bit_range``: the integer bits a layer may end with (``low >= 2``).
    - ``init_bits``: the quantizers' bits at the start (near float).
    - ``per_channel``: per-output-channel quantizer parameters (default) instead of one per
      tensor (GETA's).
    - ``quantize_embeddings`` / ``quantize_activations``: also quantize embedding tables /
      the inputs of conv and linear layers (activation bits count in BOPs).
    - ``saliency``: ``"fisher"`` (default: the diagonal-Fisher estimate of the loss a group's
      removal costs, 0.5 * sum F x^2, also weighting each layer's quantization distortion in the
      bit allocation), ``"geta"`` (the paper's five criteria), ``"magnitude"`` or ``"taylor"``
      (``|<x, g>|`` per unit, a running mean over the steps).
    - ``warmup``, ``bit_reduction``, ``joint``: stage lengths (fractions of the run, or steps);
      cool-down takes the rest (default 5% / 5% / 30%, so 60% of the run trains the final
      structure; GETA's 10% / 10% / 50% left too little at 300x). ``periods``: pruning periods
      in the joint stage.
    - ``count_zero_codes``: GETA mode plans with the expected count of nonzero codes (at 2-3
      bits many weights round to the zero code and cost nothing; counting every kept weight
      leaves much of the budget unused) and holds zero codes at zero in cool-down; the
      budget still holds exactly, and the delivered ratio lands near the asked one. Not
      applied under a latency budget: dense kernels spend the same time on a zero code.
    - ``learned_bits``: GETA's quantizer step learns each layer's bits between the lowest
      option and the (falling) upper bound, rounded at the freeze; off (default), the bits
      are the bound itself: the plan's integer bits from the end of bit reduction on, so the
      freeze changes nothing and training sees the final quantization throughout; the
      quantizers' exponent ``t`` then stays 1 (uniform levels; the step and the clip learn).
    - ``max_group_sparsity``: the largest share of any one group that may be removed.
    - ``equalise_groups``: rescale the unit importances of every group to the same mean
      before the budget projection, so units compete with their own group's on saliency and
      across groups on cost alone (Torch-Pruning's uniform ratio is the limit where every
      unit costs the same); off (default), one global ranking of importance per bit of cost.
    - ``keep_layers``: module names (a layer, or a block: every layer in it) whose output
      channels are never pruned (every group with a unit among them is held whole; their bits
      are still chosen), as Torch-Pruning's ``ignored_layers``.
    - ``channel_multiple``: every dimension pruning narrows keeps a multiple of this many
      indices (or stays whole), in every mode's plan, so pruned layers keep the widths fast
      kernels want (8 or 16; ``1``: any width). A group of channels keeps a multiple of N
      channels; a head is one unit and stays whole, and a head group keeps a multiple of
      ``N / gcd(N, head_dim)`` heads (one head for ``head_dim`` 64 and N 8); a group smaller
      than that stays whole. The budget still holds (:mod:`geta.optim.alignment`). Unstructured
      ADMM (``granularity="weight"``) removes single weights and never narrows a layer, so
      there is nothing to align; AJPQ takes it from ``AjpqConfig.channel_multiple``.
    - ``target_group_sparsity``: GETA's own target instead of a budget (share of all units).
    - ``admm``: the settings of ``mode="admm"`` / ``"admm-progressive"``
      (:class:`geta.AdmmConfig`); the stage and saliency settings above are GETA mode's.
    - ``oneshot``: the settings of ``mode="oneshot"`` (:class:`geta.optim.OneshotConfig`).
    """

    bit_range: tuple[int, int] = (2, 8)
    init_bits: float = 16
    per_channel: bool = True
    quantize_embeddings: bool = False
    quantize_activations: bool = False
    saliency: str = "fisher"
    warmup: float | int = 0.05
    bit_reduction: float | int = 0.05
    joint: float | int = 0.3
    periods: int = 5
    count_zero_codes: bool = True
    learned_bits: bool = False
    max_group_sparsity: float = 0.9
    equalise_groups: bool = False
    keep_layers: tuple[str, ...] = ()
    target_group_sparsity: float | None = None
    channel_multiple: int = 1
    admm: AdmmConfig = field(default_factory=AdmmConfig)
    oneshot: OneshotConfig = field(default_factory=OneshotConfig)

    def __post_init__(self) -> None:
        try:
            check_channel_multiple(self.channel_multiple)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain values (with a format version) for JSON/TOML; :meth:`from_dict` reads them."""
        return config.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompressorConfig:
        """The config :meth:`to_dict` wrote; unknown keys raise :class:`geta.ConfigError`."""
        return config.from_dict(cls, data)


class Compressor:
    """Compress ``model`` under ``budget`` inside your own training loop.

    It prepares the model with learnable quantizers (in place), traces the quantization-aware
    dependency graph, and checks that the budget can be met at all (:class:`geta.BudgetError`
    otherwise). Then :meth:`optimizer` gives the optimizer to train with, :meth:`finalize`
    removes the pruned groups physically, :meth:`export` writes the bit-packed artifact and
    :meth:`report` says what was achieved.

    Example:
        >>> c = geta.Compressor(model, (x,), budget=geta.Budget.size(ratio=50))    # doctest: +SKIP
        >>> opt = c.optimizer(base="sgd", lr=0.05, momentum=0.9, total_steps=steps) # doctest: +SKIP
        >>> for x, y in loader:                                                     # doctest: +SKIP
        ...     F.cross_entropy(model(x), y).backward(); opt.step(); opt.zero_grad()
        >>> small = c.finalize()          # physically pruned, quantized nn.Module   # doctest: +SKIP
        >>> c.export("out/")              # the bit-packed artifact                  # doctest: +SKIP
        >>> print(c.report())                                                       # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: tuple | Any,
        budget: Budget | str | None = None,
        mode: str | None = None,
        config: Any = None,
        example_kwargs: dict[str, Any] | None = None,
        graph: DependencyGraph | None = None,
    ) -> None:
        self.handler, self.config, self.mode_config = _select_mode(mode, config)
        self.mode = self.handler.name
        self.budget = Budget.parse(budget) if isinstance(budget, str) else budget
        self.handler.check(self)
        self._check_metric()
        args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        self.example_inputs = (args, dict(example_kwargs or {}))
        self.model = model
        self.fp32_bytes = sum(4 * t.numel() for t in model.state_dict().values())
        cfg = self.config
        self.latency_table = self._measure_latency() if self._latency else None
        prepare(
            model,
            init_bits=cfg.init_bits,
            per_channel=cfg.per_channel,
            embeddings=cfg.quantize_embeddings,
            activations=cfg.quantize_activations,
        )
        metric = self.budget.metric if self.budget is not None else "size"
        with capture_context(model):
            positions = output_positions(model, args, example_kwargs) if metric == "bops" else None
            self.graph = graph if graph is not None else trace(model, args, example_kwargs)
        self._hold_kept_layers()
        self._positions = positions
        self.problem = self._build_problem(model)
        # what finalize fills if the model gets sharded (FSDP2): modules only, no tensors
        self._structure = structure_copy(model) if self.handler.shards else None
        self._check_feasible()
        learned = {id(p) for p in self._learned_quantizer_params()}
        for p in self._quantizer_params():  # fixed now, before any DDP wrap
            p.requires_grad_(id(p) in learned)
        self._optimizer: ModeOptimizer | None = None
        self.search_result: ModeSearch | None = None
        self.finalized = False
        self.measured_latency_ms: float | None = None  # the deployed model, timed at finalize
        self.artifact_path: Path | None = None

    def _build_problem(self, model: nn.Module) -> CompressionProblem:
        cfg = self.config
        return CompressionProblem(
            model,
            self.graph,
            self.budget,
            bit_range=cfg.bit_range,
            positions=self._positions,
            max_group_sparsity=cfg.max_group_sparsity,
            target_group_sparsity=cfg.target_group_sparsity,
            saliency=cfg.saliency,
            equalise_groups=cfg.equalise_groups,
            count_zero_codes=cfg.count_zero_codes and not self._latency,
            channel_multiple=self.handler.channel_multiple(self),
            latency=self.latency_table,
        )

    def _check_sharding(self) -> None:
        if not self.handler.shards and is_sharded(self.model):
            supported = ", ".join(n for n in registered_modes() if mode_named(n).shards)
            raise ConfigError(
                f"mode {self.mode!r} does not run on a sharded (FSDP2) model; use "
                f"DistributedDataParallel with it, or one of the modes that shard: {supported}"
            )

    def _unshard(self) -> None:
        """Replace the sharded model by a plain one holding its full values (on every rank),
        which surgery can shrink; the problem is rebuilt on it."""
        self.model = unsharded_copy(self.model, self._structure)
        self._structure = None
        self.problem = self._build_problem(self.model)

    @property
    def _latency(self) -> bool:
        return self.budget is not None and self.budget.metric == "latency"

    def _check_metric(self) -> None:
        if self.budget is None:
            return
        if self.budget.metric not in self.handler.metrics:
            raise ConfigError(
                f"mode {self.mode!r} plans {' or '.join(self.handler.metrics)} budgets, not "
                f"{self.budget.metric}; use mode='geta' for a latency budget"
            )

    def _measure_latency(self) -> LatencyTable:
        """Time the float model and its layers on this machine (cached per machine and
        shape) for a latency budget: the kernels :func:`geta.deploy` will run them on."""
        cfg, (args, kwargs) = self.config, self.example_inputs
        lo, hi = cfg.bit_range
        with capture_context(self.model):
            return LatencyTable.measure(
                self.model,
                args,
                kwargs,
                batch=self.budget.batch,
                device=self.budget.device,
                bit_options=range(lo, hi + 1),
                quantized=lambda layer: cfg.quantize_embeddings or not layer.kind.embedding,
                per_channel=cfg.per_channel,
                activations=cfg.quantize_activations,
                pruned=self._uniformly_pruned,
            )

    def _uniformly_pruned(self, model: nn.Module, fraction: float) -> nn.Module | None:
        """A copy of the float ``model`` with every group pruned to ``fraction`` of its units
        (the latency table times it to see what the time between layers does when they
        shrink); ``None`` where the copy cannot be traced or pruned."""
        args, kwargs = self.example_inputs
        copied = copy.deepcopy(model)
        try:
            with capture_context(copied):
                graph = trace(copied, args, kwargs)
            plan = {
                g.id: list(range(g.size - max(1, round(g.size * fraction))))
                for g in graph.groups
                if g.size > 1
            }
            prune(copied, graph, {gid: idx for gid, idx in plan.items() if idx})
        except GetaError:
            return None
        return copied

    def _check_feasible(self) -> None:
        p = self.problem
        if p.target is None:
            return
        smallest = self.handler.smallest_cost(self)
        if smallest is None:
            smallest = minimum_cost(p.cost_model, p.bit_options, min_keep=p.min_keep)
        if smallest > p.target:
            dense = p.cost_model.dense_cost()
            aligned = (
                f" in multiples of {p.channel_multiple} channels" if p.channel_multiple > 1 else ""
            )
            if self._latency:
                rest = self.budget_target - p.target
                fastest = smallest + rest
                raise BudgetError(
                    f"budget {self.budget} ({self.budget_target:.3g} ms) cannot be met: the "
                    f"fastest model geta can reach (every group down to "
                    f"{1 - self.config.max_group_sparsity:.0%} of its units{aligned}) is "
                    f"predicted at {fastest:.3g} ms ({rest:.3g} ms of it outside the prunable "
                    f"weights) against {self.latency_table.dense_ms:.3g} ms dense: ask for at "
                    f"most {self.latency_table.dense_ms / fastest:.2f}x, or raise "
                    "max_group_sparsity",
                    min_cost=fastest,
                )
            raise BudgetError(
                f"budget {self.budget} cannot be met: the smallest model geta can reach "
                f"(every group down to {1 - self.config.max_group_sparsity:.0%} of its units"
                f"{aligned}, every layer at {int(p.bit_options[0])} bits) is "
                f"{dense / smallest:,.1f}x smaller. Ask for at most {dense / smallest:,.1f}x, "
                "or raise max_group_sparsity / lower bit_range"
                + (" / lower channel_multiple" if aligned else ""),
                min_cost=smallest,
            )

    # ------------------------------------------------------------ training
    def _learned_quantizer_params(self) -> list[nn.Parameter]:
        """The quantizer parameters the mode trains by gradient (GETA: all of them)."""
        learned = self.handler.learned_quantizer_params(self)
        return self._quantizer_params() if learned is None else learned

    def _quantizer_params(self) -> list[nn.Parameter]:
        return [p for q in quantizers(self.model) for p in q.parameters(recurse=False)]

    def _hold_kept_layers(self) -> None:
        """Block the groups with a unit among the output channels of ``keep_layers``."""
        names = set(self.config.keep_layers)
        if not names:
            return
        modules = {name for name, _ in self.model.named_modules()}
        unknown = sorted(names - modules)
        if unknown:
            raise ConfigError(
                f"keep_layers: {type(self.model).__name__} has no module named "
                f"{', '.join(map(repr, unknown))}; names are those of model.named_modules()"
            )
        kept = {  # a layer's tensors, wherever they sit (a parametrized weight's original)
            id(t)
            for name in names
            for part in (
                self.model.get_submodule(name).parameters,
                self.model.get_submodule(name).buffers,
            )
            for t in part()
        }
        tensors = {**dict(self.model.named_parameters()), **dict(self.model.named_buffers())}
        reason = "held whole: an output channel of a layer in CompressorConfig.keep_layers"
        held = {
            g.id: reason
            for g in self.graph.groups
            if any(m.role == "producer" and id(tensors.get(m.name)) in kept for m in g.members)
        }
        if held:
            self.graph.block_groups(held)

    def search(
        self,
        train: Iterable,
        heldout: Iterable,
        *,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
        state: dict[str, Any] | None = None,
        progress: bool = True,
        on_episode: Callable[[dict[str, Any]], None] | None = None,
    ) -> ModeSearch | None:
        """Let a searching mode (AJPQ) choose its policy before :meth:`optimizer`: each
        candidate is recovered briefly on ``train`` batches and scored on ``heldout`` batches
        (a split of the training data, never the test set). Other modes have nothing to
        search (``None``). ``state`` resumes a search from the ``state_dict`` that
        ``on_episode`` receives after every episode.

        Example:
            >>> c = geta.Compressor(model, (x,), "30x", config=geta.AjpqConfig())  # doctest: +SKIP
            >>> c.search(train_loader, heldout_loader)                              # doctest: +SKIP
            >>> opt = c.optimizer(lr=0.01, total_steps=steps)  # trains the best policy # doctest: +SKIP
        """
        self._check_sharding()
        self.search_result = self.handler.search(
            self,
            SearchData(train, heldout, loss),
            state=state,
            progress=progress,
            on_episode=on_episode,
        )
        return self.search_result

    def optimizer(
        self,
        base: str | type = "sgd",
        *,
        lr: float,
        total_steps: int,
        lr_quant: float | None = None,
        check_finite: bool = True,
        **base_kwargs: Any,
    ) -> ModeOptimizer:
        """The optimizer to train with for ``total_steps`` optimizer steps (the mode's).

        ``base`` is ``"sgd"``, ``"adam"``, ``"adamw"`` or an optimizer class; ``base_kwargs``
        go to it (momentum, weight_decay, betas...). In GETA mode quantizer parameters train
        with ``lr_quant`` (default ``lr / 10``) and no weight decay; in the ADMM modes the
        projections set them, and masked fine-tuning trains the clips at ``lr_quant``
        (``AdmmConfig.learn_clip``).
        """
        self._check_sharding()
        quant_params = self._quantizer_params()
        seen = {id(p) for p in quant_params}
        weights = [p for p in self.model.parameters() if id(p) not in seen and p.requires_grad]
        learned = self.handler.stepped_quantizer_params(self, self._learned_quantizer_params())
        quant_group = {"params": learned, "lr": lr_quant or lr / 10, "weight_decay": 0.0}
        self._optimizer = self.handler.optimizer(
            self,
            [{"params": weights}, quant_group],
            total_steps,
            base=base,
            check_finite=check_finite,
            lr=lr,
            **base_kwargs,
        )
        if self._latency and self.config.quantize_activations:
            self._hold_activation_bits()
            self._optimizer.register_step_post_hook(lambda *_: self._hold_activation_bits())
        return self._optimizer

    @torch.no_grad()
    def _hold_activation_bits(self) -> None:
        """Under a latency budget, inputs stay within 8 bits: the width the latency table
        timed their layers' kernels at (int8 dynamic activations for linear layers)."""
        for q in input_quantizers(self.model).values():
            if float(q.bits().max()) > KERNEL_ACTIVATION_BITS:
                q.project(2, KERNEL_ACTIVATION_BITS)

    # ------------------------------------------------------------ results
    def finalize(self) -> nn.Module:
        """Bring the model to its final state (removed units zero, bits frozen; done already
        when training ran to the end) and remove the zero groups physically. Returns the same
        model object, now smaller; its outputs equal the zeroed model's. A sharded (FSDP2)
        model is gathered first: every rank gets a new plain model holding the full values
        (``Compressor.model`` from then on), the sharded one is left as it was."""
        if self.finalized:
            return self.model
        opt = self._optimizer or self.optimizer(lr=0.0, total_steps=1)
        opt.finish()
        if is_sharded(self.model):
            self._unshard()
        plan = self.problem.units.to_plan(opt.zeroed)
        if plan:
            prune(self.model, self.graph, plan)
        self.finalized = True
        if self._latency:
            self.measured_latency_ms = self._time_deployed()
            if self.measured_latency_ms > self.budget_target:
                log.warning(
                    "the deployed model measured %.3g ms against a budget of %.3g ms (planned "
                    "%.3g ms): the latency table is optimistic for this model; ask for a "
                    "tighter budget (report().measured shows the time)",
                    self.measured_latency_ms,
                    self.budget_target,
                    self.current_cost(),
                )
        report = self.report()
        if not report.within_budget:  # an invariant; never expected
            raise BudgetError(
                f"finalized model is over budget: {report.achieved} > {report.target}"
            )
        return self.model

    def _time_deployed(self) -> float:
        """Milliseconds per forward of the finalized model as :func:`geta.deploy` runs it,
        at the budget's batch and device, timed as the latency table was."""
        from geta.deployment import deploy  # deployment imports the export side of geta

        device = self.budget.device
        deployed = deploy(self.model, "torch", config=self.latency_table.deploy_config)
        deployed = deployed.to(device).eval()
        args, kwargs = timed_inputs(*self.example_inputs, self.budget.batch)
        args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)
        kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        seconds = time_call({"model": lambda: deployed(*args, **kwargs)}, 7, device)
        return seconds["model"] * 1e3

    def export(
        self, path: str | Path, *, architecture: str | None = None, program: bool = False
    ) -> Path:
        """Write the bit-packed artifact (finalizing first if needed). ``architecture``
        (``"module:callable"``) lets :func:`geta.export.load` rebuild the model without a
        factory; ``program`` also writes a self-contained ``torch.export`` program."""
        if not self.finalized:
            self.finalize()
        args, _ = self.example_inputs
        self.artifact_path = artifact.save(
            self.model, path, architecture=architecture, example_inputs=args if program else None
        )
        return self.artifact_path

    def current_cost(self) -> float:
        """The model's cost now, in the budget's unit (bits of weight payload, BOPs, or
        predicted milliseconds), measured on the live model as :meth:`report` measures
        ``achieved``; compare it with :attr:`budget_target` to follow a run against its
        budget."""
        cm = self.problem.cost_model
        return measured_cost(cm) + cm.offset()

    @property
    def budget_target(self) -> float | None:
        """The budget in the unit of :meth:`current_cost` (for latency, whole-model
        milliseconds; :attr:`problem.target <geta.optim.problem.CompressionProblem.target>`
        is the part of them the plan controls)."""
        if self._latency:
            return float(self.budget.target(self.latency_table.dense_ms))
        return self.problem.target

    def report(self) -> CompressionReport:
        """Budget, achieved cost (measured on the model: nonzero quantized codes x bits), the
        papers' ratio, per-layer shapes, density and bits."""
        p = self.problem
        cm = p.cost_model
        rows, _, _ = measure_layers(cm)
        achieved = measured_cost(cm, rows)
        opt = self._optimizer
        artifact_bytes = None
        if self.artifact_path is not None:
            artifact_bytes = sum(f.stat().st_size for f in Path(self.artifact_path).iterdir())
        removed, total = opt.removal_counts() if opt is not None else (0, p.units.count)
        budget = str(self.budget) if self.budget else self.handler.budget_label(self)
        target, dense = self.budget_target, cm.dense_cost()
        if cm.metric == "latency":  # whole-model milliseconds: the plan's part and the rest
            achieved += cm.offset()
            dense = cm.latency.dense_ms
        return CompressionReport(
            mode=self.mode,
            budget=budget,
            metric=cm.metric,
            target=target,
            achieved=achieved,
            dense_cost=dense,
            measured=self.measured_latency_ms,
            layers=rows,
            removed_units=removed,
            total_units=total,
            stage="finalized" if self.finalized else (opt.stage if opt else "not started"),
            artifact_bytes=artifact_bytes,
            fp32_bytes=self.fp32_bytes,
            extra={
                "history": list(opt.history) if opt else [],
                **({"search": self.search_result.to_dict()} if self.search_result else {}),
            },
        )


def _select_mode(mode: str | None, config: Any) -> tuple[CompressionMode, CompressorConfig, Any]:
    """The mode, the run's :class:`CompressorConfig` and the mode's own config (or ``None``)
    from ``Compressor``'s ``mode`` and ``config``: a ``CompressorConfig`` (or nothing) runs
    ``mode`` (default ``"geta"``); a registered mode's config type selects its mode."""
    if config is None or isinstance(config, CompressorConfig):
        return mode_named(mode or "geta"), config or CompressorConfig(), None
    handler = mode_named(mode) if mode is not None else mode_for_config(config)
    if handler is None:
        raise ConfigError(
            f"config is a CompressorConfig or a registered mode's config; a "
            f"{type(config).__name__} selects none of {', '.join(registered_modes())}"
        )
    if handler.config_type is None or not isinstance(config, handler.config_type):
        wanted = handler.config_type.__name__ if handler.config_type else "CompressorConfig"
        raise ConfigError(f"mode {handler.name!r} takes a {wanted}, not a {type(config).__name__}")
    if handler.config_field:
        return handler, CompressorConfig(**{handler.config_field: config}), None
    return handler, CompressorConfig(), config
