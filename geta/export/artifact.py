"""The compressed artifact: a directory with a small JSON manifest and one safetensors file.

``weights.safetensors`` holds a single uint8 tensor, the concatenation of three sections:

1. the index: a JSON table of every tensor (shape, dtype, bits, layout, coder, stream lengths;
   for a quantized weight also ``channel_bits``, the histogram of its channels' storage bits,
   e.g. ``{"2": 10, "4": 6}``, stored as the plain number when every channel (or the one of a
   per-tensor quantizer) has the same bits; :func:`read_manifest` always gives the histogram
   as a dict) and the size attributes of the modules that own them, compressed (deflate with
   a preset dictionary of the usual keys, plain deflate or LZMA, whichever is smallest);
2. the plain section: every fixed-width number (per-channel steps, the quantizers' clip and
   exponent, unquantized tensors such as biases and norm statistics), exact, grouped by item
   size, byte-shuffled and compressed;
3. the coded section: each quantized weight's integer codes, laid out dense (every code) or
   sparse (only the nonzero codes, moved towards zero by one when positive, and the
   Rice-coded positions of the rarer of zeros and nonzeros), the codes or nonzero values coded
   by the smallest of three coders: ``packed`` at the bit width of their range, ``rans``
   (entropy-coded with a frequency table), or, for a per-channel quantizer only,
   ``channels``: each channel's values at that channel's own width (mixed precision). A
   channel's width is the two's-complement width of its values (``b`` bits for the codes of
   a ``b``-bit channel, 0 for a channel of zeros: nothing stored) and its values are stored
   offset by ``2**(width - 1)``; the widths, one per channel, are a stream of their own
   (``<stream>.widths``, packed or rANS-coded), and the values are packed width by width in
   increasing order (each width's values in index order, padded to a whole byte), one stream.

The smallest layout and coder win, so the channels coder only appears where it saves bytes.
Streams follow one another in index order, so the index stores lengths, not offsets.
``manifest.json`` holds the format and version, the SHA-256 of the weights file, where the
index ends and how it is compressed, and the architecture. Nothing is pickled;
:func:`read_manifest` returns the manifest with the index merged in. Version 3 added the
channels coder and ``channel_bits``; version 2 artifacts (neither) still load.

    geta.export.save(model, "out/", example_inputs=(x,))   # also writes out/model.pt2
    small = geta.export.load("out/", model=lambda: lenet5())
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import lzma
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
import torch
from torch import nn
from torch.nn.utils import parametrize

from geta.errors import ArtifactError
from geta.export.packing import (
    RANS_PRECISION,
    pack_bits,
    rans_decode,
    rans_encode,
    rans_frequencies,
    rice_decode,
    rice_encode,
    rice_parameter,
    unpack_bits,
)
from geta.quant.codes import quantized_codes
from geta.quant.prepare import input_quantizers, weight_quantizers
from geta.quant.quantizer import Quantizer

__all__ = ["save", "load", "FORMAT", "VERSION", "read_manifest"]

FORMAT = "geta-artifact"
VERSION = 3
READABLE_VERSIONS = (2, 3)  # version 2 has neither the channels coder nor channel_bits
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
PROGRAM = "model.pt2"
BLOB = "data"  # the one tensor of weights.safetensors
_STEP_STREAMS = ("step", "clip_exponent")  # float32, in the plain section
_RANS_MAX_SYMBOLS = 256
_MAX_WIDTH = 32  # the widest value pack_bits stores


# ---------------------------------------------------------------------------- codes
def _bits_for(codes: np.ndarray) -> int:
    top = int(np.abs(codes).max()) if codes.size else 0
    return max(1, int(np.ceil(np.log2(2 * top + 1))))


def _clip_and_exponent(q: Quantizer) -> bytes:
    return (
        np.concatenate([q.q_m.detach().float().cpu().numpy(), q.t.detach().float().cpu().numpy()])
        .astype("<f4")
        .tobytes()
    )


def _encode_symbols(values: np.ndarray, stream: str) -> tuple[dict, dict[str, bytes]]:
    """The smaller of two codings of integer ``values``: packed at the bit width of their
    range (0 bits when all are equal), or rANS with a frequency table."""
    if not values.size:
        return {"coder": "packed", "lo": 0, "width": 0}, {}
    lo, hi = int(values.min()), int(values.max())
    shifted = values - lo
    width = (hi - lo).bit_length()
    spec: dict[str, Any] = {"coder": "packed", "lo": lo, "width": width}
    streams = {stream: pack_bits(shifted, width)} if width else {}
    if 0 < width and hi - lo < _RANS_MAX_SYMBOLS:
        freqs = rans_frequencies(np.bincount(shifted, minlength=hi - lo + 1))
        states, words = rans_encode(shifted, freqs)
        table = pack_bits(freqs, RANS_PRECISION)  # every frequency is below 2**RANS_PRECISION
        coded = {f"{stream}.freqs": table, f"{stream}.states": states, f"{stream}.words": words}
        if sum(map(len, coded.values())) < len(streams[stream]):
            spec, streams = {"coder": "rans", "lo": lo, "symbols": hi - lo + 1}, coded
    return spec, streams


def _decode_symbols(spec: dict, stream: str, parts: dict[str, bytes], count: int) -> np.ndarray:
    if spec["coder"] == "rans":
        freqs = unpack_bits(parts[f"{stream}.freqs"], RANS_PRECISION, spec["symbols"])
        shifted = rans_decode(parts[f"{stream}.states"], parts[f"{stream}.words"], freqs, count)
    elif spec["coder"] == "packed" and spec["width"]:
        shifted = unpack_bits(parts[stream], spec["width"], count).astype(np.int64)
    elif spec["coder"] == "packed":
        shifted = np.zeros(count, dtype=np.int64)
    else:
        raise ValueError(f"unknown coder {spec['coder']!r}")
    return shifted + spec["lo"]


def _size(streams: dict[str, bytes]) -> int:
    return sum(map(len, streams.values()))


def _channel_index(shape: tuple[int, ...] | list[int], axis: int) -> np.ndarray:
    """The channel of every element of a C-ordered tensor of ``shape``, channels on ``axis``."""
    view = [1] * len(shape)
    view[axis] = -1
    return np.broadcast_to(np.arange(shape[axis]).reshape(view), tuple(shape)).ravel()


def _value_widths(values: np.ndarray) -> np.ndarray:
    """The two's-complement width of each value (``v`` fits in ``[-2**(w-1), 2**(w-1))``), 0
    for 0."""
    magnitude = values ^ (values >> 63)  # v for v >= 0, -v - 1 for v < 0
    widths = np.frexp(magnitude.astype(np.float64))[1] + 1  # bit length + 1
    return np.where(values == 0, 0, widths).astype(np.int64)


def _encode_channels(
    values: np.ndarray, stream: str, channel: np.ndarray, channels: int, budget: int | None = None
) -> tuple[dict, dict[str, bytes]] | None:
    """The channels coder: the values of channel ``c`` (``channel[i]`` is value ``i``'s) at
    the channel's own width, offset by ``2**(width - 1)``, packed width by width; the widths
    coded by :func:`_encode_symbols`. ``None`` when a channel needs more than 32 bits, or
    when the streams would take ``budget`` bytes or more (nothing is packed then)."""
    widths = np.zeros(channels, dtype=np.int64)
    np.maximum.at(widths, channel, _value_widths(values))
    if int(widths.max(initial=0)) > _MAX_WIDTH:
        return None
    spec, streams = _encode_symbols(widths, f"{stream}.widths")
    of_value = widths[channel]
    counts = np.bincount(of_value, minlength=_MAX_WIDTH + 1)
    used = [w for w in range(1, _MAX_WIDTH + 1) if counts[w]]
    size = _size(streams) + sum((int(counts[w]) * w + 7) // 8 for w in used)
    if budget is not None and size >= budget:
        return None
    if used:
        packed = (pack_bits(values[of_value == w] + (1 << (w - 1)), w) for w in used)
        streams[stream] = b"".join(packed)
    return {"coder": "channels", "widths": spec}, streams


def _decode_channels(
    spec: dict, stream: str, parts: dict[str, bytes], channel: np.ndarray, channels: int
) -> np.ndarray:
    """Inverse of :func:`_encode_channels`: one value per entry of ``channel``."""
    widths = _decode_symbols(spec["widths"], f"{stream}.widths", parts, channels)
    if widths.size and (int(widths.min()) < 0 or int(widths.max()) > _MAX_WIDTH):
        raise ValueError(
            f"channel widths of {int(widths.min())} to {int(widths.max())} bits "
            f"(0 to {_MAX_WIDTH} allowed): the widths stream is corrupted"
        )
    of_value = widths[channel]
    groups = [(w, of_value == w) for w in np.unique(widths[widths > 0]).tolist()]
    counts = [int(selected.sum()) for _, selected in groups]
    lengths = [(n * w + 7) // 8 for (w, _), n in zip(groups, counts, strict=True)]
    data = parts.get(stream, b"")
    if sum(lengths) != len(data):
        raise ValueError(
            f"the channel widths need {sum(lengths)} bytes of {stream}, the stream holds "
            f"{len(data)}: the widths stream is corrupted"
        )
    out = np.zeros(channel.size, dtype=np.int64)
    offset = 0
    for (width, selected), n, length in zip(groups, counts, lengths, strict=True):
        unpacked = unpack_bits(data[offset : offset + length], width, n).astype(np.int64)
        out[selected] = unpacked - (1 << (width - 1))
        offset += length
    return out


def _encode_values(
    values: np.ndarray, stream: str, channel: np.ndarray | None = None, channels: int = 0
) -> tuple[dict, dict[str, bytes]]:
    """The smallest coding of integer ``values``: :func:`_encode_symbols`'s, or with
    ``channel`` (the channel of each value, of ``channels``) also the channels coder's."""
    spec, streams = _encode_symbols(values, stream)
    if channel is not None and values.size:
        coded = _encode_channels(values, stream, channel, channels, budget=_size(streams))
        if coded is not None:
            return coded
    return spec, streams


def _decode_values(
    spec: dict,
    stream: str,
    parts: dict[str, bytes],
    count: int,
    channel: Callable[[], np.ndarray] | None = None,
    channels: int = 0,
) -> np.ndarray:
    """Inverse of :func:`_encode_values`; ``channel`` gives the channel of each value (only
    called for the channels coder)."""
    if spec["coder"] != "channels":
        return _decode_symbols(spec, stream, parts, count)
    if channel is None:
        raise ValueError(f"{stream} uses the channels coder without a per-channel quantizer")
    of_value = channel()
    if of_value.size != count:
        raise ValueError(f"{of_value.size} channel indices for {count} values")
    return _decode_channels(spec, stream, parts, of_value, channels)


def _channel_bits(q: Quantizer) -> int | dict[str, int]:
    """Histogram of the channels' storage bits as stored: ``{"bits": channels}`` by
    increasing bits, or just the bits when every channel has the same."""
    bits, counts = np.unique(q.channel_storage_bits().cpu().numpy(), return_counts=True)
    if bits.size == 1:
        return int(bits[0])
    return {str(int(b)): int(n) for b, n in zip(bits, counts, strict=True)}


def _read_channel_bits(entry: dict) -> dict[str, int]:
    """The histogram of an index entry as :func:`read_manifest` gives it, always a dict (a
    stored plain number counts every channel)."""
    stored = entry["channel_bits"]
    if isinstance(stored, int) and not isinstance(stored, bool):
        shape = entry["shape"]
        per_channel = entry["per_channel"] and shape
        stored = {str(stored): int(shape[entry["axis"] % len(shape)]) if per_channel else 1}
    if not isinstance(stored, dict) or not all(
        isinstance(k, str) and k.isdigit() and isinstance(n, int) and not isinstance(n, bool)
        for k, n in stored.items()
    ):
        raise ValueError(f"malformed channel_bits {stored!r}")
    return stored


def _encode_quantized(codes: np.ndarray, step: np.ndarray, q: Quantizer) -> tuple[dict, dict]:
    """Index entry and streams of one quantized weight: dense (every code) or sparse (the
    nonzero codes and the Rice-coded gaps between the rarer of zeros and nonzeros), whichever
    is smaller."""
    flat = codes.ravel()
    nonzero = flat != 0
    entry: dict[str, Any] = {
        "encoding": "quantized",
        "bits": _bits_for(codes),
        "axis": q.axis,
        "per_channel": q.per_channel,
        "channel_bits": _channel_bits(q),
        "nonzeros": int(nonzero.sum()),
    }
    fixed = {"step": step.astype("<f4").tobytes(), "clip_exponent": _clip_and_exponent(q)}
    channel, channels = None, 0
    if q.per_channel and codes.ndim:
        channels = codes.shape[q.axis % codes.ndim]
        channel = _channel_index(codes.shape, q.axis % codes.ndim)
    spec, dense = _encode_values(flat, "codes", channel, channels)
    candidates = [({"layout": "dense", "codes": spec}, dense)]
    rare_nonzero = nonzero.mean() <= 0.5 if flat.size else True
    marked = np.flatnonzero(nonzero if rare_nonzero else ~nonzero)
    gaps = np.diff(np.concatenate([[-1], marked])) - 1
    k = rice_parameter(gaps)
    unary, remainders = rice_encode(gaps, k)
    values = flat[nonzero]
    # nonzero codes only: positive ones move down by one so that no level is spent on zero
    spec, coded = _encode_values(
        values - (values > 0), "values", None if channel is None else channel[nonzero], channels
    )
    sparse = {"layout": "sparse", "marks": "nonzero" if rare_nonzero else "zero", "rice_k": k}
    sparse["values"] = spec
    candidates.append((sparse, {"unary": unary, "remainders": remainders, **coded}))
    layout, streams = min(candidates, key=lambda c: _size(c[1]))
    return {**entry, **layout}, {**fixed, **streams}


def _decode_quantized(entry: dict, parts: dict[str, bytes]) -> np.ndarray:
    shape = entry["shape"]
    n = int(np.prod(shape))
    per_channel = bool(entry["per_channel"])
    if per_channel and not shape:
        raise ValueError("a per-channel quantizer on a scalar")
    axis = entry["axis"] % len(shape) if per_channel else 0
    channels = shape[axis] if per_channel else 0
    every = (lambda: _channel_index(shape, axis)) if per_channel else None
    if entry["layout"] == "dense":
        flat = _decode_values(entry["codes"], "codes", parts, n, every, channels)
    elif entry["layout"] == "sparse":
        marks = {"nonzero": entry["nonzeros"], "zero": n - entry["nonzeros"]}[entry["marks"]]
        gaps = rice_decode(parts["unary"], parts["remainders"], entry["rice_k"], marks)
        marked = np.cumsum(gaps + 1) - 1
        nonzero = np.zeros(n, dtype=bool)
        nonzero[marked] = True
        if entry["marks"] == "zero":
            nonzero = ~nonzero
        at = (lambda: _channel_index(shape, axis)[nonzero]) if per_channel else None
        values = _decode_values(entry["values"], "values", parts, int(nonzero.sum()), at, channels)
        flat = np.zeros(n, dtype=np.int64)
        flat[nonzero] = values + (values >= 0)
    else:
        raise ValueError(f"unknown layout {entry['layout']!r}")
    step = np.frombuffer(parts["step"], dtype="<f4")
    if per_channel:
        view = [1] * len(shape)
        view[axis] = -1
        step = step.reshape(view)
    elif step.size != 1:
        raise ValueError(f"{step.size} steps for a per-tensor quantizer")
    return (flat.reshape(shape).astype(np.float32) * step).astype(np.float32)


# ---------------------------------------------------------------------------- sections
def _itemsize(entry: dict, stream: str) -> int:
    """The item size of a plain stream (its bytes are shuffled with others of that size), or
    0 for a stream of the coded section."""
    if stream in _STEP_STREAMS:
        return 4
    if entry["encoding"] == "raw":
        return _torch_dtype(entry["dtype"]).itemsize
    return 0


def _layout(tensors: dict) -> tuple[dict[tuple[str, str], tuple[int, int, int]], dict[int, int]]:
    """Where each stream lies, ``(group, offset, length)`` by ``(tensor, stream)``: group 0 is
    the coded section, group ``s > 0`` the plain streams of item size ``s``; and the size of
    each group."""
    places, ends = {}, {}
    for name, entry in tensors.items():
        for stream, length in entry["streams"].items():
            group = _itemsize(entry, stream)
            places[name, stream] = (group, ends.get(group, 0), length)
            ends[group] = ends.get(group, 0) + length
    return places, ends


def _shuffle(data: bytes, size: int, inverse: bool = False) -> bytes:
    """Byte planes first: byte 0 of every item, then byte 1, ... (exponents compress)."""
    if size == 1:
        return data
    array = np.frombuffer(data, dtype=np.uint8)
    shape = (size, -1) if inverse else (-1, size)
    return array.reshape(shape).T.tobytes()


_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 1 << 20}]


