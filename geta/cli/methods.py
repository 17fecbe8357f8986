"""The methods ``geta compress`` can run: geta's registered modes (through
:class:`geta.Compressor`), and any method other code
registers (the benchmarks register their baselines here, so they train in this same runner:
same data order, epochs, optimizer and schedule).

A method is a function ``start(spec, model, example_inputs, total_steps) -> MethodRun``; the
runner trains ``run.optimizer`` for ``total_steps`` steps in its own loop, then calls
``run.finalize()``, ``run.export(...)`` and ``run.report()``.

Example:
    >>> "geta" in run_methods()
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from geta import config as settings
from geta.compressor import Compressor
from geta.errors import ConfigError
from geta.optim.mode import SearchData, mode_named, registered_modes
from geta.optim.report import CompressionReport

if TYPE_CHECKING:
    from geta.cli.spec import CompressSpec

__all__ = [
    "MethodRun",
    "SearchSetup",
    "mode_settings",
    "register_run_method",
    "run_methods",
    "start_method",
]


class MethodRun(Protocol):
    """One compression run as the runner drives it."""

    optimizer: torch.optim.Optimizer
    resumable: bool  # its optimizer's state_dict restores the run (checkpoints, --resume)
    settings: dict[str, Any]  # what the method decided at the start, for the report
    target: float | None  # the budget in the cost's unit

    def measure(self) -> dict[str, Any]:
        """``{"cost": ..., "stage": ...}`` now (cost in the budget's unit, or None)."""

    def finalize(self) -> nn.Module:
        """The compressed model: removed units gone, quantizers at their final bits."""

    def report(self) -> CompressionReport: ...

    def export(self, path: str | Path, *, architecture: str | None = None) -> Path: ...


StartMethod = Callable[["CompressSpec", nn.Module, tuple, int], MethodRun]
_METHODS: dict[str, StartMethod] = {}


def register_run_method(name: str, start: StartMethod) -> StartMethod:
    """Make ``geta compress --mode NAME`` (and run descriptions naming it) run ``start``;
    its settings come from the description's ``method`` table."""
    _METHODS[name] = start
    return start


def run_methods() -> tuple[str, ...]:
    """geta's registered compression modes, then the other registered methods."""
    modes = registered_modes()
    return (*modes, *(name for name in _METHODS if name not in modes))


def start_method(
    spec: CompressSpec,
    model: nn.Module,
    example: tuple,
    steps: int,
    search: SearchSetup | None = None,
) -> MethodRun:
    """Start ``spec.mode`` on ``model`` for ``steps`` optimizer steps; a geta mode that
    searches its policy first (AJPQ) searches on ``search``'s data.

    Raises:
        ConfigError: the mode is not registered (or its settings are invalid).
    """
    if spec.mode not in _METHODS and spec.mode in registered_modes():
        return CompressorRun(spec, model, example, steps, search)
    if spec.mode not in _METHODS:
        hint = (
            " (the benchmarks' baselines register when benchmarks/baselines is imported: re-run "
            "their rows with benchmarks/frontier.py)"
            if spec.method
            else ""
        )
        raise ConfigError(
            f"unknown mode {spec.mode!r}; available: {', '.join(run_methods())}{hint}"
        )
    return _METHODS[spec.mode](spec, model, example, steps)


class SearchSetup:
    """The data a searching mode evaluates policies on (:class:`geta.optim.mode.SearchData`),
    the state to resume its search from, and where to hand its state after every episode."""

    def __init__(
        self,
        data: SearchData,
        state: dict[str, Any] | None = None,
        on_episode: Callable[[dict[str, Any]], None] | None = None,
        progress: bool = True,
    ) -> None:
        self.data, self.state, self.on_episode, self.progress = data, state, on_episode, progress


def mode_settings(spec: CompressSpec) -> Any:
    """What :class:`geta.Compressor` takes as ``config`` for ``spec.mode``: the run's
    :class:`geta.CompressorConfig`, or, for a mode whose own config type is not kept in it
    (AJPQ's :class:`geta.optim.AjpqConfig`), that config read from the ``method`` table; the
    run's ``config.channel_multiple`` (``--channel-multiple``) fills such a config's
    ``channel_multiple`` when the table leaves it out.

    Raises:
        ConfigError: ``method`` settings for a mode that takes them from ``config``, or two
            different channel multiples.
    """
    handler = mode_named(spec.mode)
    if handler.config_type is not None and handler.config_field is None:
        method = dict(spec.method)
        multiple = spec.config.channel_multiple
        has_field = "channel_multiple" in {f.name for f in fields(handler.config_type)}
        if has_field and multiple != 1:
            given = method.setdefault("channel_multiple", multiple)
            if given != multiple:
                raise ConfigError(
                    f"method.channel_multiple = {given} and config.channel_multiple = "
                    f"{multiple} differ; set one of them"
                )
        return settings.from_dict(handler.config_type, method, where="method")
    if spec.method:
        raise ConfigError(
            f"mode {spec.mode!r} takes its settings from 'config', not 'method' "
            f"(got method settings {sorted(spec.method)})"
        )
    return spec.config


class CompressorRun:
    """geta's modes through :class:`geta.Compressor`."""

    def __init__(
        self,
        spec: CompressSpec,
        model: nn.Module,
        example: tuple,
        steps: int,
        search: SearchSetup | None = None,
    ) -> None:
        self.compressor = Compressor(
            model, example, spec.budget, mode=spec.mode, config=mode_settings(spec)
        )
        self.search_seconds = 0.0
        if search is not None and self.compressor.handler.searches:
            found = self.compressor.search(
                search.data.train,
                search.data.heldout,
                loss=search.data.loss,
                state=search.state,
                progress=search.progress,
                on_episode=search.on_episode,
            )
            self.search_seconds = float(found.to_dict().get("seconds", 0.0)) if found else 0.0
        self.optimizer = self.compressor.optimizer(
            total_steps=steps, **spec.optimizer.kwargs(spec.lr)
        )
        self.resumable = True
        self.settings: dict[str, Any] = {}
        self.target = self.compressor.budget_target

    def measure(self) -> dict[str, Any]:
        return {"cost": self.compressor.current_cost(), "stage": self.optimizer.stage}

    def finalize(self) -> nn.Module:
        return self.compressor.finalize()

    def report(self) -> CompressionReport:
        return self.compressor.report()

    def export(self, path: str | Path, *, architecture: str | None = None) -> Path:
        return self.compressor.export(path, architecture=architecture)
