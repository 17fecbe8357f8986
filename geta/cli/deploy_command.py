"""``geta deploy ARTIFACT --backend onnx --out model.onnx``: an artifact as a model that runs on
integer kernels. The ONNX backend writes the file (MatMulNBits for 4/8-bit linear layers, int8
QDQ for the other quantized weights) and checks that onnxruntime loads it; the torch backend
converts the model and prints what each layer runs on. Both print the kernel per layer, the bits
that rounding to kernel widths costs, and the weight bytes in RAM against the file size."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from geta.errors import ConfigError

__all__ = ["add_parser"]


def _model(args: argparse.Namespace):
    """The float architecture and example inputs: from ``--model``, or the artifact's stored
    architecture with ``--input-shape``."""
    from geta import models as zoo
    from geta.cli.models import load_model
    from geta.export import read_manifest

    spec = args.model or read_manifest(args.artifact).get("architecture")
    if not spec:
        raise ConfigError("the artifact stores no architecture: pass --model (e.g. lenet5)")
    for name in zoo.list_models():  # a zoo factory: its name knows the example inputs
        factory = zoo.model_spec(name).factory
        if spec == f"{factory.__module__}:{factory.__name__}":
            spec = name
    loaded = load_model(spec)
    if args.input_shape:
        inputs = (torch.randn(*args.input_shape),)
    elif loaded.args is not None:
        inputs = tuple(loaded.args)
    else:
        raise ConfigError(f"geta cannot tell {spec}'s input: pass --input-shape, e.g. 1 3 224 224")
    return loaded.factory, inputs


def _run(args: argparse.Namespace) -> int:
    from geta.deployment import DeployConfig, deploy

    factory, inputs = _model(args)
    config = DeployConfig(weights=args.weights, activations=args.activations)
    if args.backend == "onnx":
        out = Path(args.out or Path(args.artifact) / "model.onnx")
        deployed = deploy(
            args.artifact, "onnx", config=config, model=factory, example_inputs=inputs, out=out
        )
        deployed(*inputs)  # onnxruntime runs it
        print(f"wrote {out} ({out.stat().st_size:,} B)")
    else:
        deployed = deploy(args.artifact, "torch", config=config, model=factory)
        with torch.no_grad():
            deployed(*inputs)
    print(deployed.deploy_report)
    return 0


def add_parser(sub: argparse._SubParsersAction, parents: list) -> None:
    p = sub.add_parser(
        "deploy",
        parents=parents,
        help="run an artifact on integer kernels (torch) or write it as ONNX",
        description=__doc__,
    )
    p.add_argument("artifact", help="an artifact directory (manifest.json + weights.safetensors)")
    p.add_argument("--backend", choices=("torch", "onnx"), default="onnx")
    p.add_argument("--out", help="the .onnx file (default ARTIFACT/model.onnx)")
    p.add_argument("--model", help="the float architecture (default: the artifact's)")
    p.add_argument("--input-shape", type=int, nargs="+", help="example input shape for tracing")
    p.add_argument("--weights", choices=("auto", "int8", "int4", "float"), default="auto")
    p.add_argument(
        "--activations", choices=("int8",), default=None, help="int8 dynamic activations (torch)"
    )
    p.set_defaults(run=_run)
