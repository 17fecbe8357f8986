"""The README's main command, timed: ``geta compress`` with its defaults (LeNet-5 on
Fashion-MNIST, 30x), dense baseline included (a fresh cache), on ``--threads`` cores.

    python benchmarks/cli_demo.py                      # runs geta compress, adds a row
    python benchmarks/cli_demo.py --summarize geta-out --wall 1764 --load 6.4 7.7
                                                       # a run timed outside (`time`, `uptime`)

Each run is a row of the study ``results/cli-demo`` (runs.jsonl, README.md): the wall time, the
machine's load average before and after (other processes on the machine slow the run down), the
result table and the run's whole report.json (per-epoch times included).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import now, record

from geta.cli.results import result_table


def run(out: Path, threads: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as cache:
        env["GETA_CACHE"] = cache  # the dense baseline is trained, as on a first run
        began = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "geta.cli", "compress", "--out", str(out), "--quiet"],
            env=env,
            check=True,
        )
        return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("geta-out"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--summarize", type=Path, default=None, help="a finished run's --out")
    parser.add_argument("--wall", type=float, default=None, help="its wall time (--summarize)")
    parser.add_argument("--load", type=float, nargs=2, default=None, help="load before, after")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    out = args.summarize or args.out
    wall = args.wall if args.summarize else run(out, args.threads)
    load_after = os.getloadavg()[0]
    if args.load:
        load_before, load_after = args.load
    report = json.loads((out / "report.json").read_text())
    table = result_table(report, out)
    row = {
        "label": f"defaults, {args.threads} threads ({now()})",
        "run": {
            "threads": args.threads,
            "geta_command": report.get("command"),
            "description": report.get("run"),
        },
        "result": {
            "wall_s": wall,
            "load_before": load_before,
            "load_after": load_after,
            "table": table,
            "report": report,
        },
    }
    path = record("cli-demo", row)
    print(table)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
