import hashlib
import json
import os
from pathlib import Path

import matplotlib.image
import pytest
import torch
import torchvision
from torch.utils.data import DataLoader

import geta
from geta.cli.data import load_data
from geta.cli.models import load_model
from geta.training import evaluate
from tests.cli.conftest import TINY, run_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_outputs_exist_and_plots_are_images(finished):
    out = finished.out
    assert (out / "artifact" / "manifest.json").exists()
    assert not (out / "checkpoint.pt").exists()  # removed once the run is complete
    assert finished.report["files"]["plots"] == [
        "plots/layers.png",
        "plots/training.png",
        "plots/cost.png",
    ]
    for name in finished.report["files"]["plots"]:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC)
        image = matplotlib.image.imread(out / name)
        assert image.shape[0] > 200 and image.shape[1] > 200
        assert image[..., :3].std() > 0.05  # not a blank canvas


def test_report_matches_the_artifact(finished):
    c = finished.report["compressed"]
    artifact = finished.out / "artifact"
    on_disk = sum(f.stat().st_size for f in artifact.iterdir())
    assert c["artifact_bytes"] == on_disk
    assert c["real_ratio"] == pytest.approx(c["fp32_bytes"] / on_disk)
    assert c["within_budget"] and c["achieved"] <= c["target"]
    assert c["papers_ratio"] == pytest.approx(c["dense_cost"] / c["achieved"])
    assert c["papers_ratio"] >= 30  # the default budget
    manifest = geta.export.read_manifest(artifact)
    for layer in c["layers"]:
        entry = manifest["tensors"][f"{layer['name']}.weight"]
        assert entry["shape"] == layer["shape"]
        assert entry["nonzeros"] == layer["nonzeros"]
        assert entry["bits"] <= layer["bits"]  # the artifact packs at the codes' real width


def test_artifact_loads_and_gives_the_reported_accuracy(finished):
    c = finished.report["compressed"]
    model = geta.export.load(finished.out / "artifact")  # architecture stored: no factory
    test = load_data("synthetic", limit=512).test
    accuracy = evaluate(model, DataLoader(test, batch_size=100))
    assert accuracy == c["accuracy"] == c["artifact_accuracy"]
    assert accuracy > 0.5  # ten classes: well above chance
    assert finished.report["dense"]["accuracy"] > 0.5


def test_report_has_history_settings_and_versions(finished):
    r = finished.report
    assert r["run"]["budget"] == "30x" and r["run"]["model"] == "lenet5"
    assert r["run"]["device"] == "cpu"
    assert r["versions"]["torch"] == torch.__version__ and r["date"]
    rows = r["history"]["epochs"]
    assert [(row["phase"], row["epoch"]) for row in rows] == [
        ("dense", 1),
        ("dense", 2),
        ("dense", 3),
        ("compress", 1),
        ("compress", 2),
    ]
    costs = [t["cost"] for t in r["history"]["trace"] if t["phase"] == "compress"]
    assert len(costs) >= 8 and costs[-1] == pytest.approx(r["compressed"]["achieved"])
    assert costs[0] > r["compressed"]["target"]  # starts above the budget, ends within
    assert r["plans"] and all(p["planned_cost"] <= r["compressed"]["target"] for p in r["plans"])


def test_printed_table(finished):
    text = finished.stdout
    c = finished.report["compressed"]
    assert f"{c['papers_ratio']:.1f}x" in text and f"{c['artifact_bytes']:,} B" in text
    assert f"{c['accuracy']:.2%}" in text and f"{finished.report['dense']['accuracy']:.2%}" in text
    assert "wrote" in text and "report.json" in text


def test_a_cached_baseline_gives_the_same_result(finished, tmp_path, monkeypatch):
    """The first run trains the baseline, a second one reads it from the cache: same
    artifact, byte for byte."""
    monkeypatch.setenv("GETA_CACHE", str(tmp_path / "cache"))
    digests = []
    for name in ("first", "second"):
        status, _, err = run_cli("compress", *TINY, "--out", str(tmp_path / name))
        assert status == 0, err
        report = json.loads((tmp_path / name / "report.json").read_text())
        digests.append(
            hashlib.sha256((tmp_path / name / "artifact" / "weights.safetensors").read_bytes())
        )
        assert report["dense"]["cached"] == (name == "second")
    assert digests[0].hexdigest() == digests[1].hexdigest()
    assert len(list((tmp_path / "cache" / "baselines").glob("*.pt"))) == 1


def test_a_three_channel_model_takes_grey_images(tmp_path):
    status, _, err = run_cli(
        "compress", "--model", "tests.cli.nets:rgb_net", "--data", "synthetic", "--limit", "32",
        "--batch-size", "16", "--dense-epochs", "0", "--epochs", "1", "--budget", "10x",
        "--quiet", "--out", str(tmp_path),
    )  # fmt: skip
    assert status == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["compressed"]["papers_ratio"] >= 10
    assert report["data"]["shape"] == [3, 28, 28]
    assert report["dense"]["epochs"] == 0 and not report["dense"]["cached"]


def test_torchvision_models_are_built_for_the_data_classes():
    loaded = load_model("resnet18", num_classes=10)
    assert loaded.model.fc.out_features == 10 and loaded.architecture is None
    assert isinstance(loaded.factory(), torchvision.models.ResNet)


@pytest.mark.parametrize("mode", ["admm", "admm-progressive"])
def test_the_admm_modes_run_end_to_end_with_their_plots(tmp_path, mode):
    out = tmp_path / "out"
    status, _, err = run_cli(
        "compress", *TINY, "--mode", mode, "--budget", "60x", "--out", str(out)
    )
    assert status == 0, err
    report = json.loads((out / "report.json").read_text())
    c = report["compressed"]
    assert c["mode"] == mode and c["within_budget"] and c["papers_ratio"] >= 60
    assert report["plans"] and all("cost" in p for p in report["plans"])
    assert (out / "plots" / "cost.png").read_bytes().startswith(PNG_MAGIC)


def test_zoo_models_are_built_for_the_data_image_size():
    # vgg7_bn's classifier is sized for 32x32 inputs by default; Fashion-MNIST is 28x28
    loaded = load_model("vgg7_bn", num_classes=10, in_channels=1, image_size=28)
    assert loaded.model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert load_model("lenet5", image_size=28).architecture == "geta.models.lenet:lenet5"


def test_a_latency_budget_runs_end_to_end(tmp_path):
    """Plumbing, not speed: a generous latency budget is met, and the report, the table and the
    cost plot speak milliseconds."""
    out = tmp_path / "out"
    status, stdout, err = run_cli(
        "compress", *TINY, "--dense-epochs", "0", "--epochs", "1", "--budget", "latency=1000ms",
        "--out", str(out),
    )  # fmt: skip
    assert status == 0, err
    c = json.loads((out / "report.json").read_text())["compressed"]
    assert c["metric"] == "latency" and c["within_budget"] and c["target"] == 1000
    assert c["measured_ms"] > 0 and 0 < c["achieved"] < 1000
    assert "ms per forward, predicted" in stdout and "ms per forward, measured" in stdout
    assert (out / "plots" / "cost.png").read_bytes().startswith(PNG_MAGIC)
    assert list(Path(os.environ["GETA_CACHE"], "latency").glob("*.json"))  # the machine's table
