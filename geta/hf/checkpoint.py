"""Compressed checkpoints of transformers models: :func:`save_pretrained` and
:func:`from_pretrained`.

A checkpoint directory holds the HF ``config.json``, ``geta.json`` (the per-layer shapes after
pruning) and the weights: ``model.safetensors`` for a float model, the bit-packed artifact of
:mod:`geta.export` (``manifest.json`` + ``weights.safetensors``) for a quantized one. Where the
config can express the pruned model (every layer the same shape, and a config with the fields
for it: :mod:`geta.hf.saved_config`), ``config.json`` carries the pruned sizes and plain
``transformers.AutoModel.from_pretrained`` loads the float checkpoint too.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geta.errors import ArtifactError
from geta.export.artifact import set_module_attributes
from geta.graph.module_adapters import adapt_model, adapt_module
from geta.hf.capture import is_hf_model
from geta.hf.families import adapt, family_of
from geta.hf.saved_config import build, changed_attributes, float_shapes, saved_config
from geta.quant.prepare import input_quantizers, weight_quantizers

__all__ = ["FORMAT", "VERSION", "from_pretrained", "save_pretrained"]

FORMAT = "geta-hf"
VERSION = 1
META = "geta.json"
FLOAT_WEIGHTS = "model.safetensors"


# ---------------------------------------------------------------------------- save
def _save_float_weights(model: nn.Module, file: Path) -> None:
    """The float tensors under the model's own names (tied tensors once), as transformers
    writes ``model.safetensors``."""
    from safetensors.torch import save_file

    from geta.export.artifact import _float_state

    state: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in _float_state(model)[0].items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            state[name] = tensor.detach().cpu().contiguous()
    save_file(state, str(file), metadata={"format": "pt"})


def save_pretrained(model: nn.Module, path: str | Path) -> Path:
    """Write a pruned (and possibly quantized) transformers model as a checkpoint directory.

    The directory holds ``config.json``, ``geta.json`` (the model class, the per-layer fields
    and every tensor's shape after pruning) and the weights: ``model.safetensors`` for a float
    model, the bit-packed :mod:`geta.export` artifact for a quantized one. Load it with
    :func:`from_pretrained`; when every layer has the same shape and the config has fields for
    it, ``config.json`` holds the pruned sizes and ``transformers.AutoModel.from_pretrained``
    loads the float checkpoint too (``geta.json`` says so under ``loads_in_transformers``).

    Example:
        >>> geta.prune(model, graph, plan)                         # doctest: +SKIP
        >>> geta.hf.save_pretrained(model, "out/")                 # doctest: +SKIP
        >>> small = geta.hf.from_pretrained("out/")                # doctest: +SKIP
    """
    if not is_hf_model(model):
        raise TypeError(f"expected a transformers PreTrainedModel, got {type(model).__name__}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    layers = adapt(model)
    config, plain = saved_config(model, layers)
    config.architectures = [type(model).__name__]
    quantized = bool(weight_quantizers(model) or input_quantizers(model))
    for stale in (FLOAT_WEIGHTS, "manifest.json", "weights.safetensors"):
        (path / stale).unlink(missing_ok=True)
    if quantized:
        from geta.export import save

        save(model, path)
        plain = False
    else:
        _save_float_weights(model, path / FLOAT_WEIGHTS)
    config.save_pretrained(str(path))
    if getattr(model, "generation_config", None) is not None and model.can_generate():
        model.generation_config.save_pretrained(str(path))
    cls = type(model)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "model_class": f"{cls.__module__}:{cls.__qualname__}",
        "model_type": model.config.model_type,
        "quantized": quantized,
        "weights": "manifest.json" if quantized else FLOAT_WEIGHTS,
        "loads_in_transformers": plain,
        "layers": {layer.module: layer.fields for layer in layers if layer.fields},
        "shapes": float_shapes(model),
        "modules": changed_attributes(model, build(cls, config)),
    }
    (path / META).write_text(json.dumps(meta, indent=1))
    return path


# ---------------------------------------------------------------------------- load
def _read_meta(path: Path) -> dict:
    if not path.is_dir():
        raise ArtifactError(f"{path} is not a directory")
    try:
        meta = json.loads((path / META).read_text())
    except FileNotFoundError:
        raise ArtifactError(
            f"{path} is not a geta checkpoint: {META} is missing (save with "
            "geta.hf.save_pretrained; a plain transformers checkpoint loads with transformers)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{path / META} is corrupted ({err}); save the model again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{path / META} is not a geta HF checkpoint description")
    if meta.get("version") != VERSION:
        raise ArtifactError(
            f"{path} has geta HF checkpoint version {meta.get('version')}; this geta reads "
            f"version {VERSION}"
        )
    for key in ("model_class", "shapes", "weights"):
        if key not in meta:
            raise ArtifactError(f"{path / META} lacks {key!r}; save the model again")
    return meta


def _model_class(spec: str) -> type:
    import transformers

    module_name, _, qualname = spec.partition(":")
    if module_name != "transformers" and not module_name.startswith("transformers."):
        raise ArtifactError(f"model class {spec!r} is not a transformers class")
    try:
        cls = getattr(importlib.import_module(module_name), qualname)
    except (ImportError, AttributeError) as err:
        raise ArtifactError(f"cannot find model class {spec!r}: {err}") from None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise ArtifactError(f"{spec!r} is not a transformers model class")
    return cls


def _named_tensors(model: nn.Module) -> dict[str, tuple[nn.Module, str, torch.Tensor]]:
    out = {}
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for attr, t in module._parameters.items():
            if t is not None:
                out[prefix + attr] = (module, attr, t)
        for attr, t in module._buffers.items():
            if t is not None and attr not in module._non_persistent_buffers_set:
                out[prefix + attr] = (module, attr, t)
    return out


def _shrink(model: nn.Module, shapes: Mapping[str, list[int]], where: Path) -> None:
    """Give every tensor of a meta-built model its recorded shape; module and family
    adapters then bring the modules' attributes in line."""
    tensors = _named_tensors(model)
    unknown = sorted(set(shapes) - set(tensors))
    if unknown:
        raise ArtifactError(
            f"{where}: the checkpoint has tensors the model built from its config lacks "
            f"({', '.join(unknown[:3])}); config.json and {META} do not belong together"
        )
    missing = sorted(set(tensors) - set(shapes))
    if missing:
        raise ArtifactError(
            f"{where}: {META} records no shape for {', '.join(missing[:3])}: config.json and "
            f"{META} do not belong together, or the model was built with other arguments "
            "(pass them on: geta.hf.from_pretrained(path, add_pooling_layer=False))"
        )
    replaced: dict[int, torch.Tensor] = {}
    touched: dict[nn.Module, None] = {}
    for name, (module, attr, old) in tensors.items():
        shape = tuple(shapes[name])
        if tuple(old.shape) == shape:
            continue
        new = replaced.get(id(old))
        if new is None:
            new = torch.empty(shape, dtype=old.dtype, device="meta")
            if isinstance(old, nn.Parameter):
                new = nn.Parameter(new, requires_grad=old.requires_grad)
            replaced[id(old)] = new
        (module._parameters if attr in module._parameters else module._buffers)[attr] = new
        touched[module] = None
    for module in touched:
        adapt_module(module, {})
    adapt_model(model)


def _load_float_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    try:
        state = load_file(str(path / FLOAT_WEIGHTS))
    except FileNotFoundError as err:
        raise ArtifactError(f"{path}: weights file missing ({err.filename or err})") from None
    except Exception as err:
        raise ArtifactError(f"{path}: weights cannot be read: {err}") from None
    tensors = _named_tensors(model)
    for name, value in state.items():
        if name in tensors and tuple(tensors[name][2].shape) != tuple(value.shape):
            raise ArtifactError(
                f"{path}: weight {name} has shape {list(value.shape)}, the layer shapes in "
                f"{META} say {list(tensors[name][2].shape)}"
            )
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.unexpected_keys:
        raise ArtifactError(
            f"{path}: weights for tensors the model does not have: "
            f"{', '.join(result.unexpected_keys[:3])}"
        )
    model.tie_weights()  # tied tensors are stored once
    tensors = _named_tensors(model)
    loaded = {id(t) for name, (_, _, t) in tensors.items() if name in state}
    absent = [k for k in result.missing_keys if id(tensors[k][2]) not in loaded]
    if absent:
        raise ArtifactError(f"{path}: weights missing for {', '.join(absent[:3])}")


def from_pretrained(path: str | Path, **model_kwargs: Any) -> nn.Module:
    """Rebuild a model saved by :func:`save_pretrained`, without the original weights.

    The model is built from ``config.json`` on the meta device, each layer is shrunk to its
    recorded shape (layers may differ) by the same module and family adapters as surgery,
    and the weights are loaded (decoded from the bit-packed artifact when quantized: the
    result is the float model whose outputs equal the saved fake-quantized ones).
    ``model_kwargs`` go to the model class with the config, as in transformers
    (``add_pooling_layer=False``).

    Raises:
        ArtifactError: the directory is missing, is not a geta checkpoint, is of another
            version, or its config, shapes and weights do not fit together.

    Example:
        >>> small = geta.hf.from_pretrained("out/")     # doctest: +SKIP
    """
    import transformers

    path = Path(path)
    meta = _read_meta(path)
    try:
        config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as err:
        raise ArtifactError(f"{path}: config.json cannot be read: {err}") from None
    cls = _model_class(meta["model_class"])
    if config.model_type != meta.get("model_type", config.model_type):
        raise ArtifactError(
            f"{path}: config.json is for {config.model_type!r}, {META} for {meta['model_type']!r}"
        )
    if family_of(config.model_type) is None and meta.get("layers"):
        raise ArtifactError(f"{path}: no geta family adapter for {config.model_type!r}")
    model = build(cls, config, **model_kwargs)
    _shrink(model, meta["shapes"], path)
    set_module_attributes(model, meta.get("modules", {}))
    model.to_empty(device="cpu")
    model.initialize_weights()
    model.tie_weights()
    if meta.get("quantized"):
        from geta.export import load

        load(path, model=model)
        model.tie_weights()
    else:
        _load_float_weights(model, path)
    set_module_attributes(model, meta.get("modules", {}))
    shapes = float_shapes(model)
    if shapes != {k: list(v) for k, v in meta["shapes"].items()}:
        wrong = sorted(k for k in shapes if shapes[k] != meta["shapes"].get(k))
        raise ArtifactError(f"{path}: loaded weights do not have the recorded shapes ({wrong[:3]})")
    return model.eval()
