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

The reader takes an artifact from anywhere: the checksum catches damage, not a crafted file
(anyone can recompute it). Before anything is allocated the index is checked field by field,
every stream against the bytes its coder needs for the count its tensor declares (so no count
exceeds what the bytes present can produce, :mod:`geta.export.bounds`), and the decoded size
against ``max_bytes``; the decoded codes against the index's bits and nonzeros. Whatever is
wrong raises :class:`~geta.errors.ArtifactError`.

    geta.export.save(model, "out/", example_inputs=(x,))   # also writes out/model.pt2
    small = geta.export.load("out/", model=lambda: lenet5())
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import lzma
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
import torch
from torch import nn
from torch.nn.utils import parametrize

from geta.errors import ArtifactError
from geta.export.bounds import (
    CODECS,
    MAX_WIDTH,
    STEP_STREAMS,
    check_index,
    check_streams,
    decoded_bytes,
    integer,
    number,
    quantizer_channels,
    short,
    torch_dtype,
)
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
from geta.graph.rewrites import config_sizes, set_size
from geta.quant.codes import quantized_codes
from geta.quant.prepare import dequantized_copy, input_quantizers, weight_quantizers
from geta.quant.quantizer import Quantizer

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_RATIO",
    "FORMAT",
    "VERSION",
    "StoredCodes",
    "load",
    "load_codes",
    "load_tensors",
    "read_manifest",
    "save",
]

