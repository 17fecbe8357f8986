"""A finished tiny ``geta compress`` run (synthetic data, a few seconds), shared by the tests
of its outputs, of ``geta inspect`` and of resuming."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from geta.cli import main

# 512 synthetic 1x28x28 images, batch 32: 16 steps an epoch
TINY = [
    "--data", "synthetic", "--limit", "512", "--batch-size", "32",
    "--dense-epochs", "3", "--epochs", "2", "--quiet",
]  # fmt: skip


@dataclass
class Finished:
    out: Path
    stdout: str
    report: dict


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``main(argv)`` with stdout and stderr captured (status, out, err); argparse's own exits
    come back as their status."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(list(argv))
        except SystemExit as exit_:
            status = exit_.code
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """Every test caches baselines in a private directory of its module."""
    monkeypatch.setenv("GETA_CACHE", str(tmp_path_factory.getbasetemp() / "geta-cache"))


@pytest.fixture(scope="session")
def finished(tmp_path_factory) -> Finished:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GETA_CACHE", str(tmp_path_factory.getbasetemp() / "geta-cache"))
        out = tmp_path_factory.mktemp("run") / "out"
        status, stdout, err = run_cli("compress", *TINY, "--out", str(out))
    assert status == 0, err
    return Finished(out, stdout, json.loads((out / "report.json").read_text()))
