"""The README's extension examples run as written, and do what the README says they do."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# What the README's comments claim, checked on the names its blocks define.
CHECKS = """
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

gpt2 = transformers.GPT2LMHeadModel(
    transformers.GPT2Config(n_embd=48, n_layer=1, n_head=3, n_inner=40, vocab_size=50)
)
graph = geta.hf.trace(gpt2)
assert sorted(g.kind for g in graph.groups) == ["channel", "head"]
geta.prune(gpt2, graph, {next(g.id for g in graph.groups if g.kind == "head"): [0]})
assert gpt2.transformer.h[0].attn.num_heads == 2 and gpt2.transformer.h[0].attn.split_size == 32
print("README examples ok")
"""


def extending_blocks() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Extending\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_extension_examples_run(tmp_path):
    blocks = extending_blocks()
    assert len(blocks) == 4, "the Extending section changed: update this test"
    script = tmp_path / "readme_examples.py"
    script.write_text("\n".join(blocks) + CHECKS, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "README examples ok" in proc.stdout
