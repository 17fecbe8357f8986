"""What an artifact's index may declare: the checks :mod:`geta.export.artifact` runs on it
before anything is allocated or decoded.

An index is JSON that anyone can write, with a checksum anyone can recompute, so every field is
checked for its type and range (:func:`check_index`), and every stream for the bytes its coder
needs for the count its tensor declares (:func:`check_streams`). No count can then exceed what
the bytes present can produce:

- packed at width ``w``: exactly ``ceil(count * w / 8)`` bytes;
- rANS: the lanes' final states, 4 bytes per 2048 symbols, so ``count <= 512 * state bytes``.
  This is tighter than the entropy bound (a symbol of probability ``(2**P - 1) / 2**P`` costs
  ``log2(2**P / (2**P - 1))`` bits, 0.00035 at ``P = 12``: about 45,000 symbols for a lane's 16
  bits of state); and at most one 16-bit word per symbol;
- Rice: every position costs a 0 bit of the unary stream and ``k`` bits of remainder, and the
  unary ones add up to at most ``(numel - positions) >> k``;
- channels: one width per channel (the channels are bounded by the 4-byte steps of the plain
  section); the values stream holds exactly what the decoded widths need (checked then).

Zeros cost nothing (a packed width of 0, a channel of zeros, the unmarked positions of the
sparse layout), so only the caller's ``max_bytes`` bounds a tensor's size: :func:`decoded_bytes`
gives what each tensor will take.
"""

from __future__ import annotations

import math
import reprlib
from typing import Any

import torch

from geta.export.packing import RANS_PRECISION, rans_lanes

__all__ = [
    "CODECS",
    "MAX_WIDTH",
    "STEP_STREAMS",
    "check_index",
    "check_streams",
    "decoded_bytes",
    "integer",
    "number",
    "quantizer_channels",
    "short",
    "torch_dtype",
]

MAX_WIDTH = 32  # the widest value pack_bits stores
MAX_DIMS = 64  # numpy's limit
MAX_DIM = (1 << 63) - 1  # torch sizes are int64
MAX_OFFSET = 1 << MAX_WIDTH  # a coder's ``lo``: codes fit in 32 bits
STEP_STREAMS = ("step", "clip_exponent")  # float32, in the plain section
CODECS = ("none", "zlib", "zlib-dict", "lzma")
_DTYPE_NAMES = (
    "bool",
    "uint8",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "complex64",
    "complex128",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
)
# by the name save() writes (str(dtype) without "torch."); those this torch lacks are left out
_DTYPES = {
    name: getattr(torch, name)
    for name in _DTYPE_NAMES
    if isinstance(getattr(torch, name, None), torch.dtype)
}

Need = dict[str, tuple[range, str]]  # stream -> (lengths allowed, what they hold)


def short(value: Any) -> str:
    """``repr(value)``, shortened: a crafted index may hold megabytes in one field."""
    return reprlib.repr(value)


def number(n: int) -> str:
    """``n`` for a message, readable however large (``1.21e+24``; ``about 2**4000``)."""
    if n < 10**12:
        return f"{n:,}"
    return f"{float(n):.3g}" if n.bit_length() < 1000 else f"about 2**{n.bit_length() - 1}"


def integer(value: Any, what: str, low: int | None = 0, high: int | None = None) -> int:
    """``value`` if it is an integer (not a bool) in ``low..high`` (``None``: unbounded), else a
    ``ValueError`` that names ``what``."""
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and (low is None or value >= low)
        and (high is None or value <= high)
    ):
        return value
    span = f"{'' if low is None else number(low)}..{'' if high is None else number(high)}"
    raise ValueError(f"{what} is {short(value)}, not an integer in {span}")


def torch_dtype(name: Any) -> torch.dtype:
    """The dtype ``save`` wrote as ``name``; only the dtypes of ordinary tensors are known."""
    dtype = _DTYPES.get(name) if isinstance(name, str) else None
    if dtype is None:
        raise ValueError(f"unknown dtype {short(name)}")
    return dtype


# ---------------------------------------------------------------------------- the index
def check_index(index: Any) -> None:
    """``ValueError`` unless ``index`` has the fields and types :func:`save` writes; adds each
    tensor's ``numel`` and ``bytes`` (the sum of its streams' lengths)."""
    if not isinstance(index, dict) or not isinstance(index.get("tensors"), dict):
        raise ValueError("the index has no tensor table")
    for name, entry in index["tensors"].items():
        try:
            _check_entry(entry)
        except ValueError as err:
            raise ValueError(f"tensor {name}: {err}") from None
    _check_plain(index.get("plain"))
    _check_modules(index.get("modules", {}))


