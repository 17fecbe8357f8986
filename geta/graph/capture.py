"""Capture a model with ``torch.export`` and build its dependency graph."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from geta.errors import TraceError
from geta.graph.analysis import analyze
from geta.graph.dependency_graph import DependencyGraph

logger = logging.getLogger(__name__)

__all__ = ["trace", "export_program", "capture_context", "register_capture_context"]

CaptureContext = Callable[[nn.Module], "contextlib.AbstractContextManager | None"]
"""Given a model, the context to capture it in (``None``: this hook has nothing to do)."""

_CAPTURE_CONTEXTS: list[CaptureContext] = []


def register_capture_context(hook: CaptureContext) -> CaptureContext:
    """Run ``hook(model)``'s context around every capture of a model (``geta.trace``, the
    Compressor's example passes): :mod:`geta.hf` switches a transformers model's KV cache off
    this way, so nothing outside it needs to know about transformers.

    Example:
        >>> @register_capture_context                                   # doctest: +SKIP
        ... def no_cache(model):
        ...     return my_library.cache_off(model) if my_library.owns(model) else None
    """
    if hook not in _CAPTURE_CONTEXTS:
        _CAPTURE_CONTEXTS.append(hook)
    return hook


@contextlib.contextmanager
def capture_context(model: nn.Module) -> Iterator[None]:
    """The registered capture contexts of ``model``, entered in registration order."""
    with contextlib.ExitStack() as stack:
        for hook in _CAPTURE_CONTEXTS:
            context = hook(model)
            if context is not None:
                stack.enter_context(context)
        yield


_HINTS = [
    (
        ("past_key_values", "DynamicCache", "use_cache", "Cache"),
        "decoder models must be captured without a KV cache: set model.config.use_cache = False "
        "or pass use_cache=False in example_kwargs",
    ),
    (
        ("data-dependent", "data dependent", "GuardOnDataDependent", "item()"),
        "the forward branches on tensor values; make that branch depend on shapes or module "
        "attributes, or move it out of forward",
    ),
    (
        ("missing", "positional argument", "unexpected keyword"),
        "pass positional inputs in example_args and keyword inputs (dict inputs, attention masks) "
        "in example_kwargs",
    ),
    (("meta",), "on the meta device, pass example inputs on the meta device too"),
    (
        ("Expected all tensors to be on the same device",),
        "put the example inputs on the model's device",
    ),
]


def _hint(message: str) -> str:
    for needles, hint in _HINTS:
        if any(n in message for n in needles):
            return hint
    return "check that the model runs eagerly on these inputs; see the torch.export docs for unsupported Python constructs"


@contextlib.contextmanager
def _without_stack_traces() -> Iterator[None]:
    """Capture without a Python stack trace per node: geta never reads ``stack_trace`` (it
    reads ``nn_module_stack``), and extracting one per node is about a quarter of a large
    model's capture (Llama-2-7B-shaped: 1,925 nodes, ~1.2 s of ~5 s)."""
    before = torch.fx.config.do_not_emit_stack_traces
    torch.fx.config.do_not_emit_stack_traces = True
    try:
        yield
    finally:
        torch.fx.config.do_not_emit_stack_traces = before


def export_program(
    model: nn.Module, example_args: tuple, example_kwargs: Mapping[str, Any] | None
) -> torch.export.ExportedProgram:
    """``torch.export.export(strict=False)`` in the model's :func:`capture_context`, with
    geta's error handling; the model's train/eval mode is left as found."""
    was_training = {m: m.training for m in model.modules()}
    try:
        with warnings.catch_warnings(), capture_context(model), _without_stack_traces():
            warnings.simplefilter("ignore")
            return torch.export.export(
                model, tuple(example_args), dict(example_kwargs or {}), strict=False
            )
    except Exception as err:
        message = f"{type(err).__name__}: {err}".strip()
        first = message.splitlines()[0][:500] if message else type(err).__name__
        raise TraceError(
            f"could not capture {type(model).__name__} with torch.export: {first}\nhint: {_hint(message)}"
        ) from err
    finally:
        for m, mode in was_training.items():
            m.training = mode


def tensor_aliases(model: nn.Module) -> dict[str, str]:
    """Map each name of a tied parameter or buffer to the first name of the same tensor."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    named = [
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ]
    for name, tensor in named:
        canonical = first.setdefault(id(tensor), name)
        if canonical != name:
            aliases[name] = canonical
    return aliases


def trace(
    model: nn.Module,
    example_args: Any = (),
    example_kwargs: Mapping[str, Any] | None = None,
    *,
    validate: bool = True,
    through_norms: bool = False,
) -> DependencyGraph:
    """Capture ``model`` and find its prunable groups.

    Args:
        model: any ``nn.Module``, on CPU, GPU or the meta device. Its train/eval mode is kept
            (the graph is the one of the current mode).
        example_args: positional example inputs (a tensor or a tuple).
        example_kwargs: keyword example inputs (for example ``input_ids``/``attention_mask``).
        validate: prune one unit of every group on a meta-device copy, capture it again and
            check every shape; groups whose sizes the forward code hard-codes are blocked.
        through_norms: also prune the dims that LayerNorm / RMSNorm average over (a
            transformer's hidden size). Such groups are ``kind == "hidden"`` and inexact
            (``group.exact`` is False: removing a unit changes the norm's statistics, so the
            pruned model needs fine-tuning); a warning says how many there are.

    Returns:
        A :class:`DependencyGraph`.

    Raises:
        TraceError: the model cannot be captured; the message says why and what to try.

    Example:
        >>> import torch, torchvision, geta
        >>> graph = geta.trace(torchvision.models.resnet18(), torch.randn(1, 3, 64, 64))
        >>> len(graph.groups)
        12
    """
    if not isinstance(model, nn.Module):
        raise TraceError(f"geta.trace expects an nn.Module, got {type(model).__name__}")
    if isinstance(example_args, torch.Tensor):
        example_args = (example_args,)
    example_args = tuple(example_args)
    start = time.perf_counter()
    program = export_program(model, example_args, example_kwargs)
    options = frozenset({"through_norms"} if through_norms else ())
    graph = DependencyGraph(program, analyze(program, tensor_aliases(model), options))
    graph.example_inputs = (example_args, dict(example_kwargs or {}))
    if graph.unsupported_ops:
        ops = sorted({u.op for u in graph.unsupported_ops})
        warnings.warn(
            f"geta: {len(graph.unsupported_ops)} op(s) without a rule ({', '.join(ops[:8])}); the "
            "channels they touch are not pruned. Add a rule with "
            "geta.graph.rules.register_rule(op) to prune through them.",
            stacklevel=2,
        )
    if validate and graph.groups:
        from geta.graph.validate import validate_groups

        validate_groups(model, graph)
    inexact = [g for g in graph.groups if not g.exact]
    if inexact:
        warnings.warn(
            f"geta: {len(inexact)} group(s) prune through a LayerNorm / RMSNorm (group.exact is "
            "False): pruning them changes the outputs of the units that stay; fine-tune after",
            stacklevel=2,
        )
    graph.build_seconds = time.perf_counter() - start
    logger.info(
        "traced %s: %d groups in %.2fs",
        type(model).__name__,
        len(graph.groups),
        graph.build_seconds,
    )
    return graph
