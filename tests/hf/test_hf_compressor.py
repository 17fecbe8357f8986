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


def test_gpt2_conv1d_layers_and_its_tied_embedding_are_quantized_counted_once_and_reload(
    tmp_path,
):
    """GPT-2 stores its linear layers as transformers' Conv1D ([in, out]); they are quantized
    along dim 1 and counted in the budget. Its output layer shares the token embedding: one
    quantizer, one counted layer, and the saved checkpoint gives the same logits."""
    import geta
    from geta.quant.prepare import quantizable_layers, weight_quantizers
    from tests.hf.families import FAMILIES

    torch.manual_seed(0)
    model = FAMILIES["gpt2"]()
    inputs = geta.hf.example_inputs(model)
    config = geta.CompressorConfig(quantize_embeddings=True)
    c = geta.Compressor(model, (), "20x", config=config, example_kwargs=inputs)
    names = [layer.name for layer in c.problem.cost_model.layers]
    assert "transformer.h.0.mlp.c_fc" in names and "transformer.h.1.attn.c_attn" in names
    assert "lm_head" not in names  # tied to transformer.wte: one tensor, counted once
    quantizers = weight_quantizers(model)
    assert quantizers["lm_head"] is quantizers["transformer.wte"]
    c_fc = next(layer for layer in quantizable_layers(model) if layer.name.endswith("0.mlp.c_fc"))
    assert c_fc.kind.channel_axis == 1 and c_fc.quantizer.d.numel() == c_fc.weight.shape[1]
    opt = c.optimizer(base="adamw", lr=1e-3, total_steps=6)
    for _ in range(6):
        model(**inputs, labels=inputs["input_ids"]).loss.backward()
        opt.step()
        opt.zero_grad()
    small = c.finalize().eval()
    report = c.report()
    assert report.within_budget and report.removed_units > 0
    assert {row.bits for row in report.layers if ".h." in row.name} <= set(range(2, 9))
    geta.hf.save_pretrained(small, tmp_path)
    loaded = geta.hf.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, small(**inputs).logits)
