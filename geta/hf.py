"""HuggingFace transformers: capture from keyword inputs, and compressed checkpoints that load.

    import geta, transformers
    model = transformers.LlamaForCausalLM(config)
    graph = geta.hf.trace(model)                      # example inputs from the config, no cache
    geta.prune(model, graph, {0: [1], 1: [3, 7]})     # heads and FFN channels; layers may differ
    geta.hf.save_pretrained(model, "out/")
    small = geta.hf.from_pretrained("out/")           # same outputs, no original weights needed

A checkpoint directory holds the HF ``config.json``, ``geta.json`` (the per-layer shapes after
pruning) and the weights: ``model.safetensors`` for a float model, the bit-packed artifact of
:mod:`geta.export` (``manifest.json`` + ``weights.safetensors``) for a quantized one. Where the
config can express the pruned model (every layer the same shape, and a config with the fields
for it), ``config.json`` carries the pruned sizes and plain
``transformers.AutoModel.from_pretrained`` loads the float checkpoint too.

Family adapters (:mod:`geta.models.hf`) keep module attributes such as ``num_heads`` in line
with the pruned weights; importing :mod:`geta` registers them.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import inspect
import json
from collections.abc import Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from torch import nn

import geta.models.hf  # noqa: F401  (registers the family adapters)
from geta.errors import ArtifactError
from geta.export.artifact import set_module_attributes
from geta.graph.capture import trace as _trace
from geta.graph.dependency_graph import DependencyGraph
from geta.graph.module_adapters import adapt_model, adapt_module
from geta.models.hf.registry import LayerFields, adapt, family_of
from geta.quant.prepare import input_quantizers, weight_quantizers

__all__ = [
    "FORMAT",
    "VERSION",
    "capture_mode",
    "example_inputs",
    "from_pretrained",
    "save_pretrained",
    "trace",
]

FORMAT = "geta-hf"
VERSION = 1
META = "geta.json"
FLOAT_WEIGHTS = "model.safetensors"


# ---------------------------------------------------------------------------- capture
def _is_hf_model(model: Any) -> bool:
    import transformers

    return isinstance(model, transformers.PreTrainedModel)


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
    if not _is_hf_model(model):
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
    if not _is_hf_model(model):
        raise TypeError(f"expected a transformers PreTrainedModel, got {type(model).__name__}")
    kwargs = dict(inputs) if inputs is not None else example_inputs(model)
    with capture_mode(model):
        return _trace(model, (), kwargs, validate=validate, through_norms=hidden)


# ---------------------------------------------------------------------------- save
def _float_shapes(model: nn.Module) -> dict[str, list[int]]:
    """Shapes of every stored tensor under its float (unprepared) name."""
    from geta.export.artifact import _float_state

    return {name: list(t.shape) for name, t in _float_state(model)[0].items()}


def _counterpart(config: Any, model_type: str | None) -> Any:
    """The config (or sub-config) of ``config`` with this ``model_type``."""
    pending = [config]
    while pending:
        cfg = pending.pop()
        if cfg is None:
            continue
        if cfg.model_type == model_type:
            return cfg
        pending.extend(getattr(cfg, key, None) for key in cfg.sub_configs)
    return None


def _build(cls: type, config: Any, **kwargs: Any) -> nn.Module:
    with torch.device("meta"):
        return cls(config, **kwargs)


def _saved_config(model: nn.Module, layers: list[LayerFields]) -> tuple[Any, bool]:
    """The config to save and whether it builds the pruned model's exact shapes (then plain
    transformers loads the checkpoint)."""
    candidate = copy.deepcopy(model.config)
    values: dict[tuple[int, str], set[int]] = {}
    targets: dict[int, Any] = {}
    representable = True
    for layer in layers:
        target = _counterpart(candidate, getattr(layer.config, "model_type", None))
        if target is None:
            representable = False
            continue
        targets[id(target)] = target
        for key, value in layer.fields.items():
            values.setdefault((id(target), key), set()).add(int(value))
    if representable and all(len(v) == 1 for v in values.values()):
        for (target_id, key), value in values.items():
            setattr(targets[target_id], key, next(iter(value)))
        if _float_shapes(_build(type(model), candidate)) == _float_shapes(model):
            return candidate, True
    inferred = _inferred_config(model)
    if inferred is not None:
        return inferred, True
    return copy.deepcopy(model.config), False


def _config_fields(config: Any) -> Iterator[tuple[Any, str, int]]:
    """Every integer field of ``config`` and its sub-configs: (config, name, value)."""
    pending, seen = [config], set()
    while pending:
        cfg = pending.pop()
        if cfg is None or id(cfg) in seen:
            continue
        seen.add(id(cfg))
        for key, value in sorted(vars(cfg).items()):
            if not key.startswith("_") and isinstance(value, int) and not isinstance(value, bool):
                yield cfg, key, value
        pending.extend(getattr(cfg, key, None) for key in getattr(cfg, "sub_configs", {}))


def _inferred_config(model: nn.Module, rounds: int = 4, builds: int = 64) -> Any | None:
    """A config that builds the pruned model's exact shapes, found without a family adapter:
    every dim that pruning changed did so by some ratio (kept / dense); a config field related
    to such a dim (one divides the other) is scaled by its ratio where that makes more of the
    model's tensors come out at their pruned shapes (built on the meta device), field by field,
    until all do. None where no such config exists (layers pruned differently, or sizes the
    config derives, such as BERT's head size = hidden / heads), or when ``builds`` models
    did not find it (saving stays fast for layers pruned to different sizes)."""
    target = _float_shapes(model)
    config = copy.deepcopy(model.config)
    spent = 0

    def misses() -> int:
        nonlocal spent
        spent += 1
        try:
            built = _float_shapes(_build(type(model), config))
        except Exception:  # a field combination the model class rejects
            return len(target) + 1
        return sum(built.get(name) != shape for name, shape in target.items()) + len(
            set(built) - set(target)
        )

    dense = _float_shapes(_build(type(model), config))
    changed: set[tuple[int, Any]] = set()
    for name, shape in target.items():
        for before, after in zip(dense.get(name, shape), shape, strict=False):
            if before != after and before > 0:
                changed.add((before, Fraction(after, before)))
    best = misses()
    for _ in range(rounds):
        if best == 0 or not changed or spent >= builds:
            break
        improved = False
        for cfg, key, value in list(_config_fields(config)):
            options = {
                value * ratio
                for size, ratio in changed
                if value and (size % value == 0 or value % size == 0)
            }
            for new in sorted(o for o in options if o.denominator == 1 and 0 < o != value):
                if spent >= builds:
                    break
                setattr(cfg, key, int(new))
                score = misses()
                if score < best:
                    best, improved = score, True
                    break
                setattr(cfg, key, value)
        if not improved:
            break
    return config if best == 0 else None


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


def _changed_attributes(model: nn.Module, reference: nn.Module) -> dict[str, dict[str, Any]]:
    """Integer attributes of ``model``'s modules that differ from the freshly built reference."""
    from geta.export.artifact import _module_attributes

    names = {name for name, _ in reference.named_modules()}
    before, after = _module_attributes(reference, names), _module_attributes(model, names)
    out = {}
    for name, attrs in after.items():
        changed = {k: v for k, v in attrs.items() if before.get(name, {}).get(k, v) != v}
        if changed:
            out[name] = changed
    return out


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
    if not _is_hf_model(model):
        raise TypeError(f"expected a transformers PreTrainedModel, got {type(model).__name__}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    layers = adapt(model)
    config, plain = _saved_config(model, layers)
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
        "shapes": _float_shapes(model),
        "modules": _changed_attributes(model, _build(cls, config)),
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
    model = _build(cls, config, **model_kwargs)
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
    shapes = _float_shapes(model)
    if shapes != {k: list(v) for k, v in meta["shapes"].items()}:
        wrong = sorted(k for k in shapes if shapes[k] != meta["shapes"].get(k))
        raise ArtifactError(f"{path}: loaded weights do not have the recorded shapes ({wrong[:3]})")
    return model.eval()
