"""Deploy a compressed model: low-bit weights in RAM and integer kernels at run time.

:func:`deploy` takes a compressed model (quantizers on, as :meth:`geta.Compressor.finalize`
returns it) or an artifact directory, and returns a runnable model for a backend:

- ``"torch"``: an ``nn.Module`` whose quantized layers hold int8 or int4 codes and run on
  torch's integer kernels (:mod:`geta.deployment.kernels`); see :class:`DeployConfig`.
- ``"onnx"``: an ONNX file (4- and 8-bit linear layers as ``MatMulNBits``, other quantized
  weights as int8 ``DequantizeLinear``) and an ``onnxruntime`` session that runs it
  (:mod:`geta.deployment.onnx_backend`).

Outputs match the fake-quantized model: up to float rounding for weight-only kernels (tested
to 1e-4 of the output scale), within activation-rounding error where activations run in int8
(by default the linear layers whose inputs were quantized to 8 bits or fewer).

Example:
    >>> small = compressor.finalize()                                     # doctest: +SKIP
    >>> fast = geta.deploy(small, backend="torch")                        # doctest: +SKIP
    >>> print(fast.deploy_report)       # kernel per layer, weight bytes  # doctest: +SKIP
    >>> fast = geta.deploy("out/", model=lenet5)     # from an artifact     # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geta.deployment.report import DeployReport, LayerDeployment, deployment_report
from geta.deployment.torch_backend import DeployConfig, QuantizedWeight, convert, register_converter
from geta.errors import ArtifactError
from geta.export import artifact
from geta.quant.codes import channel_code_bits, quantized_codes
from geta.quant.prepare import (
    attach_input_quantizer,
    dequantized_copy,
    input_quantizers,
    quantizable_layers,
)

__all__ = [
    "DeployConfig",
    "DeployReport",
    "LayerDeployment",
    "QuantizedWeight",
    "deploy",
    "quantized_weights",
    "register_converter",
]

BACKENDS = ("torch", "onnx")


def quantized_weights(model: nn.Module) -> dict[str, QuantizedWeight]:
    """The integer codes of every quantized layer of a prepared ``model``, by layer name (with
    the bits of its input quantizer, where it has one)."""
    inputs = {name: float(q.bits().detach().max()) for name, q in input_quantizers(model).items()}
    out = {}
    for layer in quantizable_layers(model):
        q = layer.quantizer
        if q is None:
            continue
        codes, step = quantized_codes(layer.weight, q)
        axis = q.axis % max(codes.ndim, 1)
        bits = torch.from_numpy(np.asarray(channel_code_bits(codes, q), dtype=np.int64))
        out[layer.name] = QuantizedWeight(
            torch.from_numpy(codes),
            torch.from_numpy(step).float(),
            axis,
            bits.reshape(-1),
            inputs.get(layer.name),
        )
    return out


def _float_copy(model: nn.Module) -> nn.Module:
    copied = dequantized_copy(model).eval()
    for p in copied.parameters():
        p.requires_grad_(False)
    return copied


def _from_model(model: nn.Module) -> tuple[nn.Module, dict[str, QuantizedWeight]]:
    weights = quantized_weights(model)
    if not weights:
        raise ValueError(
            "the model has no weight quantizers: deploy the model a Compressor finalized (or "
            "one prepared with geta.quant.prepare), or an artifact directory"
        )
    return _float_copy(model), weights


def _from_artifact(
    path: Path, model: nn.Module | Callable[[], nn.Module] | None
) -> tuple[nn.Module, dict[str, QuantizedWeight]]:
    float_model = artifact.load(path, model=model)
    weights = {}
    for name, stored in artifact.load_codes(path).items():
        layer = name.rpartition(".")[0]
        weights[layer] = QuantizedWeight(
            torch.from_numpy(stored.codes),
            torch.from_numpy(stored.step).float(),
            stored.axis,
            torch.from_numpy(stored.channel_bits),
        )
    for p in float_model.parameters():
        p.requires_grad_(False)
    return float_model, weights


def _keep_input_quantizers(original: nn.Module, deployed: nn.Module) -> None:
    """Replaced layers keep their input quantizers (weight-only), or drop them where the
    kernel quantizes its inputs itself (``activations="int8"``)."""
    for name, q in input_quantizers(original).items():
        module = deployed.get_submodule(name)
        record = getattr(module, "deployment", None)
        if record is None or hasattr(module, "input_quantizer"):
            continue
        if record.kernel != "int8-dynamic":
            attach_input_quantizer(module, copy.deepcopy(q))


def deploy(
    model_or_artifact: nn.Module | str | Path,
    backend: str = "torch",
    *,
    config: DeployConfig | None = None,
    model: nn.Module | Callable[[], nn.Module] | None = None,
    example_inputs: tuple | None = None,
    out: str | Path | None = None,
) -> Any:
    """A runnable deployed model of a compressed model or artifact.

    Args:
        model_or_artifact: a model with geta's weight quantizers (e.g. what
            :meth:`geta.Compressor.finalize` returns; it is not modified) or an artifact
            directory written by :func:`geta.export.save`.
        backend: ``"torch"`` (an ``nn.Module`` on integer kernels) or ``"onnx"`` (an
            :class:`geta.deployment.onnx_backend.OnnxModel` wrapping an onnxruntime session).
        config: kernel choices (:class:`DeployConfig`). The ONNX backend takes ``weights``
            only: its graph is weight-only (``MatMulNBits`` / ``DequantizeLinear``).
        model: for an artifact, the float architecture (module or factory) as
            :func:`geta.export.load` takes it.
        example_inputs: ONNX only: inputs to trace the model with.
        out: ONNX only: the ``.onnx`` file to write (a temporary file otherwise).

    Returns:
        The deployed model; its ``deploy_report`` attribute is a :class:`DeployReport`
        (kernel per layer, the bits rounding to kernel widths costs, weight bytes in RAM).

    Raises:
        ArtifactError: the artifact cannot be read.
        ValueError: an unknown backend, or a model without quantizers.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    config = config or DeployConfig()
    artifact_path = None
    if isinstance(model_or_artifact, nn.Module):
        float_model, weights = _from_model(model_or_artifact)
        originals: nn.Module = model_or_artifact
    else:
        artifact_path = Path(model_or_artifact)
        if not artifact_path.is_dir():
            raise ArtifactError(f"{artifact_path} is not an artifact directory")
        float_model, weights = _from_artifact(artifact_path, model)
        originals = float_model
    float_bytes = sum(t.numel() * 4 for t in [*float_model.parameters(), *float_model.buffers()])
    if backend == "onnx":
        from geta.deployment.onnx_backend import export_onnx

        if example_inputs is None:
            raise ValueError("the onnx backend traces the model: pass example_inputs=(x,)")
        return export_onnx(
            float_model, weights, config, tuple(example_inputs), out, float_bytes, artifact_path
        )
    deployed = convert(float_model, weights, config)
    _keep_input_quantizers(originals, deployed)
    deployed.deploy_report = deployment_report(deployed, backend, float_bytes, artifact_path)
    return deployed.eval()
