"""Capturing a transformers model: keyword example inputs built from its config, and the KV
cache switched off while ``torch.export`` runs (:func:`capture_mode`, which
:mod:`geta.hf` registers as a capture context, so ``geta.trace`` and the ``Compressor`` use it
on every transformers model)."""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from geta.graph.capture import trace as _trace
from geta.graph.dependency_graph import DependencyGraph

__all__ = ["capture_mode", "example_inputs", "hf_capture_context", "is_hf_model", "trace"]


def is_hf_model(model: Any) -> bool:
    """Whether ``model`` is a ``transformers.PreTrainedModel`` (transformers is not imported
    for the question: a model of its classes implies it already is)."""
    transformers = sys.modules.get("transformers")
    return transformers is not None and isinstance(model, transformers.PreTrainedModel)


def hf_capture_context(model: nn.Module) -> contextlib.AbstractContextManager | None:
    """The capture context of a transformers model (:func:`capture_mode`); ``None`` for any
    other model."""
    return capture_mode(model) if is_hf_model(model) else None


def _configs(model: nn.Module) -> list[Any]:
    """Every HF config object a model's modules hold, with their sub-configs."""
    import transformers

    found: dict[int, Any] = {}
    pending = [getattr(m, "config", None) for m in model.modules()]
    while pending:
        cfg = pending.pop()
        if not isinstance(cfg, transformers.PretrainedConfig) or id(cfg) in found:
            continue
        found[id(cfg)] = cfg
        pending.extend(getattr(cfg, key, None) for key in cfg.sub_configs)
    return list(found.values())


@contextlib.contextmanager
def capture_mode(model: nn.Module) -> Iterator[None]:
    """Switch the KV cache off on every config of ``model`` (``torch.export`` cannot capture
    a cache object); the user's settings come back afterwards, also after an error.

    Example:
        >>> with geta.hf.capture_mode(model):                       # doctest: +SKIP
        ...     graph = geta.trace(model, (), geta.hf.example_inputs(model))
    """
    saved = [(cfg, cfg.use_cache) for cfg in _configs(model) if hasattr(cfg, "use_cache")]
    try:
        for cfg, _ in saved:
            cfg.use_cache = False
        yield
    finally:
        for cfg, value in saved:
            cfg.use_cache = value


def _device(model: nn.Module) -> torch.device:
    tensor = next(iter([*model.parameters(), *model.buffers()]), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _image_size(cfg: Any) -> tuple[int, int]:
    size = getattr(cfg, "image_size", 32)
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def example_inputs(
    model: nn.Module, batch_size: int = 2, seq_len: int = 8, *, padding: bool = True
) -> dict[str, torch.Tensor]:
    """Keyword inputs for ``model`` built from its config: ``input_ids`` / ``attention_mask``
    / ``token_type_ids`` for text, ``pixel_values`` for images, ``input_features`` for speech,
    ``decoder_input_ids`` for encoder-decoders, as its ``forward`` accepts them.

    With ``padding`` the last sample's attention mask ends in padding, so the graph is
    captured with a real mask. Inputs are on the model's device (the meta device included).

    Example:
        >>> inputs = geta.hf.example_inputs(model)        # doctest: +SKIP
        >>> sorted(inputs)                                # doctest: +SKIP
        ['attention_mask', 'input_ids']
    """
    if not is_hf_model(model):
        raise TypeError(f"expected a transformers PreTrainedModel, got {type(model).__name__}")
    config = model.config
    accepted = set(inspect.signature(model.forward).parameters)
    text = config.get_text_config()
    vision = getattr(config, "vision_config", None) or config
    device = _device(model)
    gen = torch.Generator().manual_seed(0)
    out: dict[str, torch.Tensor] = {}

    def ids(length: int) -> torch.Tensor:
        vocab = int(getattr(text, "vocab_size", 100) or 100)
        return torch.randint(0, vocab, (batch_size, length), generator=gen)

    main = getattr(model, "main_input_name", "input_ids")
    if "input_ids" in accepted and (main == "input_ids" or "pixel_values" in accepted):
        out["input_ids"] = ids(seq_len)
        if "attention_mask" in accepted:
            mask = torch.ones(batch_size, seq_len, dtype=torch.long)
            if padding and batch_size > 1 and seq_len > 2:
                mask[-1, -max(1, seq_len // 4) :] = 0
            out["attention_mask"] = mask
        if "token_type_ids" in accepted and getattr(text, "type_vocab_size", 0):
            out["token_type_ids"] = torch.zeros(batch_size, seq_len, dtype=torch.long)
    if "pixel_values" in accepted:
        channels = int(getattr(vision, "num_channels", 3))
        out["pixel_values"] = torch.randn(batch_size, channels, *_image_size(vision), generator=gen)
    if "input_features" in accepted:
        frames = 2 * int(getattr(config, "max_source_positions", 1500))
        mels = int(getattr(config, "num_mel_bins", 80))
        out["input_features"] = torch.randn(batch_size, mels, frames, generator=gen)
    if getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" in accepted:
        out["decoder_input_ids"] = ids(max(2, seq_len // 2))
    return {k: v.to(device) for k, v in out.items()}


def trace(
    model: nn.Module,
    inputs: Mapping[str, Any] | None = None,
    *,
    validate: bool = True,
    hidden: bool = False,
) -> DependencyGraph:
    """:func:`geta.trace` for a transformers model: keyword inputs (``example_inputs`` when
    none are given), the KV cache off during capture, the user's config restored after.

    Heads (a key/value head with its query heads under grouped-query attention) and FFN
    channels come out as groups. With ``hidden`` the hidden size is pruned too, through every
    LayerNorm / RMSNorm: that group is ``kind == "hidden"`` and inexact (``group.exact`` is
    False, the norms' statistics change), so fine-tune after pruning it.

    Example:
        >>> model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2))  # doctest: +SKIP
        >>> graph = geta.hf.trace(model)                                             # doctest: +SKIP
        >>> [g.kind for g in graph.groups]                                           # doctest: +SKIP
        ['head', 'channel', 'head', 'channel']
    """
    if not is_hf_model(model):
        raise TypeError(f"expected a transformers PreTrainedModel, got {type(model).__name__}")
    kwargs = dict(inputs) if inputs is not None else example_inputs(model)
    with capture_mode(model):
        return _trace(model, (), kwargs, validate=validate, through_norms=hidden)
