"""The ``geta`` command line.

geta compress                           # the demo: LeNet-5 on Fashion-MNIST, 30x, into geta-out/
geta compress --model resnet20 --budget 50x --epochs 10 --out runs/r20
geta compress --out geta-out --resume   # continue an interrupted run
geta inspect geta-out/artifact          # tensors, bits, coders, bytes, checksum
geta deploy geta-out/artifact           # ONNX with int4/int8 weights (MatMulNBits, QDQ)
geta graph resnet18                     # trace a model and print its prunable groups
geta graph resnet20 --out graph.html    # interactive explorer (also .svg, .dot, .graphml)

Bad arguments exit with status 2, failures with 1, an interrupt with 130: one line on stderr,
the traceback only with --debug.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from geta.cli import compress_command, deploy_command, graph, inspect_artifact
from geta.cli.models import LoadedModel, load_model
from geta.errors import ConfigError, GetaError

__all__ = ["main", "build_parser", "load_model", "LoadedModel"]

USAGE_ERROR, FAILURE, INTERRUPTED = 2, 1, 130


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks and debug logs",
    )
    parser = _Parser(
        prog="geta",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in (compress_command, inspect_artifact, deploy_command, graph):
        module.add_parser(sub, [common])
    return parser


def _status_and_message(err: BaseException, debug: bool) -> tuple[int, str]:
    if isinstance(err, KeyboardInterrupt):
        return INTERRUPTED, "interrupted"
    if isinstance(err, ConfigError):
        return USAGE_ERROR, str(err)
    if isinstance(err, GetaError | OSError):
        return FAILURE, str(err)
    hint = "" if debug else " (run with --debug for the traceback)"
    return FAILURE, f"unexpected {type(err).__name__}: {err}{hint}"


def main(argv: list[str] | None = None) -> int:
    """Run the ``geta`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit
    status (argparse's own errors exit with 2 through ``SystemExit``)."""
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.run(args)
    except (KeyboardInterrupt, Exception) as err:
        status, message = _status_and_message(err, debug)
        if debug:
            traceback.print_exception(err)
    one_line = " ".join(message.split()) or "failed"
    print(f"geta: error: {one_line}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
