"""The ``geta compress`` options and what the command prints."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from geta.cli.data import DATASETS
from geta.cli.methods import run_methods
from geta.cli.spec import CompressSpec
from geta.errors import ConfigError
from geta.optim.budget import Budget

__all__ = ["add_parser", "with_channel_multiple"]

DEFAULT_OUT = "geta-out"


def _budget(text: str) -> str:
    try:
        Budget.parse(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _channel_multiple(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer of at least 1, got {text!r}")
    return value


def with_channel_multiple(
    spec: CompressSpec, multiple: int | None, resumed: str | None = None
) -> CompressSpec:
    """``spec`` with ``--channel-multiple`` (``CompressorConfig.channel_multiple``) set, when
    given; a resumed run (``resumed``: its directory) refuses a value other than its own."""
    if multiple is None or multiple == spec.config.channel_multiple:
        return spec
    if resumed is not None:
        raise ConfigError(
            f"--channel-multiple {multiple} differs from the run in {resumed} (started with "
            f"{spec.config.channel_multiple}); leave it out to resume, or use another --out"
        )
    return replace(spec, config=replace(spec.config, channel_multiple=multiple))


def _say(text: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(text, file=sys.stderr)


def _interrupted(checkpoint: Path) -> int:
    """Say how to continue after Ctrl-C; the exit status of an interrupted run."""
    if checkpoint.exists():
        hint = f"resume with: geta compress --out {checkpoint.parent} --resume"
    else:
        hint = "no epoch had finished; run the command again"
    print(f"geta: interrupted; {hint}", file=sys.stderr)
    return 130


def _description(args: argparse.Namespace) -> dict | None:
    """The settings in ``--config FILE``, if given."""
    from geta.cli.spec import read_description

    return read_description(args.config_file) if args.config_file else None


def _is_hf_run(args: argparse.Namespace) -> bool:
    from geta.hf.run import HF_PREFIX, SPEC

    model = getattr(args, "model", None) or ""
    if not model and args.config_file:
        model = str((_description(args) or {}).get("model", ""))
    return model.startswith(HF_PREFIX) or (args.resume and (Path(args.out) / SPEC).exists())


def _run_hf(args: argparse.Namespace) -> int:
    """``--model hf:PATH`` (or a ``--config`` naming one): the HuggingFace path
    (:mod:`geta.hf.run`); flags override the file's settings."""
    from geta.hf.run import CHECKPOINT, HfRunSpec, hf_result_table, run_hf_compress

    out = Path(args.out)
    names = ("model", "task", "data", "budget", "mode", "epochs", "lr", "batch_size", "seed")
    names += ("limit", "max_length", "text_column", "label_column")
    given = {k: v for k in names if (v := getattr(args, k, None)) is not None}
    spec = None if args.resume else HfRunSpec.from_dict({**(_description(args) or {}), **given})
    try:
        result = run_hf_compress(
            spec, out, resume=args.resume, progress=not args.quiet, log=None if args.quiet else _say
        )
    except KeyboardInterrupt:
        return _interrupted(out / CHECKPOINT)
    print(hf_result_table(result, out))
    return 0


def _run(args: argparse.Namespace) -> int:
    if _is_hf_run(args):
        return _run_hf(args)
    from geta.cli.compress import prepare_out, run_compress
    from geta.cli.results import REPORT, result_table
    from geta.cli.run_state import CHECKPOINT
    from geta.cli.spec import read_spec_file

    out = Path(args.out)
    options = {k: getattr(args, k, None) for k in CompressSpec.__dataclass_fields__}
    base = read_spec_file(args.config_file) if args.config_file else None
    spec, state = prepare_out(out, args.resume, options, base)
    multiple = getattr(args, "channel_multiple", None)
    spec = with_channel_multiple(spec, multiple, str(out) if state is not None else None)
    if state is not None:
        _say(f"resuming {out} after {state['phase']} epoch {state['epoch']}")
    try:
        run_compress(
            spec, out, state=state, progress=not args.quiet, log=None if args.quiet else _say
        )
    except KeyboardInterrupt:
        return _interrupted(out / CHECKPOINT)
    print(result_table(json.loads((out / REPORT).read_text()), out))
    return 0