# Strings that most indexes contain, given to deflate as a preset dictionary so that even the
# first occurrence of a key costs a back-reference. Part of format version 2: never edit it.
_INDEX_DICTIONARY = b"".join(
    [
        b'"modules":{"in_features":,"out_features":},"num_features":,"in_channels":,',
        b'"out_channels":,"kernel_size":[3,3],"stride":[1,1],"padding":[1,1],',
        b'"dilation":[1,1],"output_padding":[0,0],"groups":1},',
        b'"plain":{"codec":"lzma","bytes":,"groups":{"4":,"8":}},',
        b'"layout":"sparse","marks":"nonzero","rice_k":,',
        b'"values":{"coder":"packed","lo":-1,"width":1},',
        b'"streams":{"step":4,"clip_exponent":8,"unary":,"remainders":,"values":}},',
        b'.num_batches_tracked":{"shape":[],"dtype":"int64",',
        b'"encoding":"raw","streams":{"data":8}},',
        b'.running_mean":{"shape":[],"dtype":"float32","encoding":"raw","streams":{"data":}},',
        b'.running_var":{"shape":[],"dtype":"float32","encoding":"raw","streams":{"data":}},',
        b'.bias":{"shape":[],"dtype":"float32","encoding":"raw","streams":{"data":}},',
        b'{"tensors":{".weight":{"shape":[,"dtype":"float32","encoding":"quantized","bits":4,',
        b'"axis":0,"per_channel":true,"nonzeros":,"layout":"dense",',
        b'"codes":{"coder":"rans","lo":-7,"symbols":15},',
        b'"streams":{"step":,"clip_exponent":,"codes.freqs":,"codes.states":,"codes.words":}},',
    ]
)


