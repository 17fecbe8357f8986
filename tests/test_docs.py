"""The code in README.md and docs/*.md runs as written and does what its comments say, and every
relative link there points at a file.

Every ```python block of a page runs, in order, in one fresh interpreter per page (later blocks
use the names earlier ones define), unless the line before it is ``<!-- not run: REASON -->``.
Names a page leaves to the reader (a data loader, a config) come from :data:`PRELUDE`; what its
comments claim is checked by :data:`CHECKS`. A new block therefore runs unless it is marked.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from geta.cli.spec import read_description, read_spec_file
from geta.hf.run import HF_PREFIX, HfRunSpec

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(\S.*?)\s*-->$")
DONE = "doc blocks ok"

# What the pages take from the reader's code, defined before their first block.
PRELUDE = {
    "docs/compress.md": """
import torch
loader = [(torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))) for _ in range(6)]
steps = len(loader)
""",
    "docs/admm.md": """
import torch, torch.nn.functional as F, geta
from geta.models import lenet5
model, x, epochs = lenet5(), torch.randn(2, 1, 28, 28), 1
loader = [(torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))) for _ in range(4)]
""",
    "docs/ajpq.md": """
import torch
from geta.models import lenet5
model = lenet5()
x = torch.randn(64, 1, 28, 28)
loader = [(torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))) for _ in range(6)]
heldout = loader[:2]
""",
    "docs/huggingface.md": """
import transformers
config = transformers.LlamaConfig(
    hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=3,
    intermediate_size=40, vocab_size=100, max_position_embeddings=32,
)
""",
}

# What the pages' comments claim, checked on the names their blocks define.
CHECKS = {
    "README.md": """
report = c.report()
assert report.within_budget, report
assert isinstance(small, torch.nn.Module) and Path("out/manifest.json").exists()
assert Path("graph.html").stat().st_size > 0
""",
    "docs/compress.md": """
assert c.report().within_budget
""",
    "docs/admm.md": """
assert c.report().within_budget
""",
    "docs/ajpq.md": """
from pathlib import Path
report = c.report()
assert report.within_budget and report.mode == "ajpq"
assert report.extra["search"]["episodes"] == 8
assert Path("out/manifest.json").exists() and isinstance(small, torch.nn.Module)
""",
    "docs/huggingface.md": """
import torch
ids = torch.randint(0, 100, (1, 8))
model.eval(), small.eval()
assert torch.allclose(model(ids).logits, small(ids).logits, atol=1e-5)
""",
    "docs/artifact.md": """
assert isinstance(small, torch.nn.Module)
small.eval()(torch.randn(1, 3, 64, 64))
""",
    "docs/graph.md": """
for name in ("graph.html", "graph.svg", "graph.dot"):
    assert Path(name).stat().st_size > 0, name
""",
    "docs/oneshot.md": """
assert c.report().mode == "oneshot" and c.search_result.to_dict()["units"] == 24
assert small(torch.randn(3, 12)).shape == (3, 5)
""",
    "docs/extending.md": """
import transformers

assert [u.op for u in before.unsupported_ops] == ["mylib.soft_threshold.default"]
assert before.groups == []
assert [(g.size, g.layers[0]) for g in after.groups] == [(8, "a")] and not after.unsupported_ops

class Normalized(torch.nn.Module):  # normalized over W: the channels pass through
    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        return self.b(l2_normalize(self.a(x)))

conv = Normalized(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 4, 3))
graph = geta.trace(conv, x)
assert not graph.unsupported_ops and [g.size for g in graph.groups] == [8]
linear = Normalized(torch.nn.Linear(3, 8), torch.nn.Linear(8, 4))  # over the 8 features
graph = geta.trace(linear, torch.randn(2, 3))
assert not graph.unsupported_ops and graph.groups == []
assert [b.reason for b in graph.blocked if b.size == 8] == [
    "normalised over (mylib.l2_normalize.default)"
]

graph = geta.trace(net, x)
assert [g.size for g in graph.groups] == [8]
geta.prune(net, graph, {0: [1, 5]})
assert net[1].n == 6 and net(x).shape == (1, 4, 12, 12)

