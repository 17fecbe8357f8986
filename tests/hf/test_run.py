"""``geta compress --model hf:PATH``: tiny models saved to disk with a word-piece tokenizer (no
download), a labelled JSON-lines file, each task end to end, resume and the errors."""

import json

import numpy as np
import pytest
import torch
import transformers

import geta
from geta.cli import main, run_state
from geta.errors import CheckpointError, ConfigError
from geta.hf.data import load_texts
from geta.hf.run import HfRunSpec, run_hf_compress
from geta.hf.tasks import probe_accuracy
from tests.hf.text_files import write_text_files


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_text_files(tmp_path_factory.mktemp("hf-run"))


def spec(files, **kw):
    settings = dict(
        model=f"hf:{files / 'bert'}",
        data=str(files / "docs.jsonl"),
        budget="6x",
        epochs=1,
        batch_size=8,
        lr=1e-3,
    )
    return HfRunSpec(**{**settings, **kw})


def test_an_embedding_model_compresses_within_budget_with_all_outputs(files, tmp_path):
    result = run_hf_compress(spec(files, task="embedding"), tmp_path, progress=False)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["report"]["within_budget"] and report["report"]["ratio"] >= 6.0
    assert report["documents"] == {"train": 32, "test": 8}
    assert report["classes"] == ["money", "sport"]
    assert 0.5 < report["compressed"]["cosine"] <= 1.0 + 1e-6
    assert 0.0 <= report["compressed"]["probe_accuracy"] <= 1.0
    assert [row["epoch"] for row in report["history"]] == [1]
    assert set(report["history"][0]["scores"]) == {"cosine", "probe_accuracy"}
    assert result["compressed"] == report["compressed"]
    for png in ("layers.png", "cost.png", "training.png"):
        assert (tmp_path / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "checkpoint.pt").exists()  # finished
    reloaded = geta.hf.from_pretrained(tmp_path / "model")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "model")
    batch = tokenizer(["the ball of the team"], return_tensors="pt")
    assert reloaded(**batch).last_hidden_state.shape[-1] == 32
    assert any(p.name.endswith(".json") for p in (tmp_path / "artifact").iterdir())