# Version 3's dictionary: version 2's and the strings version 3 added.
_INDEX_DICTIONARY_V3 = _INDEX_DICTIONARY + b"".join(
    [
        b'"per_channel":false,"channel_bits":4,"nonzeros":,',
        b'"values":{"coder":"channels","widths":{"coder":"packed","lo":0,"width":',
        b'"per_channel":true,"channel_bits":4,"nonzeros":,',
        b'"per_channel":true,"channel_bits":{"2":,"3":,"4":,"8":16},"nonzeros":',
    ]
)


def _index_dictionary(version: int) -> bytes:
    return _INDEX_DICTIONARY if version == 2 else _INDEX_DICTIONARY_V3


def _deflate(data: bytes, zdict: bytes | None = None) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15, **({"zdict": zdict} if zdict else {}))
    return compressor.compress(data) + compressor.flush()


def _compress(data: bytes, index: bool = False) -> tuple[str, bytes]:
    """The smallest of the bytes as they are, raw deflate (for the index also with the preset
    dictionary) and raw LZMA2, with its codec."""
    packed = {
        "none": data,
        "zlib": _deflate(data),
        "lzma": lzma.compress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS),
    }
    if index:
        packed["zlib-dict"] = _deflate(data, _index_dictionary(VERSION))
    codec = min(packed, key=lambda c: len(packed[c]))
    return codec, packed[codec]