def _check_entry(entry: Any) -> None:
    if not isinstance(entry, dict):
        raise ValueError(f"the entry is {short(entry)}, not a table")
    shape = entry.get("shape")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS:
        raise ValueError(f"shape {short(shape)} is not a list of at most {MAX_DIMS} sizes")
    for size in shape:
        integer(size, "a size in the shape", 0, MAX_DIM)
    torch_dtype(entry.get("dtype"))
    if entry.get("encoding") not in ("raw", "quantized"):
        raise ValueError(f"unknown encoding {short(entry.get('encoding'))}")
    streams = entry.get("streams")
    if not isinstance(streams, dict):
        raise ValueError(f"streams {short(streams)} is not a table of lengths")
    for stream, length in streams.items():
        integer(length, f"the length of stream {stream}")
    if entry["encoding"] == "quantized":
        quantizer_channels(entry)
    elif "channel_bits" in entry:
        raise ValueError("channel_bits on an unquantized tensor")
    entry["numel"] = math.prod(shape)
    entry["bytes"] = sum(streams.values())


def quantizer_channels(entry: dict) -> int:
    """The number of channels of a quantized entry's quantizer: the size of its axis, or 1 for
    a per-tensor quantizer; ``ValueError`` when ``per_channel`` or ``axis`` is malformed."""
    per_channel, shape = entry.get("per_channel"), entry["shape"]
    if not isinstance(per_channel, bool):
        raise ValueError(f"per_channel is {short(per_channel)}, not true or false")
    if not per_channel:
        integer(entry.get("axis"), "axis", None)
        return 1
    if not shape:
        raise ValueError("a per-channel quantizer on a scalar")
    return shape[integer(entry.get("axis"), "axis", -len(shape), len(shape) - 1)]


def _check_plain(plain: Any) -> None:
    if not isinstance(plain, dict) or plain.get("codec") not in CODECS:
        codec = plain.get("codec") if isinstance(plain, dict) else plain
        raise ValueError(f"the plain section's codec is {short(codec)}, not one of {CODECS}")
    integer(plain.get("bytes"), "the plain section's size")
    groups = plain.get("groups")
    if not isinstance(groups, dict):
        raise ValueError(f"the plain section's groups are {short(groups)}, not a table")
    for size, length in groups.items():
        if not (size.isascii() and size.isdigit() and int(size) > 0):
            raise ValueError(f"a plain group has item size {short(size)}")
        integer(length, f"the length of the plain group of item size {size}")


def _check_modules(modules: Any) -> None:
    """The size attributes: public names, integers or lists of integers."""
    if not isinstance(modules, dict) or not all(isinstance(a, dict) for a in modules.values()):
        raise ValueError(f"modules {short(modules)} is not a table of attribute tables")
    for name, attrs in modules.items():
        for key, value in attrs.items():
            field = key.removeprefix("config.")  # an integer field of a config the module keeps
            if not field.isidentifier() or field.startswith("_"):
                raise ValueError(f"module {name} has an attribute named {short(key)}")
            for item in value if isinstance(value, list) else [value]:
                integer(item, f"attribute {key} of module {name}", None)


# ---------------------------------------------------------------------------- the streams
def decoded_bytes(entry: dict) -> int:
    """The bytes a checked entry takes once decoded: the tensor at its dtype, and the steps
    and clips of its quantizer."""
    steps = sum(entry["streams"].get(s, 0) for s in STEP_STREAMS)
    return entry["numel"] * torch_dtype(entry["dtype"]).itemsize + steps


def check_streams(entry: dict) -> None:
    """``ValueError`` unless a checked entry's streams are the ones its encoding needs, each as
    long as its coder needs for the count the entry declares (an absent stream is empty)."""
    if entry["encoding"] == "raw":
        dtype = torch_dtype(entry["dtype"])
        n = entry["numel"]
        need = {"data": (_exactly(n * dtype.itemsize), f"for {number(n)} values of {dtype}")}
    else:
        need = _quantized_streams(entry)
    unknown = sorted(set(entry["streams"]) - set(need))
    if unknown:
        raise ValueError(f"unknown streams {short(unknown)}")
    for stream, (allowed, why) in need.items():
        length = entry["streams"].get(stream, 0)
        if length not in allowed:
            raise ValueError(f"{stream} holds {length} bytes, {_span(allowed)} needed {why}")


