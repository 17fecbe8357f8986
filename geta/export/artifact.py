"""The compressed artifact: a directory with a JSON manifest and one safetensors file.

Each quantized weight is stored as integer codes bit-packed at its own width (1..16 bits,
from the codes' actual range), with its step per channel; where that is smaller, only the
nonzero codes are stored and their positions are Rice-coded (about the entropy of the
sparsity pattern). Everything else (biases, norms, statistics) is stored as it is. The
manifest holds the format version, shapes, bits, sizes, module attributes (so a pruned
architecture can be rebuilt from its unpruned factory) and a checksum. Nothing is pickled.

    geta.export.save(model, "out/", example_inputs=(x,))   # also writes out/model.pt2
    small = geta.export.load("out/", model=lambda: lenet5())
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
import torch
from torch import nn
from torch.nn.utils import parametrize

from geta.errors import ArtifactError
from geta.export.packing import pack_bits, rice_decode, rice_encode, rice_parameter, unpack_bits
from geta.quant.prepare import input_quantizers, weight_quantizers
from geta.quant.quantizer import Quantizer

__all__ = ["save", "load", "FORMAT", "VERSION", "read_manifest"]

FORMAT = "geta-artifact"
VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
PROGRAM = "model.pt2"


# ---------------------------------------------------------------------------- codes
def quantized_codes(weight: torch.Tensor, q: Quantizer) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes and per-channel steps with ``codes * step == Q(weight)`` exactly."""
    with torch.no_grad():
        w = weight.detach().float().cpu()
        shape = [1] * w.dim()
        if q.per_channel:
            shape[q.axis % w.dim()] = -1
        d, q_m, t = (p.detach().float().cpu().reshape(shape) for p in (q.d, q.q_m, q.t))
        codes = torch.sign(w) * torch.round(torch.minimum(w.abs(), q_m).pow(t) / d)
    return codes.to(torch.int64).numpy(), q.d.detach().float().cpu().numpy()


def _bits_for(codes: np.ndarray) -> int:
    top = int(np.abs(codes).max()) if codes.size else 0
    return max(1, int(np.ceil(np.log2(2 * top + 1))))


def _clip_and_exponent(q: Quantizer) -> bytes:
    return np.concatenate(
        [q.q_m.detach().float().cpu().numpy(), q.t.detach().float().cpu().numpy()]
    ).tobytes()


def _encode_quantized(
    name: str, codes: np.ndarray, step: np.ndarray, axis: int, blobs: dict, qparams: bytes = b""
) -> dict:
    bits = _bits_for(codes)
    offset = (1 << (bits - 1)) - 1 if bits > 1 else 0
    flat = codes.ravel()
    entry: dict[str, Any] = {"encoding": "quantized", "bits": bits, "offset": offset, "axis": axis}
    _add_stream(blobs, name, "step", step.astype(np.float32).tobytes(), entry)
    if qparams:  # the quantizer's clip and exponent, kept so training can resume from here
        _add_stream(blobs, name, "clip_exponent", qparams, entry)
    dense = pack_bits(flat + offset, bits)
    nonzero = flat != 0
    rare_nonzero = nonzero.mean() <= 0.5 if flat.size else True
    marked = np.flatnonzero(nonzero if rare_nonzero else ~nonzero)
    gaps = np.diff(np.concatenate([[-1], marked])) - 1
    k = rice_parameter(gaps)
    unary, remainders = rice_encode(gaps, k)
    values = pack_bits(flat[nonzero] + offset, bits)
    if len(unary) + len(remainders) + len(values) < len(dense):
        entry.update(
            layout="sparse",
            marks="nonzero" if rare_nonzero else "zero",
            count=int(marked.size),
            rice_k=k,
        )
        entry["nonzeros"] = int(nonzero.sum())
        for stream, data in (("values", values), ("unary", unary), ("remainders", remainders)):
            _add_stream(blobs, name, stream, data, entry)
    else:
        entry.update(layout="dense", nonzeros=int(nonzero.sum()))
        _add_stream(blobs, name, "codes", dense, entry)
    blobs[name] = np.frombuffer(
        b"".join(blobs.pop(f"{name}::{k}") for k in entry["streams"]), np.uint8
    )
    return entry


def _add_stream(blobs: dict, name: str, stream: str, data: bytes, entry: dict) -> None:
    """Queue ``data`` as part ``stream`` of the tensor's single uint8 blob."""
    entry.setdefault("streams", {})[stream] = len(data)
    blobs[f"{name}::{stream}"] = data


def _streams(blob: np.ndarray, entry: dict) -> dict[str, np.ndarray]:
    out, offset = {}, 0
    for stream, length in entry["streams"].items():
        if offset + length > blob.size:
            raise ValueError(f"stream {stream} runs past the end of the tensor data")
        out[stream] = blob[offset : offset + length]
        offset += length
    return out


