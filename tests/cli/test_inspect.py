import hashlib
import re
import shutil

import geta
from geta.export import summarize
from tests.cli.conftest import run_cli
from tests.export.test_channel_bits import mixed_model


def test_inspect_lists_tensors_and_accounts_for_every_byte(finished):
    artifact = finished.out / "artifact"
    status, out, err = run_cli("inspect", str(artifact))
    assert status == 0, err
    weights = (artifact / "weights.safetensors").read_bytes()
    assert f"sha256 {hashlib.sha256(weights).hexdigest()} (matches the manifest" in out
    manifest = geta.export.read_manifest(artifact)
    for name, entry in manifest["tensors"].items():
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert "x".join(map(str, entry["shape"])) in line
        if entry["encoding"] == "quantized":
            histogram = sorted(map(int, entry["channel_bits"]))
            bits = entry["bits"] if len(histogram) == 1 else f"{histogram[0]}-{histogram[-1]}"
            assert re.search(rf"\s{bits}\s+{entry['nonzeros']:,}\s", line)
    parts = dict(re.findall(r"^  (\S[^\d]*?)\s+([\d,]+)", out.split("bytes on disk:")[1], re.M))
    sizes = {k: int(v.replace(",", "")) for k, v in parts.items()}
    total = sizes.pop("total")
    assert total == sum(sizes.values())
    assert total == sum(f.stat().st_size for f in artifact.iterdir())
    assert total == finished.report["compressed"]["artifact_bytes"]


def test_summary_parts_add_up_to_the_weights_file(finished):
    s = summarize(finished.out / "artifact")
    assert s.header_bytes + s.index_bytes + s.plain_bytes + s.coded_bytes == s.weights_bytes
    assert s.coded_bytes == sum(t.coded_bytes for t in s.tensors) > 0
    assert s.architecture == "geta.models.lenet:lenet5" and s.decoded
    quantized = [t for t in s.tensors if t.encoding == "quantized"]
    assert len(quantized) == 5 and all(t.bits >= 1 and t.coded_bytes > 0 for t in quantized)


def test_a_corrupted_artifact_is_one_clear_error(finished, tmp_path):
    artifact = tmp_path / "artifact"
    shutil.copytree(finished.out / "artifact", artifact)
    data = bytearray((artifact / "weights.safetensors").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (artifact / "weights.safetensors").write_bytes(bytes(data))
    status, out, err = run_cli("inspect", str(artifact))
    assert status == 1 and out == ""
    assert err.startswith("geta: error: ") and "checksum" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    status, _, err = run_cli("--debug", "inspect", str(artifact))
    assert status == 1
    assert "Traceback (most recent call last)" in err and "ArtifactError" in err


def test_inspecting_a_directory_that_is_no_artifact(tmp_path):
    status, _, err = run_cli("inspect", str(tmp_path))
    assert status == 1
    assert err == f"geta: error: {tmp_path} is not a geta artifact: manifest.json is missing\n"


def test_inspect_shows_the_bits_of_each_channel_of_a_mixed_precision_layer(tmp_path):
    geta.export.save(mixed_model(density=0.1), tmp_path / "sparse")
    geta.export.save(mixed_model(), tmp_path / "dense")
    coders = {"sparse": "sparse/channels+rice", "dense": "channels"}
    for kind, coder in coders.items():
        status, out, err = run_cli("inspect", str(tmp_path / kind))
        assert status == 0, err
        table, _, rest = out.partition("channels per bit width (bits:channels)")
        assert rest, out
        tensors = geta.export.read_manifest(tmp_path / kind)["tensors"]
        rows = {line.split()[0]: line.split() for line in table.splitlines() if line[:1].isdigit()}
        for name in ("0.weight", "3.weight"):
            assert rows[name][3:6] == ["2-8", f"{tensors[name]['nonzeros']:,}", coder], name
        assert rows["5.weight"][3] == "4" and "channels" not in rows["5.weight"][5]
        histograms = dict(
            line.split(maxsplit=1)
            for line in rest.partition("bytes on disk")[0].splitlines()[1:]
            if line.strip()
        )
        assert histograms == {"0.weight": "2:4 3:4 4:4 8:4", "3.weight": "2:8 3:8 4:8 8:8"}
