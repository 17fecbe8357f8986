import hashlib
import json

import pytest

import geta.cli.compress
from tests.cli.conftest import TINY, run_cli


def _digest(out):
    return hashlib.sha256((out / "artifact" / "weights.safetensors").read_bytes()).hexdigest()


@pytest.mark.parametrize("interrupted_epoch", [2, 5], ids=["dense", "compress"])
def test_an_interrupted_run_resumes_to_the_same_result(
    finished, tmp_path, monkeypatch, interrupted_epoch
):
    """Ctrl-C in the middle of an epoch (the 2nd dense one, or the 2nd compression one);
    --resume goes on from the last epoch's checkpoint and ends with the uninterrupted run's
    artifact, byte for byte, and its history."""
    monkeypatch.setenv("GETA_CACHE", str(tmp_path / "cache"))  # the dense phase runs here
    real = geta.cli.compress.train_epoch
    calls = 0

    def interrupt_midway(*args, on_step, **kwargs):
        nonlocal calls
        calls += 1

        def step(i, loss):
            on_step(i, loss)
            if calls == interrupted_epoch and i == 4:
                raise KeyboardInterrupt

        return real(*args, on_step=step, **kwargs)

    monkeypatch.setattr(geta.cli.compress, "train_epoch", interrupt_midway)
    out = tmp_path / "out"
    status, _, err = run_cli("compress", *TINY, "--out", str(out))
    assert status == 130
    assert err.strip() == f"geta: interrupted; resume with: geta compress --out {out} --resume"
    assert (out / "checkpoint.pt").exists() and not (out / "report.json").exists()

    status, stdout, err = run_cli("compress", "--out", str(out), "--resume", "--quiet")
    assert status == 0, err
    assert "papers' ratio" in stdout
    assert _digest(out) == _digest(finished.out)
    report = json.loads((out / "report.json").read_text())
    expected = finished.report
    assert report["compressed"]["accuracy"] == expected["compressed"]["accuracy"]
    for key in ("test_accuracy", "test_loss", "train_loss"):
        assert [r[key] for r in report["history"]["epochs"]] == [
            r[key] for r in expected["history"]["epochs"]
        ]
    assert not (out / "checkpoint.pt").exists()


def test_resume_refuses_options_that_change_the_run(tmp_path, monkeypatch):
    real = geta.cli.compress.train_epoch
    calls = 0

    def stop_in_second_epoch(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(geta.cli.compress, "train_epoch", stop_in_second_epoch)
    out = tmp_path / "out"
    assert run_cli("compress", *TINY, "--out", str(out))[0] == 130
    status, _, err = run_cli("compress", "--out", str(out), "--resume", "--budget", "50x")
    assert status == 2
    assert err.startswith("geta: error: --budget 50x differs from the run in") and "30x" in err
    # a fresh run does not overwrite an unfinished one
    status, _, err = run_cli("compress", *TINY, "--out", str(out))
    assert status == 2 and "--resume" in err and err.count("\n") == 1


def test_resume_without_a_checkpoint_is_one_clear_error(tmp_path):
    status, _, err = run_cli("compress", "--out", str(tmp_path), "--resume")
    assert status == 1
    assert (
        err
        == f"geta: error: no checkpoint to resume from: {tmp_path}/checkpoint.pt does not exist\n"
    )


def test_an_interrupted_search_resumes_to_the_same_search(tmp_path, monkeypatch):
    """Ctrl-C during AJPQ's search (after its 2nd episode's checkpoint): --resume continues
    the search from search.pt and ends with the uninterrupted run's episodes."""
    monkeypatch.setenv("GETA_CACHE", str(tmp_path / "cache"))
    spec = tmp_path / "ajpq.toml"
    spec.write_text(
        'mode = "ajpq"\nvalidation = 64\n[method]\nepisodes = 4\nrecovery_steps = 2\n'
        "eval_batches = 1\n[method.agent]\nwarmup_episodes = 1\nhidden = 16\n"
    )
    args = ("compress", *TINY, "--config", str(spec))
    whole = tmp_path / "whole"
    assert run_cli(*args, "--out", str(whole))[0] == 0
    real = geta.cli.compress.save_checkpoint
    saves = 0

    def interrupt_after_two_episodes(path, state):
        nonlocal saves
        real(path, state)
        if "search" in state:
            saves += 1
            if saves == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(geta.cli.compress, "save_checkpoint", interrupt_after_two_episodes)
    out = tmp_path / "out"
    assert run_cli(*args, "--out", str(out))[0] == 130
    assert (out / "search.pt").exists()
    status, _, err = run_cli("compress", "--out", str(out), "--resume", "--quiet")
    assert status == 0, err
    resumed = json.loads((out / "report.json").read_text())["search"]["history"]
    expected = json.loads((whole / "report.json").read_text())["search"]["history"]
    assert [r["reward"] for r in resumed] == [r["reward"] for r in expected]
    assert [r["cost"] for r in resumed] == [r["cost"] for r in expected]
    assert saves == 4 and not (out / "search.pt").exists()


def test_oneshot_needs_no_validation_and_resumes_its_calibrated_state(tmp_path, monkeypatch):
    """One-shot mode calibrates on training batches (no --validation); interrupted in its
    fine-tuning epochs, --resume brings back the calibrated units and codes from the
    checkpoint (no second calibration) and ends where the uninterrupted run did."""
    monkeypatch.setenv("GETA_CACHE", str(tmp_path / "cache"))
    args = ("compress", *TINY, "--mode", "oneshot", "--budget", "12x")
    whole = tmp_path / "whole"
    assert run_cli(*args, "--out", str(whole))[0] == 0
    expected = json.loads((whole / "report.json").read_text())
    assert expected["search"]["removed_units"] > 0
    real = geta.cli.compress.train_epoch
    calls = 0

    def stop_in_first_compress_epoch(*a, **kw):
        nonlocal calls
        calls += 1
        if calls == 1:  # the dense model comes from the baseline cache the first run filled
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(geta.cli.compress, "train_epoch", stop_in_first_compress_epoch)
    out = tmp_path / "out"
    assert run_cli(*args, "--out", str(out))[0] == 130
    status, _, err = run_cli("compress", "--out", str(out), "--resume", "--quiet")
    assert status == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["compressed"]["accuracy"] == expected["compressed"]["accuracy"]
