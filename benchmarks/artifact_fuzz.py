"""Fuzz the artifact reader: many more mutated artifacts than tests/export/test_fuzz.py loads.

The mutations and the oracle are the test's (tests/export/fuzzing.py, imported from the
repository root): every case must be rejected with an ArtifactError, load unchanged, or, when
its checksum was recomputed (a crafted artifact), load as exactly what its index declares.
Anything else is a bug of the reader, listed with its kind and seed; the exit status is 1 then.

    python benchmarks/artifact_fuzz.py --cases 20000 --seed 1000
    python benchmarks/artifact_fuzz.py --cases 2000 --kinds edit-coder swap-streams --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.export import fuzzing  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=4000, help="cases in all, split by kind")
    parser.add_argument("--seed", type=int, default=0, help="first seed of every kind")
    parser.add_argument("--kinds", nargs="+", choices=sorted(fuzzing.KINDS), default=None)
    parser.add_argument("--json", type=Path, help="also write the counts and bugs here")
    args = parser.parse_args(argv)
    kinds = args.kinds or list(fuzzing.KINDS)
    per_kind = max(1, args.cases // len(kinds))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        base = fuzzing.build(Path(tmp) / "base")
        seeds = range(args.seed, args.seed + per_kind)
        report = fuzzing.run(base, Path(tmp) / "case", {kind: seeds for kind in kinds})
    seconds = time.perf_counter() - start
    print(report.table())
    print(f"{per_kind * len(kinds)} cases in {seconds:.1f} s")
    for kind, seed, outcome in report.bugs:
        print(f"BUG {kind} seed {seed}: {outcome}")
    if args.json:
        counts = {kind: dict(counter) for kind, counter in report.counts.items()}
        bugs = [{"kind": k, "seed": s, "outcome": o} for k, s, o in report.bugs]
        args.json.write_text(json.dumps({"counts": counts, "bugs": bugs, "seconds": seconds}))
    return 1 if report.bugs else 0


if __name__ == "__main__":
    sys.exit(main())
