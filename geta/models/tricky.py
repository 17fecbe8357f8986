"""Small models that exercise the awkward corners of channel coupling. Each is tiny, builds
without downloads and comes with example inputs; the test suite checks the prune
equivalence on every one of them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from geta.models.registry import image_inputs, register_model

__all__ = [
    "ResidualChain",
    "DenseConcat",
    "SplitChunk",
    "GroupedDepthwise",
    "ChannelShuffle",
    "TiedLM",
    "FlattenLinear",
    "GQABlock",
    "MultiInOut",
    "DictInput",
    "ConvDecoder",
]

TAGS = ("tricky",)


def _seq_inputs(vocab: int, length: int):
    def make(batch: int):
        return (torch.randint(0, vocab, (batch, length)),), {}

    return make


class ResidualChain(nn.Module):
    """Three identity residual blocks: every block's output conv is tied to the stream."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(width, width * 2, 1),
                nn.BatchNorm2d(width * 2),
                nn.ReLU(),
                nn.Conv2d(width * 2, width, 3, padding=1),
            )
            for _ in range(3)
        )
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = x + block(x)
        return self.head(x.mean((2, 3)))


class DenseConcat(nn.Module):
    """DenseNet-style: each layer sees the concatenation of all earlier outputs."""

    def __init__(self, growth: int = 6) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layers = nn.ModuleList()
        channels = 8
        for _ in range(3):
            self.layers.append(
                nn.Sequential(
                    nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, growth, 3, padding=1)
                )
            )
            channels += growth
        self.head = nn.Linear(channels, 10)

    def forward(self, x):
        features = [self.stem(x)]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return self.head(torch.cat(features, 1).mean((2, 3)))


class SplitChunk(nn.Module):
    """chunk / split of channels into branches that are processed and concatenated again."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.left = nn.Conv2d(8, 8, 3, padding=1)
        self.right = nn.Conv2d(8, 12, 1)
        self.mix = nn.Conv2d(20, 10, 1)
        self.fc = nn.Linear(10, 4)

    def forward(self, x):
        a, b = self.stem(x).chunk(2, dim=1)
        y = torch.cat([F.relu(self.left(a)), self.right(b)], dim=1)
        return self.fc(self.mix(y).amax((2, 3)))


class GroupedDepthwise(nn.Module):
    """A grouped conv (4 groups), a depthwise conv with channel multiplier 2, a pointwise conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.grouped = nn.Conv2d(16, 24, 3, padding=1, groups=4)
        self.bn = nn.BatchNorm2d(24)
        self.depthwise = nn.Conv2d(24, 48, 3, padding=1, groups=24)
        self.pointwise = nn.Conv2d(48, 8, 1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(self.bn(self.grouped(x)))
        x = self.pointwise(F.relu(self.depthwise(x)))
        return self.fc(x.mean((2, 3)))


class ChannelShuffle(nn.Module):
    """ShuffleNet's channel shuffle (view, transpose, view) between grouped convs."""

    def __init__(self, groups: int = 2) -> None:
        super().__init__()
        self.groups = groups
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.g1 = nn.Conv2d(16, 16, 1, groups=groups)
        self.g2 = nn.Conv2d(16, 12, 1, groups=groups)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        x = F.relu(self.g1(F.relu(self.stem(x))))
        b, c, h, w = x.shape
        x = x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)
        return self.fc(self.g2(x).mean((2, 3)))


