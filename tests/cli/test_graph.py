import xml.etree.ElementTree as ET

import networkx as nx
import pytest

from geta.cli import main


def test_graph_command_prints_groups_and_writes_graphml(tmp_path, capsys):
    out = tmp_path / "g.graphml"
    assert main(["graph", "lenet5", "--graphml", str(out)]) == 0
    text = capsys.readouterr().out
    assert "4 prunable groups" in text
    assert nx.read_graphml(out).number_of_nodes() > 10


def test_unknown_model_is_one_clear_error(capsys):
    assert main(["graph", "no_such_model"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("geta: error: unknown model") and "Traceback" not in err


def test_module_callable_spec(capsys):
    assert main(["graph", "geta.models:lenet300_100", "--input-shape", "2,1,28,28"]) == 0
    assert "2 prunable groups" in capsys.readouterr().out


@pytest.mark.parametrize("suffix", [".html", ".svg", ".dot", ".graphml"])
def test_graph_out_writes_the_format_of_the_extension(tmp_path, capsys, suffix):
    out = tmp_path / f"g{suffix}"
    assert main(["graph", "lenet5", "--no-validate", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    text = out.read_text()
    assert "conv2d" in text
    if suffix == ".html":
        assert 'id="geta-data"' in text and "<script>" in text
    elif suffix == ".svg":
        assert ET.fromstring(text).tag.endswith("svg")
    elif suffix == ".graphml":
        assert nx.read_graphml(out).number_of_nodes() > 10
    else:
        assert text.startswith("digraph")


def test_graph_out_with_unknown_extension_fails_before_tracing(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["graph", "lenet5", "--out", str(tmp_path / "g.pdf")])
    assert exit_info.value.code == 2
    assert "cannot tell the format" in capsys.readouterr().err


def test_hf_directory_spec(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16,
    )  # fmt: skip
    transformers.BertModel(config).save_pretrained(tmp_path / "bert")
    assert main(["graph", f"hf:{tmp_path / 'bert'}"]) == 0
    text = capsys.readouterr().out
    assert "4 prunable groups" in text  # per layer: heads and FFN channels


def test_hf_spec_that_is_no_directory(tmp_path, capsys):
    assert main(["graph", f"hf:{tmp_path / 'missing'}"]) == 2
    err = capsys.readouterr().err
    assert "is not a directory (hf:PATH names a local directory)" in err
