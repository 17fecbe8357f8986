"""The README's main command, timed: ``geta compress`` with its defaults (LeNet-5 on
Fashion-MNIST, 30x), dense baseline included (a fresh cache), on ``--threads`` cores.

    python benchmarks/cli_demo.py                      # runs geta compress, writes the results
    python benchmarks/cli_demo.py --summarize geta-out --wall 1764 --load 6.4 7.7
                                                       # a run timed outside (`time`, `uptime`)

The results file carries the result table, the time of each epoch and the machine's load
average before and after (other processes on the machine slow the run down).
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

from _common import RESULTS, header, write

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
    epochs = report["history"]["epochs"]
    md = header("`geta compress`: the README's main command (defaults)")
    if wall is not None:
        md += f"Wall time of the command: **{wall:.0f} s** ({wall / 60:.1f} min), "
    md += (
        f"inside the run {report['seconds']['wall']:.0f} s (dense "
        f"{report['seconds']['dense']:.0f} s, compression {report['seconds']['compress']:.0f} s), "
        f"OMP_NUM_THREADS={args.threads}. Load average (1 min) "
        f"{load_before:.1f} before, {load_after:.1f} after (other processes on the machine "
        "slow the run down).\n\n```\n"
        f"{result_table(report, out)}\n```\n\n"
        "| phase | epoch | seconds | train loss | test loss | test accuracy |\n"
        "|---|---|---|---|---|---|\n"
    )
    for r in epochs:
        md += (
            f"| {r['phase']} | {r['epoch']} | {r['seconds']:.0f} | {r['train_loss']:.3f} | "
            f"{r['test_loss']:.3f} | {r['test_accuracy']:.2%} |\n"
        )
    path = write("cli_demo", md, {"wall_s": wall, "load": [load_before, load_after], **report})
    print(md)
    print(f"written to {path} ({RESULTS})")


if __name__ == "__main__":
    main()
