"""HF transformers built from tiny random configs (no download): heads and FFN groups are
found from the graph alone and prune exactly."""

import pytest
import torch
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

import geta
from geta.graph.equivalence import check_prune_equivalence


def bert():
    return BertModel(
        BertConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=96,
            vocab_size=100,
        )
    )


def gpt2():
    return GPT2LMHeadModel(
        GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=100, use_cache=False)
    )


def llama():
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        vocab_size=100,
        use_cache=False,
    )
    return LlamaForCausalLM(cfg)


# heads (and GPT-2's head dims) per layer, FFN width per layer: GPT-2 splits its fused qkv by a
# stored size, which the trial prune finds and rewrites with either group
CASES = {"bert": (bert, [4, 96]), "gpt2": (gpt2, [4, 16, 256]), "llama": (llama, [2, 96])}


@pytest.mark.parametrize("name", CASES)
def test_hf_model_groups_and_equivalence(name):
    factory, per_layer = CASES[name]
    model = factory().eval()
    ids = torch.randint(0, 100, (2, 9))
    graph = geta.trace(model, (), {"input_ids": ids})
    assert [g.size for g in graph.groups] == per_layer * 2
    assert not graph.unsupported_ops
    result = check_prune_equivalence(model, graph, (), {"input_ids": ids})
    assert result.max_abs_diff <= result.tolerance
    assert result.params_after < result.params_before


def test_llama_gqa_head_group_spans_query_heads():
    model = llama().eval()
    graph = geta.trace(model, (), {"input_ids": torch.randint(0, 100, (1, 5))})
    heads = next(g for g in graph.groups if g.kind == "head")
    assert heads.size == 2  # key/value heads
    assert (
        heads.member("model.layers.0.self_attn.q_proj.weight").width == 4 * 8
    )  # 4 query heads x head_dim 8
    assert heads.member("model.layers.0.self_attn.k_proj.weight").width == 8


def test_llama_on_meta_device():
    with torch.device("meta"):
        model = llama().eval()
    graph = geta.trace(model, (), {"input_ids": torch.zeros(1, 5, dtype=torch.long, device="meta")})
    assert [g.kind for g in graph.groups] == ["head", "channel"] * 2
