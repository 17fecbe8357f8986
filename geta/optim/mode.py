"""Compression modes: what a mode receives from the :class:`geta.Compressor` and what it gives
back, and the registry that makes a mode one folder (``geta/optim/<mode>/``).

A mode is a :class:`CompressionMode` subclass registered with :func:`register_mode` under a
name (what ``Compressor(mode=...)`` and ``geta compress --mode`` accept) and a config type
(``Compressor(config=...)`` with an instance of that type selects the mode). The Compressor
has already prepared the model (learnable quantizers on its layers), traced the
quantization-aware dependency graph and built the :class:`~geta.optim.problem.
CompressionProblem` (graph, groups, cost model, budget target, bit options); the mode

- checks that the settings suit it (:meth:`CompressionMode.check`), and may tighten the
  feasibility test (:meth:`CompressionMode.smallest_cost`);
- says which quantizer parameters train by gradient (:meth:`CompressionMode.learned_quantizer_params`);
- may search a policy on data before training (:meth:`CompressionMode.search`, run by
  :meth:`geta.Compressor.search`; a mode that does sets ``searches = True``);
- builds the optimizer (:meth:`CompressionMode.optimizer`), an object with the
  :class:`ModeOptimizer` interface: a ``torch.optim.Optimizer`` for any training loop that
  brings the model to its final state by the end of training or on ``finish()``, reports
  which graph units it removed (``zeroed``; the Compressor prunes them physically), its stage
  and history (for reports and plots), and saves and restores its state.

Example (a mode in a test or a plugin; nothing in geta changes):
    >>> @register_mode                                                     # doctest: +SKIP
    ... class Dense(CompressionMode):
    ...     name, config_type = "dense-qat", DenseConfig
    ...     def optimizer(self, compressor, groups, total_steps, **kw):
    ...         return DenseOptimizer(groups, compressor.problem, **kw)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from geta.errors import ConfigError
from geta.quant.prepare import weight_quantizers

if TYPE_CHECKING:
    from geta.compressor import Compressor

__all__ = [
    "ClipLearningMode",
    "CompressionMode",
    "ModeOptimizer",
    "ModeSearch",
    "SearchData",
    "register_mode",
    "mode_named",
    "mode_for_config",
    "registered_modes",
]


@runtime_checkable
class ModeOptimizer(Protocol):
    """What every mode's optimizer provides besides ``torch.optim.Optimizer``'s ``step``,
    ``zero_grad``, ``param_groups``, ``state_dict`` and ``load_state_dict``."""

    history: list[dict[str, float]]

    @property
    def stage(self) -> str:
        """Where the run is (e.g. ``"warmup"``, ``"admm"``, ``"finetune"``), for reports."""
        ...

    @property
    def zeroed(self) -> np.ndarray:
        """One flag per graph unit (``problem.units``): removed, to be pruned physically."""
        ...

    def finish(self) -> None:
        """Bring the model to its final state now (masks held, bits frozen, budget met)."""
        ...

    def removal_counts(self) -> tuple[int, int]:
        """(removed, total) units, in the mode's own unit (groups' units, or weights)."""
        ...


@dataclass
class SearchData:
    """What a searching mode evaluates policies on: ``train`` batches ``(inputs, targets)``
    for the short recovery after each policy (fine-tuning or BN re-calibration), ``heldout``
    batches for the reward (a split of the training data, never the test set), and the
    training ``loss(outputs, targets)``."""

    train: Iterable
    heldout: Iterable
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy


@runtime_checkable
class ModeSearch(Protocol):
    """What :meth:`CompressionMode.search` returns: the finished search."""

    history: list[dict[str, float]]  # one row per episode (reward, best reward so far, ...)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (episodes, rewards, best policy, seconds) for reports and
        plots."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume the search (tensors and plain values)."""
        ...


