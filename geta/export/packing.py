"""Bit packing of unsigned integer codes at any width from 1 to 32 bits, and the
Golomb-Rice coding used for the positions of sparse weights. Pure numpy, vectorised."""

from __future__ import annotations

import numpy as np

__all__ = ["pack_bits", "unpack_bits", "rice_encode", "rice_decode", "rice_parameter"]

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
