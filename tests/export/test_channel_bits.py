"""Mixed precision per channel in the artifact (format version 3): the channels coder, the
``channel_bits`` histogram, and reading version 2 artifacts."""

import base64
import hashlib
import json

import numpy as np
import pytest
import safetensors.numpy
import torch
from torch import nn

import geta
import geta.export as export
import geta.quant as quant
from geta.export import artifact as artifact_format
from geta.models import get_model
from tests.cli.conftest import run_cli

MIXED = (2.0, 3.0, 4.0, 8.0)


def float_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(256, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    ).eval()


def mixed_model(density=1.0, dead_channel=False):
    """``float_model`` quantized per channel, the conv and the first linear layer calibrated
    to bits 2, 3, 4, 8, 2, 3, ... by channel; ``density`` the share of nonzero weights."""
    model = float_model()
    with torch.no_grad():
        for layer in (model[0], model[3]):
            if density < 1:
                layer.weight.mul_(torch.rand_like(layer.weight) < density)
        if dead_channel:
            model[3].weight[5].zero_()
    quant.prepare(model, init_bits=4, per_channel=True)
    for layer in (model[0], model[3]):
        bits = torch.tensor(MIXED).repeat(layer.weight.shape[0] // len(MIXED))
        quantizer = layer.parametrizations.weight[0]
        quantizer.calibrate(layer.parametrizations.weight.original, bits)
        assert torch.equal(quantizer.channel_storage_bits(), bits.long())
    return model


def coded(entry):
    return sum(n for s, n in entry["streams"].items() if s not in ("step", "clip_exponent"))


def test_each_channel_is_packed_at_its_own_width_and_loads_exactly(tmp_path):
    model = mixed_model(dead_channel=True)
    x = torch.randn(2, 3, 4, 4)
    export.save(model, tmp_path)
    tensors = export.read_manifest(tmp_path)["tensors"]
    for name, channels in (("0.weight", 16), ("3.weight", 32)):
        entry = tensors[name]
        assert entry["layout"] == "dense" and entry["codes"]["coder"] == "channels", name
        n = channels // len(MIXED)
        assert entry["channel_bits"] == {"2": n, "3": n, "4": n, "8": n}
        layer = model.get_submodule(name.partition(".")[0])
        quantizer = layer.parametrizations.weight[0]
        codes, _ = artifact_format.quantized_codes(
            layer.parametrizations.weight.original, quantizer
        )
        by_channel = codes.reshape(channels, -1)
        bits = quantizer.channel_storage_bits().numpy()
        # a channel of zeros (3.weight's channel 5) costs nothing: its width is 0
        live = by_channel.any(1)
        assert live.sum() == channels - (name == "3.weight")
        ideal = int((bits * by_channel.shape[1])[live].sum()) / 8
        # the values, padded to a byte per distinct width, and the 3-bit widths
        assert ideal <= entry["streams"]["codes"] <= ideal + len(MIXED), name
        assert coded(entry) <= ideal + len(MIXED) + np.ceil(channels * 3 / 8), name
        # what the coders of uniform codes (packed, rANS) make of them
        _, streams = artifact_format._encode_symbols(codes.ravel(), "codes")
        assert coded(entry) < 0.85 * artifact_format._size(streams), name
    loaded = export.load(tmp_path, model=float_model)
    assert torch.equal(loaded[3].weight, model[3].weight)
    assert torch.equal(loaded(x), model(x))


def test_sparse_layout_with_the_channels_coder_round_trips_exactly(tmp_path):
    model = mixed_model(density=0.1)
    x = torch.randn(2, 3, 4, 4)
    export.save(model, tmp_path)
    tensors = export.read_manifest(tmp_path)["tensors"]
    for name in ("0.weight", "3.weight"):
        entry = tensors[name]
        assert entry["layout"] == "sparse" and entry["values"]["coder"] == "channels", name
        assert len(entry["channel_bits"]) == len(MIXED)
    loaded = export.load(tmp_path, model=float_model)
    for i in (0, 3, 5):
        assert torch.equal(loaded[i].weight, model[i].weight), i
    assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("sparse", [False, True])
def test_channels_coder_inverts_on_any_widths(sparse):
    rng = np.random.default_rng(0)
    widths = np.array([0, 1, 2, 3, 5, 8, 13, 16, 31, 32, 0, 7])
    channel = rng.integers(0, widths.size, 5000)
    channel = channel[widths[channel] > 0] if sparse else channel
    top = 1 << (np.maximum(widths, 1) - 1)
    values = np.where(widths[channel] > 0, rng.integers(-top[channel], top[channel]), 0)
    values[: widths.size] = np.where(widths > 0, -top, 0)[channel[: widths.size]]  # extremes
    spec, streams = artifact_format._encode_channels(values, "v", channel, widths.size)
    decoded = artifact_format._decode_channels(spec, "v", streams, channel, widths.size)
    np.testing.assert_array_equal(decoded, values)
    # no per-channel padding: at most a byte per distinct width
    ideal = int((np.maximum(widths[channel], 0)).sum())
    assert len(streams["v"]) <= ideal / 8 + len(set(widths.tolist()))
    assert artifact_format._encode_channels(values << 8, "v", channel, widths.size) is None


def test_uniform_bits_never_cost_more_than_without_the_channels_coder(tmp_path, monkeypatch):
    sizes = {}
    for enabled in (True, False):
        if not enabled:
            monkeypatch.setattr(artifact_format, "_encode_channels", lambda *a, **k: None)
        for per_channel in (False, True):
            torch.manual_seed(0)
            model = get_model("resnet20").eval()
            quant.prepare(model, init_bits=4, per_channel=per_channel)
            out = tmp_path / f"{enabled}-{per_channel}"
            export.save(model, out)
            tensors = export.read_manifest(out)["tensors"]
            for entry in tensors.values():
                if entry["encoding"] == "quantized":
                    assert entry["channel_bits"] == {"4": entry["shape"][0] if per_channel else 1}
            sizes[enabled, per_channel] = (
                sum(f.stat().st_size for f in out.iterdir()),
                {n: coded(e) for n, e in tensors.items() if e["encoding"] == "quantized"},
            )
    for per_channel in (False, True):
        (total, codes), (total_off, codes_off) = sizes[True, per_channel], sizes[False, per_channel]
        assert total <= total_off and all(codes[n] <= codes_off[n] for n in codes)


# A version 2 artifact written by geta before the channels coder (nn.Sequential(nn.Linear(8, 4),
# nn.Linear(4, 3, bias=False)), 4 bits per channel, the second layer sparse), and its tensors.
V2_MANIFEST = (
    '{"format":"geta-artifact","version":2,"weights_sha256":"4d43340c25a35143707e312b12a2fa14d57d'
    'b44569cb205614a417e8032ec8f1","index":{"codec":"zlib-dict","bytes":128,"size":759}}'
)
V2_WEIGHTS = (
    "QAAAAAAAAAB7ImRhdGEiOnsiZHR5cGUiOiJVOCIsInNoYXBlIjpbMjM2XSwiZGF0YV9vZmZzZXRzIjpbMCwyMzZdfX0g"
    "ICAgtZXRCoAgDEV/yIfdOUo/ppfegr4g8N9LAlMnWIHvc47D7llBgxo4xLhlHBL2b6CU+ZpTvqTFBJOiYjk1xRQDT2qf"
    "5OdC3f3QAGeNjAT3zVroa6uHlRVWliQulObKvkMILTEf+7Y+Yna+UjOI4rPsIJG6Sq4+S3FuqDKpy+w10QmL9bbP23jo"
    "uwIDELS2BStoTkpmOVAO5LguOfXqz/uAtyCJVSved578F15gdwbI0XLVtp+yZtryBiDIUqtZqeV6ZOpabSDHFgjsgMAe"
    "CPYBga2NgZ2tEZADAMcQlOeWZSB0yjHq1YYOUuQGAtA="
)
V2_TENSORS = {
    "0.weight": [
        [0.0, 0.20785027742385864, -0.2909903824329376, -0.24942034482955933,
         -0.12471017241477966, 0.08314011245965958, 0.0, 0.2909903824329376],
        [-0.04825238510966301, 0.09650477021932602, -0.09650477021932602, -0.04825238510966301,
         -0.33776670694351196, -0.24126192927360535, -0.14475715160369873, 0.0],
        [0.1258227676153183, 0.20970462262630463, -0.2516455352306366, -0.16776369512081146,
         0.1258227676153183, 0.29358646273612976, -0.08388184756040573, 0.2516455352306366],
        [-0.04685442894697189, 0.04685442894697189, 0.32798099517822266, -0.32798099517822266,
         -0.23427215218544006, -0.09370885789394379, -0.14056327939033508, 0.32798099517822266],
    ],
    "0.bias": [-0.22916610538959503, -0.16275224089622498, -0.24700669944286346,
               -0.33112430572509766],
    "1.weight": [[-0.29187023639678955, 0.0, 0.0, 0.0], [0.0, 0.0, 0.08459234237670898, 0.0],
                 [0.0, 0.0, 0.0, 0.0]],
}  # fmt: skip


def test_a_version_2_artifact_still_loads_and_inspects(tmp_path):
    (tmp_path / "manifest.json").write_text(V2_MANIFEST)
    (tmp_path / "weights.safetensors").write_bytes(base64.b64decode(V2_WEIGHTS))
    manifest = export.read_manifest(tmp_path)
    assert manifest["version"] == 2
    assert manifest["tensors"]["1.weight"]["layout"] == "sparse"
    assert not any("channel_bits" in e for e in manifest["tensors"].values())
    loaded = export.load_tensors(tmp_path)
    assert set(loaded) == set(V2_TENSORS)
    for name, values in V2_TENSORS.items():
        assert torch.equal(loaded[name], torch.tensor(values, dtype=torch.float32)), name
    model = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 3, bias=False))
    export.load(tmp_path, model=model)
    assert torch.equal(model[1].weight, loaded["1.weight"])
    summary = export.summarize(tmp_path)
    assert summary.version == 2 and all(t.channel_bits is None for t in summary.tensors)
    status, out, err = run_cli("inspect", str(tmp_path))
    assert status == 0 and "version 2" in out and "bits:channels" not in out, err


