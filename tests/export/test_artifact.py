import copy
import hashlib
import json
import math

import numpy as np
import pytest
import safetensors.numpy
import torch
from torch import nn

import geta
import geta.export as export
import geta.quant as quant
from geta.export import artifact as artifact_format
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
    # ternary codes: a nonzero one is a sign, one bit
    assert entry["values"] == {"coder": "packed", "lo": -1, "width": 1}
    assert streams["values"] == math.ceil(entry["nonzeros"] / 8)
    loaded = export.load(tmp_path, model=lenet5)
    x = example_inputs("lenet5")[0]
    assert relative(loaded(*x), model(*x)) <= 1e-5


def test_skewed_codes_are_entropy_coded(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 128, bias=False))
    with torch.no_grad():
        model[0].weight.normal_()  # bell-shaped, as trained weights are: levels unevenly used
    quant.prepare(model, init_bits=6)
    export.save(model, tmp_path)
    entry = export.read_manifest(tmp_path)["tensors"]["0.weight"]
    codes, _ = artifact_format.quantized_codes(
        model[0].parametrizations.weight.original, model[0].parametrizations.weight[0]
    )
    _, counts = np.unique(codes, return_counts=True)
    p = counts / counts.sum()
    entropy_bytes = -(p * np.log2(p)).sum() * codes.size / 8
    coded = sum(n for s, n in entry["streams"].items() if s.startswith("codes"))
    assert entry["layout"] == "dense" and entry["codes"]["coder"] == "rans"
    assert coded <= 1.02 * entropy_bytes + 64 < codes.size * entry["bits"] / 8
    loaded = export.load_tensors(tmp_path)["0.weight"]
    assert torch.equal(loaded, model[0].weight)


@pytest.mark.parametrize("per_channel", [False, True])
def test_codes_never_take_more_than_bit_packing_and_tensors_come_back_exactly(
    tmp_path, per_channel
):
    model, args = compressed("resnet20", per_channel=per_channel)
    with torch.no_grad():  # norm statistics as training leaves them, not constants
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                for t in (module.weight, module.bias, module.running_mean):
                    t.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(12345)
    export.save(model, tmp_path)
    manifest = export.read_manifest(tmp_path)
    loaded = export.load_tensors(tmp_path)
    state = dict(model.state_dict())
    for name, entry in manifest["tensors"].items():
        if entry["encoding"] == "quantized":
            coded = entry["bytes"] - entry["streams"]["step"] - entry["streams"]["clip_exponent"]
            assert coded <= math.ceil(entry["numel"] * entry["bits"] / 8), name
            owner = model.get_submodule(name.rpartition(".")[0])
            assert torch.equal(loaded[name], owner.weight.detach()), name
        else:
            assert loaded[name].dtype == state[name].dtype
            assert torch.equal(loaded[name], state[name]), name


def test_raw_tensors_of_every_dtype_and_size_round_trip(tmp_path):
    module = nn.Module()
    tensors = {
        "half": torch.randn(3, 5).half(),
        "bf16": torch.randn(7).bfloat16(),
        "double": torch.randn(2, 2, dtype=torch.float64),
        "ints": torch.arange(-3, 9, dtype=torch.int64),
        "small": torch.tensor([1, -2, 3], dtype=torch.int8),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 4),
        "scalar": torch.tensor(2.5),
    }
    for name, t in tensors.items():
        module.register_buffer(f"b_{name}", t)
    export.save(module, tmp_path)
    loaded = export.load_tensors(tmp_path)
    for name, t in tensors.items():
        assert loaded[f"b_{name}"].dtype == t.dtype and torch.equal(loaded[f"b_{name}"], t), name


def test_one_safetensors_entry_and_small_per_file_overhead(tmp_path):
    for name in ("lenet5", "resnet20"):
        model, _ = compressed(name, per_channel=True)
        out = tmp_path / name
        export.save(model, out)
        data = (out / "weights.safetensors").read_bytes()
        assert list(safetensors.numpy.load(data)) == ["data"]
        manifest = export.read_manifest(out)
        streams = sum(e["bytes"] for e in manifest["tensors"].values())
        plain = sum(manifest["plain"]["groups"].values())
        assert manifest["plain"]["bytes"] <= plain  # compressed only when it helps
        stored = streams - plain + manifest["plain"]["bytes"]
        overhead = (out / "manifest.json").stat().st_size + len(data) - stored
        # manifest.json, the safetensors header and the compressed index; format 1 spent
        # about 240 bytes per tensor on its JSON and one safetensors entry per tensor
        assert overhead <= 450 + 15 * len(manifest["tensors"]), (name, overhead)


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


def rewrite_index(path, edit):
    """Apply ``edit`` to the index stored in the weights file and write a valid checksum."""
    manifest = json.loads((path / "manifest.json").read_text())
    blob = safetensors.numpy.load_file(str(path / "weights.safetensors"))["data"].tobytes()
    spec = manifest["index"]
    index = json.loads(
        artifact_format._decompress(spec["codec"], blob[: spec["bytes"]], spec["size"])
    )
    edit(index)
    text = json.dumps(index).encode()
    codec, packed = artifact_format._compress(text, index=True)
    data = np.frombuffer(packed + blob[spec["bytes"] :], np.uint8)
    safetensors.numpy.save_file({"data": data}, str(path / "weights.safetensors"))
    manifest["index"] = {"codec": codec, "bytes": len(packed), "size": len(text)}
    sha = hashlib.sha256((path / "weights.safetensors").read_bytes()).hexdigest()
    manifest["weights_sha256"] = sha
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_missing_tensor(artifact):
    def add_extra(index):
        index["tensors"]["extra.weight"] = copy.deepcopy(index["tensors"]["0.bias"])

    rewrite_index(artifact, add_extra)
    with pytest.raises(geta.ArtifactError, match="extra.weight"):
        export.load(artifact, model=lenet5)


def test_index_and_data_that_disagree(artifact):
    rewrite_index(artifact, lambda index: index["tensors"].pop("0.bias"))
    with pytest.raises(geta.ArtifactError, match="not in the index"):
        export.load(artifact, model=lenet5)


def test_unreadable_index(artifact):
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["index"]["size"] += 1
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(geta.ArtifactError, match="index"):
        export.load(artifact, model=lenet5)
    manifest["index"]["size"] -= 1
    manifest["index"]["codec"] = "brotli"
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(geta.ArtifactError, match="brotli"):
        export.read_manifest(artifact)


@pytest.mark.parametrize("version", [1, 99])
def test_wrong_version(artifact, version):
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["version"] = version
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(geta.ArtifactError, match=f"version {version}"):
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


def test_constant_and_all_zero_weights_cost_no_code_bytes(tmp_path):
    model = nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 4))
    with torch.no_grad():
        model[0].weight.zero_()
        model[1].weight.fill_(0.25)
    quant.prepare(model, init_bits=4)
    export.save(model, tmp_path)
    tensors = export.read_manifest(tmp_path)["tensors"]
    for name in ("0.weight", "1.weight"):
        assert set(tensors[name]["streams"]) == {"step", "clip_exponent"}, name
    loaded = export.load_tensors(tmp_path)
    assert torch.equal(loaded["0.weight"], torch.zeros(8, 16))
    assert torch.equal(loaded["1.weight"], model[1].weight.detach())