def add_parser(sub: argparse._SubParsersAction, parents: list) -> None:
    d = CompressSpec()
    p = sub.add_parser(
        "compress",
        parents=parents,
        help="compress a model under a budget (default: LeNet-5 on Fashion-MNIST, 30x)",
        description=(
            "Train (or take from the cache) a dense baseline, compress it under the budget, "
            "and write the artifact, report.json and plots into --out. With no options: "
            f"{d.model} on {d.data}, {d.mode} mode, budget {d.budget}, {d.dense_epochs} dense "
            f"+ {d.epochs} compression epochs. Dense baselines are cached in $GETA_CACHE "
            "(default ~/.cache/geta). Every epoch is checkpointed: --resume continues an "
            "interrupted run."
        ),
    )
    p.add_argument(
        "--model",
        help=f"zoo name, torchvision classifier name, module:callable, or hf:PATH (a local "
        f"HuggingFace model directory; then --task and --data FILE) (default {d.model})",
    )
    p.add_argument(
        "--data",
        help=f"{', '.join(DATASETS)}, or a directory of Fashion-MNIST-style idx files "
        f"(default {d.data}); with hf: models a .txt (a document per line), .csv or .jsonl file",
    )
    p.add_argument(
        "--task",
        choices=("embedding", "classification", "lm"),
        help="hf: models: what the model is for; sets the model class, the distillation loss "
        "and the score (default embedding)",
    )
    p.add_argument("--text-column", help="hf: models: the data's text column (default text)")
    p.add_argument(
        "--label-column",
        help="hf: models: the data's label column, if any (default label)",
    )
    p.add_argument(
        "--max-length", type=int, help="hf: models: tokens kept per document (default 128)"
    )
    p.add_argument(
        "--budget",
        type=_budget,
        help=f"'50x' (smaller than fp32), '200KB' of weights, 'bops=30x' (default {d.budget})",
    )
    p.add_argument(
        "--config",
        dest="config_file",
        metavar="FILE",
        help="a run description (TOML or JSON, or a run's report.json) to start from; the "
        "other options override its settings",
    )
    p.add_argument(
        "--mode",
        help=f"compression mode: {', '.join(run_methods())} (default {d.mode})",
    )
    p.add_argument(
        "--channel-multiple",
        type=_channel_multiple,
        metavar="N",
        help="every pruned layer keeps a multiple of N channels (or all of them), for fast "
        f"kernels; the budget still holds (default {d.config.channel_multiple}: any width)",
    )
    p.add_argument("--epochs", type=int, help=f"compression epochs (default {d.epochs})")
    p.add_argument(
        "--dense-epochs",
        type=int,
        help=f"dense baseline epochs; 0 uses the model as built (default {d.dense_epochs})",
    )
    p.add_argument("--lr", type=float, help=f"compression learning rate (default {d.lr})")
    p.add_argument("--dense-lr", type=float, help=f"dense learning rate (default {d.dense_lr})")
    p.add_argument("--batch-size", type=int, help=f"batch size (default {d.batch_size})")
    p.add_argument(
        "--limit", type=int, help="use only the first N training and test samples (quick trials)"
    )
    p.add_argument(
        "--train-limit",
        type=int,
        help="train on the first N training samples only (after --validation); test on all",
    )
    p.add_argument("--seed", type=int, help=f"random seed (default {d.seed})")
    p.add_argument(
        "--dense-seed",
        type=int,
        help="seed of the dense baseline (default: --seed); fix it to start several seeds "
        "from one dense model",
    )
    p.add_argument(
        "--validation",
        type=int,
        help="hold out N training images (a fixed draw) and report accuracy on them (default 0)",
    )
    p.add_argument("--device", help=f"cpu, cuda or cuda:N to train on (default {d.device})")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=_run)
