"""Attribute rewrites: sizes a forward reads from attributes (or from a config at run time)
follow the pruned groups, found by the trial prune without any adapter."""

import pytest
import torch
from torch import nn

import geta
from geta.errors import ArtifactError
from geta.export.artifact import _module_attributes, set_module_attributes
from geta.graph.equivalence import check_prune_equivalence
from geta.graph.rewrites import AttributeRewrite, apply_rewrites, smallest_passing
from tests.graph.test_validate import HardCodedHeads, StoredHeads

X = torch.randn(2, 5, 16)


class Settings:
    """A plain config object, shared by every layer, as transformers configs are."""

    def __init__(self) -> None:
        self.heads = 4
        self.width = 16


class ConfigHeads(nn.Module):
    """Attention that reads its head count from the shared config at run time."""

    def __init__(self, config: Settings) -> None:
        super().__init__()
        self.config = config
        self.head_dim = 4
        self.qkv = nn.Linear(16, 48)
        self.proj = nn.Linear(16, 16)

    def forward(self, x):
        b, s, _ = x.shape
        qkv = self.qkv(x).view(b, s, 3, self.config.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        att = torch.nn.functional.scaled_dot_product_attention(*qkv, scale=0.5)
        return x + self.proj(att.transpose(1, 2).reshape(b, s, -1))


def heads_of(graph):
    return [g for g in graph.groups if g.kind == "head"]


def test_a_stored_head_count_is_rewritten_per_layer():
    model = nn.Sequential(StoredHeads(), StoredHeads()).eval()
    graph = geta.trace(model, X)
    first, second = heads_of(graph)
    assert graph.rewrites_of(first) == (AttributeRewrite("0", "num_heads", 1),)
    assert graph.rewrites_of(second) == (AttributeRewrite("1", "num_heads", 1),)
    result = check_prune_equivalence(model, graph, (X,), plan={first.id: [1], second.id: [0, 2, 3]})
    assert result.max_abs_diff <= result.tolerance
    assert [block.num_heads for block in model] == [3, 1]
    assert [block.head_dim for block in model] == [4, 4]  # what the forward did not need


def test_a_config_read_at_run_time_gets_its_own_copy_per_layer():
    shared = Settings()
    model = nn.Sequential(ConfigHeads(shared), ConfigHeads(shared)).eval()
    graph = geta.trace(model, X)
    first, second = heads_of(graph)
    assert [r.attr for r in graph.rewrites_of(first)] == ["config.heads"]
    result = check_prune_equivalence(model, graph, (X,), plan={first.id: [3], second.id: [0, 1]})
    assert result.max_abs_diff <= result.tolerance
    assert [block.config.heads for block in model] == [3, 2]
    assert model[0].config is not model[1].config
    assert shared.heads == 4 and model[0].config.width == 16  # the rest is the shared config's


def test_the_config_copy_is_saved_and_set_back():
    model = nn.Sequential(ConfigHeads(Settings()), ConfigHeads(Settings()))
    graph = geta.trace(model, X)
    geta.prune(model, graph, {heads_of(graph)[1].id: [0]})
    recorded = _module_attributes(model, {"0", "1"})
    assert recorded["1"]["config.heads"] == 3 and recorded["0"]["config.heads"] == 4
    fresh = nn.Sequential(ConfigHeads(Settings()), ConfigHeads(Settings()))
    set_module_attributes(fresh, {"1": {"config.heads": 3}})
    assert (fresh[0].config.heads, fresh[1].config.heads) == (4, 3)
    with pytest.raises(ArtifactError, match="not a size"):
        set_module_attributes(fresh, {"1": {"config.heads": "3"}})


def test_hard_coded_sizes_stay_blocked():
    """Literal sizes in the forward are no attribute: nothing to rewrite, heads stay whole."""
    model = nn.Sequential(HardCodedHeads(), HardCodedHeads()).eval()
    graph = geta.trace(model, X)
    assert not heads_of(graph) and not graph.rewrites
    assert [g.size for g in graph.groups] == [32, 32]


def test_two_groups_rewriting_one_size_compose():
    """A size that is heads x head_dim follows both groups' kept shares."""
    holder = nn.Module()
    holder.split_size = 48
    by_heads = AttributeRewrite("", "split_size", 16)  # 3 heads of 16
    by_dims = AttributeRewrite("", "split_size", 3)  # 16 dims in each of 3 heads
    apply_rewrites(holder, [(by_heads, 3, 2), (by_dims, 16, 12)])
    assert holder.split_size == 2 * 12
    apply_rewrites(holder, [(by_heads, 3, 1)])
    assert holder.split_size == 16


def test_smallest_passing_finds_the_fewest_rewrites():
    a, b, c = (AttributeRewrite("m", name, 1) for name in "abc")
    needed = {a, c}
    assert smallest_passing([a, b, c], lambda subset: needed <= set(subset)) == (a, c)
    assert smallest_passing([a, b, c], lambda subset: b in subset) == (b,)
    assert smallest_passing([a, b], lambda subset: False) is None
