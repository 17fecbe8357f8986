"""geta.Compressor straight on a transformers decoder: it is captured with the KV cache off
(as geta.hf.trace does) and the user's config comes back."""

import torch

from tests.hf.families import compress_llama


def test_compressor_captures_a_decoder_with_its_cache_on():
    model, inputs, c, zeroed = compress_llama("4x", steps=12)
    assert model.config.use_cache is True
    assert {g.kind for g in c.graph.groups} >= {"head", "channel"}
    c.finalize()
    assert c.report().within_budget
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs, use_cache=False).logits, zeroed)
