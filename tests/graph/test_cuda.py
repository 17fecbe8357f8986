"""Tracing and pruning on a GPU (skipped where no CUDA device exists, as on CI)."""

import pytest
import torch

import geta
from geta.graph.equivalence import check_prune_equivalence
from geta.models import example_inputs, get_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("name", ["resnet20", "gqa_block", "grouped_depthwise"])
def test_trace_and_prune_on_gpu(name):
    model = get_model(name).cuda().eval()
    args, kwargs = example_inputs(name)
    args = tuple(a.cuda() for a in args)
    graph = geta.trace(model, args, kwargs)
    cpu_graph = geta.trace(get_model(name).eval(), *example_inputs(name))
    assert [g.size for g in graph.groups] == [g.size for g in cpu_graph.groups]
    result = check_prune_equivalence(model, graph, args, kwargs)
    assert result.max_abs_diff <= result.tolerance
    assert all(p.is_cuda for p in model.parameters())
