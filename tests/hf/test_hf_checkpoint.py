"""geta.hf.save_pretrained / from_pretrained: layers of different shapes, quantized weights,
plain transformers loading where the config can say it, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

import geta
from tests.hf.families import FAMILIES


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


@pytest.fixture(scope="module")
def llama_setup():
    """A Llama traced once; each test prunes its own fresh copy with the same graph."""
    torch.manual_seed(0)
    model = FAMILIES["llama"]().eval()
    inputs = geta.hf.example_inputs(model)
    graph = geta.hf.trace(model, inputs)
    return model.state_dict(), graph, inputs


def pruned_llama(llama_setup, plan):
    state, graph, inputs = llama_setup
    model = FAMILIES["llama"]().eval()
    model.load_state_dict(state)
    graph.stale = False  # the graph describes this unpruned copy too
    geta.prune(model, graph, plan)
    return model, inputs


def test_layers_of_different_shapes_reload_without_the_original(llama_setup, tmp_path):
    # layer 0 loses a key/value head (with its 2 query heads) and 5 FFN channels, layer 1 one
    # FFN channel
    model, inputs = pruned_llama(llama_setup, {0: [1], 1: [0, 3, 8, 9, 30], 3: [7]})
    geta.hf.save_pretrained(model, tmp_path)
    meta = json.loads((tmp_path / "geta.json").read_text())
    assert meta["loads_in_transformers"] is False
    shapes = meta["shapes"]
    assert shapes["model.layers.0.self_attn.q_proj.weight"] == [32, 48]
    assert shapes["model.layers.0.self_attn.k_proj.weight"] == [16, 48]
    assert shapes["model.layers.1.self_attn.k_proj.weight"] == [24, 48]
    assert shapes["model.layers.0.mlp.gate_proj.weight"] == [35, 48]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["num_key_value_heads"] == 3  # the unpruned sizes; geta.json has the rest

    loaded = geta.hf.from_pretrained(tmp_path)
    assert torch.equal(logits(model, inputs), logits(loaded, inputs))
    attn = loaded.model.layers[0].self_attn
    assert (attn.q_proj.out_features, attn.k_proj.out_features) == (32, 16)
    assert attn.num_key_value_groups == 2
    assert loaded.model.layers[1].mlp.down_proj.in_features == 39
    assert loaded.lm_head.weight.device.type == "cpu"


def test_uniform_checkpoint_loads_in_plain_transformers(llama_setup, tmp_path):
    model, inputs = pruned_llama(llama_setup, {0: [1], 1: [0, 3], 2: [2], 3: [5, 6]})
    geta.hf.save_pretrained(model, tmp_path)
    meta = json.loads((tmp_path / "geta.json").read_text())
    config = json.loads((tmp_path / "config.json").read_text())
    assert meta["loads_in_transformers"] is True
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 2)
    assert (config["head_dim"], config["intermediate_size"]) == (8, 38)
    plain = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.equal(logits(model, inputs), logits(plain, inputs))


def test_quantized_checkpoint_is_bit_packed_and_reloads(llama_setup, tmp_path):
    model, inputs = pruned_llama(llama_setup, {0: [2], 1: list(range(10))})
    geta.quant.prepare(model, init_bits=4, per_channel=True)
    geta.hf.save_pretrained(model, tmp_path)
    assert not (tmp_path / "model.safetensors").exists()
    manifest = geta.export.artifact.read_manifest(tmp_path)
    assert manifest["tensors"]["model.layers.0.mlp.gate_proj.weight"]["bits"] <= 4
    assert json.loads((tmp_path / "geta.json").read_text())["quantized"] is True
    loaded = geta.hf.from_pretrained(tmp_path)
    assert not geta.quant.weight_quantizers(loaded)  # an ordinary float model
    torch.testing.assert_close(logits(loaded, inputs), logits(model, inputs), rtol=0, atol=1e-5)


def test_saving_again_replaces_the_weights_of_the_other_kind(llama_setup, tmp_path):
    model, inputs = pruned_llama(llama_setup, {1: [4]})
    geta.quant.prepare(model, init_bits=8)
    geta.hf.save_pretrained(model, tmp_path)
    float_model, _ = pruned_llama(llama_setup, {1: [4]})
    geta.hf.save_pretrained(float_model, tmp_path)
    assert not (tmp_path / "manifest.json").exists()
    assert torch.equal(
        logits(geta.hf.from_pretrained(tmp_path), inputs), logits(float_model, inputs)
    )


@pytest.fixture(scope="module")
def saved(llama_setup, tmp_path_factory):
    model, _ = pruned_llama(llama_setup, {0: [1], 1: [0, 3, 8]})
    return geta.hf.save_pretrained(model, tmp_path_factory.mktemp("saved"))


def copy_of(saved, tmp_path):
    target = tmp_path / "copy"
    target.mkdir()
    for f in saved.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    return target


def edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "geta.json").unlink(), "not a geta checkpoint: geta.json is missing"),
        (lambda d: (d / "geta.json").write_text("{oops"), "geta.json is corrupted"),
        (lambda d: edit_json(d / "geta.json", version=99), "version 99"),
        (lambda d: edit_json(d / "geta.json", model_class="os:system"), "not a transformers"),
        (lambda d: (d / "config.json").unlink(), "config.json cannot be read"),
        (lambda d: edit_json(d / "config.json", num_hidden_layers=3), "do not belong together"),
        (lambda d: edit_json(d / "config.json", model_type="gpt2"), "config.json is for"),
        (lambda d: (d / "model.safetensors").unlink(), "weights file missing"),
        (lambda d: (d / "model.safetensors").write_bytes(b"\0" * 64), "cannot be read"),
    ],
)
def test_bad_directories_raise_a_clear_error(saved, tmp_path, damage, message):
    target = copy_of(saved, tmp_path)
    damage(target)
    with pytest.raises(geta.ArtifactError, match=message):
        geta.hf.from_pretrained(target)


def test_weights_of_another_shape_are_refused(saved, llama_setup, tmp_path):
    target = copy_of(saved, tmp_path)
    other, _ = pruned_llama(llama_setup, {1: [0]})  # FFN 39 wide where geta.json says 37
    geta.hf.save_pretrained(other, tmp_path / "other")
    (target / "model.safetensors").write_bytes(
        (tmp_path / "other" / "model.safetensors").read_bytes()
    )
    with pytest.raises(geta.ArtifactError, match="has shape"):
        geta.hf.from_pretrained(target)


def test_missing_directory_and_non_hf_models_are_refused(tmp_path):
    with pytest.raises(geta.ArtifactError, match="not a directory"):
        geta.hf.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(TypeError, match="PreTrainedModel"):
        geta.hf.save_pretrained(torch.nn.Linear(2, 2), tmp_path)
