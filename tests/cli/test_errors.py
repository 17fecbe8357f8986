"""Bad arguments exit with 2, failures with 1: one line on stderr, a traceback only with
--debug."""

import pytest
import torch

import geta
from geta.cli.models import load_model
from tests.cli.conftest import TINY, run_cli


def _one_line(err: str) -> bool:
    return err.count("\n") == 1 and "Traceback" not in err and err.startswith("geta")


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--budget", "abc"], 2, "argument --budget: cannot read budget 'abc'"),
        (["--budget", "0.5x"], 2, "a compression ratio is at least 1"),
        (["--mode", "nope"], 2, "unknown mode 'nope'; available: admm, admm-progressive"),
        (["--epochs", "0"], 2, "--epochs must be at least 1"),
        (["--channel-multiple", "0"], 2, "argument --channel-multiple: expected an integer of"),
        (["--model", "no_such_model"], 2, "unknown model 'no_such_model'"),
        (["--model", "tests.cli.nets:scalar_net"], 2, "has 1 outputs; synthetic has 10 classes"),
        (["--data", "/no/such/dir"], 1, "unknown dataset '/no/such/dir'"),
        (["--budget", "100000x"], 1, "budget 100000x smaller cannot be met"),
        (["--device", "tpu"], 2, "--device must be cpu or cuda[:N], got 'tpu'"),
        (["--device", "meta"], 2, "--device must be cpu or cuda[:N], got 'meta'"),
    ],
)
def test_bad_arguments_and_failures(tmp_path, args, status, message):
    out = tmp_path / "out"
    got, stdout, err = run_cli("compress", *TINY, *args, "--out", str(out))
    assert got == status and stdout == ""
    assert message in err and _one_line(err), err
    # nothing was trained: the budget, the mode and the data are checked first
    assert not (out / "checkpoint.pt").exists()


def test_cuda_without_a_gpu_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    status, _, err = run_cli("compress", *TINY, "--device", "cuda", "--out", str(tmp_path))
    assert status == 2 and _one_line(err)
    assert "this torch sees no CUDA device; use --device cpu" in err


def test_a_directory_without_idx_files(tmp_path):
    status, _, err = run_cli("compress", "--data", str(tmp_path), "--out", str(tmp_path / "o"))
    assert status == 1 and _one_line(err)
    assert f"{tmp_path} holds no idx files" in err


def test_an_hf_model_with_image_data_is_told_what_data_it_takes(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16,
    )  # fmt: skip
    config.save_pretrained(tmp_path / "bert")
    status, _, err = run_cli(
        "compress", "--model", f"hf:{tmp_path / 'bert'}", "--data", "synthetic",
        "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert status == 2 and _one_line(err)
    assert "synthetic: expected a text (.txt, one document per line), CSV (.csv)" in err


def test_debug_shows_the_traceback(tmp_path):
    status, _, err = run_cli(
        "compress", *TINY, "--budget", "100000x", "--debug", "--out", str(tmp_path)
    )
    assert status == 1
    assert "Traceback (most recent call last)" in err and "BudgetError" in err
    assert err.rstrip().splitlines()[-1].startswith("geta: error: budget 100000x")


def test_an_unexpected_error_is_one_line_too(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("something inside broke")

    monkeypatch.setattr("geta.cli.compress.run_compress", broken)
    status, _, err = run_cli("compress", *TINY, "--out", str(tmp_path))
    assert status == 1 and _one_line(err)
    assert "unexpected RuntimeError: something inside broke (run with --debug" in err


def test_compressor_rejects_an_unknown_mode_with_a_geta_error():
    model = load_model("lenet5").model
    with pytest.raises(
        geta.ConfigError, match="unknown mode 'nope'; available: admm, admm-progressive"
    ):
        geta.Compressor(model, (geta.models.example_inputs("lenet5")[0][0],), "30x", mode="nope")
