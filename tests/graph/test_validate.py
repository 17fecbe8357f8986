import torch
from torch import nn

import geta
from geta.graph import module_adapters
from geta.graph.equivalence import check_prune_equivalence


class HardCodedHeads(nn.Module):
    """Attention whose forward hard-codes the number of heads and the head size."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(16, 48)
        self.proj = nn.Linear(16, 16)
        self.mlp = nn.Linear(16, 32)
        self.out = nn.Linear(32, 16)

    def forward(self, x):
        b, s, _ = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, 4, 4).permute(2, 0, 3, 1, 4)
        att = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=0.5)
        x = x + self.proj(att.transpose(1, 2).reshape(b, s, 16))
        return x + self.out(torch.relu(self.mlp(x)))


def test_hard_coded_shapes_block_groups_instead_of_breaking():
    model = HardCodedHeads().eval()
    x = torch.randn(2, 5, 16)
    unchecked = geta.trace(model, x, validate=False)
    assert any(
        g.kind == "head" for g in unchecked.groups
    )  # the graph alone says heads are prunable
    graph = geta.trace(model, x)
    assert not any(g.kind in ("head", "head_dim") for g in graph.groups)
    assert [g.size for g in graph.groups] == [32]  # the MLP stays prunable
    result = check_prune_equivalence(model, graph, (x,))
    assert result.max_abs_diff <= result.tolerance


def test_multihead_attention_blocks_heads_but_keeps_mlp():
    layer = nn.TransformerEncoderLayer(
        d_model=16, nhead=4, dim_feedforward=24, batch_first=True
    ).eval()
    x = torch.randn(2, 5, 16)
    graph = geta.trace(layer, x)
    assert [g.size for g in graph.groups] == [24]
    result = check_prune_equivalence(layer, graph, (x,))
    assert result.max_abs_diff <= result.tolerance


class StoredHeads(nn.Module):
    """Attention whose forward reshapes by a stored head count, like many HF models."""

    def __init__(self):
        super().__init__()
        self.num_heads, self.head_dim = 4, 4
        self.qkv = nn.Linear(16, 48)
        self.proj = nn.Linear(16, 16)

    def forward(self, x):
        b, s, _ = x.shape
        qkv = self.qkv(x).view(b, s, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        att = torch.nn.functional.scaled_dot_product_attention(*qkv, scale=0.5)
        return x + self.proj(att.transpose(1, 2).reshape(b, s, -1))


def test_model_adapter_makes_stored_sizes_follow_and_passes_the_trial(monkeypatch):
    monkeypatch.setattr(module_adapters, "_MODEL_ADAPTERS", [])  # the adapter ends with the test
    x = torch.randn(2, 5, 16)
    assert not any(g.kind == "head" for g in geta.trace(StoredHeads().eval(), x).groups)

    @geta.graph.register_model_adapter
    def _(model):
        for m in model.modules():
            if isinstance(m, StoredHeads):
                m.num_heads = m.proj.in_features // m.head_dim

    model = StoredHeads().eval()
    graph = geta.trace(model, x)
    heads = next(g for g in graph.groups if g.kind == "head")
    result = check_prune_equivalence(model, graph, (x,), plan={heads.id: [1, 2]})
    assert result.max_abs_diff <= result.tolerance
    assert model.num_heads == 2
