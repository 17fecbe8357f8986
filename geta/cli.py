"""The ``geta`` command line.

geta graph resnet18                     # trace a model and print its prunable groups
geta graph lenet5 --graphml lenet.graphml
geta graph resnet20 --out graph.html      # interactive explorer (also .svg, .dot, .graphml)
geta graph mypkg.models:build --input-shape 1,3,64,64
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from pathlib import Path

import torch
from torch import nn

from geta.errors import GetaError

__all__ = ["main", "load_model"]


class CliError(GetaError):
    """A bad command-line argument."""


def load_model(spec: str) -> tuple[nn.Module, tuple | None]:
    """Build a model from a geta zoo name, a torchvision name, or ``module:callable``.

    Returns the model and, for zoo models, example inputs.
    """
    from geta import models as zoo

    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise CliError(f"cannot load {spec!r}: {err}") from None
        return factory(), None
    if spec in zoo.list_models():
        args, _ = zoo.example_inputs(spec, batch=1)
        return zoo.get_model(spec), args
    import torchvision

    if spec in torchvision.models.list_models(module=torchvision.models):
        return torchvision.models.get_model(spec, weights=None), None
    raise CliError(
        f"unknown model {spec!r}: use a geta zoo name ({', '.join(zoo.list_models())}), "
        "a torchvision classification model name, or module:callable"
    )


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


def _cmd_graph(args: argparse.Namespace) -> int:
    import geta

    model, example = load_model(args.model)
    model.eval()
    if args.input_shape is not None or example is None:
        example = (torch.randn(*(args.input_shape or (1, 3, 224, 224))),)
    start = time.perf_counter()
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geta", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("graph", help="trace a model and print its prunable groups")
    g.add_argument(
        "model", help="zoo name (lenet5, resnet20, ...), torchvision name, or module:callable"
    )
    g.add_argument(
        "--input-shape", type=_shape, default=None, help="example input shape, e.g. 1,3,224,224"
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
    g.set_defaults(run=_cmd_graph)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.run(args)
    except GetaError as err:
        if args.debug:
            raise
        print(f"geta: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
