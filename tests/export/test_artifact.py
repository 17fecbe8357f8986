import copy
import json
import math

import pytest
import torch

import geta
import geta.export as export
import geta.quant as quant
from geta.graph.equivalence import random_plan
from geta.models import example_inputs, get_model, lenet5
from geta.models.torchvision_zoo import build_small, small_input


def compressed(name, bits=4, per_channel=False, prune=0.3, **kw):
    model = get_model(name, **kw).eval()
    args, kwargs = example_inputs(name)
    quant.prepare(model, init_bits=bits, per_channel=per_channel)
    if prune:
        graph = geta.trace(model, args, kwargs)
        geta.prune(model, graph, random_plan(graph, prune))
    return model, args


def relative(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("name", ["lenet5", "resnet20"])
def test_save_load_equals_the_fake_quantized_model(tmp_path, name, per_channel):
    model, args = compressed(name, per_channel=per_channel)
    expected = model(*args)
    export.save(model, tmp_path, architecture=f"geta.models:{name}")
    loaded = export.load(tmp_path)
    assert relative(loaded(*args), expected) <= 1e-5
    assert not any("parametrizations" in n for n, _ in loaded.named_parameters())


def test_load_with_a_factory_and_bits_stored_per_layer(tmp_path):
    model, args = compressed("lenet5", bits=3)
    export.save(model, tmp_path)
    manifest = export.read_manifest(tmp_path)
    assert {e["bits"] for e in manifest["tensors"].values() if e["encoding"] == "quantized"} <= {
        2,
        3,
    }
    loaded = export.load(tmp_path, model=lenet5)
    assert relative(loaded(*args), model(*args)) <= 1e-5
    with pytest.raises(geta.ArtifactError, match="no architecture"):
        export.load(tmp_path)


def test_pruned_quantized_torchvision_model_round_trip_and_pt2(tmp_path):
    model = build_small("mobilenet_v3_small")
    x = small_input("mobilenet_v3_small")
    quant.prepare(model, init_bits=6, per_channel=True)
    graph = geta.trace(model, x)
    geta.prune(model, graph, random_plan(graph, 0.3))
    expected = model(x)
    export.save(model, tmp_path, example_inputs=(x,))
    loaded = export.load(tmp_path, model=build_small("mobilenet_v3_small"))
    assert relative(loaded(x), expected) <= 1e-5
    program = torch.export.load(str(tmp_path / "model.pt2"))
    assert relative(program.module()(x), expected) <= 1e-5


def test_unstructured_sparse_layer_is_stored_compactly(tmp_path):
    model = lenet5().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(torch.rand_like(p) < 0.01)
    quant.prepare(model, init_bits=2)
    export.save(model, tmp_path)
    entry = export.read_manifest(tmp_path)["tensors"]["7.weight"]
    assert entry["layout"] == "sparse"
    numel = entry["numel"]
    streams = entry["streams"]
    density = entry["nonzeros"] / numel
    assert density < 0.02
    positions_bits = 8 * (streams["unary"] + streams["remainders"])
    entropy = -(density * math.log2(density) + (1 - density) * math.log2(1 - density))
    assert positions_bits / numel <= 1.2 * entropy + 64 / numel
    assert streams["values"] == math.ceil(entry["nonzeros"] * entry["bits"] / 8)
    loaded = export.load(tmp_path, model=lenet5)
    x = example_inputs("lenet5")[0]
    assert relative(loaded(*x), model(*x)) <= 1e-5


@pytest.fixture
def artifact(tmp_path):
    model, _ = compressed("lenet5", prune=0)
    export.save(model, tmp_path)
    return tmp_path


def test_truncated_weights_file(artifact):
    weights = artifact / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(geta.ArtifactError, match="checksum"):
        export.load(artifact, model=lenet5)


def test_flipped_bytes(artifact):
    weights = artifact / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(geta.ArtifactError, match="checksum"):
        export.load(artifact, model=lenet5)


def test_missing_tensor(artifact):
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["tensors"]["extra.weight"] = copy.deepcopy(manifest["tensors"]["0.bias"])
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(geta.ArtifactError, match="extra.weight"):
        export.load(artifact, model=lenet5)


def test_wrong_version(artifact):
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["version"] = 99
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(geta.ArtifactError, match="version 99"):
        export.load(artifact, model=lenet5)


def test_not_an_artifact(tmp_path):
    with pytest.raises(geta.ArtifactError, match="manifest.json is missing"):
        export.load(tmp_path, model=lenet5)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(geta.ArtifactError, match="corrupted"):
        export.load(tmp_path, model=lenet5)


def test_size_report_counts_both_ways(tmp_path):
    reference = lenet5().eval()
    model, _ = compressed("lenet5", bits=4)
    model_ref = copy.deepcopy(reference)
    export.save(model, tmp_path)
    report = export.size_report(model, tmp_path, reference=model_ref)
    assert report.numel == sum(
        p.numel() for n, p in reference.named_parameters() if n.endswith("weight")
    )
    assert report.nonzeros < report.numel
    expected = 32 * report.numel / sum(r.bits * r.nonzeros for r in report.layers)
    assert report.paper_ratio == pytest.approx(expected)
    assert report.artifact_bytes == sum(f.stat().st_size for f in tmp_path.iterdir())
    assert report.real_ratio > 1
    assert "papers' ratio" in str(report)
