"""The notebooks run top to bottom with the small settings (``GETA_NOTEBOOK_SMALL=1``), in a
scratch directory, and what their last cell reports holds; the committed notebooks carry the
outputs of a full run that satisfies the same checks."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("notebook_runner", REPO / "notebooks" / "execute.py")
runner = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(runner)


def check_quick_start(r: dict) -> None:
    assert r["within_budget"] and r["ratio"] >= r["target_ratio"] == 30
    assert r["prune_max_diff"] < 1e-4 and r["reload_max_diff"] < 1e-4
    assert r["accuracy"] > (0.6 if r["small"] else 0.8)
    assert r["real_ratio"] > 10  # bytes on disk against fp32 safetensors


def check_graphs(r: dict) -> None:
    models = {m["model"]: m for m in r["models"]}
    assert set(models) == {
        "resnet18",
        "densenet",
        "vit (torchvision)",
        "vit (HF)",
        "llama block",
        "custom op, no rule",
        "custom op, with rule",
    }
    for m in models.values():  # zero-then-prune: same outputs, fewer parameters
        assert m["passed"] and m["max_diff"] < 1e-4 and m["params"][1] < m["params"][0], m
    assert models["resnet18"]["groups"] == 12 and models["densenet"]["groups"] == 10
    assert models["custom op, no rule"]["unsupported"] == 1
    assert models["custom op, with rule"]["unsupported"] == 0
    assert models["custom op, with rule"]["groups"] == models["custom op, no rule"]["groups"] + 1
    assert "head" not in models["vit (torchvision)"]["kinds"]
    assert "2 head" in models["vit (HF)"]["kinds"] and "1 head" in models["llama block"]["kinds"]


def check_minilm(r: dict) -> None:
    assert r["within_budget"] and r["ratio"] >= r["target_ratio"] == 10
    assert r["removed_units"] > 0  # 4-bit floor: the budget needs structured pruning too
    assert r["prune_max_diff"] < 1e-4 and r["reload_max_diff"] < 1e-4
    assert r["cosine"] > 0.5
    if r["pretrained"]:
        assert r["accuracy"] > 0.6  # five topics: chance is 0.2


def check_admm(r: dict) -> None:
    assert r["within_budget"] and r["ratio"] >= r["target_ratio"] == 200
    assert r["weight_sparsity"] > 0.5  # unstructured: most weights are exact zeros
    assert r["reload_max_diff"] < 1e-4
    assert r["accuracy"] > (0.5 if r["small"] else 0.8)


CHECKS: dict[str, tuple[Callable[[dict], None], str]] = {
    # notebook: (checks of its RESULT line, a file it writes into its working directory)
    "01_quick_start": (check_quick_start, "lenet5_compressed/manifest.json"),
    "02_dependency_graphs": (check_graphs, "custom_before.svg"),
    "03_compress_minilm": (check_minilm, "minilm_compressed/geta.json"),
    "04_unstructured_admm": (check_admm, "lenet5_admm/manifest.json"),
}


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code"]


def result_of(nb: nbformat.NotebookNode) -> dict:
    """The JSON of the ``RESULT`` line that the last code cell prints."""
    lines = [
        line
        for out in code_cells(nb)[-1].outputs
        if out.output_type == "stream"
        for line in out.text.splitlines()
        if line.startswith("RESULT ")
    ]
    assert len(lines) == 1, "the last cell must print one RESULT line"
    return json.loads(lines[0].removeprefix("RESULT "))


def errors_of(nb: nbformat.NotebookNode) -> list[str]:
    return [
        f"{o.ename}: {o.evalue}"
        for c in code_cells(nb)
        for o in c.outputs
        if o.output_type == "error"
    ]


def test_every_notebook_is_checked():
    assert sorted(p.stem for p in runner.notebooks()) == sorted(CHECKS)


@pytest.mark.notebook
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_notebook_runs_with_small_settings(name, tmp_path):
    path = REPO / "notebooks" / f"{name}.ipynb"
    committed = path.read_bytes()
    nb = runner.execute(path, small=True, workdir=tmp_path, threads=1, timeout=600)
    assert not errors_of(nb)
    result = result_of(nb)
    assert result["small"] is True
    check, written = CHECKS[name]
    check(result)
    assert (tmp_path / written).is_file()  # the kernel worked in the scratch directory ...
    assert path.read_bytes() == committed  # ... and left the repository alone


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_committed_notebook_carries_full_outputs(name):
    nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    cells = code_cells(nb)
    # ran top to bottom in one kernel, every cell once, and every cell shows something
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
    assert all(c.outputs for c in cells)
    assert not errors_of(nb)
    result = result_of(nb)
    assert result["small"] is False, "commit the outputs of a full run (execute.py --write)"
    CHECKS[name][0](result)
