"""The trial prune reads shapes from its fake run's aten calls instead of capturing again."""

import torch
import torchvision
from torch import nn

import geta
from geta.graph import validate
from geta.graph.dispatch_shapes import DispatchShapes
from geta.graph.equivalence import check_prune_equivalence
from geta.graph.rewrites import SizeReads, candidate_rewrites
from tests.graph.test_rewrites import ConfigHeads, Settings

X = torch.randn(2, 5, 16)


class SilentHeads(nn.Module):
    """Hard-codes the head count and infers the head size: one head fewer still reshapes,
    to the wrong heads, without an error."""

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(16, 16)
        self.proj = nn.Linear(16, 16)

    def forward(self, x):
        b, s, _ = x.shape
        h = torch.softmax(self.q(x).view(b, s, 4, -1), -1)
        return self.proj(h.reshape(b, s, -1))


class CountingCaptures:
    def __init__(self, monkeypatch) -> None:
        self.count = 0
        original = validate.export_program

        def counted(*args, **kwargs):
            self.count += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(validate, "export_program", counted)


def test_a_reshape_that_goes_wrong_silently_is_caught_without_a_second_capture(monkeypatch):
    model = SilentHeads().eval()
    assert [g.size for g in geta.trace(model, X, validate=False).groups] == [4]  # the heads
    captures = CountingCaptures(monkeypatch)
    graph = geta.trace(model, X)
    assert graph.groups == []
    assert any("trial prune failed" in b.reason for b in graph.blocked)
    assert captures.count == 0
    result = check_prune_equivalence(model, graph, (X,))
    assert result.max_abs_diff <= result.tolerance


def test_a_cnn_is_verified_from_its_fake_run_alone(monkeypatch):
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    captures = CountingCaptures(monkeypatch)
    graph = geta.trace(model, x)
    assert captures.count == 0
    assert len(graph.groups) == 12


class ExportOnlyPath(nn.Module):
    """Runs one more op eagerly than under export, so the calls cannot be matched."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.fc(x))
        if not torch.compiler.is_exporting():
            h = h * 1.0
        return self.out(h)


def test_a_forward_unlike_its_capture_falls_back_to_capturing_the_trial(monkeypatch):
    model = ExportOnlyPath().eval()
    x = torch.randn(2, 4)
    captures = CountingCaptures(monkeypatch)
    graph = geta.trace(model, x)
    assert captures.count >= 1
    assert [g.size for g in graph.groups] == [8]


def test_trial_nodes_refuse_a_run_with_other_calls():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(2, 4)
    graph = geta.trace(model, x, validate=False)
    graph.example_inputs = ((x,), {})
    run = validate._fake_run(model, graph, [])
    shapes = DispatchShapes.build(graph.program, run.calls)
    assert shapes is not None
    twins = shapes.trial_nodes(run.calls)
    linear = next(n for n in graph.program.graph.nodes if "linear" in str(n.target))
    assert tuple(twins[linear.name].meta["val"].shape) == (2, 8)
    assert shapes.trial_nodes(run.calls[1:]) is None
    assert DispatchShapes.build(graph.program, run.calls[:-1]) is None


class ReadsSizes(ConfigHeads):
    """Reads ``config.heads`` and ``head_dim``; ``spare`` and ``config.width`` match a group's
    size too but the forward never reads them."""

    def __init__(self, config: Settings) -> None:
        super().__init__(config)
        self.spare = 4


def test_only_sizes_the_forward_reads_are_rewrite_candidates():
    model = nn.Sequential(ReadsSizes(Settings()), ReadsSizes(Settings())).eval()
    graph = geta.trace(model, X, validate=False)
    heads = next(g for g in graph.groups if g.kind == "head" and g.layers[0].startswith("0."))
    every = {(r.module, r.attr) for r in candidate_rewrites(model, heads)}
    assert {("0", "spare"), ("0", "config.width"), ("0", "config.heads")} <= every

    graph.example_inputs = ((X,), {})
    run = validate._fake_run(model, graph, [], record_reads=True)
    assert run.reads.was_read("0", "config.heads") and run.reads.was_read("0", "head_dim")
    assert not run.reads.was_read("0", "spare")
    assert not run.reads.was_read("0", "config.width")
    read = {(r.module, r.attr) for r in candidate_rewrites(model, heads, run.reads)}
    assert read == every - {("0", "spare"), ("0", "config.width")}
    assert type(model[0]) is ReadsSizes  # the recording classes stay on the throwaway copy


def test_recording_reads_keeps_the_module_usable():
    module = ReadsSizes(Settings())
    with SizeReads.record(module) as reads:
        out = module(X)
    assert out.shape == X.shape
    assert isinstance(module, ReadsSizes) and type(module).__name__ == "ReadsSizes"
    assert reads.was_read("", "head_dim") and not reads.was_read("", "spare")
    assert not reads.was_read("", "config.width") and reads.was_read("", "config.heads")
