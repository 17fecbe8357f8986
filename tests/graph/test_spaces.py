import numpy as np
import pytest

from geta.graph.spaces import ChannelSpaces


def leaf_sizes(s: ChannelSpaces, a: int) -> list[int]:
    return [s.size(x) for x in s.leaves(a)]


def test_unify_plain_atoms_share_a_class():
    s = ChannelSpaces()
    a, b = s.new(4), s.new(4)
    assert s.unify(a, b)
    assert s.find(a) == s.find(b)


def test_size_mismatch_blocks_both():
    s = ChannelSpaces()
    a, b = s.new(4), s.new(5)
    assert not s.unify(a, b)
    assert s.is_blocked(a) and s.is_blocked(b)


def test_cat_against_plain_atom_splits_it():
    s = ChannelSpaces()
    x, y, z = s.new(3), s.new(5), s.new(8)
    s.unify(z, s.cat([x, y]))
    assert leaf_sizes(s, z) == [3, 5]
    coords = s.coords(z)
    np.testing.assert_array_equal(coords[s.find(y)][0], [-1, -1, -1, 0, 1, 2, 3, 4])


def test_two_cats_with_different_cuts_refine_to_common_cuts():
    s = ChannelSpaces()
    left = s.cat([s.new(2), s.new(6)])
    right = s.cat([s.new(5), s.new(3)])
    s.unify(left, right)
    assert leaf_sizes(s, left) == [2, 3, 3]
    assert leaf_sizes(s, right) == [2, 3, 3]
    assert [s.find(x) for x in s.leaves(left)] == [s.find(x) for x in s.leaves(right)]


def test_product_factorisations_refine():
    s = ChannelSpaces()
    a = s.prod([s.new(6), s.new(4)])
    b = s.prod([s.new(3), s.new(8)])
    s.unify(a, b)
    assert leaf_sizes(s, a) == [3, 2, 4]
    assert [s.find(x) for x in s.leaves(a)] == [s.find(x) for x in s.leaves(b)]


def test_incompatible_factorisations_block():
    s = ChannelSpaces()
    a = s.prod([s.new(4), s.new(6)])
    b = s.prod([s.new(6), s.new(4)])
    assert not s.unify(a, b)
    assert all(s.is_blocked(x) for x in s.leaves(a))


def test_cat_of_equal_halves_viewed_as_product_ties_the_halves():
    # channel shuffle: cat(A, B) viewed as (2, n): the inner factor is both A and B
    s = ChannelSpaces()
    a, b = s.new(4), s.new(4)
    g, k = s.new(2), s.new(4)
    s.unify(s.cat([a, b]), s.prod([g, k]))
    assert s.find(a) == s.find(b) == s.find(k)


def test_heads_and_head_dims_positions():
    s = ChannelSpaces()
    hidden = s.new(6)
    heads, head_dim = s.new(2), s.new(3)
    s.unify(hidden, s.prod([heads, head_dim]))
    coords = s.coords(hidden)
    np.testing.assert_array_equal(coords[s.find(heads)][0], [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(coords[s.find(head_dim)][0], [0, 1, 2, 0, 1, 2])
    keep = s.keep_mask(hidden, {s.find(heads): np.array([1])})
    np.testing.assert_array_equal(keep, [1, 1, 1, 0, 0, 0])


def test_blocking_reaches_leaves_created_later():
    s = ChannelSpaces()
    a = s.new(8)
    s.block(a, "model output")
    s.unify(a, s.cat([s.new(3), s.new(5)]))
    assert all(s.is_blocked(x) for x in s.leaves(a))


def test_blocking_a_part_leaves_the_rest_prunable():
    s = ChannelSpaces()
    pad, x = s.new(2, "padding"), s.new(6)
    z = s.new(8)
    s.unify(z, s.cat([pad, x]))
    assert s.is_blocked(pad)
    assert not s.is_blocked(x)


def test_inner_factor_split_into_halves_like_rotary():
    s = ChannelSpaces()
    heads, d = s.new(2), s.new(4)
    hidden = s.prod([heads, d])
    h1, h2 = s.new(2), s.new(2)
    s.unify(d, s.cat([h1, h2]))
    s.unify(s.cat([h2, h1]), s.cat([h1, h2]))  # rotate_half added to x
    assert s.find(h1) == s.find(h2)
    keep = s.keep_mask(hidden, {s.find(h1): np.array([0])})
    np.testing.assert_array_equal(keep, [0, 1, 0, 1, 0, 1, 0, 1])


@pytest.mark.parametrize("size", [1, 0])
def test_trivial_atoms_never_block(size):
    s = ChannelSpaces()
    a = s.new(size, "anything")
    assert not s.is_blocked(a)