class CompressionMode:
    """A compression mode's handler. Subclasses set ``name`` and ``config_type`` and
    implement :meth:`optimizer`; the other hooks have defaults that suit a mode which learns
    every quantizer parameter and removes graph units."""

    name: str = ""
    config_type: type | None = None  # Compressor(config=<an instance>) selects this mode
    config_field: str | None = None  # where CompressorConfig keeps it (serialized with runs)
    aliases: tuple[str, ...] = ()
    searches: bool = False  # chooses its policy by Compressor.search before training
    scores_on_heldout: bool = True  # its search scores policies on held-out batches
    metrics: tuple[str, ...] = ("size", "bops")  # the Budget metrics its planning supports
    # works on FSDP2-sharded models: its optimizer touches the model only inside
    # geta.distributed.gathered (WrappedOptimizer._full_parameters)
    shards: bool = False

    def settings(self, compressor: Compressor) -> Any:
        """This mode's settings: its field of ``compressor.config``, the mode config given to
        the Compressor, or the whole :class:`geta.CompressorConfig`."""
        if self.config_field:
            return getattr(compressor.config, self.config_field)
        return compressor.mode_config if compressor.mode_config is not None else compressor.config

    def check(self, compressor: Compressor) -> None:
        """Raise :class:`geta.ConfigError` for settings this mode cannot run."""

    def smallest_cost(self, compressor: Compressor) -> float | None:
        """The least cost this mode can reach, or ``None`` for the groups' default bound."""
        return None

    def channel_multiple(self, compressor: Compressor) -> int:
        """The channel alignment of this mode's plans (:mod:`geta.optim.alignment`): by
        default ``CompressorConfig.channel_multiple``."""
        return compressor.config.channel_multiple

    def learned_quantizer_params(self, compressor: Compressor) -> list[nn.Parameter] | None:
        """The quantizer parameters that get gradients; ``None``: all of them."""
        return None

    def stepped_quantizer_params(
        self, compressor: Compressor, learned: list[nn.Parameter]
    ) -> list[nn.Parameter]:
        """Of the ``learned`` quantizer parameters, those the optimizer moves (default: all)."""
        return learned

    def search(
        self,
        compressor: Compressor,
        data: SearchData,
        *,
        state: dict[str, Any] | None = None,
        progress: bool = True,
        on_episode: Callable[[dict[str, Any]], None] | None = None,
    ) -> ModeSearch | None:
        """Search the policy the optimizer will train (``None``: this mode has nothing to
        search). ``state`` resumes a search from its ``state_dict``; ``on_episode`` receives
        that state after every episode (to checkpoint it)."""
        return None

    def budget_label(self, compressor: Compressor) -> str:
        """How a report names the target when there is no budget."""
        return "no budget"

    def optimizer(
        self, compressor: Compressor, groups: list[dict], total_steps: int, **kwargs: Any
    ) -> ModeOptimizer:
        """The optimizer for ``groups`` (weights, then quantizer parameters at ``lr_quant``);
        ``kwargs``: ``base``, ``check_finite``, ``lr`` and the base optimizer's settings."""
        raise NotImplementedError


class ClipLearningMode(CompressionMode):
    """A mode whose optimizer holds each weight quantizer at fixed bits while its clip learns
    (the step follows the clip; its gradient is folded into the clip's), when the mode's
    settings say ``learn_clip``: budget ADMM's fine-tuning, AJPQ's QAT."""

    def learned_quantizer_params(self, compressor: Compressor) -> list[nn.Parameter]:
        """Each weight quantizer's clip and step where clips learn, else none."""
        if not self.settings(compressor).learn_clip:
            return []
        return [p for q in weight_quantizers(compressor.model).values() for p in (q.q_m, q.d)]

    def stepped_quantizer_params(
        self, compressor: Compressor, learned: list[nn.Parameter]
    ) -> list[nn.Parameter]:
        """The step follows the clip: it has a gradient, but the optimizer does not move it."""
        steps = {id(q.d) for q in weight_quantizers(compressor.model).values()}
        return [p for p in learned if id(p) not in steps]


_MODES: dict[str, CompressionMode] = {}
_BY_CONFIG: dict[type, CompressionMode] = {}


def register_mode(cls: type[CompressionMode]) -> type[CompressionMode]:
    """Class decorator: register a mode under its ``name`` (and ``aliases``) and, first come,
    as the mode its ``config_type`` selects."""
    if not cls.name:
        raise ConfigError(f"{cls.__name__} needs a name to be registered as a mode")
    handler = cls()
    for name in (cls.name, *cls.aliases):
        _MODES[name] = handler
    if cls.config_type is not None:
        _BY_CONFIG.setdefault(cls.config_type, handler)
    return cls


def registered_modes() -> tuple[str, ...]:
    """The names ``Compressor(mode=...)`` and ``geta compress --mode`` accept, sorted."""
    return tuple(sorted(_MODES))


def mode_named(name: str) -> CompressionMode:
    """The handler registered as ``name``.

    Raises:
        ConfigError: no mode has that name.
    """
    try:
        return _MODES[name]
    except KeyError:
        raise ConfigError(
            f"unknown mode {name!r}; available: {', '.join(registered_modes())}"
        ) from None


def mode_for_config(config: Any) -> CompressionMode | None:
    """The mode an instance of a registered config type selects (``None`` for others)."""
    for kind in type(config).__mro__:
        if kind in _BY_CONFIG:
            return _BY_CONFIG[kind]
    return None