def test_classification_runs_from_the_command_line(files, tmp_path, capsys):
    out = tmp_path / "cls"
    args = ["compress", "--model", f"hf:{files / 'bert'}", "--task", "classification"]
    args += ["--data", str(files / "docs.jsonl"), "--budget", "8x", "--epochs", "1"]
    assert main([*args, "--batch-size", "8", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "within budget" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "classification"
    assert report["distillation"] == {"from_logits": False, "head_from_checkpoint": False}
    assert 0.0 <= report["compressed"]["accuracy"] <= 1.0
    assert report["report"]["within_budget"]


def test_a_run_description_file_and_a_report_run_again(files, tmp_path, capsys):
    described = tmp_path / "run.toml"
    described.write_text(
        f'model = "hf:{files / "bert"}"\ndata = "{files / "docs.jsonl"}"\n'
        'task = "embedding"\nbudget = "6x"\nepochs = 0\nbatch_size = 8\n'
        "[config]\nbit_range = [4, 8]\nquantize_embeddings = true\n"
    )
    first = tmp_path / "first"
    assert main(["compress", "--config", str(described), "--out", str(first), "--quiet"]) == 0
    report = json.loads((first / "report.json").read_text())
    assert report["spec"]["config"]["bit_range"] == [4, 8]
    assert {row["bits"] for row in report["report"]["layers"]} <= {4, 5, 6, 7, 8}
    again = tmp_path / "again"
    args = ["compress", "--config", str(first / "report.json"), "--budget", "7x"]
    assert main([*args, "--out", str(again), "--quiet"]) == 0  # flags override the file
    rerun = json.loads((again / "report.json").read_text())["spec"]
    assert rerun == {**report["spec"], "budget": "7x"}
    described.write_text(described.read_text().replace("epochs = 0", "epoks = 0"))
    capsys.readouterr()
    assert main(["compress", "--config", str(described), "--out", str(tmp_path / "bad")]) != 0
    assert "unknown setting(s) epoks" in capsys.readouterr().err


def test_a_decoder_in_one_shot_mode_reports_perplexity(files, tmp_path):
    run = spec(files, model=f"hf:{files / 'llama'}", task="lm", mode="oneshot", epochs=0)
    result = run_hf_compress(run, tmp_path, progress=True)  # the bars run too
    assert result["report"]["mode"] == "oneshot" and result["report"]["within_budget"]
    assert result["history"] == []
    assert (
        np.isfinite(result["compressed"]["perplexity"]) and result["compressed"]["perplexity"] > 1
    )
    assert result["original"]["perplexity"] > 1


def test_an_interrupted_run_resumes_to_the_same_result(files, tmp_path, monkeypatch):
    run = spec(files, task="embedding", epochs=2)
    whole = run_hf_compress(run, tmp_path / "whole", progress=False)

    saves = []
    real = run_state.save_checkpoint

    def interrupt_after_first(path, state):
        real(path, state)
        saves.append(state["epoch"])
        raise KeyboardInterrupt

    monkeypatch.setattr(run_state, "save_checkpoint", interrupt_after_first)
    with pytest.raises(KeyboardInterrupt):
        run_hf_compress(run, tmp_path / "cut", progress=False)
    monkeypatch.setattr(run_state, "save_checkpoint", real)
    assert saves == [1]
    with pytest.raises(ConfigError, match="unfinished run"):
        run_hf_compress(run, tmp_path / "cut", progress=False)
    resumed = run_hf_compress(None, tmp_path / "cut", resume=True, progress=False)
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]
    assert resumed["history"][0]["loss"] == whole["history"][0]["loss"]
    assert resumed["history"][1]["loss"] == pytest.approx(whole["history"][1]["loss"], rel=1e-5)
    assert resumed["compressed"]["cosine"] == pytest.approx(whole["compressed"]["cosine"], abs=1e-5)
    assert resumed["report"]["achieved"] == whole["report"]["achieved"]


def test_bad_inputs_say_what_to_do(files, tmp_path):
    with pytest.raises(ConfigError, match="no column 'body'"):
        run_hf_compress(spec(files, text_column="body"), tmp_path / "a", progress=False)
    lines = tmp_path / "plain.txt"
    lines.write_text("\n".join("the ball of the team" for _ in range(10)) + "\n")
    with pytest.raises(ConfigError, match="needs labels"):
        run_hf_compress(
            spec(files, task="classification", data=str(lines)), tmp_path / "b", progress=False
        )
    with pytest.raises(ConfigError, match="expected a text"):
        load_texts(tmp_path / "docs.parquet.gz")
    with pytest.raises(ConfigError, match="--task must be one of"):
        spec(files, task="translation")
    with pytest.raises(ConfigError, match="needs --model hf:"):
        HfRunSpec(model="resnet18", data="x.txt")
    with pytest.raises(CheckpointError, match="nothing to resume"):
        run_hf_compress(None, tmp_path / "empty", resume=True)


def test_texts_split_by_seed_in_every_format(tmp_path):
    csv = tmp_path / "docs.csv"
    csv.write_text("body,topic\n" + "".join(f"doc {i},{i % 3}\n" for i in range(20)))
    data = load_texts(csv, text_column="body", label_column="topic", test_fraction=0.25, seed=1)
    assert (len(data.train_texts), len(data.test_texts)) == (15, 5)
    assert sorted(data.train_texts + data.test_texts) == sorted(f"doc {i}" for i in range(20))
    assert data.classes == ["0", "1", "2"]
    assert all(
        int(t.split()[1]) % 3 == y for t, y in zip(data.test_texts, data.test_labels, strict=False)
    )
    again = load_texts(csv, text_column="body", label_column="topic", test_fraction=0.25, seed=1)
    assert again.test_texts == data.test_texts
    folder = tmp_path / "news"
    for topic in ("tech", "arts"):
        (folder / topic).mkdir(parents=True)
        for i in range(3):
            (folder / topic / f"{i}.txt").write_text(f"{topic} story {i}\n")
    news = load_texts(folder, test_fraction=0.34)
    assert news.classes == ["arts", "tech"] and len(news.test_texts) == 2
    assert all(
        t.startswith(news.classes[y])
        for t, y in zip(news.train_texts, news.train_labels, strict=False)
    )
    lines = tmp_path / "docs.txt"
    lines.write_text("one\n\ntwo\nthree\nfour\nfive\n")
    plain = load_texts(lines, limit=4)
    assert not plain.labelled and len(plain.train_texts) + len(plain.test_texts) == 4


def test_the_probe_separates_separable_embeddings():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    x = torch.as_tensor(np.eye(3)[y] + 0.1 * rng.standard_normal((90, 3)), dtype=torch.float32)
    assert probe_accuracy(x[:60], y[:60], x[60:], y[60:]) == 1.0
    relabelled = (y[:60] + 1) % 3  # it learns the mapping it is shown, not the clusters
    assert probe_accuracy(x[:60], relabelled, x[60:], y[60:]) == 0.0