def rewrite(path, edit_index=None, edit_blob=None):
    """Apply ``edit_index`` to the stored index and ``edit_blob`` to the sections after it (a
    bytearray, with the index as ``read_manifest`` returns it), with a valid checksum."""
    manifest = json.loads((path / "manifest.json").read_text())
    blob = safetensors.numpy.load_file(str(path / "weights.safetensors"))["data"].tobytes()
    spec = manifest["index"]
    text = artifact_format._decompress(spec["codec"], blob[: spec["bytes"]], spec["size"])
    index = json.loads(text)
    sections = bytearray(blob[spec["bytes"] :])
    if edit_blob is not None:
        edit_blob(export.read_manifest(path), sections)
    if edit_index is not None:
        edit_index(index)
    text = json.dumps(index, separators=(",", ":")).encode()
    codec, packed = artifact_format._compress(text, index=True)
    data = np.frombuffer(packed + bytes(sections), np.uint8)
    safetensors.numpy.save_file({"data": data}, str(path / "weights.safetensors"))
    manifest["index"] = {"codec": codec, "bytes": len(packed), "size": len(text)}
    sha = hashlib.sha256((path / "weights.safetensors").read_bytes()).hexdigest()
    manifest["weights_sha256"] = sha
    (path / "manifest.json").write_text(json.dumps(manifest))


