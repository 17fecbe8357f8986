"""The transformer baseline (uniform-bit QAT + FFN magnitude pruning) and the frontier's
HuggingFace runs, on a tiny BERT saved to disk with a word-piece tokenizer (no download)."""

import frontier
import frontier_report
import numpy as np
import pytest
import transformers
from baselines.ffn_magnitude_qat import FfnMagnitudeQatConfig, uniform_magnitude_plan

import geta
from geta.hf.run import HfRunSpec
from geta.optim.ajpq.wall import channel_tables
from geta.optim.channel_bits import ChannelLayout
from tests.hf.text_files import write_text_files


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_text_files(tmp_path_factory.mktemp("ffn-baseline"), llama=False)


def _compressor(files, budget):
    model = transformers.BertModel.from_pretrained(files / "bert")
    tokenizer = transformers.AutoTokenizer.from_pretrained(files / "bert")
    example = dict(tokenizer(["the ball of the team"], return_tensors="pt"))
    config = geta.CompressorConfig(quantize_embeddings=True)
    return geta.Compressor(
        model, (), budget, mode="ffn-magnitude-qat", config=config, example_kwargs=example
    )


def test_the_plan_prunes_every_ffn_by_one_share_keeps_heads_and_meets_the_budget(files):
    c = _compressor(files, "12x")
    problem = c.problem
    plan, share = uniform_magnitude_plan(problem, FfnMagnitudeQatConfig())
    kinds = [g.kind for g in problem.graph.groups]
    assert {"head", "channel"} <= set(kinds)
    offsets = problem.units.offsets
    removed = [int(plan.removed[offsets[g] : offsets[g + 1]].sum()) for g in range(len(kinds))]
    sizes = np.diff(offsets)
    assert 0 < share < 1
    for kind, size, count in zip(kinds, sizes, removed, strict=True):
        assert count == (int(share * size) if kind == "channel" else 0)
    assert set(plan.layer_bits) == {4.0} and set(plan.unit_bits[~plan.removed]) == {4.0}
    layout = ChannelLayout(problem)
    code_share = channel_tables(layout, (4,))[1]
    assert layout.cost(plan, code_share) <= problem.target
    # the share is the smallest that meets the budget: one step less does not, at 4 bits
    with pytest.raises(geta.BudgetError):
        uniform_magnitude_plan(
            problem, FfnMagnitudeQatConfig(bits=(4,), max_sparsity=round(share - 0.01, 2))
        )


def test_fewer_bits_where_ffn_pruning_alone_cannot_meet_the_budget(files):
    c = _compressor(files, "20x")
    plan, _ = uniform_magnitude_plan(c.problem, FfnMagnitudeQatConfig())
    assert set(plan.layer_bits) == {3.0} or set(plan.layer_bits) == {2.0}
    with pytest.raises(geta.BudgetError, match="cannot be met at 4 bits"):
        uniform_magnitude_plan(c.problem, FfnMagnitudeQatConfig(bits=(4,)))


def _spec(files, mode, budget):
    return HfRunSpec(
        model=f"hf:{files / 'bert'}",
        data=str(files / "docs.jsonl"),
        budget=budget,
        epochs=1,
        batch_size=8,
        lr=1e-3,
        mode=mode,
    )


def test_the_frontier_runs_a_huggingface_study_and_reports_it(files, tmp_path):
    rows = []
    for mode, baseline in (("geta", False), ("ffn-magnitude-qat", True)):
        spec = _spec(files, mode, "12x")
        result = frontier.run_one(frontier.spec_from_dict(spec.to_dict()), threads=1)
        assert result["within_budget"] and result["papers_ratio"] >= 12.0
        assert 0.0 <= result["accuracy"] <= 1.0 and 0.0 <= result["dense_accuracy"] <= 1.0
        assert -1.0 <= result["cosine"] <= 1.0 + 1e-6
        if baseline:
            assert len({row[3] for row in result["layers"]}) == 1  # every layer at one width
        rows.append(
            {
                "study": "tiny",
                "method": mode,
                "kind": "structured",
                "baseline": baseline,
                "budget": "12x",
                "seed": 0,
                "choice": {},
                "run": spec.to_dict(),
                "result": result,
                "machine": "test",
                "date": "today",
                "command": "test",
            }  # fmt: skip
        )
    text = frontier_report.table("tiny", rows)
    assert "probe accuracy" in text
    assert any(
        line.startswith("| budget |") and line.endswith(" cosine |") for line in text.splitlines()
    )
    assert "- 12x: geta" in text and "against ffn-magnitude-qat" in text


def test_a_budget_the_baseline_cannot_meet_is_a_row_that_says_so(files):
    result = frontier.run_one(_spec(files, "ffn-magnitude-qat", "200x"), threads=1)
    assert "infeasible" in result and "cannot be met" in result["infeasible"]


def test_a_huggingface_study_takes_no_method_settings():
    study = frontier.STUDIES["minilm-bbc-news"]
    method = frontier.replace(frontier.METHODS["prune-then-qat"], method={"bits": 3})
    with pytest.raises(geta.ConfigError, match="takes no method settings"):
        method.spec(study.base, {})
    spec = frontier.METHODS["ffn-magnitude-qat"].spec(study.base, {})
    assert spec.mode == "ffn-magnitude-qat" and spec.model.startswith("hf:")
