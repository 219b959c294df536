"""Conv-TasNet: the (small) MixIT teacher of the speech track (paper App. D.5).

Reference
---------
Y. Luo and N. Mesgarani, "Conv-TasNet: Surpassing ideal time-frequency magnitude
masking for speech separation", IEEE/ACM TASLP 27(8), 2019.  The structure below
follows that paper (a readable public implementation is asteroid's ``ConvTasNet``,
``asteroid.models.ConvTasNet`` / ``asteroid.masknn.TDConvNet``; no code is copied):

* encoder: ``Conv1d(1, N, L, stride=L//2, bias=False)`` + ReLU (non-negative basis
  coefficients);
* separator (TCN): global layer norm (gLN), 1x1 bottleneck ``N -> B``, then ``R``
  repeats of ``X`` 1-D conv blocks with dilations ``1, 2, ..., 2^(X-1)``; each block
  is 1x1 ``B -> H`` / PReLU / gLN / depthwise conv (kernel ``P``, dilated) / PReLU /
  gLN, with a residual 1x1 ``H -> B`` and a skip 1x1 ``H -> Sc``; the summed skips go
  through PReLU and a 1x1 ``Sc -> M*N`` giving one mask per output slot;
* masks are **real-valued** (Wisdom et al., "Unsupervised sound separation using
  mixture invariant training", NeurIPS 2020, use real-valued masks on a learned
  basis).  **(choice)** ``mask_act="sigmoid"`` by default: bounded masks in
  ``[0, 1]`` keep every slot no louder than the mixture in every basis coefficient,
  which is the stable choice when some of the ``M`` MixIT slots must go silent.
  ``"relu"`` (unbounded, Conv-TasNet's alternative) is available;
* decoder: ``ConvTranspose1d(N, 1, L, stride=L//2, bias=False)`` applied to each
  masked representation.

``T`` need not be a multiple of the stride: the waveform is zero-padded on the right
up to the next frame boundary and the output is cropped back to ``T`` samples.

Only the ``"regression"`` role exists: ``forward(m [B, T]) -> [B, M, T]`` with
``M = n_sources`` output slots (for MixIT the caller asks for ``M`` slots, e.g. 4 for
mixtures of two 2-source mixtures).  There is no time or noise input, hence no flow
or score role.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_architecture

__all__ = ["ConvTasNet", "CONVTASNET_PRESETS", "build_convtasnet"]

#: Named sizes.  ``"paper"`` is the "smaller ConvTasNet" of App. D.5 (the paper gives
#: no sizes; **(choice)**: Luo & Mesgarani's best configuration with halved hidden
#: widths, ``N=256, L=32 (2 ms at 16 kHz), B=128, H=256, Sc=128, P=3, X=8, R=3``,
#: about 2.6M parameters at 4 output slots).  ``"small"`` (the default) is the CPU
#: size for the tiny/ci profiles: ``N=64, L=64 (4 ms), B=32, H=64, Sc=32, X=4, R=2``,
#: 73k parameters, ~0.3-0.5 s per training step of 8 x 2 s on one CPU thread.
CONVTASNET_PRESETS: dict[str, dict] = {
    "small": dict(n_filters=64, kernel_size=64, bottleneck=32, hidden=64, skip=32,
                  conv_kernel=3, n_blocks=4, n_repeats=2),
    "paper": dict(n_filters=256, kernel_size=32, bottleneck=128, hidden=256, skip=128,
                  conv_kernel=3, n_blocks=8, n_repeats=3),
}


class GlobalLayerNorm(nn.Module):
    """gLN of Conv-TasNet: normalise over channels and time, per example, then a per-channel affine map.

    That is group normalisation with one group, computed by ``F.group_norm`` (one fused kernel forward and
    backward; the formula written out as mean, variance and divide took a fifth of a tiny training step more:
    docs/benchmarks.md, "Cheaper steps").  Its variance is the biased one and ``eps`` is added under the
    square root, as in Luo & Mesgarani's Eq. 13.
    """

    def __init__(self, channels: int, eps: float = 1e-8):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, channels, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, L]
        return F.group_norm(x, 1, self.gamma.view(-1), self.beta.view(-1), self.eps)


class TCNBlock(nn.Module):
    """One dilated depthwise-separable 1-D conv block (Luo & Mesgarani 2019, Fig. 1C)."""

    def __init__(self, bottleneck: int, hidden: int, skip: int, kernel: int, dilation: int):
        super().__init__()
        pad = (kernel - 1) * dilation // 2
        self.net = nn.Sequential(
            nn.Conv1d(bottleneck, hidden, 1),
            nn.PReLU(),
            GlobalLayerNorm(hidden),
            nn.Conv1d(hidden, hidden, kernel, padding=pad, dilation=dilation, groups=hidden),
            nn.PReLU(),
            GlobalLayerNorm(hidden),
        )
        self.res = nn.Conv1d(hidden, bottleneck, 1)
        self.skip = nn.Conv1d(hidden, skip, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(x)
        return x + self.res(h), self.skip(h)


class ConvTasNet(nn.Module):
    """Conv-TasNet with ``n_outputs`` real-valued masks; ``forward(m [B,T]) -> [B,M,T]``.

    Args:
        n_outputs: number of output slots ``M``.
        n_filters, kernel_size: encoder/decoder basis size ``N`` and length ``L``
            (stride ``L // 2``).
        bottleneck, hidden, skip: TCN channels ``B``, ``H``, ``Sc``.
        conv_kernel: depthwise kernel ``P``.
        n_blocks, n_repeats: ``X`` blocks (dilations ``2^0..2^(X-1)``) times ``R``.
        mask_act: ``"sigmoid"`` (default) or ``"relu"``; real-valued masks.
        mixture_consistency: if true, project the ``M`` outputs so that they sum to
            the input (Wisdom et al. 2019 mixture-consistency projection, equal
            weights).  Off by default: the MixIT method decides where to project.
    """

    def __init__(self, n_outputs: int, n_filters: int = 64, kernel_size: int = 64, bottleneck: int = 32,
                 hidden: int = 64, skip: int = 32, conv_kernel: int = 3, n_blocks: int = 4,
                 n_repeats: int = 2, mask_act: str = "sigmoid", mixture_consistency: bool = False):
        super().__init__()
        if kernel_size < 2 or kernel_size % 2:
            raise ValueError(f"kernel_size must be an even number >= 2, got {kernel_size}")
        if mask_act not in ("sigmoid", "relu"):
            raise ValueError(f"mask_act must be 'sigmoid' or 'relu', got {mask_act!r}")
        self.n_outputs = int(n_outputs)
        self.n_filters = n_filters
        self.kernel_size = kernel_size
        self.stride = kernel_size // 2
        self.mask_act = mask_act
        self.mixture_consistency = bool(mixture_consistency)

        self.encoder = nn.Conv1d(1, n_filters, kernel_size, stride=self.stride, bias=False)
        self.decoder = nn.ConvTranspose1d(n_filters, 1, kernel_size, stride=self.stride, bias=False)
        self.in_norm = GlobalLayerNorm(n_filters)
        self.in_proj = nn.Conv1d(n_filters, bottleneck, 1)
        self.blocks = nn.ModuleList(
            TCNBlock(bottleneck, hidden, skip, conv_kernel, 2 ** x)
            for _ in range(n_repeats) for x in range(n_blocks)
        )
        self.out_act = nn.PReLU()
        self.mask_proj = nn.Conv1d(skip, self.n_outputs * n_filters, 1)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        if m.dim() != 2:
            raise ValueError(f"ConvTasNet expects a mixture batch [B, T], got shape {tuple(m.shape)}")
        b, t = m.shape
        # pad on the right to a whole number of frames, crop at the end
        n_frames = 1 if t <= self.kernel_size else -(-(t - self.kernel_size) // self.stride) + 1
        padded = (n_frames - 1) * self.stride + self.kernel_size
        x = F.pad(m, (0, padded - t)).unsqueeze(1)  # [B, 1, T']
        w = F.relu(self.encoder(x))  # [B, N, L]
        h = self.in_proj(self.in_norm(w))
        skips = 0.0
        for blk in self.blocks:
            h, s = blk(h)
            skips = skips + s
        masks = self.mask_proj(self.out_act(skips)).view(b, self.n_outputs, self.n_filters, -1)
        masks = torch.sigmoid(masks) if self.mask_act == "sigmoid" else F.relu(masks)
        est = (masks * w.unsqueeze(1)).view(b * self.n_outputs, self.n_filters, -1)
        out = self._decode(est).view(b, self.n_outputs, -1)[..., :t]
        if self.mixture_consistency:
            out = out + (m.unsqueeze(1) - out.sum(1, keepdim=True)) / self.n_outputs
        return out

    def _decode(self, est: torch.Tensor) -> torch.Tensor:
        """``self.decoder`` (the transposed convolution, stride ``L / 2``) on ``est [B', N, F]`` -> ``[B', (F+1) L/2]``.

        Computed as what it is: each frame's basis combination (one matrix product, ``[L, N] @ [N, F]``), then
        overlap-add, in which every output sample is the sum of exactly two frames' halves.  The same sums as
        ``F.conv_transpose1d`` (tested against it); PyTorch's CPU kernel for a transposed convolution with one output
        channel took 2.2x as long forward (docs/benchmarks.md, "Cheaper steps").
        """
        s = self.stride
        frames = torch.matmul(self.decoder.weight.view(self.n_filters, self.kernel_size).t(), est)  # [B', L, F]
        n, _, f = frames.shape
        head = frames[:, :s].transpose(1, 2).reshape(n, f * s)  # first halves: samples j*s .. j*s + s - 1
        tail = frames[:, s:].transpose(1, 2).reshape(n, f * s)  # second halves: one frame (s samples) later
        return F.pad(head, (0, s)) + F.pad(tail, (s, 0))


@register_architecture("convtasnet")
def build_convtasnet(role: str, n_sources: int, data_shape: tuple[int, ...] = (), preset: str = "small",
                     **kwargs) -> ConvTasNet:
    """Registry builder: ``preset`` in :data:`CONVTASNET_PRESETS`; other kwargs override it.

    Only ``role="regression"`` (the MixIT teacher, ``n_sources`` = its output slots M).
    """
    if role != "regression":
        raise ValueError(
            f"convtasnet is a mask-based regression separator (the MixIT teacher); it has no "
            f"time/noise input and cannot serve role {role!r}. Use role='regression', or "
            f"arch='mb_tflocoformer' for a flow model.")
    if data_shape and len(data_shape) != 1:
        raise ValueError(f"convtasnet separates mono waveforms (data_shape=(T,)), got {data_shape}")
    if preset not in CONVTASNET_PRESETS:
        raise KeyError(f"unknown convtasnet preset {preset!r}; choose from {sorted(CONVTASNET_PRESETS)}")
    cfg = {**CONVTASNET_PRESETS[preset], **kwargs}
    return ConvTasNet(n_outputs=n_sources, **cfg)