FORMAT = "geta-artifact"
VERSION = 3
READABLE_VERSIONS = (2, 3)  # version 2 has neither the channels coder nor channel_bits
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
PROGRAM = "model.pt2"
BLOB = "data"  # the one tensor of weights.safetensors
_RANS_MAX_SYMBOLS = 256
# What load may decode unless told (max_bytes=): 16 GiB, or 64 times the weights file when that
# is more (a 4-bit artifact decodes to about 8 times its size, a sparse 2-bit one to tens).
# Zero tensors cost no bytes at all, so no bound drawn from the file alone fits every artifact.
DEFAULT_MAX_BYTES = 16 << 30
DEFAULT_MAX_RATIO = 64
_MAX_MANIFEST_BYTES = 1 << 20  # a manifest takes a few hundred bytes
_MAX_INDEX_BYTES = 1 << 26  # an index takes about 200 bytes a tensor


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
    """Inverse of :func:`_encode_symbols` (an absent stream is empty: the index was checked by
    :func:`geta.export.bounds.check_streams`)."""
    if spec["coder"] == "rans":
        table = parts.get(f"{stream}.freqs", b"")
        freqs = unpack_bits(table, RANS_PRECISION, spec["symbols"])
        states, words = parts.get(f"{stream}.states", b""), parts.get(f"{stream}.words", b"")
        shifted = rans_decode(states, words, freqs, count)
    elif spec["coder"] == "packed" and spec["width"]:
        if spec["width"] > MAX_WIDTH:
            raise ValueError(f"{stream} is packed at {spec['width']} bits, at most {MAX_WIDTH}")
        shifted = unpack_bits(parts.get(stream, b""), spec["width"], count).astype(np.int64)
    elif spec["coder"] == "packed":
        shifted = np.zeros(count, dtype=np.int64)
    else:
        raise ValueError(f"unknown coder {short(spec['coder'])}")
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
    if int(widths.max(initial=0)) > MAX_WIDTH:
        return None
    spec, streams = _encode_symbols(widths, f"{stream}.widths")
    of_value = widths[channel]
    counts = np.bincount(of_value, minlength=MAX_WIDTH + 1)
    used = [w for w in range(1, MAX_WIDTH + 1) if counts[w]]
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
    if widths.size and (int(widths.min()) < 0 or int(widths.max()) > MAX_WIDTH):
        raise ValueError(
            f"channel widths of {int(widths.min())} to {int(widths.max())} bits "
            f"(0 to {MAX_WIDTH} allowed): the widths stream is corrupted"
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
    """The histogram of a checked index entry as :func:`read_manifest` gives it, always a dict
    (a stored plain number counts every channel). Informative only: nothing is decoded by it."""
    stored, channels = entry["channel_bits"], quantizer_channels(entry)
    if isinstance(stored, int) and not isinstance(stored, bool):
        stored = {str(stored): channels}
    if not isinstance(stored, dict) or not all(
        isinstance(k, str)
        and k.isascii()
        and k.isdigit()
        and isinstance(n, int)
        and not isinstance(n, bool)
        and n >= 0
        for k, n in stored.items()
    ):
        raise ValueError(f"malformed channel_bits {short(stored)}")
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


def _decode_codes(entry: dict, parts: dict[str, bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`_encode_quantized` for a checked entry: the integer codes in the
    weight's shape, and the steps shaped to broadcast against them."""
    shape, n = entry["shape"], entry["numel"]
    per_channel = entry["per_channel"]
    axis = entry["axis"] % len(shape) if per_channel else 0
    channels = quantizer_channels(entry) if per_channel else 0
    every = (lambda: _channel_index(shape, axis)) if per_channel else None
    if entry["layout"] == "dense":
        flat = _decode_values(entry["codes"], "codes", parts, n, every, channels)
        if int(np.count_nonzero(flat)) != entry["nonzeros"]:
            raise ValueError(
                f"{np.count_nonzero(flat)} nonzero codes, the index says {entry['nonzeros']}: "
                "the codes are corrupted"
            )
    elif entry["layout"] == "sparse":
        nonzero = _decode_positions(entry, parts)
        at = (lambda: _channel_index(shape, axis)[nonzero]) if per_channel else None
        values = _decode_values(entry["values"], "values", parts, entry["nonzeros"], at, channels)
        flat = np.zeros(n, dtype=np.int64)
        flat[nonzero] = values + (values >= 0)
    else:
        raise ValueError(f"unknown layout {short(entry['layout'])}")
    _check_codes(flat, entry["bits"])
    step = np.frombuffer(parts["step"], dtype="<f4")
    if per_channel:
        view = [1] * len(shape)
        view[axis] = -1
        step = step.reshape(view)
    elif step.size != 1:
        raise ValueError(f"{step.size} steps for a per-tensor quantizer")
    return flat.reshape(shape), step


def _decode_quantized(entry: dict, parts: dict[str, bytes]) -> np.ndarray:
    """The dequantized float32 weight of a checked entry."""
    codes, step = _decode_codes(entry, parts)
    with np.errstate(over="ignore", invalid="ignore"):  # a corrupted step may be inf or nan
        return (codes.astype(np.float32) * step).astype(np.float32)


def _decode_positions(entry: dict, parts: dict[str, bytes]) -> np.ndarray:
    """The nonzero mask of the sparse layout, from the Rice-coded gaps between its marks."""
    n, nonzeros = entry["numel"], entry["nonzeros"]
    marks = nonzeros if entry["marks"] == "nonzero" else n - nonzeros
    gaps = rice_decode(
        parts.get("unary", b""), parts.get("remainders", b""), entry["rice_k"], marks
    )
    # every gap is below n, so the float sum is exact enough to rule out an int64 overflow
    if gaps.size and (int(gaps.max()) >= n or float(gaps.sum(dtype=np.float64)) + marks > n):
        raise ValueError(f"the positions run past the {n} elements: the positions are corrupted")
    nonzero = np.zeros(n, dtype=bool)
    nonzero[np.cumsum(gaps + 1) - 1] = True
    return ~nonzero if entry["marks"] == "zero" else nonzero


def _check_codes(codes: np.ndarray, bits: int) -> None:
    """The codes of a ``bits``-bit weight lie in ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]``
    (:func:`_bits_for`): a code outside is a corrupted stream."""
    top = (1 << (bits - 1)) - 1
    if codes.size and (int(codes.max()) > top or int(codes.min()) < -top):
        raise ValueError(
            f"codes of {int(codes.min())} to {int(codes.max())} in a {bits}-bit weight (at most "
            f"{top} in magnitude): the codes are corrupted"
        )


# ---------------------------------------------------------------------------- sections
def _itemsize(entry: dict, stream: str) -> int:
    """The item size of a plain stream (its bytes are shuffled with others of that size), or
    0 for a stream of the coded section."""
    if stream in STEP_STREAMS:
        return 4
    if entry["encoding"] == "raw":
        return torch_dtype(entry["dtype"]).itemsize
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
    than ``size + 1`` bytes, and raises unless ``data`` is one whole stream of ``size`` bytes."""
    if codec == "none":
        out, whole = data, True
    elif codec in ("zlib", "zlib-dict", "lzma"):
        if codec == "lzma":
            decoder: Any = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
        else:
            zdict = {"zdict": _index_dictionary(version)} if codec == "zlib-dict" else {}
            decoder = zlib.decompressobj(-15, **zdict)
        out = decoder.decompress(data, size + 1)
        whole = decoder.eof and not decoder.unused_data
    else:
        raise ValueError(f"unknown codec {short(codec)}")
    if len(out) != size:
        raise ValueError(f"{codec} data holds {len(out)} bytes, {size} expected")
    if not whole:
        raise ValueError(f"{codec} data of {len(data)} bytes does not end where its stream does")
    return out


def _raw_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def _from_raw(data: bytes, entry: dict) -> torch.Tensor:
    dtype = torch_dtype(entry["dtype"])
    if dtype == torch.bool and data.translate(None, b"\x00\x01"):
        raise ValueError("a bool tensor holds bytes other than 0 and 1")
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
    runs past the end of its section comes back short. Every section is checked against the
    index before the plain one is decompressed, so it never holds more than the index places."""
    groups = {int(size): length for size, length in plain["groups"].items()}
    places, ends = _layout(tensors)
    if plain["bytes"] > len(data):
        raise ValueError(f"the plain section of {plain['bytes']} bytes runs past the end")
    declared = {0: len(data) - plain["bytes"], **groups}
    for group, length in declared.items():
        if group and length % group:
            raise ValueError(f"a plain group of item size {group} cannot hold {length} bytes")
        if ends.get(group, 0) < length:
            raise ValueError(f"{length - ends.get(group, 0)} bytes are not in the index")
    raw = _decompress(plain["codec"], data[: plain["bytes"]], sum(groups.values()))
    sections, offset = {0: data[plain["bytes"] :]}, 0
    for size, length in sorted(groups.items()):
        sections[size] = _shuffle(raw[offset : offset + length], size, inverse=True)
        offset += length
    empty = b""
    return {
        key: sections.get(group, empty)[start : start + n]
        for key, (group, start, n) in places.items()
    }


# ---------------------------------------------------------------------------- save
def _with_parents(names: Iterable[str]) -> set[str]:
    """Module names and every module above them (an attention block holding the layers whose
    head count surgery rewrote)."""
    out = set()
    for name in names:
        parts = name.split(".") if name else []
        out.update(".".join(parts[:i]) for i in range(len(parts) + 1))
    return out


def _module_attributes(model: nn.Module, owners: set[str]) -> dict[str, dict[str, Any]]:
    """Integer-valued public attributes (in_channels, groups, num_heads, ...) of the modules
    ``owners`` names (those that own stored tensors and the modules above them), and the
    integer fields of a config a module keeps: what surgery may have changed."""
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
        attrs.update(config_sizes(module))  # a config the module reads sizes from at run time
        if attrs:
            out[name] = attrs
    return out


def set_module_attributes(model: nn.Module, modules: dict[str, dict[str, Any]]) -> None:
    """Set the size attributes recorded by :func:`_module_attributes` (JSON lists back to
    tuples) on ``model``'s submodules; names the model lacks are skipped.

    Raises:
        ArtifactError: an attribute is private, or would replace one that is not a size (an
            integer or a tuple of them): a crafted artifact must not rewire the model.
    """
    for name, attrs in modules.items():
        try:
            owner = model.get_submodule(name)
        except AttributeError:
            continue
        for key, value in attrs.items():
            if key in config_sizes(owner):
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ArtifactError(f"the artifact sets {name}.{key} to {value!r}, not a size")
                if config_sizes(owner)[key] != value:
                    set_size(owner, key, value)
                continue
            if key.startswith("_") or "." in key or not _is_size(getattr(owner, key, None)):
                raise ArtifactError(
                    f"the artifact sets {name or 'the model'}.{key}, which is not a size "
                    f"attribute of the model: the artifact is corrupted or crafted, or does not "
                    f"fit the model"
                )
            setattr(owner, key, tuple(value) if isinstance(value, list) else value)


def _is_size(value: Any) -> bool:
    """Whether ``value`` may be replaced by a recorded size: none yet, an integer, or a tuple
    of integers (never a bool, a method or a module)."""
    if isinstance(value, tuple):
        return all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


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
        "modules": _module_attributes(model, _with_parents(n.rpartition(".")[0] for n in tensors)),
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
        float_model = dequantized_copy(model).eval()
        program = torch.export.export(float_model, tuple(example_inputs), strict=False)
        torch.export.save(program, str(path / PROGRAM))
    return path


# ---------------------------------------------------------------------------- load
def _read_envelope(path: Path) -> dict:
    """``manifest.json``, validated for format and version."""
    manifest_path = path / MANIFEST
    try:
        if manifest_path.stat().st_size > _MAX_MANIFEST_BYTES:
            raise ArtifactError(
                f"{manifest_path} takes {manifest_path.stat().st_size} bytes, more than a "
                f"manifest ever does ({_MAX_MANIFEST_BYTES}): it is not a geta manifest"
            )
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path} is not a geta artifact: {MANIFEST} is missing") from None
    except (ValueError, RecursionError) as err:  # bad JSON, bad UTF-8, too deep
        raise ArtifactError(
            f"{manifest_path} is corrupted ({err}); export the model again"
        ) from None
    except OSError as err:
        raise ArtifactError(f"{manifest_path} cannot be read: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        format_ = manifest.get("format") if isinstance(manifest, dict) else None
        raise ArtifactError(f"{path} is not a geta artifact (format {short(format_)})")
    version = manifest.get("version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        readable = " and ".join(map(str, READABLE_VERSIONS))
        raise ArtifactError(
            f"{path} has artifact format version {short(version)}; this geta reads "
            f"versions {readable}. Load it with the geta version that wrote it, or export again."
        )
    return manifest


def _read_blob(path: Path, manifest: dict) -> bytes:
    weights = path / WEIGHTS
    try:
        data = weights.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{weights} is missing") from None
    except OSError as err:
        raise ArtifactError(f"{weights} cannot be read: {err}") from None
    if hashlib.sha256(data).hexdigest() != manifest.get("weights_sha256"):
        raise ArtifactError(
            f"{weights} does not match the checksum in its manifest (truncated or corrupted, "
            f"{len(data)} bytes); copy or export it again"
        )
    try:
        return safetensors.numpy.load(data)[BLOB].tobytes()
    except Exception as err:
        raise ArtifactError(f"{weights} cannot be parsed: {err}") from None


@contextlib.contextmanager
def _decoding(path: Path, name: str) -> Iterator[None]:
    """Turn what goes wrong while checking or decoding tensor ``name`` into an ArtifactError."""
    try:
        yield
    except KeyError as err:
        raise ArtifactError(
            f"{path}: tensor data {err} for {name} is missing from {WEIGHTS}; copy or export "
            f"the artifact again"
        ) from None
    except (TypeError, ValueError, IndexError, OverflowError, RuntimeError) as err:
        raise ArtifactError(
            f"{path}: tensor {name} cannot be decoded: {err}. The artifact is corrupted or "
            f"crafted: export it again"
        ) from None


def _read_index(manifest: dict, blob: bytes) -> tuple[dict, int]:
    """The checked index (:func:`geta.export.bounds.check_index`) and where it ends."""
    spec = manifest.get("index")
    if not isinstance(spec, dict) or spec.get("codec") not in CODECS:
        raise ValueError(f"the manifest's index is {short(spec)}: no known codec")
    end = integer(spec.get("bytes"), "the index's size", 0, len(blob))
    size = integer(spec.get("size"), "the index's decompressed size", 0, _MAX_INDEX_BYTES)
    index = json.loads(_decompress(spec["codec"], blob[:end], size, manifest["version"]))
    check_index(index)
    for entry in index["tensors"].values():
        if "channel_bits" in entry:
            entry["channel_bits"] = _read_channel_bits(entry)
    return index, end


def _read(path: str | Path) -> tuple[dict, bytes]:
    """The manifest with its index merged in, and the sections after the index. The index is
    checked: every field for its type and range, every tensor's streams for the bytes their
    coders need (:mod:`geta.export.bounds`)."""
    path = Path(path)
    manifest = _read_envelope(path)
    blob = _read_blob(path, manifest)
    try:
        index, end = _read_index(manifest, blob)
    except (ValueError, RecursionError, lzma.LZMAError, zlib.error) as err:
        raise ArtifactError(
            f"{path}: the index of {WEIGHTS} cannot be read: {err}. The artifact is corrupted or "
            f"was not written by geta: export it again"
        ) from None
    for name, entry in index["tensors"].items():
        with _decoding(path, name):
            check_streams(entry)
    known = {key: index[key] for key in ("tensors", "plain", "modules") if key in index}
    return {**manifest, **known}, blob[end:]


def read_manifest(path: str | Path) -> dict:
    """The manifest of an artifact, validated for format, version and checksum, with its index
    merged in: ``tensors`` (per tensor: shape, dtype, encoding, bits, layout, coders, stream
    lengths, numel, bytes; from version 3 a quantized weight's ``channel_bits``), ``modules``
    (size attributes) and ``plain``. Every field of the index is checked for its type and
    range, every stream's length against what its coder needs; nothing is decoded, so no
    shape is checked against a ``max_bytes``."""
    return _read(path)[0]


def _max_bytes(path: Path, max_bytes: int | None) -> int:
    """``max_bytes``, or by default the larger of :data:`DEFAULT_MAX_BYTES` and
    :data:`DEFAULT_MAX_RATIO` times the weights file."""
    if max_bytes is not None:
        return max_bytes
    return max(DEFAULT_MAX_BYTES, DEFAULT_MAX_RATIO * (path / WEIGHTS).stat().st_size)


def _check_budget(path: Path, tensors: dict, max_bytes: int) -> None:
    """ArtifactError unless the tensors, decoded, take at most ``max_bytes`` in all."""
    total = 0
    for name, entry in tensors.items():
        size = decoded_bytes(entry)
        total += size
        if total <= max_bytes:
            continue
        what = (
            f"tensor {name} declares {number(size)} bytes"
            if size > max_bytes
            else f"the tensors up to {name} declare {number(total)} bytes"
        )
        raise ArtifactError(
            f"{path}: {what}, more than max_bytes={number(max_bytes)}: the artifact is corrupted "
            f"or crafted; pass max_bytes= to load larger models"
        )


def _tensor_parts(name: str, entry: dict, streams: dict[tuple[str, str], bytes]) -> dict:
    """A tensor's streams by name, each checked to hold the bytes its index entry declares
    (a stream that runs past its section comes back short)."""
    parts = {stream: streams[name, stream] for stream in entry["streams"]}
    for stream, length in entry["streams"].items():
        if len(parts[stream]) != length:
            raise KeyError(f"{stream} ({length} bytes)")
    return parts


def _decode_tensor(name: str, entry: dict, streams: dict[tuple[str, str], bytes]) -> torch.Tensor:
    """One checked tensor from its streams."""
    parts = _tensor_parts(name, entry, streams)
    if entry["encoding"] == "quantized":
        tensor = torch.from_numpy(_decode_quantized(entry, parts))
    else:
        tensor = _from_raw(parts["data"], entry)
    if list(tensor.shape) != entry["shape"]:
        raise ValueError(f"decoded shape {list(tensor.shape)}, the index says {entry['shape']}")
    return tensor.to(torch_dtype(entry["dtype"]))


def _streams(path: Path, max_bytes: int | None) -> tuple[dict, dict[tuple[str, str], bytes]]:
    """The manifest and every stream by ``(tensor, stream)``. Nothing is allocated for the
    tensors before the index is checked: every field and every stream's length against what
    its coder needs for the count its tensor declares (:func:`_read`), and the total size
    against ``max_bytes``."""
    if max_bytes is not None:
        integer(max_bytes, "max_bytes")
    manifest, sections = _read(path)
    tensors = manifest["tensors"]
    _check_budget(path, tensors, _max_bytes(path, max_bytes))
    try:
        return manifest, _unpack_sections(tensors, manifest["plain"], sections)
    except (ValueError, lzma.LZMAError, zlib.error) as err:
        raise ArtifactError(
            f"{path}: the sections of {WEIGHTS} cannot be read: {err}. The artifact is "
            f"corrupted or crafted: export it again"
        ) from None


def _load(path: Path, max_bytes: int | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """The manifest and every tensor (see :func:`_streams` for the checks)."""
    manifest, streams = _streams(path, max_bytes)
    out = {}
    for name, entry in manifest["tensors"].items():
        with _decoding(path, name):
            out[name] = _decode_tensor(name, entry, streams)
    return manifest, out


@dataclass(frozen=True)
class StoredCodes:
    """A quantized weight as the artifact stores it: ``codes * step`` is the weight.

    ``step`` has one value per channel along ``axis`` (or one value); ``channel_bits`` one
    storage width per channel, the index's histogram handed out to the channels in the order
    of the bits their codes need (the histogram is what the artifact records)."""

    codes: np.ndarray  # int64, the weight's shape
    step: np.ndarray  # float32, 1-D
    axis: int
    channel_bits: np.ndarray  # int64, 1-D, one per step


def _channel_widths(codes: np.ndarray, axis: int, histogram: dict[str, int]) -> np.ndarray:
    """Each channel's storage bits: the histogram's widths, narrowest to the channels whose
    codes need the fewest bits."""
    widths = np.repeat(
        np.array([int(b) for b in histogram], dtype=np.int64), list(histogram.values())
    )
    widths.sort()
    if codes.ndim == 0 or widths.size == 1:
        return widths
    top = np.abs(np.moveaxis(codes, axis, 0).reshape(codes.shape[axis], -1)).max(axis=1)
    out = np.empty_like(widths)
    out[np.argsort(top, kind="stable")] = widths
    return out


def load_codes(path: str | Path, *, max_bytes: int | None = None) -> dict[str, StoredCodes]:
    """The integer codes and steps of every quantized tensor of an artifact, by tensor name
    (what :func:`geta.deploy` runs on integer kernels); checked as :func:`load_tensors`
    checks.

    Raises:
        ArtifactError: as :func:`load_tensors`.
    """
    path = Path(path)
    manifest, streams = _streams(path, max_bytes)
    out = {}
    for name, entry in manifest["tensors"].items():
        if entry["encoding"] != "quantized":
            continue
        with _decoding(path, name):
            codes, step = _decode_codes(entry, _tensor_parts(name, entry, streams))
            axis = entry["axis"] % codes.ndim if entry["per_channel"] else 0
            step = step.reshape(-1).astype(np.float32)
            histogram = entry.get("channel_bits") or {str(entry["bits"]): int(step.size)}
            widths = _channel_widths(codes, axis, histogram)
            if widths.size != step.size:
                raise ValueError(f"{widths.size} channel widths for {step.size} steps")
            out[name] = StoredCodes(codes, step, axis, widths)
    return out


def load_tensors(path: str | Path, *, max_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of an artifact as float (dequantized) torch tensors.

    Args:
        path: the artifact directory.
        max_bytes: the most bytes the decoded tensors may take in all (with their quantizers'
            steps); by default :data:`DEFAULT_MAX_BYTES` or :data:`DEFAULT_MAX_RATIO` times the
            weights file, whichever is larger. Checked before anything is decoded.

    Raises:
        ArtifactError: the artifact is missing, truncated, corrupted, crafted, of another
            version, or larger than ``max_bytes``.
    """
    return _load(Path(path), max_bytes)[1]


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
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ArtifactError(f"the stored architecture {short(spec)} is not 'module:callable'")
    module_name, _, attr = spec.partition(":")
    try:
        built = getattr(importlib.import_module(module_name), attr)()
    except (ImportError, AttributeError) as err:
        raise ArtifactError(f"cannot build architecture {spec!r}: {err}") from None
    if not isinstance(built, nn.Module):
        raise ArtifactError(f"architecture {spec!r} built a {type(built).__name__}, not a module")
    return built


def _set_tensor(module: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Replace the parameter or buffer ``name`` of ``module`` by ``tensor``."""
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
        differentiable = tensor.is_floating_point() or tensor.is_complex()
        requires_grad = old.requires_grad if old is not None else differentiable
        if requires_grad and not differentiable:
            raise ArtifactError(
                f"artifact tensor {name} is {tensor.dtype}, the model's trainable parameter "
                f"cannot be: the artifact is corrupted or does not fit the model"
            )
        owner._parameters[attr] = nn.Parameter(tensor, requires_grad=requires_grad)
    elif attr in owner._buffers:
        owner._buffers[attr] = tensor
    else:
        raise ArtifactError(f"the model has no parameter or buffer {name}")


def load(
    path: str | Path,
    model: nn.Module | Callable[[], nn.Module] | None = None,
    *,
    max_bytes: int | None = None,
) -> nn.Module:
    """Rebuild an ordinary float ``nn.Module`` from an artifact.

    ``model`` is the float architecture (a module, or a factory such as ``lenet5``), possibly
    larger than the saved, pruned one: its tensors are replaced by the artifact's and its
    modules' size attributes restored. Without ``model`` the stored architecture is used: it
    is imported and called, so pass ``model`` for an artifact you do not trust. Outputs equal
    the saved model's fake-quantized outputs.

    Args:
        path: the artifact directory.
        model: the float architecture, or ``None`` for the stored one.
        max_bytes: the most bytes the decoded tensors may take in all (with their quantizers'
            steps); by default :data:`DEFAULT_MAX_BYTES` or :data:`DEFAULT_MAX_RATIO` times the
            weights file, whichever is larger. Checked before anything is decoded.

    Raises:
        ArtifactError: the artifact is missing, truncated, corrupted, crafted, of another
            version, larger than ``max_bytes``, or does not fit the model.
    """
    path = Path(path)
    manifest, tensors = _load(path, max_bytes)
    module = _build(manifest, model)
    for name, tensor in tensors.items():
        _set_tensor(module, name, tensor)
    set_module_attributes(module, manifest.get("modules", {}))
    return module.eval()
