import numpy as np
import pytest

from geta.export.packing import pack_bits, rice_decode, rice_encode, rice_parameter, unpack_bits


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