def widths_spec(index):
    return index["tensors"]["3.weight"]["codes"]["widths"]


def zero_the_widths_stream(manifest, sections):
    tensors = manifest["tensors"]
    places, _ = artifact_format._layout(tensors)
    _, start, length = places["3.weight", "codes.widths"]
    start += manifest["plain"]["bytes"]
    sections[start : start + length] = bytes(length)


@pytest.mark.parametrize(
    "edit_index, edit_blob, message",
    [
        (lambda i: widths_spec(i).update(lo=3), None, "the widths stream is corrupted"),
        (lambda i: widths_spec(i).update(lo=40), None, r"of 40 to 46 bits \(0 to 32 allowed\)"),
        (lambda i: widths_spec(i).update(lo=-3), None, r"\(0 to 32 allowed\)"),
        (lambda i: widths_spec(i).update(width=1 << 40), None, "bytes, .* needed for 32 values"),
        (lambda i: widths_spec(i).update(coder="channels"), None, "unknown coder"),
        (None, zero_the_widths_stream, "the widths stream is corrupted"),
        (lambda i: i["tensors"]["3.weight"].update(per_channel=False), None, "without a per-"),
    ],
)
def test_corrupt_widths_are_one_clear_error(tmp_path, edit_index, edit_blob, message):
    export.save(mixed_model(), tmp_path)
    rewrite(tmp_path, edit_index, edit_blob)
    with pytest.raises(geta.ArtifactError, match="tensor 3.weight cannot be decoded") as err:
        export.load(tmp_path, model=float_model)
    assert err.match(message)


def test_malformed_histogram_is_an_unreadable_index(tmp_path):
    export.save(mixed_model(), tmp_path)
    rewrite(tmp_path, lambda i: i["tensors"]["3.weight"].update(channel_bits={"x": 1}))
    with pytest.raises(geta.ArtifactError, match="malformed channel_bits"):
        export.read_manifest(tmp_path)