neox = transformers.GPTNeoXForCausalLM(
    transformers.GPTNeoXConfig(
        hidden_size=48, num_hidden_layers=1, num_attention_heads=3, intermediate_size=40,
        vocab_size=50,
    )
)
graph = geta.hf.trace(neox)
assert sorted(g.kind for g in graph.groups) == ["channel", "head"]
geta.prune(neox, graph, {next(g.id for g in graph.groups if g.kind == "head"): [0]})
attention = neox.gpt_neox.layers[0].attention
assert attention.num_attention_heads == 2 and attention.dense.in_features == 32
assert [layer.fields for layer in adapt(neox)] == [
    {"num_attention_heads": 2}, {"intermediate_size": 40}
]
geta.hf.families._FAMILIES.pop("gpt_neox")

report = fixed.report()
assert report.mode == "fixed-bits" and report.within_budget
assert {r.bits for r in report.layers} == {4} and fixed_opt.stage == "done"
assert "fixed-bits" in geta.optim.registered_modes()

mine = torch.nn.Sequential(MyLinear(16, 8))
geta.quant.prepare(mine, init_bits=4, per_channel=True)
deployed = geta.deploy(mine)
assert [r.kernel for r in deployed.deploy_report.layers] == ["int8-storage"]
assert isinstance(deployed[0], StoredLinear)
""",
}


def name(page: Path) -> str:
    return page.relative_to(REPO).as_posix()


def fenced(page: Path, language: str) -> list[tuple[str, str | None]]:
    """Every ```language block of ``page``, with the reason it is not run (from a
    ``<!-- not run: REASON -->`` line right before it), or ``None``."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for m in re.finditer(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        mark = NOT_RUN.match(before)
        blocks.append((m.group(1), mark.group(1) if mark else None))
    return blocks


def script(page: Path) -> str:
    """The page's runnable blocks in order, between its prelude and its checks."""
    key = name(page)
    parts = ["from pathlib import Path", PRELUDE.get(key, "")]
    for i, (code, reason) in enumerate(fenced(page, "python")):
        if reason is None:
            parts.append(f"# ---- {key}, python block {i + 1}\n{code}")
    parts += [CHECKS.get(key, ""), f"print({DONE!r})"]
    return "\n".join(parts)


RUN = [p for p in PAGES if any(reason is None for _, reason in fenced(p, "python"))]


def test_every_python_block_is_run_or_marked():
    assert RUN, "no runnable blocks found: the page list or the block syntax changed"
    for page in PAGES:
        for i, (code, reason) in enumerate(fenced(page, "python")):
            if reason is None:  # run by test_doc_blocks_run: it is in the page's script
                assert page in RUN and code in script(page), (name(page), i + 1)
            else:  # marked blocks are not run but must stay valid Python
                compile(code, f"{name(page)} block {i + 1}", "exec")
    for key in {*PRELUDE, *CHECKS}:  # no settings for a page that is gone or has nothing to run
        assert REPO / key in RUN, f"{key}: PRELUDE/CHECKS for a page without runnable blocks"
    assert len(fenced(REPO / "docs" / "extending.md", "python")) == 6, "update CHECKS"


@pytest.mark.parametrize("page", RUN, ids=name)
def test_doc_blocks_run(page, tmp_path):
    path = tmp_path / "doc_blocks.py"
    path.write_text(script(page), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert DONE in proc.stdout


def test_toml_run_descriptions_read(tmp_path):
    """Every ```toml block of the pages is a run description `geta compress --config` reads
    (a HuggingFace run's when its model is ``hf:...``)."""
    blocks = [code for page in PAGES for code, _ in fenced(page, "toml")]
    assert len(blocks) >= 2
    for i, code in enumerate(blocks):
        path = tmp_path / f"run{i}.toml"
        path.write_text(code)
        data = read_description(path)
        if str(data.get("model", "")).startswith(HF_PREFIX):
            HfRunSpec.from_dict(data)
        else:
            read_spec_file(path)


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_relative_links_point_at_files(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#", 1)[0]).resolve()
        assert path.exists(), f"{name(page)}: {target} does not exist"
