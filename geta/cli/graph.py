"""``geta graph MODEL``: trace a model, print its prunable groups, optionally write the graph
(interactive HTML explorer, SVG, DOT or GraphML)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from geta.cli.models import load_model

__all__ = ["add_parser"]


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _out_path(text: str) -> str:
    from geta.graph.explore import FORMATS

    if Path(text).suffix.lower() not in FORMATS:
        raise argparse.ArgumentTypeError(
            f"cannot tell the format of {text!r}: use a name ending in "
            + ", ".join(sorted(FORMATS))
        )
    return text


def _run(args: argparse.Namespace) -> int:
    import geta

    loaded = load_model(args.model)
    model = loaded.model.eval()
    start = time.perf_counter()
    if loaded.hf:
        kwargs = loaded.kwargs
        if args.input_shape is not None:
            kwargs = geta.hf.example_inputs(model, *args.input_shape[:2])
        graph = geta.hf.trace(model, kwargs, validate=not args.no_validate)
    else:
        example = loaded.args
        if args.input_shape is not None or example is None:
            example = (torch.randn(*(args.input_shape or (1, 3, 224, 224))),)
        graph = geta.trace(model, example, validate=not args.no_validate)
    print(graph.summary_table())
    print(f"\ntraced in {time.perf_counter() - start:.2f}s")
    if args.graphml:
        graph.to_graphml(args.graphml)
        print(f"wrote {args.graphml}")
    if args.out:
        from geta.graph.explore import write

        write(graph, args.out)
        print(f"wrote {args.out}")
    return 0


def add_parser(sub: argparse._SubParsersAction, parents: list) -> None:
    g = sub.add_parser(
        "graph",
        parents=parents,
        help="trace a model and print its prunable groups",
        description=__doc__,
    )
    g.add_argument(
        "model",
        help="zoo name (lenet5, resnet20, ...), torchvision name, module:callable, or hf:PATH",
    )
    g.add_argument(
        "--input-shape",
        type=_shape,
        default=None,
        help="example input shape, e.g. 1,3,224,224 (for hf: models: batch,sequence length)",
    )
    g.add_argument("--graphml", default=None, help="also write the op graph as GraphML")
    g.add_argument(
        "--out",
        default=None,
        type=_out_path,
        help="write the graph; format from the extension: .html (interactive explorer), "
        ".svg, .dot, .graphml",
    )
    g.add_argument("--no-validate", action="store_true", help="skip the trial prune on a meta copy")
    g.set_defaults(run=_run)
