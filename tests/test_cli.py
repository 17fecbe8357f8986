import networkx as nx

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
