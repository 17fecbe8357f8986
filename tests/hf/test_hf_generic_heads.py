"""Heads on any family, with no family adapter (geta ships none): the trial prune finds the
sizes each forward reads (module attributes, the config at run time) and rewrites them with the
group. Twelve families besides the sixteen of test_hf_coverage: heads found, zero -> prune
exact, the checkpoint reloads to the same outputs, one training step; and the saved config of a
uniform prune, inferred from the pruned shapes, loads in plain transformers."""

from __future__ import annotations

import json

import pytest
import torch

import geta
from geta.graph.equivalence import check_prune_equivalence, random_plan
from geta.hf import families
from tests.hf.families import FAMILIES, OTHER_FAMILIES
from tests.hf.test_hf_coverage import outputs, train_one_step

# attention modules per model: one head group each (T5 and ALBERT share theirs across layers)
ATTENTIONS = {name: 2 for name in OTHER_FAMILIES} | {"bart": 6}


def heads(graph) -> list:
    """Head groups: named by an attention op ("head"), or blocks of a projection's rows that
    an explicit matmul attention reads ("block", 3 heads of 16 in these configs)."""
    return [g for g in graph.groups if g.kind == "head" or (g.kind == "block" and g.size == 3)]


def check_family(model, tmp_path) -> geta.DependencyGraph:
    inputs = geta.hf.example_inputs(model, seq_len=6)
    graph = geta.hf.trace(model, inputs)
    weights = sorted({m.name for g in graph.groups for m in g.members if not m.is_buffer})
    result = check_prune_equivalence(model, graph, (), inputs, random_plan(graph, 0.4, seed=1))
    assert result.max_abs_diff <= result.tolerance, result
    assert result.params_after < result.params_before
    saved = outputs(model, inputs)
    geta.hf.save_pretrained(model, tmp_path)
    loaded = geta.hf.from_pretrained(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(saved, outputs(loaded, inputs), strict=True))
    train_one_step(model, inputs, weights)
    return graph


@pytest.mark.parametrize("name", list(OTHER_FAMILIES))
def test_heads_of_a_family_without_adapter(name, tmp_path):
    model = OTHER_FAMILIES[name]().eval()
    assert families.family_of(model.config.model_type) is None
    graph = check_family(model, tmp_path)
    assert len(heads(graph)) == ATTENTIONS[name], [(g.kind, g.size) for g in graph.groups]


def test_rewrites_are_recorded_where_the_forward_reads_a_size():
    """OPT's attention reshapes by ``self.num_heads``; Phi-3 slices its fused
    qkv by the config's head count, read at run time: each layer gets its own config copy."""
    opt = OTHER_FAMILIES["opt"]().eval()
    graph = geta.hf.trace(opt, geta.hf.example_inputs(opt, seq_len=6))
    first = heads(graph)[0]
    assert [(r.module, r.attr) for r in graph.rewrites_of(first)] == [
        ("model.decoder.layers.0.self_attn", "num_heads")
    ]
    phi3 = FAMILIES["phi3"]().eval()
    graph = geta.hf.trace(phi3, geta.hf.example_inputs(phi3, seq_len=6))
    first, second = heads(graph)
    assert ("model.layers.0.self_attn", "config.num_attention_heads") in [
        (r.module, r.attr) for r in graph.rewrites_of(first)
    ]
    geta.prune(phi3, graph, {first.id: [0], second.id: [0, 1]})
    attn = [layer.self_attn for layer in phi3.model.layers]
    assert [a.config.num_attention_heads for a in attn] == [4, 2]
    assert phi3.config.num_attention_heads == 6


# uniform prunes no config can state: Whisper's frontend conv channels are d_model with no field
# of their own, Swin's FFN width is a float ratio and its heads a list per stage
CHANNELS_NOT_IN_A_CONFIG = {"whisper", "swin"}
# a config states pruned heads where it has a head_dim field; elsewhere head size = hidden / heads
HEADS_IN_A_CONFIG = {"llama", "mistral", "qwen2", "gemma", "phi3", "t5", "vit", "qwen3", "olmo"}


@pytest.mark.parametrize("name", [*FAMILIES, "qwen3", "olmo", "opt", "bart"])
# FFN channels come out as "channel" groups, or "block" ones for Phi-3's fused gate/up rows
@pytest.mark.parametrize("kinds", [("channel", "block"), ("head", "channel", "block")])
def test_a_uniform_prune_saves_a_config_plain_transformers_loads(name, kinds, tmp_path):
    """The saved config is inferred: config fields scaled by the pruned dims' ratios (and sizes
    the config otherwise derives, such as Qwen2's head_dim, named) until the model built from
    it has every pruned shape; then plain transformers loads it to the same outputs."""
    model = {**FAMILIES, **OTHER_FAMILIES}[name]().eval()
    inputs = geta.hf.example_inputs(model, seq_len=6)
    graph = geta.hf.trace(model, inputs)
    plan = {g.id: [0] for g in graph.groups if g.kind in kinds}
    assert plan
    geta.prune(model, graph, plan)
    saved = outputs(model, inputs)
    geta.hf.save_pretrained(model, tmp_path / "uniform")
    meta = json.loads((tmp_path / "uniform" / "geta.json").read_text())
    stated = name not in CHANNELS_NOT_IN_A_CONFIG and (
        "head" not in kinds or name in HEADS_IN_A_CONFIG
    )
    assert meta["loads_in_transformers"] is stated
    if stated:
        plain = type(model).from_pretrained(tmp_path / "uniform").eval()
        assert all(torch.equal(a, b) for a, b in zip(saved, outputs(plain, inputs), strict=True))


@pytest.mark.parametrize("name", ["qwen3", "llama", "qwen2"])
def test_grouped_query_sizes_are_inferred(name, tmp_path):
    """Every group, head_dim included: GQA head counts, head_dim and the FFN width land in the
    config; one layer pruned differently leaves no config that states it."""
    model = {**FAMILIES, **OTHER_FAMILIES}[name]().eval()
    inputs = geta.hf.example_inputs(model, seq_len=6)
    graph = geta.hf.trace(model, inputs)
    geta.prune(model, graph, {g.id: [0] for g in graph.groups})
    saved = outputs(model, inputs)
    geta.hf.save_pretrained(model, tmp_path / "uniform")
    meta = json.loads((tmp_path / "uniform" / "geta.json").read_text())
    assert meta["loads_in_transformers"] is True
    plain = type(model).from_pretrained(tmp_path / "uniform").eval()
    config = plain.config
    assert (config.num_attention_heads, config.num_key_value_heads) == (4, 2)
    assert config.intermediate_size == 39
    assert all(torch.equal(a, b) for a, b in zip(saved, outputs(plain, inputs), strict=True))

    graph = geta.hf.trace(model, inputs)
    geta.prune(model, graph, {graph.groups[0].id: [0]})  # one layer's heads only
    geta.hf.save_pretrained(model, tmp_path / "uneven")
    meta = json.loads((tmp_path / "uneven" / "geta.json").read_text())
    assert meta["loads_in_transformers"] is False
