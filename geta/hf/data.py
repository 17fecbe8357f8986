"""Text data for ``geta compress --model hf:...``: a local text, CSV or JSON-lines file read with
``datasets`` (offline), or a folder with one sub-folder of ``.txt`` documents per class (BBC
News' layout), split into training and test documents with a seed.

    data = load_texts("bbc.jsonl", text_column="text", label_column="label")
    data.train_texts[:2], data.classes
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geta.errors import ConfigError

__all__ = ["TextData", "load_texts", "FORMATS"]

FORMATS = {".txt": "text", ".csv": "csv", ".json": "json", ".jsonl": "json"}


@dataclass
class TextData:
    """Documents and (when the file has them) integer labels, split into train and test."""

    train_texts: list[str]
    test_texts: list[str]
    train_labels: np.ndarray | None
    test_labels: np.ndarray | None
    classes: list[str]
    source: str

    @property
    def labelled(self) -> bool:
        return self.train_labels is not None


def _read_folder(path: Path, text_column: str, label_column: str) -> dict[str, list[str]]:
    """A column table from ``path/<class>/*.txt``."""
    texts: list[str] = []
    labels: list[str] = []
    for folder in sorted(p for p in path.iterdir() if p.is_dir()):
        for file in sorted(folder.glob("*.txt")):
            texts.append(file.read_text(encoding="utf-8", errors="replace").strip())
            labels.append(folder.name)
    if not texts:
        raise ConfigError(f"{path} holds no <class>/*.txt documents")
    return {text_column: texts, label_column: labels}


def _read(path: Path, text_column: str, label_column: str) -> dict[str, list]:
    if path.is_dir():
        return _read_folder(path, text_column, label_column)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"{path}: expected a text (.txt, one document per line), CSV (.csv) or JSON-lines "
            "(.jsonl / .json) file"
        )
    if not path.is_file():
        raise ConfigError(f"no such data file: {path}")
    try:
        import datasets
    except ImportError as err:  # a dependency of geta; only a broken install lacks it
        raise ConfigError("reading text data needs the `datasets` package") from err
    datasets.disable_progress_bars()
    try:
        table = datasets.load_dataset(fmt, data_files=str(path), split="train")
    except Exception as err:
        raise ConfigError(f"{path} cannot be read as {fmt}: {err}") from None
    return {name: table[name] for name in table.column_names}


def load_texts(
    path: str | Path,
    *,
    text_column: str = "text",
    label_column: str = "label",
    test_fraction: float = 0.2,
    seed: int = 0,
    limit: int | None = None,
) -> TextData:
    """Read ``path`` and split it (a fixed permutation per ``seed``; ``limit`` keeps the first
    documents of it). Labels come from ``label_column`` when the file has one (strings or
    integers; classes sorted), or from the sub-folder names of a folder; empty documents are
    dropped.

    Raises:
        ConfigError: an unknown format, a missing file or text column, too few documents.
    """
    path = Path(path)
    table = _read(path, text_column, label_column)
    if text_column not in table:
        raise ConfigError(
            f"{path} has no column {text_column!r} (columns: {', '.join(table)}); "
            "name the text column with --text-column"
        )
    texts = [str(t) if t is not None else "" for t in table[text_column]]
    raw = table.get(label_column)
    keep = [i for i, t in enumerate(texts) if t.strip()]
    order = np.random.default_rng(seed).permutation(len(keep))
    keep = [keep[i] for i in order][:limit]
    if len(keep) < 4:
        raise ConfigError(f"{path} has {len(keep)} non-empty documents; at least 4 are needed")
    texts = [texts[i] for i in keep]
    classes: list[str] = []
    labels = None
    if raw is not None:
        values = [raw[i] for i in keep]
        classes = sorted({str(v) for v in values})
        index = {c: k for k, c in enumerate(classes)}
        labels = np.array([index[str(v)] for v in values], dtype=np.int64)
    n_test = min(max(1, round(len(texts) * test_fraction)), len(texts) - 1)
    return TextData(
        train_texts=texts[n_test:],
        test_texts=texts[:n_test],
        train_labels=None if labels is None else labels[n_test:],
        test_labels=None if labels is None else labels[:n_test],
        classes=classes,
        source=str(path),
    )