def _decompress(codec: str, data: bytes, size: int, version: int = VERSION) -> bytes:
    """Inverse of :func:`_compress` (an index of format ``version``); never produces more
    than ``size + 1`` bytes."""
    if codec == "none":
        out = data
    elif codec in ("zlib", "zlib-dict"):
        zdict = {"zdict": _index_dictionary(version)} if codec == "zlib-dict" else {}
        out = zlib.decompressobj(-15, **zdict).decompress(data, size + 1)
    elif codec == "lzma":
        decoder = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
        out = decoder.decompress(data, size + 1)
    else:
        raise ValueError(f"unknown codec {codec!r}")
    if len(out) != size:
        raise ValueError(f"{codec} data holds {len(out)} bytes, {size} expected")
    return out


def _torch_dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype


def _raw_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def _from_raw(data: bytes, entry: dict) -> torch.Tensor:
    dtype = _torch_dtype(entry["dtype"])
    if not data:
        return torch.empty(entry["shape"], dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=dtype).reshape(entry["shape"])


def _pack_sections(tensors: dict, streams: dict[tuple[str, str], bytes]) -> tuple[bytes, dict]:
    """The plain section (compressed) followed by the coded section, and the plain section's
    codec, compressed size and group sizes for the index."""
    places, ends = _layout(tensors)
    groups: dict[int, list[bytes]] = {group: [] for group in ends}
    for key, (group, _, _) in places.items():  # places are in stream order
        groups[group].append(streams[key])
    sizes = sorted(size for size in groups if size > 0)
    plain = b"".join(_shuffle(b"".join(groups[size]), size) for size in sizes)
    codec, packed = _compress(plain)
    spec = {"codec": codec, "bytes": len(packed), "groups": {str(s): ends[s] for s in sizes}}
    return packed + b"".join(groups.get(0, [])), spec


