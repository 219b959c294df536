"""A small time-conditional U-Net for images (tiny / ci profiles).

DDPM-style layout (Ho et al. 2020; Song et al. 2021, "Score-Based Generative Modeling through
Stochastic Differential Equations"): residual blocks with GroupNorm + SiLU, the embedding of the
scalar conditioning added inside every residual block, optional self-attention at chosen
resolutions, skip connections between the down and up paths.

Odd sizes are supported: downsampling is a stride-2 3×3 convolution with padding 1
(28 → 14 → 7 → 4) and upsampling is nearest interpolation *to the size of the matching skip*
followed by a 3×3 convolution, so 28×28 (MNIST) and 32×32 (CIFAR) both work for any depth.

Generic backbone signature: ``forward(h: [B, Cin, H, W], cond: [B] | None) -> [B, Cout, H, W]``.
With ``conditional=False`` ``cond`` is ignored and no embedding weights exist.

Registered as architecture ``"unet"`` (roles via :mod:`surfbench.nn.image_adapters`).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .image_adapters import build_image_model
from .registry import register_architecture

__all__ = ["UNet", "FourierEmbedding", "group_norm", "build_unet"]


def group_norm(channels: int, eps: float = 1e-6) -> nn.GroupNorm:
    """GroupNorm with ``min(32, C // 4)`` groups (lowered until it divides ``C``)."""
    g = max(1, min(32, channels // 4))
    while channels % g:
        g -= 1
    return nn.GroupNorm(g, channels, eps=eps)


class FourierEmbedding(nn.Module):
    """Random Fourier features ``[sin(2π c w), cos(2π c w)]`` with fixed ``w ~ N(0, scale²)``.

    ``w`` is a persistent buffer (not a parameter), saved with the model.
    """

    def __init__(self, size: int, scale: float = 16.0):
        super().__init__()
        self.register_buffer("freqs", torch.randn(size) * scale)

    @property
    def dim(self) -> int:
        return 2 * self.freqs.numel()

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        arg = 2 * math.pi * c.to(self.freqs.dtype)[:, None] * self.freqs[None, :]
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


class _ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, emb_dim: int | None, dropout: float):
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch) if emb_dim else None
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        if self.emb is not None:
            h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class _Attention(nn.Module):
    def __init__(self, ch: int, num_heads: int = 1):
        super().__init__()
        if ch % num_heads:
            raise ValueError(f"attention channels {ch} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.norm = group_norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.num_heads, C // self.num_heads, H * W).unbind(1)
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        h = h.transpose(-1, -2).reshape(B, C, H, W)
        return x + self.proj(h)


class _Down(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class _Up(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x, size):
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class UNet(nn.Module):
    """Small time-conditional U-Net.

    Args:
        in_channels, out_channels: backbone channels (set by the role builder).
        image_size: input height, used to place attention (``attn_resolutions`` are feature-map
            heights: ``ceil(image_size / 2**level)``, e.g. 32 → 32, 16, 8; 28 → 28, 14, 7).
        base_channels: channels of the first level; level ``i`` has ``base_channels * channel_mults[i]``.
        channel_mults: one entry per resolution level.
        num_res_blocks: residual blocks per level on the way down (``+1`` on the way up).
        attn_resolutions: feature-map heights with self-attention (the bottleneck gets one too if its
            height is listed).
        dropout: dropout inside the residual blocks.
        conditional: if False, no embedding weights; ``cond`` is ignored.
        fourier_scale: std of the random Fourier frequencies of the conditioning embedding.
        num_heads: attention heads.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        image_size: int = 32,
        base_channels: int = 32,
        channel_mults=(1, 2),
        num_res_blocks: int = 1,
        attn_resolutions=(),
        dropout: float = 0.0,
        conditional: bool = True,
        fourier_scale: float = 16.0,
        num_heads: int = 1,
    ):
        super().__init__()
        channel_mults = tuple(int(c) for c in channel_mults)
        attn_resolutions = {int(r) for r in attn_resolutions}
        if not channel_mults:
            raise ValueError("channel_mults must not be empty")
        self.conditional = bool(conditional)
        nb = int(base_channels)
        emb_dim = None
        if self.conditional:
            self.embed = FourierEmbedding(nb, fourier_scale)
            emb_dim = 4 * nb
            self.emb_mlp = nn.Sequential(nn.Linear(self.embed.dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        res = [math.ceil(int(image_size) / 2**i) for i in range(len(channel_mults))]
        self.conv_in = nn.Conv2d(in_channels, nb, 3, padding=1)
        chans = [nb]
        ch = nb
        self.down_blocks = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        for lvl, mult in enumerate(channel_mults):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(_ResBlock(ch, nb * mult, emb_dim, dropout))
                ch = nb * mult
                attns.append(_Attention(ch, num_heads) if res[lvl] in attn_resolutions else nn.Identity())
                chans.append(ch)
            self.down_blocks.append(blocks)
            self.down_attn.append(attns)
            if lvl != len(channel_mults) - 1:
                self.downsamplers.append(_Down(ch))
                chans.append(ch)

        self.mid1 = _ResBlock(ch, ch, emb_dim, dropout)
        self.mid_attn = _Attention(ch, num_heads) if res[-1] in attn_resolutions else nn.Identity()
        self.mid2 = _ResBlock(ch, ch, emb_dim, dropout)

        self.up_blocks = nn.ModuleList()
        self.up_attn = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for lvl in reversed(range(len(channel_mults))):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(_ResBlock(ch + chans.pop(), nb * channel_mults[lvl], emb_dim, dropout))
                ch = nb * channel_mults[lvl]
                attns.append(_Attention(ch, num_heads) if res[lvl] in attn_resolutions else nn.Identity())
            self.up_blocks.append(blocks)
            self.up_attn.append(attns)
            if lvl != 0:
                self.upsamplers.append(_Up(ch))
        assert not chans
        self.norm_out = group_norm(ch)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)

    def forward(self, h: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        emb = None
        if self.conditional:
            if cond is None:
                raise ValueError("conditional UNet needs cond")
            emb = self.emb_mlp(self.embed(cond.reshape(-1).expand(h.shape[0])))
        x = self.conv_in(h)
        skips = [x]
        n_levels = len(self.down_blocks)
        for lvl in range(n_levels):
            for block, attn in zip(self.down_blocks[lvl], self.down_attn[lvl]):
                x = attn(block(x, emb))
                skips.append(x)
            if lvl != n_levels - 1:
                x = self.downsamplers[lvl](x)
                skips.append(x)
        x = self.mid2(self.mid_attn(self.mid1(x, emb)), emb)
        for i in range(n_levels):
            for block, attn in zip(self.up_blocks[i], self.up_attn[i]):
                x = attn(block(torch.cat([x, skips.pop()], dim=1), emb))
            if i != n_levels - 1:
                x = self.upsamplers[i](x, skips[-1].shape[-2:])
        return self.conv_out(F.silu(self.norm_out(x)))


@register_architecture("unet")
def build_unet(role: str, n_sources: int, data_shape, **kwargs) -> nn.Module:
    """``model: {arch: unet, base_channels: 32, channel_mults: [1, 2], ...}`` for any role."""
    return build_image_model(UNet, role, n_sources, data_shape, **kwargs)
