"""Layers that hold their weight as low-bit integer codes and run on integer kernels.

Each module keeps the codes a geta quantizer produced (``weight == codes * scale`` exactly,
one scale per output channel) and never a float copy of the weight, so the weight memory in
RAM is what the kernel width says: 1 byte per weight for int8, half a byte for int4.

- :class:`Int8Linear`: ``torch.ops.aten._weight_int8pack_mm`` (weight-only int8).
- :class:`Int4Linear`: ``torch.ops.aten._weight_int4pack_mm_for_cpu`` on CPU (weight-only
  int4, the weight packed two per byte); on other devices it unpacks and runs a float matmul.
- :class:`DynamicInt8Linear`: fbgemm's dynamically quantized linear (int8 activations,
  quantized per batch, times the int8 codes): the fastest CPU path on x86, outputs within
  activation-quantization error of the float model.
- :class:`StoredLinear` / :class:`StoredConv`: int8 or int4 codes (:class:`StoredWeight`),
  dequantized at each call into a float matmul or convolution: the memory of the codes at the
  speed of float compute (torch has no weight-only low-bit convolution kernel, and on CPUs
  without AVX-512 its int8/int4 matmul kernels are many times slower than float32 for float
  inputs: measured 50x at 128 x 384 x 1536 on an AVX2 EPYC).
- :class:`StoredEmbedding`: int8 rows gathered, then scaled.

The ``torch.ops.aten`` kernels are the same ones torchao's
weight-only configs call on CPU, fed here with geta's own learned codes and steps instead of a
fresh rounding of float weights.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DynamicInt8Linear",
    "Int4Linear",
    "Int8Linear",
    "StoredConv",
    "StoredEmbedding",
    "StoredLinear",
    "StoredWeight",
    "INT4_GROUP_SIZES",
    "int4_supported",
]

INT4_GROUP_SIZES = (256, 128, 64, 32)  # what the CPU int4 kernel accepts
_INT4_N_MULTIPLE = 16


def int4_supported(out_features: int, in_features: int) -> bool:
    """Whether the CPU int4 kernel takes a ``[out, in]`` weight: ``out`` a multiple of 16,
    ``in`` a multiple of 32."""
    return out_features % _INT4_N_MULTIPLE == 0 and in_features % INT4_GROUP_SIZES[-1] == 0


def _row_scale(scale: torch.Tensor, rows: int) -> torch.Tensor:
    """One float32 scale per output row (a per-tensor scale repeated)."""
    scale = scale.detach().float().reshape(-1)
    return scale.expand(rows).contiguous() if scale.numel() == 1 else scale.contiguous()


def _int8(codes: torch.Tensor) -> torch.Tensor:
    codes = codes.detach()
    if codes.numel() and (int(codes.min()) < -128 or int(codes.max()) > 127):
        raise ValueError("codes outside the int8 range [-128, 127]")
    return codes.to(torch.int8).contiguous()


def _bias(bias: torch.Tensor | None) -> nn.Parameter | None:
    return None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)


class _FlatLinear(nn.Module):
    """A linear layer whose kernel takes 2-D inputs: inputs of any leading shape are
    flattened for :meth:`_matmul`, the bias added and the shape restored."""

    kernel: str
    in_features: int
    out_features: int
    bias: nn.Parameter | None

    def _matmul(self, flat: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._matmul(x.reshape(-1, self.in_features))
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.kernel}"


class Int8Linear(_FlatLinear):
    """``y = x @ (codes * scale).T + bias`` with int8 ``codes`` ``[out, in]``."""

    kernel = "int8"

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = codes.shape[1], codes.shape[0]
        self.register_buffer("codes", _int8(codes))
        self.register_buffer("scale", _row_scale(scale, codes.shape[0]))
        self.bias = _bias(bias)

    def _matmul(self, flat: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(flat, self.codes, self.scale.to(flat.dtype))


class Int4Linear(_FlatLinear):
    """``y = x @ (codes * scale).T + bias`` with codes in ``[-8, 7]`` packed two per byte in
    the CPU int4 kernel's layout (see :func:`int4_supported` for the shapes it takes)."""

    kernel = "int4"

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        out_features, in_features = codes.shape
        if not int4_supported(out_features, in_features):
            raise ValueError(
                f"the int4 kernel does not take a [{out_features}, {in_features}] weight"
            )
        if codes.numel() and (int(codes.min()) < -8 or int(codes.max()) > 7):
            raise ValueError("codes outside the int4 range [-8, 7]")
        self.in_features, self.out_features = in_features, out_features
        self.group_size = next(g for g in INT4_GROUP_SIZES if in_features % g == 0)
        unsigned = (codes.detach().to(torch.int32) + 8).contiguous()  # the kernel subtracts 8
        self.register_buffer(
            "packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(unsigned, 2)
        )
        rows = _row_scale(scale, out_features)
        groups = in_features // self.group_size
        # [groups, out, 2]: (scale, zero) per group and row; w = (q - 8) * scale + zero
        scales_zeros = torch.stack([rows.expand(groups, -1), torch.zeros(groups, out_features)], -1)
        self.register_buffer("scales_zeros", scales_zeros.contiguous())
        self.bias = _bias(bias)

    def dequantized(self) -> torch.Tensor:
        """The float weight ``[out, in]`` (the kernel applied to the identity)."""
        eye = torch.eye(self.in_features, dtype=self.scales_zeros.dtype, device=self.packed.device)
        return self._cpu_matmul(eye).T.contiguous()

    def _cpu_matmul(self, flat: torch.Tensor) -> torch.Tensor:
        scales = self.scales_zeros.to(flat.dtype)
        return torch.ops.aten._weight_int4pack_mm_for_cpu(
            flat, self.packed, self.group_size, scales
        )

    def _matmul(self, flat: torch.Tensor) -> torch.Tensor:
        if flat.device.type == "cpu":
            return self._cpu_matmul(flat)
        return flat @ self.dequantized().to(flat).T  # no int4 kernel off the CPU: float matmul