def _unpack_sections(tensors: dict, plain: dict, data: bytes) -> dict[tuple[str, str], bytes]:
    """Inverse of :func:`_pack_sections`: every stream by ``(tensor, stream)``; a stream that
    runs past the end of its section comes back short."""
    groups = {int(size): int(length) for size, length in plain["groups"].items()}
    raw = _decompress(plain["codec"], data[: plain["bytes"]], sum(groups.values()))
    sections, offset = {0: data[plain["bytes"] :]}, 0
    for size, length in sorted(groups.items()):
        if size < 1 or length % size:
            raise ValueError(f"a plain group of item size {size} cannot hold {length} bytes")
        sections[size] = _shuffle(raw[offset : offset + length], size, inverse=True)
        offset += length
    places, ends = _layout(tensors)
    for group, section in sections.items():
        if ends.get(group, 0) < len(section):
            raise ValueError(f"{len(section) - ends.get(group, 0)} bytes are not in the index")
    empty = b""
    return {
        key: sections.get(group, empty)[start : start + n]
        for key, (group, start, n) in places.items()
    }


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


def set_module_attributes(model: nn.Module, modules: dict[str, dict[str, Any]]) -> None:
    """Set the size attributes recorded by :func:`_module_attributes` (JSON lists back to
    tuples) on ``model``'s submodules; names the model lacks are skipped."""
    for name, attrs in modules.items():
        try:
            owner = model.get_submodule(name)
        except AttributeError:
            continue
        for key, value in attrs.items():
            setattr(owner, key, tuple(value) if isinstance(value, list) else value)


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
    tensors: dict[str, dict] = {}
    streams: dict[tuple[str, str], bytes] = {}
    for name, tensor in state.items():
        entry: dict[str, Any] = {
            "shape": list(tensor.shape),
            "dtype": str(tensor.dtype).replace("torch.", ""),
        }
        q = quantizers.get(name)
        if q is not None and tensor.is_floating_point():
            codes, step = quantized_codes(tensor, q)
            fields, parts = _encode_quantized(codes, step, q)
            entry.update(fields)
        else:
            entry["encoding"] = "raw"
            parts = {"data": _raw_bytes(tensor)}
        entry["streams"] = {stream: len(data) for stream, data in parts.items()}
        streams.update({(name, stream): data for stream, data in parts.items()})
        tensors[name] = entry
    sections, plain = _pack_sections(tensors, streams)
    index = {
        "tensors": tensors,
        "plain": plain,
        "modules": _module_attributes(model, {n.rpartition(".")[0] for n in tensors}),
    }
    text = json.dumps(index, separators=(",", ":")).encode()
    codec, packed = _compress(text, index=True)
    blob = np.frombuffer(packed + sections, dtype=np.uint8)
    weights_path = path / WEIGHTS
    safetensors.numpy.save_file({BLOB: blob}, str(weights_path))
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "weights_sha256": hashlib.sha256(weights_path.read_bytes()).hexdigest(),
        "index": {"codec": codec, "bytes": len(packed), "size": len(text)},
    }
    if architecture:
        manifest["architecture"] = architecture
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
def _read_envelope(path: Path) -> dict:
    """``manifest.json``, validated for format and version."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path} is not a geta artifact: {MANIFEST} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(
            f"{path / MANIFEST} is corrupted ({err}); export the model again"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        format_ = manifest.get("format") if isinstance(manifest, dict) else None
        raise ArtifactError(f"{path} is not a geta artifact (format {format_!r})")
    if manifest.get("version") not in READABLE_VERSIONS:
        readable = " and ".join(map(str, READABLE_VERSIONS))
        raise ArtifactError(
            f"{path} has artifact format version {manifest.get('version')}; this geta reads "
            f"versions {readable}. Load it with the geta version that wrote it, or export again."
        )
    return manifest


def _read_blob(path: Path, manifest: dict) -> bytes:
    weights = path / WEIGHTS
    try:
        data = weights.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{weights} is missing") from None
    if hashlib.sha256(data).hexdigest() != manifest.get("weights_sha256"):
        raise ArtifactError(
            f"{weights} does not match the checksum in its manifest (truncated or corrupted, "
            f"{len(data)} bytes); copy or export it again"
        )
    try:
        return safetensors.numpy.load(data)[BLOB].tobytes()
    except Exception as err:
        raise ArtifactError(f"{weights} cannot be parsed: {err}") from None


def _read(path: str | Path) -> tuple[dict, bytes]:
    """The manifest with its index merged in, and the sections after the index."""
    path = Path(path)
    manifest = _read_envelope(path)
    blob = _read_blob(path, manifest)
    try:
        spec = manifest["index"]
        text = _decompress(spec["codec"], blob[: spec["bytes"]], spec["size"], manifest["version"])
        index = json.loads(text)
        if not isinstance(index, dict) or not isinstance(index.get("tensors"), dict):
            raise ValueError("the index has no tensor table")
        for entry in index["tensors"].values():
            entry["numel"] = int(np.prod(entry["shape"]))
            entry["bytes"] = sum(entry["streams"].values())
            if "channel_bits" in entry:
                entry["channel_bits"] = _read_channel_bits(entry)
    except (KeyError, TypeError, ValueError, AttributeError, lzma.LZMAError, zlib.error) as err:
        raise ArtifactError(f"{path}: the index of {WEIGHTS} cannot be read: {err}") from None
    return {**manifest, **index}, blob[spec["bytes"] :]


def read_manifest(path: str | Path) -> dict:
    """The manifest of an artifact, validated for format, version and checksum, with its index
    merged in: ``tensors`` (per tensor: shape, dtype, encoding, bits, layout, coders, stream
    lengths, numel, bytes; from version 3 a quantized weight's ``channel_bits``), ``modules``
    (size attributes) and ``plain``."""
    return _read(path)[0]


def _load(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    manifest, sections = _read(path)
    tensors = manifest["tensors"]
    try:
        streams = _unpack_sections(tensors, manifest["plain"], sections)
    except (KeyError, TypeError, ValueError, lzma.LZMAError, zlib.error) as err:
        raise ArtifactError(f"{path}: the sections of {WEIGHTS} cannot be read: {err}") from None
    out = {}
    for name, entry in tensors.items():
        parts = {stream: streams[name, stream] for stream in entry["streams"]}
        try:
            for stream, length in entry["streams"].items():
                if len(parts[stream]) != length:
                    raise KeyError(f"{stream} ({length} bytes)")
            if entry["encoding"] == "quantized":
                tensor = torch.from_numpy(_decode_quantized(entry, parts))
            elif entry["encoding"] == "raw":
                tensor = _from_raw(parts["data"], entry)
            else:
                raise ValueError(f"unknown encoding {entry['encoding']!r}")
        except KeyError as err:
            raise ArtifactError(
                f"{path}: tensor data {err} for {name} is missing from {WEIGHTS}"
            ) from None
        except (TypeError, ValueError, IndexError, OverflowError, RuntimeError) as err:
            raise ArtifactError(f"{path}: tensor {name} cannot be decoded: {err}") from None
        if list(tensor.shape) != entry["shape"]:
            raise ArtifactError(
                f"{path}: tensor {name} has shape {list(tensor.shape)}, manifest says {entry['shape']}"
            )
        out[name] = tensor.to(_torch_dtype(entry["dtype"]))
    return manifest, out


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of an artifact as float (dequantized) torch tensors."""
    return _load(Path(path))[1]


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
    manifest, tensors = _load(path)
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
    set_module_attributes(module, manifest.get("modules", {}))
    return module.eval()
