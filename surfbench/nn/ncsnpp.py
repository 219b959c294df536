"""Conditional NCSN++ image backbone (Song et al. 2021, "Score-Based Generative Modeling through
Stochastic Differential Equations", ICLR 2021), written from the paper's description.

Defaults are the SURF paper's Table 6: channel multipliers (1, 2, 2, 2), 64 filters, 4 residual
blocks per resolution, attention at 16×16 and 8×8, dropout 0.1, conditional, 3×3 convolutions,
Gaussian-Fourier embedding of the conditioning (scale 16), FIR resampling with kernel
(1, 3, 3, 1), ``init_scale`` 0 for the last convolution of every residual block (and the attention
output), swish, GroupNorm, progressive input ``input_skip``, progressive output ``output_skip``,
progressive combine ``sum``, skip rescale by 1/√2, BigGAN-style residual blocks.

Notes on Table 6 entries that are not backbone options here:

* "Resample with Convolution: True" — with BigGAN residual blocks the resampling happens inside the
  up/down residual blocks (FIR, followed by the block's convolutions and a 1×1 skip convolution),
  and the input/output pyramids resample with plain FIR filters; no separate resampling
  convolution exists in this configuration.
* "Scale by Sigma", "Number of Scales", "Sigma Min/Max" belong to the score model
  (:class:`surfbench.nn.image_adapters.ScoreNet` divides by sigma; the noise schedule lives in
  :mod:`surfbench.basis`).

FIR resampling is a fixed depthwise convolution with the normalised outer product of the kernel:
downsampling is a stride-2 4×4 conv with padding 1, upsampling the transposed conv with the kernel
multiplied by 4 (gain of zero-stuffing). Image sizes must be divisible by ``2**(levels-1)``.

Generic backbone signature: ``forward(h: [B, Cin, H, W], cond: [B] | None) -> [B, Cout, H, W]``.
Registered as architecture ``"ncsnpp"``.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .image_adapters import build_image_model
from .registry import register_architecture
from .unet import FourierEmbedding, group_norm

__all__ = ["NCSNpp", "fir_downsample", "fir_upsample", "build_ncsnpp"]

_SQRT2 = math.sqrt(2.0)


def _variance_scaling_(weight: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """DDPM/NCSN++ default init: uniform, variance ``scale / fan_avg``; ``scale == 0`` gives zeros."""
    with torch.no_grad():
        if scale == 0:
            return weight.zero_()
        receptive = weight[0, 0].numel() if weight.dim() > 2 else 1
        fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
        bound = math.sqrt(3.0 * scale / ((fan_in + fan_out) / 2.0))
        return weight.uniform_(-bound, bound)


def _conv(in_ch: int, out_ch: int, k: int = 3, init_scale: float = 1.0) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, k, padding=k // 2)
    _variance_scaling_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def _dense(in_f: int, out_f: int, init_scale: float = 1.0) -> nn.Linear:
    lin = nn.Linear(in_f, out_f)
    _variance_scaling_(lin.weight, init_scale)
    nn.init.zeros_(lin.bias)
    return lin


def _fir_kernel_2d(kernel) -> torch.Tensor:
    k = torch.as_tensor(kernel, dtype=torch.float32)
    k2 = torch.outer(k, k)
    return k2 / k2.sum()


def _fir_pads(ksize: int) -> tuple[int, int]:
    if ksize % 2:
        raise ValueError("FIR kernel length must be even for factor-2 resampling")
    return (ksize - 2) // 2, ksize


def fir_downsample(x: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
    """Anti-aliased factor-2 downsampling of ``x`` with the normalised 2-D FIR kernel ``k2``."""
    C = x.shape[1]
    pad, _ = _fir_pads(k2.shape[-1])
    w = k2.to(x.dtype).expand(C, 1, *k2.shape)
    return F.conv2d(x, w, stride=2, padding=pad, groups=C)


def fir_upsample(x: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
    """Factor-2 upsampling: zero-stuffing then the FIR filter ``4 * k2`` (transposed depthwise conv)."""
    C = x.shape[1]
    pad, _ = _fir_pads(k2.shape[-1])
    w = (4.0 * k2).to(x.dtype).expand(C, 1, *k2.shape)
    return F.conv_transpose2d(x, w, stride=2, padding=pad, groups=C)


class _FIR(nn.Module):
    """Holds the fixed FIR kernel as a non-persistent buffer (moves with ``.to(device)``)."""

    def __init__(self, kernel):
        super().__init__()
        self.register_buffer("k2", _fir_kernel_2d(kernel), persistent=False)

    def down(self, x):
        return fir_downsample(x, self.k2)

    def up(self, x):
        return fir_upsample(x, self.k2)


class _ResBlockBigGAN(nn.Module):
    """BigGAN-style residual block, optionally resampling (FIR) both branches."""

    def __init__(self, in_ch, out_ch, temb_dim, dropout, fir: _FIR, up=False, down=False,
                 init_scale=0.0, skip_rescale=True):
        super().__init__()
        self.up, self.down, self.fir, self.skip_rescale = up, down, fir, skip_rescale
        self.norm0 = group_norm(in_ch)
        self.conv0 = _conv(in_ch, out_ch)
        self.dense = _dense(temb_dim, out_ch) if temb_dim else None
        self.norm1 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = _conv(out_ch, out_ch, init_scale=init_scale)
        self.skip = _conv(in_ch, out_ch, k=1) if (in_ch != out_ch or up or down) else None

    def forward(self, x, temb):
        h = F.silu(self.norm0(x))
        if self.up:
            h, x = self.fir.up(h), self.fir.up(x)
        elif self.down:
            h, x = self.fir.down(h), self.fir.down(x)
        h = self.conv0(h)
        if self.dense is not None:
            h = h + self.dense(F.silu(temb))[:, :, None, None]
        h = self.conv1(self.dropout(F.silu(self.norm1(h))))
        if self.skip is not None:
            x = self.skip(x)
        return (x + h) / _SQRT2 if self.skip_rescale else x + h


class _AttnBlock(nn.Module):
    """Single-head self-attention over pixels with 1×1 (NIN) projections."""

    def __init__(self, ch, init_scale=0.0, skip_rescale=True):
        super().__init__()
        self.skip_rescale = skip_rescale
        self.norm = group_norm(ch)
        self.q, self.k, self.v = _dense(ch, ch), _dense(ch, ch), _dense(ch, ch)
        self.out = _dense(ch, ch, init_scale=init_scale)

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # [B, HW, C]
        h = F.scaled_dot_product_attention(self.q(h), self.k(h), self.v(h))
        h = self.out(h).transpose(1, 2).reshape(B, C, H, W)
        return (x + h) / _SQRT2 if self.skip_rescale else x + h


class NCSNpp(nn.Module):
    """NCSN++ backbone; defaults follow Table 6 of the SURF paper.

    Args:
        in_channels, out_channels, image_size, conditional: set by the role builder.
        nf: number of filters of the first level.
        ch_mult: channel multiplier per resolution level.
        num_res_blocks: residual blocks per level (down path; ``+1`` on the up path).
        attn_resolutions: feature-map heights with self-attention.
        dropout: dropout in the residual blocks.
        fourier_scale: std of the Gaussian Fourier features of the conditioning.
        fir_kernel: 1-D FIR kernel for all resampling.
        init_scale: init scale of the last conv of each residual block and attention output
            (and of the lowest-resolution output-skip conv).
        skip_rescale: divide residual sums by √2.
        progressive: ``"output_skip"`` (output pyramid summed across levels) or ``"none"``.
        progressive_input: ``"input_skip"`` (downsampled input injected at every level) or ``"none"``.
        progressive_combine: ``"sum"`` or ``"cat"`` (how the input pyramid joins the features).
        pad: ``"zero"``: an image whose size is not divisible by ``2**(levels-1)`` (MNIST's 28 with the
            paper's 4 levels) is zero-padded evenly on each side to the next multiple (28 -> 32, the
            size NCSN++ was designed for; MNIST's background is 0) and the output cropped back; resolutions
            (``attn_resolutions``) count the padded size.  ``"none"``: such a size is refused.  The paper
            does not say how its NCSN++ handles MNIST; ``zero`` is our choice.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        image_size: int = 32,
        nf: int = 64,
        ch_mult=(1, 2, 2, 2),
        num_res_blocks: int = 4,
        attn_resolutions=(16, 8),
        dropout: float = 0.1,
        conditional: bool = True,
        fourier_scale: float = 16.0,
        fir_kernel=(1.0, 3.0, 3.0, 1.0),
        init_scale: float = 0.0,
        skip_rescale: bool = True,
        progressive: str = "output_skip",
        progressive_input: str = "input_skip",
        progressive_combine: str = "sum",
        pad: str = "zero",
    ):
        super().__init__()
        ch_mult = tuple(int(c) for c in ch_mult)
        attn_resolutions = {int(r) for r in attn_resolutions}
        if progressive not in ("output_skip", "none"):
            raise ValueError(f"progressive must be 'output_skip' or 'none', got {progressive!r}")
        if progressive_input not in ("input_skip", "none"):
            raise ValueError(f"progressive_input must be 'input_skip' or 'none', got {progressive_input!r}")
        if progressive_combine not in ("sum", "cat"):
            raise ValueError(f"progressive_combine must be 'sum' or 'cat', got {progressive_combine!r}")
        n_levels = len(ch_mult)
        if pad not in ("zero", "none"):
            raise ValueError(f"pad must be 'zero' or 'none', got {pad!r}")
        self.pad = (-int(image_size)) % 2 ** (n_levels - 1) if pad == "zero" else 0
        if (int(image_size) + self.pad) % 2 ** (n_levels - 1):
            raise ValueError(f"NCSN++ needs image_size divisible by {2 ** (n_levels - 1)}, got {image_size} "
                             f"(or model option pad: zero)")
        image_size = int(image_size) + self.pad
        self.conditional = bool(conditional)
        self.progressive = progressive
        self.progressive_input = progressive_input
        self.progressive_combine = progressive_combine
        self.skip_rescale = bool(skip_rescale)
        self.n_levels = n_levels
        self.num_res_blocks = int(num_res_blocks)
        self.fir = _FIR(fir_kernel)

        temb_dim = None
        if self.conditional:
            self.embed = FourierEmbedding(nf, fourier_scale)
            temb_dim = 4 * nf
            self.temb0 = _dense(self.embed.dim, temb_dim)
            self.temb1 = _dense(temb_dim, temb_dim)

        def res_block(i, o, **kw):
            return _ResBlockBigGAN(i, o, temb_dim, dropout, self.fir, init_scale=init_scale,
                                   skip_rescale=self.skip_rescale, **kw)

        def attn(c):
            return _AttnBlock(c, init_scale=init_scale, skip_rescale=self.skip_rescale)

        res = [int(image_size) // 2**i for i in range(n_levels)]
        self.conv_in = _conv(in_channels, nf)
        hs_c = [nf]
        ch = nf
        self.down_blocks, self.down_attn = nn.ModuleList(), nn.ModuleList()
        self.downsamplers, self.combiners = nn.ModuleList(), nn.ModuleList()
        for lvl in range(n_levels):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(res_block(ch, nf * ch_mult[lvl]))
                ch = nf * ch_mult[lvl]
                attns.append(attn(ch) if res[lvl] in attn_resolutions else nn.Identity())
                hs_c.append(ch)
            self.down_blocks.append(blocks)
            self.down_attn.append(attns)
            if lvl != n_levels - 1:
                self.downsamplers.append(res_block(ch, ch, down=True))
                if progressive_input == "input_skip":
                    self.combiners.append(_conv(in_channels, ch, k=1))
                    if progressive_combine == "cat":
                        ch *= 2
                hs_c.append(ch)

        self.mid1 = res_block(ch, ch)
        self.mid_attn = attn(ch)
        self.mid2 = res_block(ch, ch)

        self.up_blocks, self.up_attn = nn.ModuleList(), nn.ModuleList()
        self.upsamplers, self.out_norms, self.out_convs = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for lvl in reversed(range(n_levels)):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(res_block(ch + hs_c.pop(), nf * ch_mult[lvl]))
                ch = nf * ch_mult[lvl]
            self.up_blocks.append(blocks)
            self.up_attn.append(attn(ch) if res[lvl] in attn_resolutions else nn.Identity())
            if progressive == "output_skip":
                self.out_norms.append(group_norm(ch))
                scale = init_scale if lvl == n_levels - 1 else 1.0
                self.out_convs.append(_conv(ch, out_channels, init_scale=scale))
            if lvl != 0:
                self.upsamplers.append(res_block(ch, ch, up=True))
        assert not hs_c
        if progressive != "output_skip":
            self.norm_out = group_norm(ch)
            self.conv_out = _conv(ch, out_channels, init_scale=init_scale)

    def forward(self, h: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        temb = None
        if self.conditional:
            if cond is None:
                raise ValueError("conditional NCSN++ needs cond")
            temb = self.embed(cond.reshape(-1).expand(h.shape[0]))
            temb = self.temb1(F.silu(self.temb0(temb)))

        if self.pad:
            a = self.pad // 2
            h = F.pad(h, (a, self.pad - a, a, self.pad - a))
        input_pyramid = h
        hs = [self.conv_in(h)]
        for lvl in range(self.n_levels):
            for block, attn in zip(self.down_blocks[lvl], self.down_attn[lvl]):
                hs.append(attn(block(hs[-1], temb)))
            if lvl != self.n_levels - 1:
                x = self.downsamplers[lvl](hs[-1], temb)
                if self.progressive_input == "input_skip":
                    input_pyramid = self.fir.down(input_pyramid)
                    y = self.combiners[lvl](input_pyramid)
                    x = torch.cat([x, y], 1) if self.progressive_combine == "cat" else x + y
                hs.append(x)

        x = self.mid2(self.mid_attn(self.mid1(hs[-1], temb)), temb)

        pyramid = None
        for i in range(self.n_levels):
            for block in self.up_blocks[i]:
                x = block(torch.cat([x, hs.pop()], dim=1), temb)
            x = self.up_attn[i](x)
            if self.progressive == "output_skip":
                out = self.out_convs[i](F.silu(self.out_norms[i](x)))
                pyramid = out if pyramid is None else self.fir.up(pyramid) + out
            if i != self.n_levels - 1:
                x = self.upsamplers[i](x, temb)
        assert not hs
        out = pyramid if self.progressive == "output_skip" else self.conv_out(F.silu(self.norm_out(x)))
        if self.pad:
            a = self.pad // 2
            out = out[..., a:out.shape[-2] - (self.pad - a), a:out.shape[-1] - (self.pad - a)]
        return out


@register_architecture("ncsnpp")
def build_ncsnpp(role: str, n_sources: int, data_shape, **kwargs) -> nn.Module:
    """``model: {arch: ncsnpp}`` builds the paper configuration (Table 6) for any role."""
    return build_image_model(NCSNpp, role, n_sources, data_shape, **kwargs)
