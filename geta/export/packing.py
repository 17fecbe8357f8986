"""Bit packing of unsigned integer codes at any width from 1 to 32 bits, the Golomb-Rice
coding used for the positions of sparse weights, and a static rANS entropy coder for codes
whose levels are unevenly used. Pure numpy, vectorised."""

from __future__ import annotations

import numpy as np

__all__ = [
    "RANS_PRECISION",
    "pack_bits",
    "rans_decode",
    "rans_encode",
    "rans_frequencies",
    "rans_lanes",
    "rice_decode",
    "rice_encode",
    "rice_parameter",
    "unpack_bits",
]

_CHUNK = 1 << 20


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Pack unsigned ints (each < 2**bits) into ``ceil(n * bits / 8)`` bytes, little-endian
    bit order."""
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be in 1..32, got {bits}")
    values = np.ascontiguousarray(values, dtype=np.uint64).ravel()
    if values.size and int(values.max()) >> bits:
        raise ValueError(f"a value does not fit in {bits} bits")
    shifts = np.arange(bits, dtype=np.uint64)
    out = []
    # chunks of a multiple of 8 values keep every chunk byte-aligned
    for start in range(0, values.size, _CHUNK):
        chunk = values[start : start + _CHUNK]
        matrix = ((chunk[:, None] >> shifts) & 1).astype(np.uint8)
        out.append(np.packbits(matrix.ravel(), bitorder="little"))
    return b"".join(a.tobytes() for a in out)


def unpack_bits(data: bytes | np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` values as uint32."""
    raw = (
        np.frombuffer(data, dtype=np.uint8)
        if isinstance(data, bytes | bytearray)
        else np.asarray(data, np.uint8)
    )
    need = (count * bits + 7) // 8
    if raw.size < need:
        raise ValueError(
            f"packed data holds {raw.size} bytes, {need} needed for {count} values of {bits} bits"
        )
    weights = (np.uint64(1) << np.arange(bits, dtype=np.uint64)).astype(np.uint64)
    out = np.empty(count, dtype=np.uint32)
    chunk_bytes = _CHUNK * bits // 8
    for i, start in enumerate(range(0, count, _CHUNK)):
        n = min(_CHUNK, count - start)
        piece = raw[i * chunk_bytes : i * chunk_bytes + (n * bits + 7) // 8]
        flat = np.unpackbits(piece, bitorder="little")[: n * bits].reshape(n, bits)
        out[start : start + n] = (flat.astype(np.uint64) * weights).sum(1).astype(np.uint32)
    return out


def rice_parameter(gaps: np.ndarray) -> int:
    """The Rice parameter k near-optimal for geometric gaps with this mean."""
    scale = (float(gaps.mean()) if gaps.size else 0.0) * np.log(2)
    return int(np.floor(np.log2(scale))) + 1 if scale >= 1 else 0


def rice_encode(gaps: np.ndarray, k: int) -> tuple[bytes, bytes]:
    """Rice-code non-negative ints: unary quotients (ones ended by a zero) in one stream,
    k-bit remainders in another (same size as interleaved Rice, decodable without a loop)."""
    gaps = np.asarray(gaps, dtype=np.int64)
    quotients = gaps >> k
    total = int(quotients.sum()) + gaps.size
    unary = np.ones(total, dtype=np.uint8)
    ends = np.cumsum(quotients + 1) - 1
    unary[ends] = 0
    remainders = pack_bits(gaps & ((1 << k) - 1), k) if k > 0 else b""
    return np.packbits(unary, bitorder="little").tobytes(), remainders


def rice_decode(unary: bytes, remainders: bytes, k: int, count: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(unary, dtype=np.uint8), bitorder="little")
    ends = np.flatnonzero(bits == 0)[:count]
    if ends.size < count:
        raise ValueError("Rice stream is shorter than its declared count")
    quotients = np.diff(np.concatenate([[-1], ends])) - 1
    low = unpack_bits(remainders, k, count).astype(np.int64) if k > 0 else np.zeros(count, np.int64)
    return (quotients << k) | low


# ---------------------------------------------------------------------------- rANS
# Static rANS with 32-bit states and 16-bit output words (as in Giesen's rans_word), run on
# many interleaved lanes at once: symbol i goes to lane i % lanes, so one numpy step codes one
# symbol per lane. Each lane ends in a 4-byte state; about 2048 symbols share a lane.
RANS_PRECISION = 12  # frequencies sum to 2**12
_RANS_LOW = 1 << 16  # states live in [2**16, 2**32)
_SYMBOLS_PER_LANE = 2048


def rans_lanes(count: int) -> int:
    return max(1, -(-count // _SYMBOLS_PER_LANE))


def rans_frequencies(counts: np.ndarray) -> np.ndarray:
    """Frequencies summing to ``2**RANS_PRECISION``, at least 1 for every symbol that occurs,
    close to ``counts``. At most ``2**RANS_PRECISION`` symbols may occur."""
    counts = np.asarray(counts, dtype=np.int64)
    total, scale = int(counts.sum()), 1 << RANS_PRECISION
    present = counts > 0
    if not total or int(present.sum()) > scale:
        raise ValueError("rANS needs 1 to 2**RANS_PRECISION distinct symbols")
    freqs = np.where(present, np.maximum(1, np.round(counts * scale / total)), 0).astype(np.int64)
    while (excess := int(freqs.sum()) - scale) != 0:
        if excess < 0:  # give the missing mass to the most frequent symbol
            freqs[np.argmax(freqs)] -= excess
            continue
        # take it from the symbols that can best spare it (largest, never below 1)
        order = np.argsort(-freqs, kind="stable")
        spare = np.clip(freqs[order] - 1, 0, excess)
        taken = np.minimum(np.cumsum(spare), excess)
        freqs[order] -= np.diff(np.concatenate([[0], taken]))
    return freqs


def rans_encode(symbols: np.ndarray, freqs: np.ndarray) -> tuple[bytes, bytes]:
    """rANS-code ``symbols`` (ints indexing ``freqs``, each with a nonzero frequency).

    Returns the lanes' final states (4 bytes each, ``rans_lanes(len(symbols))`` lanes) and the
    16-bit words, little-endian."""
    symbols = np.asarray(symbols, dtype=np.int64).ravel()
    freqs = np.asarray(freqs, dtype=np.uint64)
    starts = np.concatenate([[0], np.cumsum(freqs)[:-1]]).astype(np.uint64)
    if symbols.size and not freqs[symbols].all():
        raise ValueError("a symbol to code has frequency 0")
    lanes = rans_lanes(symbols.size)
    state = np.full(lanes, _RANS_LOW, dtype=np.uint64)
    emitted = []
    precision, word = np.uint64(RANS_PRECISION), np.uint64(16)
    for first in range(((symbols.size - 1) // lanes) * lanes, -1, -lanes):
        block = symbols[first : first + lanes]
        x = state[: block.size]
        f, c = freqs[block], starts[block]
        full = x >= f << np.uint64(32 - RANS_PRECISION)
        if full.any():
            emitted.append((x[full] & np.uint64(0xFFFF))[::-1])
            x = np.where(full, x >> word, x)
        state[: block.size] = ((x // f) << precision) + x % f + c
    words = np.concatenate(emitted)[::-1] if emitted else np.zeros(0, np.uint64)
    return state.astype("<u4").tobytes(), words.astype("<u2").tobytes()


def rans_decode(states: bytes, words: bytes, freqs: np.ndarray, count: int) -> np.ndarray:
    """Inverse of :func:`rans_encode`: ``count`` symbols. Raises ValueError when the streams do
    not decode to exactly ``count`` symbols."""
    freqs = np.asarray(freqs, dtype=np.uint64)
    lanes = rans_lanes(count)
    if len(states) != 4 * lanes or len(words) % 2:
        raise ValueError(f"rANS streams of {len(states)} and {len(words)} bytes do not fit {count}")
    if int(freqs.sum()) != 1 << RANS_PRECISION:
        raise ValueError("rANS frequencies do not sum to 2**RANS_PRECISION")
    starts = np.concatenate([[0], np.cumsum(freqs)[:-1]]).astype(np.uint64)
    slot_symbol = np.repeat(np.arange(freqs.size), freqs.astype(np.int64))
    state = np.frombuffer(states, dtype="<u4").astype(np.uint64)
    stream = np.frombuffer(words, dtype="<u2").astype(np.uint64)
    out = np.empty(count, dtype=np.int64)
    read, mask = 0, np.uint64((1 << RANS_PRECISION) - 1)
    precision, word = np.uint64(RANS_PRECISION), np.uint64(16)
    for first in range(0, count, lanes):
        x = state[: min(lanes, count - first)]
        slot = x & mask
        s = slot_symbol[slot.astype(np.int64)]
        out[first : first + x.size] = s
        x = freqs[s] * (x >> precision) + slot - starts[s]
        low = x < _RANS_LOW
        n = int(low.sum())
        if n:
            if read + n > stream.size:
                raise ValueError("rANS words end early")
            x[low] = (x[low] << word) | stream[read : read + n]
            read += n
        state[: x.size] = x
    if read != stream.size or (state != _RANS_LOW).any():
        raise ValueError("rANS streams do not end where they should")
    return out