class TiedLM(nn.Module):
    """Embedding tied to the output projection, with an MLP in between."""

    def __init__(self, vocab: int = 50, dim: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.up = nn.Linear(dim, 4 * dim)
        self.down = nn.Linear(4 * dim, dim)
        self.out = nn.Linear(dim, vocab, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, ids):
        h = self.embed(ids)
        h = h + self.down(F.gelu(self.up(h)))
        return self.out(h)


class FlattenLinear(nn.Module):
    """A conv whose channels are flattened (with their positions) into a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(6 * 4 * 4, 20)
        self.fc2 = nn.Linear(20, 3)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(torch.flatten(F.relu(self.conv(x)), 1))))


class GQABlock(nn.Module):
    """A pre-norm transformer block with grouped-query attention (8 query heads over 2
    key/value heads), written the way HF decoder layers are, plus a gated MLP."""

    def __init__(self, dim: int = 32, heads: int = 8, kv_heads: int = 2, vocab: int = 40) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.embed = nn.Embedding(vocab, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, heads * self.head_dim)
        self.k = nn.Linear(dim, kv_heads * self.head_dim)
        self.v = nn.Linear(dim, kv_heads * self.head_dim)
        self.o = nn.Linear(heads * self.head_dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.gate = nn.Linear(dim, 64, bias=False)
        self.up = nn.Linear(dim, 64, bias=False)
        self.down = nn.Linear(64, dim, bias=False)
        self.lm_head = nn.Linear(dim, vocab)

    def attention(self, x):
        b, s, _ = x.shape
        q = self.q(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        k = self.k(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        v = self.v(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        rep = q.shape[1] // k.shape[1]
        k = k[:, :, None].expand(b, k.shape[1], rep, s, k.shape[-1]).reshape(b, -1, s, k.shape[-1])
        v = v[:, :, None].expand(b, v.shape[1], rep, s, v.shape[-1]).reshape(b, -1, s, v.shape[-1])
        out = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=1 / math.sqrt(self.head_dim)
        )
        return self.o(out.transpose(1, 2).reshape(b, s, -1))

    def forward(self, ids):
        x = self.embed(ids)
        x = x + self.attention(self.norm1(x))
        h = self.norm2(x)
        x = x + self.down(F.silu(self.gate(h)) * self.up(h))
        return self.lm_head(x)


class MultiInOut(nn.Module):
    """Two inputs, two outputs, a shared trunk."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(10, 24)
        self.b = nn.Linear(6, 24)
        self.trunk = nn.Linear(24, 16)
        self.head1 = nn.Linear(16, 3)
        self.head2 = nn.Linear(16, 2)

    def forward(self, x, y):
        h = F.relu(self.trunk(F.relu(self.a(x)) + F.relu(self.b(y))))
        return self.head1(h), self.head2(h)


class DictInput(nn.Module):
    """A forward that takes and returns dicts."""

    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Conv2d(3, 8, 3, padding=1)
        self.meta = nn.Linear(4, 8)
        self.fuse = nn.Linear(8, 12)
        self.out = nn.Linear(12, 2)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = self.image(batch["image"]).mean((2, 3)) * torch.sigmoid(self.meta(batch["meta"]))
        return {"logits": self.out(F.relu(self.fuse(h)))}


class ConvDecoder(nn.Module):
    """Encoder-decoder with a transposed (grouped) convolution and group norm."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.norm = nn.GroupNorm(4, 16)
        self.dec = nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1, groups=2)
        self.out = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        return self.out(F.relu(self.dec(F.relu(self.norm(self.enc(x))))))


register_model("residual_chain", image_inputs(3, 8), TAGS)(ResidualChain)
register_model("dense_concat", image_inputs(3, 8), TAGS)(DenseConcat)
register_model("split_chunk", image_inputs(3, 8), TAGS)(SplitChunk)
register_model("grouped_depthwise", image_inputs(3, 8), TAGS)(GroupedDepthwise)
register_model("channel_shuffle", image_inputs(3, 8), TAGS)(ChannelShuffle)
register_model("tied_lm", _seq_inputs(50, 7), TAGS)(TiedLM)
register_model("flatten_linear", image_inputs(3, 8), TAGS)(FlattenLinear)
register_model("gqa_block", _seq_inputs(40, 6), TAGS)(GQABlock)
register_model("multi_in_out", lambda b: ((torch.randn(b, 10), torch.randn(b, 6)), {}), TAGS)(
    MultiInOut
)
register_model(
    "dict_input",
    lambda b: (({"image": torch.randn(b, 3, 8, 8), "meta": torch.randn(b, 4)},), {}),
    TAGS,
)(DictInput)
register_model("conv_decoder", image_inputs(3, 8), TAGS)(ConvDecoder)
