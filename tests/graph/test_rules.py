"""Rule behaviour seen through tiny models: which dims couple, which block."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import geta
from geta.graph.equivalence import check_prune_equivalence


class Fn(nn.Module):
    """fc_in -> body(h) -> fc_out, so the body decides what happens to fc_in's channels."""

    def __init__(self, body, width=8, out_width=None):
        super().__init__()
        self.body = body
        self.fc_in = nn.Linear(4, width)
        self.fc_out = nn.Linear(out_width or width, 3)

    def forward(self, x):
        return self.fc_out(self.body(self.fc_in(x)))


def groups_and_check(model, x):
    model.eval()
    graph = geta.trace(model, x)
    if graph.groups:
        result = check_prune_equivalence(model, graph, (x,))
        assert result.max_abs_diff <= result.tolerance
    return graph


def test_pointwise_keeps_channels_prunable():
    graph = groups_and_check(Fn(lambda h: torch.tanh(h) * 2 + 1), torch.randn(2, 4))
    assert [g.size for g in graph.groups] == [8]


def test_softmax_over_channels_blocks_them():
    graph = groups_and_check(Fn(lambda h: h.softmax(-1)), torch.randn(2, 4))
    assert graph.groups == []
    assert any("normalised or accumulated" in b.reason for b in graph.blocked)


def test_mean_over_channels_blocks_them():
    graph = groups_and_check(Fn(lambda h: h - h.mean(-1, keepdim=True)), torch.randn(2, 4))
    assert graph.groups == []


def test_hard_coded_slice_blocks_what_it_keeps_and_frees_what_it_drops():
    graph = groups_and_check(Fn(lambda h: h[:, :5], out_width=5), torch.randn(2, 4))
    assert [g.size for g in graph.groups] == [3]  # channels 5..7 are never used
    assert any(b.size == 5 and "trial prune" in b.reason for b in graph.blocked)
    assert [g.size for g in groups_and_check(Fn(lambda h: h[:, :]), torch.randn(2, 4)).groups] == [
        8
    ]


def test_hard_coded_slice_start_blocks_the_channels_before_it():
    # pruning channel 0..2 keeps the slice's size but shifts what it selects
    graph = groups_and_check(Fn(lambda h: h[:, 3:6], out_width=3), torch.randn(2, 4))
    assert [g.size for g in graph.groups] == [2]
    assert graph.groups[0].member("fc_in.weight").positions.ravel().tolist() == [6, 7]


def test_fused_parts_sliced_by_size_prune_part_by_part():
    def halves(h):
        return torch.cat([h[:, : h.shape[1] // 2] * 2, h[:, h.shape[1] // 2 :]], 1)

    graph = groups_and_check(Fn(halves), torch.randn(2, 4))
    # the first half follows ``size // 2`` alone; the second only if the first shrinks too
    assert [g.member("fc_in.weight").positions.min() for g in graph.groups] == [0]
    assert any("only with other groups" in b.reason for b in graph.blocked)


def test_strided_slice_blocks():
    graph = groups_and_check(Fn(lambda h: h[:, ::2], out_width=4), torch.randn(2, 4))
    assert graph.groups == []
    assert any("stride" in b.reason for b in graph.blocked)


def test_repeat_tiles_keep_index_maps():
    graph = groups_and_check(Fn(lambda h: h.repeat(1, 3), out_width=24), torch.randn(2, 4))
    (group,) = graph.groups
    assert group.member("fc_out.weight").width == 3  # each channel appears in three tiles


def test_einsum_contracts_like_a_matmul():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = nn.Parameter(torch.randn(4, 6))
            self.w2 = nn.Parameter(torch.randn(6, 3))

        def forward(self, x):
            return torch.einsum("bj,jk->bk", torch.einsum("bi,ij->bj", x, self.w1).relu(), self.w2)

    graph = groups_and_check(Net(), torch.randn(2, 4))
    (group,) = graph.groups
    assert {(m.name, m.dim, m.role) for m in group.members} == {
        ("w1", 1, "producer"),
        ("w2", 0, "consumer"),
    }


class Attention(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale
        self.q, self.k, self.v = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)
        self.o = nn.Linear(16, 16)

    def forward(self, x):
        b, s, _ = x.shape
        q, k, v = (p(x).view(b, s, 4, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.o(out.transpose(1, 2).reshape(b, s, -1))


def test_sdpa_heads_and_head_dims_with_explicit_scale():
    graph = groups_and_check(Attention(scale=0.5), torch.randn(2, 3, 16))
    kinds = sorted((g.kind, g.size) for g in graph.groups)
    # heads tie q, k, v, o; q/k head dims and v/o head dims are separate groups. The view
    # hard-codes 4 heads (and infers the head size), so the trial prune blocks the heads.
    assert kinds == [("head_dim", 4), ("head_dim", 4)]


def test_sdpa_default_scale_blocks_query_key_head_dim():
    graph = geta.trace(Attention(scale=None).eval(), torch.randn(2, 3, 16), validate=False)
    explicit = geta.trace(Attention(scale=0.5).eval(), torch.randn(2, 3, 16), validate=False)
    assert sum(g.kind == "head_dim" for g in explicit.groups) == 2
    assert sum(g.kind == "head_dim" for g in graph.groups) == 1  # only v/o remains
    assert any("scale derived from head_dim" in b.reason for b in graph.blocked)


def test_channel_padding_stays_unprunable_but_the_rest_prunes():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 1)
            self.b = nn.Conv2d(3, 8, 1)
            self.head = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            padded = F.pad(self.a(x), (0, 0, 0, 0, 2, 2))
            return self.head(padded + self.b(x))

    graph = groups_and_check(Net(), torch.randn(1, 3, 4, 4))
    (group,) = graph.groups
    assert group.size == 4
    np_positions = group.member("b.weight").positions.ravel().tolist()
    assert np_positions == [2, 3, 4, 5]  # the middle of b's channels, aligned with a's


class NormedMLP(nn.Module):
    def __init__(self, rms: bool):
        super().__init__()
        self.up, self.down = nn.Linear(4, 8), nn.Linear(8, 3)
        self.norm = None if rms else nn.LayerNorm(8)

    def forward(self, x):
        h = self.up(x)
        if self.norm is None:  # an RMS norm written out, as HF's RMSNorm is
            h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        else:
            h = self.norm(h)
        return self.down(torch.relu(h))


@pytest.mark.parametrize("rms", [False, True])
def test_norms_block_unless_opted_in_then_inexact(rms):
    x = torch.randn(2, 4)
    model = NormedMLP(rms).eval()
    assert geta.trace(model, x).groups == []
    with pytest.warns(UserWarning, match="LayerNorm / RMSNorm"):
        graph = geta.trace(model, x, through_norms=True)
    (group,) = graph.groups
    assert (group.kind, group.size, group.exact) == ("hidden", 8, False)
    assert "normalised over" in group.inexact[0]
    assert "inexact" in graph.summary_table()
    result = check_prune_equivalence(model, graph, (x,), plan={group.id: [0, 3]})
    assert result.params_after < result.params_before  # prunes, not exactly