def _exactly(n: int) -> range:
    return range(n, n + 1)


def _span(allowed: range) -> str:
    if len(allowed) == 1:
        return number(allowed.start)
    step = f" (a multiple of {allowed.step})" if allowed.step > 1 else ""
    return f"{number(allowed.start)} to {number(allowed[-1])}{step}"


def _quantized_streams(entry: dict) -> Need:
    dtype = torch_dtype(entry["dtype"])
    if not dtype.is_floating_point:
        raise ValueError(f"a quantized {dtype}: only floating-point tensors are quantized")
    n, channels = entry["numel"], quantizer_channels(entry)
    integer(entry.get("bits"), "bits", 1, MAX_WIDTH)
    nonzeros = integer(entry.get("nonzeros"), "nonzeros", 0, n)
    per_channel = channels if entry["per_channel"] else None
    need: Need = {
        "step": (_exactly(4 * channels), f"for {number(channels)} steps"),
        "clip_exponent": (range(4, 8 * channels + 1, 4), f"for {number(channels)} channels"),
    }
    layout = entry.get("layout")
    if layout == "dense":
        need.update(_value_streams(entry.get("codes"), "codes", n, per_channel))
    elif layout == "sparse":
        need.update(_rice_streams(entry, n, nonzeros))
        need.update(_value_streams(entry.get("values"), "values", nonzeros, per_channel))
    else:
        raise ValueError(f"unknown layout {short(layout)}")
    return need


def _rice_streams(entry: dict, n: int, nonzeros: int) -> Need:
    """The positions of the sparse layout: a 0 bit ends each one's unary quotient, and the
    quotients add up to at most ``(n - positions) >> k`` (the gaps add up to at most that)."""
    marks = entry.get("marks")
    if marks not in ("nonzero", "zero"):
        raise ValueError(f"unknown marks {short(marks)}")
    positions = nonzeros if marks == "nonzero" else n - nonzeros
    k = integer(entry.get("rice_k"), "rice_k", 0, max(n, 1).bit_length())
    most = ((n - positions) >> k) + positions
    return {
        "unary": (
            range((positions + 7) // 8, (most + 7) // 8 + 1),
            f"for {number(positions)} positions",
        ),
        "remainders": (
            _exactly((positions * k + 7) // 8),
            f"for {number(positions)} remainders of {k} bits",
        ),
    }


def _value_streams(spec: Any, stream: str, count: int, channels: int | None) -> Need:
    """What the codes (or nonzero values) of a tensor need: :func:`_symbol_streams`, or for
    the channels coder its widths (one per channel) and a values stream whose exact length
    the decoded widths give (here: at most ``MAX_WIDTH`` bits a value and a byte a width)."""
    if not isinstance(spec, dict) or spec.get("coder") != "channels":
        return _symbol_streams(spec, stream, count)
    if channels is None:
        raise ValueError(f"{stream} uses the channels coder without a per-channel quantizer")
    need = _symbol_streams(spec.get("widths"), f"{stream}.widths", channels)
    most = (count * MAX_WIDTH + 7) // 8 + MAX_WIDTH
    need[stream] = (range(most + 1), f"for {number(count)} values")
    return need


def _symbol_streams(spec: Any, stream: str, count: int) -> Need:
    """What ``count`` values coded by ``spec`` (packed or rANS) need."""
    if not isinstance(spec, dict):
        raise ValueError(f"the coder of {stream} is {short(spec)}, not a table")
    coder = spec.get("coder")
    if coder not in ("packed", "rans"):
        raise ValueError(f"unknown coder {short(coder)}")
    integer(spec.get("lo"), f"the offset of {stream}", -MAX_OFFSET, MAX_OFFSET)
    if coder == "packed":  # the upper bound of the width is the decoder's: a clearer message
        width = integer(spec.get("width"), f"the width of {stream}")
        why = f"for {number(count)} values of {width} bits"
        return {stream: (_exactly((count * width + 7) // 8), why)} if width else {}
    symbols = integer(spec.get("symbols"), f"the symbols of {stream}", 1, 1 << RANS_PRECISION)
    lanes = rans_lanes(count)
    return {
        f"{stream}.freqs": (
            _exactly((symbols * RANS_PRECISION + 7) // 8),
            f"for {symbols} symbols",
        ),
        f"{stream}.states": (_exactly(4 * lanes), f"for {number(count)} values ({lanes} lanes)"),
        f"{stream}.words": (range(0, 2 * count + 1, 2), f"for {number(count)} values"),
    }
