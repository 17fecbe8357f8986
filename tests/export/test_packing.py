import numpy as np
import pytest

from geta.export.packing import (
    RANS_PRECISION,
    pack_bits,
    rans_decode,
    rans_encode,
    rans_frequencies,
    rans_lanes,
    rice_decode,
    rice_encode,
    rice_parameter,
    unpack_bits,
)


@pytest.mark.parametrize("bits", range(1, 17))
@pytest.mark.parametrize("count", [0, 1, 7, 13, 1001])
def test_pack_unpack_exact_for_every_width_and_odd_sizes(bits, count):
    values = np.random.default_rng(bits * 100 + count).integers(0, 2**bits, count)
    data = pack_bits(values, bits)
    assert len(data) == (count * bits + 7) // 8
    np.testing.assert_array_equal(unpack_bits(data, bits, count), values)


def test_pack_across_internal_chunks():
    values = np.random.default_rng(0).integers(0, 2**11, (1 << 20) + 37)
    np.testing.assert_array_equal(unpack_bits(pack_bits(values, 11), 11, values.size), values)


def test_value_too_wide_and_short_data_are_errors():
    with pytest.raises(ValueError, match="does not fit"):
        pack_bits(np.array([4]), 2)
    with pytest.raises(ValueError, match="bytes"):
        unpack_bits(b"\x00", 4, 5)


@pytest.mark.parametrize("density", [0.001, 0.01, 0.05, 0.2, 0.5])
def test_rice_positions_stay_near_the_entropy(density):
    n = 200_000
    mask = np.random.default_rng(1).random(n) < density
    positions = np.flatnonzero(mask)
    gaps = np.diff(np.concatenate([[-1], positions])) - 1
    k = rice_parameter(gaps)
    unary, rest = rice_encode(gaps, k)
    np.testing.assert_array_equal(rice_decode(unary, rest, k, gaps.size), gaps)
    entropy = -(density * np.log2(density) + (1 - density) * np.log2(1 - density))
    bits_per_weight = 8 * (len(unary) + len(rest)) / n
    assert bits_per_weight <= 1.2 * entropy + 64 / n


def test_rans_frequencies_sum_to_the_scale_and_keep_every_present_symbol():
    rng = np.random.default_rng(2)
    for counts in (
        np.array([1_000_000, 1, 0, 3]),
        np.array([5]),
        rng.integers(0, 50, 256),
        np.ones(1 << RANS_PRECISION, dtype=int),
        np.array([1] * 300 + [10**9]),
    ):
        freqs = rans_frequencies(counts)
        assert freqs.sum() == 1 << RANS_PRECISION
        assert ((freqs > 0) == (counts > 0)).all()
    with pytest.raises(ValueError):
        rans_frequencies(np.zeros(3))
    with pytest.raises(ValueError):
        rans_frequencies(np.ones((1 << RANS_PRECISION) + 1))


@pytest.mark.parametrize("count", [1, 2, 2047, 2048, 2049, 3 * 2048 + 5, 100_000])
@pytest.mark.parametrize("spread", [0.3, 2.0, 30.0])
def test_rans_round_trip_near_the_entropy(count, spread):
    rng = np.random.default_rng(count)
    symbols = np.clip(np.round(rng.normal(0, spread, count)), -63, 63).astype(np.int64) + 63
    counts = np.bincount(symbols, minlength=127)
    freqs = rans_frequencies(counts)
    states, words = rans_encode(symbols, freqs)
    assert len(states) == 4 * rans_lanes(count)
    np.testing.assert_array_equal(rans_decode(states, words, freqs, count), symbols)
    p = counts[counts > 0] / count
    entropy_bits = -(p * np.log2(p)).sum() * count
    # 16-bit words, and each lane ends in a 32-bit state
    assert 8 * (len(states) + len(words)) <= 1.01 * entropy_bits + 48 * rans_lanes(count) + 16


def test_rans_rejects_damaged_streams():
    symbols = np.random.default_rng(3).integers(0, 5, 5000)
    freqs = rans_frequencies(np.bincount(symbols))
    states, words = rans_encode(symbols, freqs)
    with pytest.raises(ValueError, match="end"):
        rans_decode(states, words[:-2], freqs, symbols.size)
    with pytest.raises(ValueError, match="end"):
        rans_decode(states, words + b"\x00\x00", freqs, symbols.size)
    with pytest.raises(ValueError, match="do not fit"):
        rans_decode(states[:-4], words, freqs, symbols.size)
    with pytest.raises(ValueError, match="sum"):
        rans_decode(states, words, freqs * 2, symbols.size)
    with pytest.raises(ValueError, match="frequency 0"):
        rans_encode(np.array([0, 1]), np.array([1 << RANS_PRECISION, 0]))