def _decode_quantized(name: str, entry: dict, shape: list[int], blobs: dict) -> np.ndarray:
    n = int(np.prod(shape))
    bits, offset = entry["bits"], entry["offset"]
    parts = _streams(blobs[name], entry)
    if entry["layout"] == "dense":
        flat = unpack_bits(parts["codes"], bits, n).astype(np.int64) - offset
    else:
        gaps = rice_decode(
            parts["unary"].tobytes(), parts["remainders"].tobytes(), entry["rice_k"], entry["count"]
        )
        marked = np.cumsum(gaps + 1) - 1
        nonzero = np.zeros(n, dtype=bool)
        nonzero[marked] = True
        if entry["marks"] == "zero":
            nonzero = ~nonzero
        flat = np.zeros(n, dtype=np.int64)
        flat[nonzero] = (
            unpack_bits(parts["values"], bits, int(nonzero.sum())).astype(np.int64) - offset
        )
    codes = flat.reshape(shape).astype(np.float32)
    step = np.frombuffer(parts["step"].tobytes(), dtype=np.float32)
    if step.size > 1:
        view = [1] * len(shape)
        view[entry["axis"] % len(shape)] = -1
        step = step.reshape(view)
    return (codes * step).astype(np.float32)


# ---------------------------------------------------------------------------- save
def _module_attributes(model: nn.Module, owners: set[str]) -> dict[str, dict[str, Any]]:
    """Integer-valued public attributes (in_channels, groups, num_heads, ...) of the modules
    that own stored tensors: what surgery may have changed."""
    out = {}
    for name, module in model.named_modules():
        if name not in owners:
            continue
        attrs = {}
        for key, value in vars(module).items():
            if key.startswith("_") or key == "training" or isinstance(value, bool):
                continue
            if isinstance(value, int) or (
                isinstance(value, tuple) and value and all(isinstance(v, int) for v in value)
            ):
                attrs[key] = list(value) if isinstance(value, tuple) else value
        if attrs:
            out[name] = attrs
    return out


def _float_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Quantizer]]:
    """Float tensors under their unprepared names, and the weight quantizers by tensor name."""
    quantizers = {
        f"{layer}.weight" if layer else "weight": q for layer, q in weight_quantizers(model).items()
    }
    owned = {
        id(p)
        for q in [*weight_quantizers(model).values(), *input_quantizers(model).values()]
        for p in q.parameters()
    }
    state: dict[str, torch.Tensor] = {}
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        if parametrize.is_parametrized(module):
            for attr, plist in module.parametrizations.items():
                state[prefix + attr] = plist.original
                owned.add(id(plist.original))
        for attr, p in module._parameters.items():
            if p is not None and id(p) not in owned:
                state[prefix + attr] = p
        for attr, b in module._buffers.items():
            if b is not None and attr not in module._non_persistent_buffers_set:
                state[prefix + attr] = b
    return state, quantizers


def save(
    model: nn.Module,
    path: str | Path,
    *,
    example_inputs: tuple | None = None,
    architecture: str | None = None,
) -> Path:
    """Write ``model`` (pruned or not, prepared or not) as a bit-packed artifact directory.

    Args:
        model: the model; quantized layers are those :func:`geta.quant.prepare` prepared.
        path: directory to create (or overwrite).
        example_inputs: when given, also write ``model.pt2``, a self-contained
            ``torch.export`` program of the compressed float model.
        architecture: ``"module:callable"`` that builds the unpruned float architecture;
            stored so that :func:`load` needs no factory.

    Returns:
        The directory.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state, quantizers = _float_state(model)
    blobs: dict[str, np.ndarray] = {}
    tensors: dict[str, dict] = {}
    for name, tensor in state.items():
        entry: dict[str, Any] = {
            "shape": list(tensor.shape),
            "dtype": str(tensor.dtype).replace("torch.", ""),
        }
        q = quantizers.get(name)
        if q is not None and tensor.is_floating_point():
            codes, step = quantized_codes(tensor, q)
            entry.update(_encode_quantized(name, codes, step, q.axis, blobs, _clip_and_exponent(q)))
            entry["numel"] = int(codes.size)
        else:
            entry.update(encoding="raw", numel=int(tensor.numel()))
            blobs[name] = tensor.detach().cpu().contiguous().numpy()
        tensors[name] = entry
    for name, entry in tensors.items():
        entry["bytes"] = int(blobs[name].nbytes)
    weights_path = path / WEIGHTS
    safetensors.numpy.save_file(blobs, str(weights_path))
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "architecture": architecture,
        "weights_file": WEIGHTS,
        "weights_sha256": hashlib.sha256(weights_path.read_bytes()).hexdigest(),
        "tensors": tensors,
        "quantizers": {
            name: {"bits": tensors[name]["bits"], "per_channel": q.per_channel, "axis": q.axis}
            for name, q in quantizers.items()
        },
        "modules": _module_attributes(model, {n.rpartition(".")[0] for n in tensors}),
        "total_bytes": int(weights_path.stat().st_size),
    }
    (path / MANIFEST).write_text(json.dumps(manifest, separators=(",", ":")))
    if example_inputs is not None:
        float_model = _dequantized_copy(model)
        program = torch.export.export(float_model, tuple(example_inputs), strict=False)
        torch.export.save(program, str(path / PROGRAM))
    return path


def _dequantized_copy(model: nn.Module) -> nn.Module:
    copied = copy.deepcopy(model).eval()
    for module in copied.modules():
        if parametrize.is_parametrized(module):
            for attr in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
    return copied


# ---------------------------------------------------------------------------- load
def read_manifest(path: str | Path) -> dict:
    """The manifest of an artifact, validated for format and version."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path} is not a geta artifact: {MANIFEST} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(
            f"{path / MANIFEST} is corrupted ({err}); export the model again"
        ) from None
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a geta artifact (format {manifest.get('format')!r})")
    if manifest.get("version") != VERSION:
        raise ArtifactError(
            f"{path} has artifact format version {manifest.get('version')}; this geta reads version "
            f"{VERSION}. Load it with the geta version that wrote it, or export again."
        )
    return manifest


