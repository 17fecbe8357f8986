"""Run descriptions: files (TOML, JSON, a report.json), flags over them, a run re-created from
its report alone, and the validation split."""

import json
from dataclasses import replace

import pytest
import torch

import geta
from geta.cli.compress import split_validation
from geta.cli.compress_command import with_channel_multiple
from geta.cli.data import load_data
from geta.cli.methods import mode_settings
from geta.cli.spec import CompressSpec, OptimizerSpec, read_spec_file
from tests.cli.conftest import TINY, run_cli


def test_spec_round_trips_with_its_nested_configs():
    spec = CompressSpec(
        budget="50x",
        seed=3,
        dense_seed=0,
        validation=100,
        optimizer=OptimizerSpec(base="adam", weight_decay=0.0, schedule="constant"),
        config=geta.CompressorConfig(bit_range=(3, 8), periods=2),
        method={"bits": 4},
    )
    data = json.loads(json.dumps(spec.to_dict()))
    assert CompressSpec.from_dict(data) == spec


def test_description_files_in_toml_and_json(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text(
        'budget = "100x"\nepochs = 3\n[optimizer]\nbase = "adamw"\n'
        '[config]\nperiods = 2\n[config.admm]\ngranularity = "group"\n'
    )
    spec = read_spec_file(toml)
    assert (spec.budget, spec.epochs, spec.optimizer.base) == ("100x", 3, "adamw")
    assert spec.config.periods == 2 and spec.config.admm.granularity == "group"
    as_json = tmp_path / "run.json"
    as_json.write_text(json.dumps(spec.to_dict()))
    assert read_spec_file(as_json) == spec


@pytest.mark.parametrize(
    "text, message",
    [
        ('budgett = "30x"', "run: unknown setting\\(s\\) budgett"),
        ("[config]\nperchannel = true", "run.config: unknown setting\\(s\\) perchannel"),
        ('[optimizer]\nbase = "lbfgs"', "optimizer.base is one of sgd, adam, adamw"),
        ("budget = ", "is not valid toml"),
    ],
)
def test_bad_description_files_are_config_errors(tmp_path, text, message):
    path = tmp_path / "run.toml"
    path.write_text(text)
    with pytest.raises(geta.ConfigError, match=message):
        read_spec_file(path)


def test_a_run_re_created_from_its_report_gives_the_same_result(finished, tmp_path):
    again = tmp_path / "again"
    status, _, err = run_cli(
        "compress", "--config", str(finished.out / "report.json"), "--out", str(again), "--quiet"
    )
    assert status == 0, err
    first, second = finished.report, json.loads((again / "report.json").read_text())
    assert second["run"] == first["run"]
    for key in ("accuracy", "achieved", "artifact_bytes"):
        assert second["compressed"][key] == first["compressed"][key], key
    assert [r["nonzeros"] for r in second["compressed"]["layers"]] == [
        r["nonzeros"] for r in first["compressed"]["layers"]
    ]


def test_flags_override_the_description_file(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"budget": "40x", "epochs": 1, "seed": 5}))
    out = tmp_path / "out"
    status, _, err = run_cli(
        "compress", *TINY, "--config", str(path), "--seed", "2", "--out", str(out)
    )
    assert status == 0, err
    run = json.loads((out / "report.json").read_text())["run"]
    assert run["budget"] == "40x" and run["seed"] == 2 and run["epochs"] == 2  # TINY's --epochs


def test_validation_split_is_fixed_disjoint_and_reported(tmp_path):
    data = load_data("synthetic", limit=512)
    train, validation = split_validation(data, 100)
    again, _ = split_validation(data, 100)
    assert len(train.train) == 412 and len(validation.train) == 100
    assert torch.equal(train.train.tensors[0], again.train.tensors[0])
    flat = {tuple(x.reshape(-1)[:8].tolist()) for x in train.train.tensors[0]}
    assert not any(tuple(x.reshape(-1)[:8].tolist()) in flat for x in validation.train.tensors[0])
    out = tmp_path / "out"
    status, _, err = run_cli("compress", *TINY, "--validation", "100", "--out", str(out))
    assert status == 0, err
    report = json.loads((out / "report.json").read_text())
    assert 0 < report["compressed"]["validation_accuracy"] <= 1
    assert 0 < report["dense"]["validation_accuracy"] <= 1
    with pytest.raises(geta.ConfigError, match="leaves no training data"):
        split_validation(data, 512)


def test_a_training_subset_trains_on_fewer_images_and_tests_on_all(tmp_path):
    out = tmp_path / "out"
    args = ("--validation", "50", "--train-limit", "200", "--out", str(out))
    status, _, err = run_cli("compress", *TINY, *args)
    assert status == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["samples"] == {"train": 200, "validation": 50, "test": 256}  # all
    assert report["run"]["train_limit"] == 200


def test_channel_multiple_flag_sets_the_config_and_aligns_the_layers(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('budget = "60x"\n[config]\nsaliency = "magnitude"\n')
    out = tmp_path / "out"
    args = ("--config", str(path), "--channel-multiple", "4", "--out", str(out))
    status, _, err = run_cli("compress", *TINY, *args)
    assert status == 0, err
    report = json.loads((out / "report.json").read_text())
    config = report["run"]["config"]
    assert config["channel_multiple"] == 4 and config["saliency"] == "magnitude"  # merged
    pruned = [r for r in report["compressed"]["layers"] if r["shape"] != r["dense_shape"]]
    assert pruned, "nothing was pruned"
    for row in pruned:
        for width, dense in zip(row["shape"][:2], row["dense_shape"][:2], strict=True):
            assert width == dense or width % 4 == 0, row


def test_channel_multiple_reaches_ajpq_and_a_resumed_run_keeps_its_own():
    spec = CompressSpec(mode="ajpq", config=geta.CompressorConfig(channel_multiple=8))
    assert mode_settings(spec).channel_multiple == 8
    assert mode_settings(replace(spec, method={"episodes": 3})).episodes == 3
    with pytest.raises(geta.ConfigError, match="channel_multiple = 4 and config"):
        mode_settings(replace(spec, method={"channel_multiple": 4}))
    assert with_channel_multiple(spec, 16).config.channel_multiple == 16
    assert with_channel_multiple(spec, None) is spec
    with pytest.raises(geta.ConfigError, match="--channel-multiple 16 differs from the run"):
        with_channel_multiple(spec, 16, resumed="out")
