"""Network building blocks shared by the policies: attention layers, position embeddings and a
ResNet-18 image trunk. Tensors in, tensors out; nothing here knows about features or losses.

The attention is written out with matmul/softmax instead of nn.MultiheadAttention so that the
exported ONNX graph is plain MatMul/Softmax (no fused kernels whose export path or numerics
differ between torch versions and execution providers).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

ACTIVATIONS = ("relu", "gelu")


def activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


class Dropout(nn.Module):
    """nn.Dropout's function (training: each element zeroed with probability p, the rest scaled
    by 1 / (1 - p); eval: identity) with the mask drawn by torch.rand and thresholded in place.

    Why not nn.Dropout: on the CPU its per-element Bernoulli draw takes about twice as long as
    this; with two training processes on two cores (torchrun here) an ACT step of act_pick's
    size is ~15 % faster with this one (`tools/bench_training_step.py --torch-dropout` times the
    other). No parameters or buffers, so checkpoints are the same; in eval mode (export) it adds
    nothing to the graph."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p!r}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MultiHeadAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim {dim} must be divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = Dropout(dropout)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        return x.reshape(b, n, self.n_heads, d // self.n_heads).transpose(1, 2)  # (B, h, N, dh)

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Tensor | None = None) -> Tensor:
        """query (B, Nq, d), key/value (B, Nk, d), key_padding_mask (B, Nk) True = ignore."""
        q, k, v = self._heads(self.q(query)), self._heads(self.k(key)), self._heads(self.v(value))
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, h, Nq, Nk)
        if key_padding_mask is not None:
            # A large negative instead of -inf: a fully masked row stays finite.
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], -1e9)
        attn = self.dropout(torch.softmax(scores, dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(query.shape)  # (B, Nq, d)
        return self.out(out)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float, act: str) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), activation(act), Dropout(dropout),
                                 nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class EncoderLayer(nn.Module):
    """Self-attention block; the position embedding is added to queries and keys at every layer
    (as in DETR, which ACT builds on) rather than once to the input tokens."""

    def __init__(self, dim: int, n_heads: int, ff: int, dropout: float, act: str,
                 pre_norm: bool) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, n_heads, dropout)
        self.ff = FeedForward(dim, ff, dropout, act)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop1, self.drop2 = Dropout(dropout), Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, x: Tensor, pos: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """x (B, N, d), pos (N, d) or (B, N, d)."""
        h = self.norm1(x) if self.pre_norm else x
        qk = h + pos
        x = x + self.drop1(self.attn(qk, qk, h, key_padding_mask))
        if not self.pre_norm:
            x = self.norm1(x)
        h = self.norm2(x) if self.pre_norm else x
        x = x + self.drop2(self.ff(h))
        return x if self.pre_norm else self.norm2(x)


class DecoderLayer(nn.Module):
    """Self-attention over the queries, cross-attention to the encoder memory, feed-forward."""

    def __init__(self, dim: int, n_heads: int, ff: int, dropout: float, act: str,
                 pre_norm: bool) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, n_heads, dropout)
        self.cross_attn = MultiHeadAttention(dim, n_heads, dropout)
        self.ff = FeedForward(dim, ff, dropout, act)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))
        self.drops = nn.ModuleList(Dropout(dropout) for _ in range(3))
        self.pre_norm = pre_norm

    def _sub(self, i: int, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        if self.pre_norm:
            return x + self.drops[i](fn(self.norms[i](x)))
        return self.norms[i](x + self.drops[i](fn(x)))

    def forward(self, x: Tensor, memory: Tensor, query_pos: Tensor, memory_pos: Tensor) -> Tensor:
        """x (B, k, d) queries, memory (B, N, d), query_pos (k, d), memory_pos (N, d)."""
        x = self._sub(0, x, lambda h: self.self_attn(h + query_pos, h + query_pos, h))
        x = self._sub(1, x, lambda h: self.cross_attn(h + query_pos, memory + memory_pos, memory))
        return self._sub(2, x, self.ff)


def sinusoid_table(n: int, dim: int) -> Tensor:
    """(n, dim) fixed sine/cosine position table (Vaswani et al. 2017)."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    table = torch.zeros(n, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table.float()


def sinusoid_2d(height: int, width: int, dim: int) -> Tensor:
    """(height * width, dim) position table of a feature map, row-major: half the channels
    encode the row, half the column."""
    if dim % 4:
        raise ValueError(f"2D sine embedding needs dim divisible by 4, got {dim}")
    rows = sinusoid_table(height, dim // 2)  # (H, d/2)
    cols = sinusoid_table(width, dim // 2)  # (W, d/2)
    grid = torch.cat([rows[:, None, :].expand(height, width, -1),
                      cols[None, :, :].expand(height, width, -1)], dim=-1)
    return grid.reshape(height * width, dim)


class TimestepEmbedding(nn.Module):
    """Diffusion step t (B,) -> (B, dim): sine features of t, then a small MLP."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"timestep embedding dim must be even, got {dim}")
        half = dim // 2
        freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
        self.register_buffer("freq", freq, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.Mish(), nn.Linear(4 * dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        angle = t.to(torch.float32)[:, None] * self.freq[None, :]  # (B, half)
        return self.mlp(torch.cat([angle.sin(), angle.cos()], dim=-1))


# ----------------------------------------------------------------------------- ResNet-18


def _group_norm(channels: int) -> nn.GroupNorm:
    # GroupNorm, not BatchNorm: the trunk is trained from scratch with small per-process batches,
    # where batch statistics are noisy, and it behaves the same in training and at inference
    # (Diffusion Policy replaces BatchNorm with GroupNorm for the same reason).
    return nn.GroupNorm(max(1, channels // 16), channels)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = _group_norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = _group_norm(c_out)
        self.skip = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), _group_norm(c_out))

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(h)) + self.skip(x))


class ResNet18Trunk(nn.Module):
    """ResNet-18 without the classifier: (B, 3, H, W) -> (B, 512 * width/64, H/32, W/32).

    BasicBlock x [2, 2, 2, 2] (He et al. 2016), randomly initialized (no pretrained weights are
    available here); `width` scales the channel counts (64 = the standard network)."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        if not isinstance(width, int) or width < 8 or width % 8:
            raise ValueError(f"ResNet width must be a multiple of 8 >= 8, got {width!r}")
        self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), _group_norm(width),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        layers, c_in = [], width
        for i in range(4):
            c_out = width * 2 ** i
            stride = 1 if i == 0 else 2
            layers += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.out_channels = c_in

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(self.stem(x))

    @staticmethod
    def output_size(height: int, width: int) -> tuple[int, int]:
        """Spatial size of the feature map for an input of (height, width)."""
        def down(n: int) -> int:  # one conv/pool with kernel k, stride 2, padding k // 2
            return (n - 1) // 2 + 1
        h, w = height, width
        for _ in range(5):  # stem conv, max-pool, three strided stages
            h, w = down(h), down(w)
        return h, w