def _read_blobs(path: Path, manifest: dict) -> dict[str, np.ndarray]:
    weights = path / manifest["weights_file"]
    try:
        data = weights.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{weights} is missing") from None
    if hashlib.sha256(data).hexdigest() != manifest["weights_sha256"]:
        raise ArtifactError(
            f"{weights} does not match the checksum in its manifest (truncated or corrupted, "
            f"{len(data)} bytes); copy or export it again"
        )
    try:
        return safetensors.numpy.load(data)
    except Exception as err:
        raise ArtifactError(f"{weights} cannot be parsed: {err}") from None


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of an artifact as float (dequantized) torch tensors."""
    path = Path(path)
    manifest = read_manifest(path)
    blobs = _read_blobs(path, manifest)
    out = {}
    for name, entry in manifest["tensors"].items():
        try:
            if entry["encoding"] == "quantized":
                array = _decode_quantized(name, entry, entry["shape"], blobs)
            else:
                array = blobs[name]
        except KeyError as err:
            raise ArtifactError(
                f"{path}: tensor data {err} for {name} is missing from {manifest['weights_file']}"
            ) from None
        except ValueError as err:
            raise ArtifactError(f"{path}: tensor {name} cannot be decoded: {err}") from None
        tensor = torch.from_numpy(np.array(array))
        if list(tensor.shape) != entry["shape"]:
            raise ArtifactError(
                f"{path}: tensor {name} has shape {list(tensor.shape)}, manifest says {entry['shape']}"
            )
        out[name] = tensor.to(getattr(torch, entry["dtype"]))
    return out


def _build(manifest: dict, model: nn.Module | Callable[[], nn.Module] | None) -> nn.Module:
    if isinstance(model, nn.Module):
        return model
    if callable(model):
        return model()
    spec = manifest.get("architecture")
    if not spec:
        raise ArtifactError(
            "this artifact stores no architecture: pass model= (a module or a factory)"
        )
    module_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)()
    except (ImportError, AttributeError) as err:
        raise ArtifactError(f"cannot build architecture {spec!r}: {err}") from None


def load(path: str | Path, model: nn.Module | Callable[[], nn.Module] | None = None) -> nn.Module:
    """Rebuild an ordinary float ``nn.Module`` from an artifact.

    ``model`` is the float architecture (a module, or a factory such as ``lenet5``), possibly
    larger than the saved, pruned one: its tensors are replaced by the artifact's and its
    modules' size attributes restored. Without ``model`` the stored architecture is used.
    Outputs equal the saved model's fake-quantized outputs.

    Raises:
        ArtifactError: the artifact is missing, truncated, corrupted, of another version, or
            does not fit the model.
    """
    path = Path(path)
    manifest = read_manifest(path)
    tensors = load_tensors(path)
    module = _build(manifest, model)
    for name, tensor in tensors.items():
        owner_name, _, attr = name.rpartition(".")
        try:
            owner = module.get_submodule(owner_name)
        except AttributeError:
            raise ArtifactError(
                f"the model has no module {owner_name!r} for artifact tensor {name}"
            ) from None
        if parametrize.is_parametrized(owner, attr):
            raise ArtifactError(
                f"load into the float architecture: {owner_name!r} has quantizers on {attr}"
            )
        if attr in owner._parameters:
            old = owner._parameters[attr]
            owner._parameters[attr] = nn.Parameter(
                tensor, requires_grad=old.requires_grad if old is not None else True
            )
        elif attr in owner._buffers:
            owner._buffers[attr] = tensor
        else:
            raise ArtifactError(f"the model has no parameter or buffer {name}")
    for name, attrs in manifest.get("modules", {}).items():
        try:
            owner = module.get_submodule(name)
        except AttributeError:
            continue
        for key, value in attrs.items():
            setattr(owner, key, tuple(value) if isinstance(value, list) else value)
    return module.eval()
