"""Run geta's notebooks top to bottom with nbclient, in a scratch directory.

The tests (``tests/notebooks``) run them with the small settings; this script also refreshes
the outputs committed with the notebooks (full settings)::

    python notebooks/execute.py --write               # every notebook, full settings, outputs saved
    python notebooks/execute.py --small 01_quick_start  # what CI runs; nothing is written

A notebook reads ``GETA_NOTEBOOK_SMALL=1`` in its first cell and switches to less data and fewer
steps. The kernel imports the ``geta`` of this checkout and works in a temporary directory, so
what a notebook writes (artifacts, pages) never lands in the repository.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def notebooks() -> list[Path]:
    """The notebooks of this directory (drafts in subdirectories are left out)."""
    return sorted(HERE.glob("*.ipynb"))


def kernel_env(*, small: bool, threads: int | None = 1) -> dict[str, str]:
    """The kernel's environment: this checkout first on the path, the settings switch, no
    hub access, matplotlib's inline backend, one thread unless told (more threads than free
    cores spin and slow everything down)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["GETA_NOTEBOOK_SMALL"] = "1" if small else "0"
    env["HF_HUB_OFFLINE"] = "1"
    # tqdm.auto notes at import that ipywidgets is missing; the notebooks draw no progress bars
    env["PYTHONWARNINGS"] = "ignore:IProgress not found"
    env.pop("MPLBACKEND", None)  # Agg would swallow the plots
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def execute(
    path: Path,
    *,
    small: bool,
    workdir: Path,
    threads: int | None = 1,
    timeout: int = 900,
) -> nbformat.NotebookNode:
    """Execute the notebook at ``path`` with ``workdir`` as its working directory and return
    it with its outputs. A failing cell raises ``nbclient.exceptions.CellExecutionError``."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute(env=kernel_env(small=small, threads=threads))
    return nb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook names (default: all)")
    parser.add_argument("--small", action="store_true", help="small settings (CI's)")
    parser.add_argument("--write", action="store_true", help="save the outputs into the notebook")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the kernel")
    args = parser.parse_args()
    chosen = [p for p in notebooks() if not args.names or any(n in p.stem for n in args.names)]
    if not chosen:
        sys.exit(f"no notebook matches {args.names}")
    for path in chosen:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            nb = execute(path, small=args.small, workdir=Path(tmp), threads=args.threads)
        seconds = time.perf_counter() - start
        if args.write:
            nbformat.write(nb, path)
        print(f"{path.name}: {seconds:.0f} s{' (written)' if args.write else ''}")


if __name__ == "__main__":
    main()
