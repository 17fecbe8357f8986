"""The ONNX backend: the float model exported by ``torch.onnx`` (dynamo), then every quantized
weight put back as integers in the graph:

- a linear layer (``Gemm`` with ``transB=1``, what ``nn.Linear`` on 2-D inputs exports to)
  of <= 8 bits becomes ``MatMulNBits`` (onnxruntime's contrib op: 4-bit weights where its bits are
  <= 4, 8-bit otherwise; per-output-channel scales, zero point ``2**(bits-1)``), which
  onnxruntime runs on its low-bit CPU kernels;
- any other quantized weight (convolutions, embeddings, ...) is stored as int8 and fed through
  ``DequantizeLinear`` (QDQ, one scale per channel).

The file then holds the codes, not float weights; outputs match the fake-quantized model up
to float rounding. ``onnxruntime`` runs it (:class:`OnnxModel`).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from onnx import helper, numpy_helper
from torch import nn

from geta.deployment.report import DeployReport, artifact_bytes
from geta.deployment.torch_backend import DeployConfig, QuantizedWeight

__all__ = ["OnnxModel", "export_onnx"]

_MS_DOMAIN = "com.microsoft"
_BLOCK_SIZES = (128, 64, 32, 16)


class OnnxModel:
    """An onnxruntime session of a deployed ONNX file, called like the torch model (tensors
    in, a tensor or a tuple of tensors out)."""

    def __init__(self, path: Path, report: DeployReport, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.deploy_report = report
        self._inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, *args: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        feed = {name: a.detach().cpu().numpy() for name, a in zip(self._inputs, args, strict=True)}
        outputs = [torch.from_numpy(o) for o in self.session.run(None, feed)]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def _pack_nbits(codes: np.ndarray, bits: int, block: int) -> tuple[np.ndarray, int]:
    """``[N, K]`` signed codes as MatMulNBits' ``B``: offset by the default zero point,
    padded to whole blocks with it, packed low nibble first (4 bits) or one per byte."""
    n, k = codes.shape
    blocks = -(-k // block)
    zero = 1 << (bits - 1)
    padded = np.full((n, blocks * block), zero, dtype=np.uint8)
    padded[:, :k] = (codes + zero).astype(np.uint8)
    if bits == 4:
        padded = (padded[:, 0::2] | (padded[:, 1::2] << 4)).astype(np.uint8)
    return padded.reshape(n, blocks, -1), blocks


def _block_size(k: int) -> int:
    return next((b for b in _BLOCK_SIZES if k % b == 0), 16)


def _is_linear(node, name: str) -> bool:
    """Whether ``node`` is ``x @ W.T + b`` with ``W`` the initializer ``name``: a ``Gemm``
    with ``transB=1`` and unit scales, as the exporter writes ``nn.Linear`` on 2-D inputs."""
    if node.op_type != "Gemm" or list(node.input)[1:2] != [name]:
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    plain = {"transA": 0, "transB": 1, "alpha": 1.0, "beta": 1.0}
    defaults = {"transA": 0, "transB": 0, "alpha": 1.0, "beta": 1.0}
    return all(attrs.get(key, defaults[key]) == value for key, value in plain.items())


def _consumers(graph, name: str) -> list:
    return [n for n in graph.node if name in n.input]


def _matmul_nbits(graph, node, weight: QuantizedWeight, bits: int) -> list:
    """``MatMulNBits`` (and ``Add`` for a bias) replacing the Gemm ``node``."""
    codes = weight.codes.numpy()
    n, k = codes.shape
    block = _block_size(k)
    packed, blocks = _pack_nbits(codes, bits, block)
    scale = np.repeat(weight.scale.numpy().reshape(-1, 1).astype(np.float32), blocks, axis=1)
    if weight.scale.numel() == 1:
        scale = np.full((n, blocks), float(weight.scale), dtype=np.float32)
    stem = node.output[0]
    b_name, s_name = f"{stem}.geta_codes", f"{stem}.geta_scales"
    graph.initializer.extend(
        [
            numpy_helper.from_array(packed, b_name),
            numpy_helper.from_array(scale.reshape(-1), s_name),
        ]
    )
    product = f"{stem}.geta_matmul" if len(node.input) > 2 and node.input[2] else stem
    nodes = [
        helper.make_node(
            "MatMulNBits", [node.input[0], b_name, s_name], [product], domain=_MS_DOMAIN,
            K=k, N=n, bits=bits, block_size=block,
        )
    ]  # fmt: skip
    if product != stem:
        nodes.append(helper.make_node("Add", [product, node.input[2]], [stem]))
    return nodes


def _dequantize(graph, name: str, weight: QuantizedWeight) -> None:
    """Replace the float initializer ``name`` by int8 codes and a ``DequantizeLinear``."""
    codes = weight.codes.numpy().astype(np.int8)
    scale = weight.scale.numpy().astype(np.float32).reshape(-1)
    q_name, s_name, z_name = f"{name}.geta_codes", f"{name}.geta_scale", f"{name}.geta_zero"
    zero = np.zeros(scale.shape, dtype=np.int8)
    graph.initializer.extend(
        [
            numpy_helper.from_array(codes, q_name),
            numpy_helper.from_array(scale if scale.size > 1 else scale.reshape(()), s_name),
            numpy_helper.from_array(zero if zero.size > 1 else zero.reshape(()), z_name),
        ]
    )
    attrs = {"axis": weight.axis} if scale.size > 1 else {}
    graph.node.insert(
        0, helper.make_node("DequantizeLinear", [q_name, s_name, z_name], [name], **attrs)
    )


def _initializer_bytes(model) -> int:
    return sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)


def export_onnx(
    float_model: nn.Module,
    weights: dict[str, QuantizedWeight],
    config: DeployConfig,
    example_inputs: tuple,
    out: str | Path | None,
    float_bytes: int,
    artifact: Path | None,
) -> OnnxModel:
    """Export ``float_model`` (dequantized weights) and put ``weights`` back as integers; see
    the module docstring. Writes ``out`` (a temporary file when ``None``)."""
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(float_model.eval(), example_inputs, dynamo=True, verbose=False)
    model = program.model_proto
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    rows = []
    for layer, weight in weights.items():
        name = f"{layer}.weight" if layer else "weight"
        if name not in initializers or config.weights == "float" or weight.bits > 8:
            rows.append(weight.deployment(layer, "float"))
            continue
        consumers = _consumers(graph, name)
        bits = 4 if weight.bits <= 4 and weight.fits(4) and config.weights != "int8" else 8
        linear = [c for c in consumers if _is_linear(c, name)]
        if (
            linear
            and len(linear) == len(consumers)
            and weight.codes.dim() == 2
            and weight.axis == 0
        ):
            for node in linear:
                replacement = _matmul_nbits(graph, node, weight, bits)
                at = list(graph.node).index(node)
                graph.node.remove(node)
                for offset, new in enumerate(replacement):
                    graph.node.insert(at + offset, new)
            rows.append(weight.deployment(layer, f"int{bits}"))
        else:
            _dequantize(graph, name, weight)
            rows.append(weight.deployment(layer, "int8-storage"))
        graph.initializer.remove(initializers[name])
    if not any(o.domain == _MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(_MS_DOMAIN, 1))
    path = Path(out) if out is not None else Path(tempfile.mkdtemp()) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    file_bytes = artifact_bytes(artifact) if artifact is not None else None
    report = DeployReport("onnx", rows, _initializer_bytes(model), float_bytes, file_bytes)
    return OnnxModel(path, report)