class DynamicInt8Linear(_FlatLinear):
    """fbgemm's dynamic int8 linear on the int8 ``codes`` (per-channel scales): activations
    are quantized to int8 per call. CPU only."""

    kernel = "int8-dynamic"

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = codes.shape
        rows = _row_scale(scale, codes.shape[0]).double()
        with warnings.catch_warnings():  # torch marks its quantized tensors deprecated
            warnings.simplefilter("ignore")
            qweight = torch._make_per_channel_quantized_tensor(
                _int8(codes), rows, torch.zeros_like(rows, dtype=torch.long), 0
            )
            self._packed = torch.ops.quantized.linear_prepack(qweight, None)
        self.bias = _bias(bias)

    def packed_bytes(self) -> int:
        """Bytes of the fbgemm-packed weight (one per code plus the float64 scales), which
        lives outside the module's tensors."""
        return self.out_features * self.in_features + 8 * self.out_features

    def _matmul(self, flat: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(flat.float(), self._packed, False)


def _axis_view(scale: torch.Tensor, ndim: int, axis: int) -> torch.Tensor:
    view = [1] * ndim
    if scale.numel() > 1:
        view[axis] = -1
    return scale.detach().float().reshape(view)


class StoredWeight(nn.Module):
    """Integer codes of ``bits`` (4: two per byte; 8: one per byte) with one scale per
    channel along ``axis``; :meth:`forward` gives the float weight ``codes * scale``."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, axis: int, bits: int) -> None:
        super().__init__()
        if bits not in (4, 8):
            raise ValueError(f"stored codes are 4 or 8 bits wide, not {bits}")
        self.shape, self.bits = tuple(codes.shape), bits
        codes = _int8(codes)
        if bits == 4:
            if codes.numel() and (int(codes.min()) < -8 or int(codes.max()) > 7):
                raise ValueError("codes outside the int4 range [-8, 7]")
            nibbles = (codes.reshape(-1).to(torch.int16) + 8).to(torch.uint8)
            if nibbles.numel() % 2:
                nibbles = torch.cat([nibbles, nibbles.new_full((1,), 8)])
            codes = nibbles[0::2] | (nibbles[1::2] << 4)
        self.register_buffer("codes", codes.contiguous())
        self.register_buffer(
            "scale", _axis_view(scale, len(self.shape), axis % max(len(self.shape), 1))
        )

    def integers(self) -> torch.Tensor:
        """The codes as int8, in the weight's shape."""
        if self.bits == 8:
            return self.codes
        low, high = self.codes & 0xF, self.codes >> 4
        flat = torch.stack([low, high], dim=1).reshape(-1)[: int(torch.Size(self.shape).numel())]
        return (flat.to(torch.int8) - 8).reshape(self.shape)

    def forward(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.integers().to(dtype) * self.scale.to(dtype)


class StoredLinear(_FlatLinear):
    """A linear layer whose weight is held as int8 or int4 codes and dequantized at each call
    into a float matmul (on CPUs whose integer matmul kernels are slow for float inputs)."""

    def __init__(
        self, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, bits: int
    ):
        super().__init__()
        self.out_features, self.in_features = codes.shape
        self.weight_codes = StoredWeight(codes, scale, 0, bits)
        self.kernel = f"int{bits}-storage"
        self.bias = _bias(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight_codes(x.dtype), bias)  # any leading shape


class StoredConv(nn.Module):
    """A convolution (or transposed convolution) whose weight is held as int8 or int4 codes
    and dequantized at each call into the original module's float convolution (torch has no
    weight-only low-bit convolution kernel)."""

    def __init__(
        self, conv: nn.Module, codes: torch.Tensor, scale: torch.Tensor, axis: int, bits: int
    ):
        super().__init__()
        self.weight_codes = StoredWeight(codes, scale, axis, bits)
        self.kernel = f"int{bits}-storage"
        self.conv = conv
        conv.register_parameter("weight", None)  # no float copy; forward passes the weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_codes(x.dtype)
        return torch.func.functional_call(self.conv, {"weight": weight}, (x,))


class StoredEmbedding(nn.Module):
    """An embedding table held as int8 codes with one scale per row (a per-row quantizer) or
    one for the table: rows are gathered, then scaled."""

    kernel = "int8-storage"

    def __init__(self, embedding: nn.Embedding, codes: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("codes", _int8(codes))
        self.register_buffer("scale", scale.detach().float().reshape(-1).contiguous())
        self.padding_idx = embedding.padding_idx

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(index, self.codes).float()
        scale = self.scale if self.scale.numel() == 1 else F.embedding(index, self.scale[:, None])
        return rows * scale
