"""MB-TFLocoformer: the permutation-equivariant audio flow / regression backbone.

SURF (paper App. D.5, Tables 7-8) uses the multi-band TF-Locoformer of FLOSS for every
audio flow and regression model.  References (read, not copied):

* K. Saijo, G. Wichern, F. G. Germain, Z. Pan, J. Le Roux, "TF-Locoformer: Transformer
  with local modeling by convolution for speech separation and enhancement", IWAENC
  2024 (github.com/merlresearch/tf-locoformer): pre-norm blocks with **RMSGroupNorm**,
  multi-head self-attention with rotary position embeddings, and the macaron pair of
  **Conv-SwiGLU** feed-forward networks (1-D conv -> SwiGLU gate -> transposed 1-D conv,
  kernel 4, hidden = 3x the embedding).
* R. Scheibler, J. R. Hershey, A. Doucet, H. Li, "Source separation by flow matching"
  (FLOSS), WASPAA 2025, arXiv:2505.16119: the **multi-band** variant with a learnable
  **mel-band split** front end and band-merge back end, blocks alternating
  **band-source joint attention (BSJA)** and **time-source parallel attention (TSPA)**,
  both built on **convolutional multi-head self-attention (CMHSA)**, the mixture given
  as an **auxiliary token on the source axis**, and **permutation equivariance** over
  the source axis (no source-specific parameters).
* Mel-band split after Wang et al., "Mel-band RoFormer for music source separation"
  (2023): overlapping bands read off a triangular mel filterbank.

Data flow (``S = K + 1`` tokens on the source axis: the K source slots, then the mixture)::

    waveforms [B, S, T] --STFT (20 ms Hamming, 10 ms hop)--> complex [B, S, F=161, N]
      --|X|^0.33 e^{j angle X}--> mel-band split (per-band linear of Re/Im) [B, S, Nb, N, D]
      + token-type embedding (one shared "source" embedding, one "mixture" embedding)
      --> n_blocks x (BSJA, TSPA) --> RMSGroupNorm --> the K source tokens
      --> band merge (per-band linear to Re/Im, overlaps averaged) --> |Y|^(1/0.33) e^{j angle Y}
      --> iSTFT --> [B, K, T]

Design decisions where the papers give no detail are marked **(choice)**:

* **BSJA** (per frame): self-attention over the joint (source x band) sequence of
  ``S*Nb`` tokens; RoPE on the band index (every source token of a band shares its
  position, so the attention is equivariant over sources).  CMHSA: the Q/K/V
  projections are a linear map followed by a depthwise convolution along **time**
  (kernel 5, Table 7), i.e. local temporal context for an attention over bands and
  sources.  Its macaron Conv-SwiGLU FFNs run along the band axis (as the frequency path
  of TF-Locoformer).
* **TSPA**: two attention branches in parallel, summed into the residual: (a) over
  **time** for each (source, band), RoPE on the frame index, CMHSA with a depthwise 2-D
  convolution over (time, band) of kernel (5, 3) (Table 7); (b) over the **source** axis
  (K sources + mixture token) for each (band, frame), with no position encoding.  Its
  macaron FFNs run along time (the frame path of TF-Locoformer).
* CMHSA convolutions are depthwise **(choice)**: with depthwise Q/K/V convolutions and
  TF-Locoformer's macaron FFNs of hidden size 3D, the Libri2Mix configuration has
  ~35-38M parameters, matching the paper's "36M" (full Q/K/V convolutions would give
  ~47M).  See :data:`MB_TFLOCOFORMER_PRESETS`.
* The band merge outputs the complex (compressed) spectrogram directly, not a mask:
  a flow velocity ``x1 - x0`` is not a masked version of ``x_t`` (``output="mapping"``, the
  default).  ``output="mask"`` **(choice)** reads the merge as a complex ratio mask on the
  mixture's (uncompressed) STFT, offset by 1/K and zero-initialised, so an untrained model
  puts ``m / K`` in every slot: for regression, and for a flow whose output is read as the
  sources (``training.flow_preconditioning: denoiser``, :class:`surfbench.flow.DenoiserFlow`).
  The tiny profile uses it (``config/tiny.yaml`` gives the measurements).
* Time conditioning (flow only): sinusoidal embedding of ``1000 t`` -> 2-layer MLP ->
  per sub-block a zero-initialised linear map to a (scale, shift) pair for each of its
  three pre-norms (FiLM / adaLN; the blocks start unmodulated).  The same ``t`` modulates
  every token, so it does not break equivariance.
* Input scaling **(choice, ``normalize_input``)**: all waveforms are divided by the
  RMS of the mixture (per example, floor 1e-4) and the output multiplied back, so the
  network sees mixtures at a unit level.  Equivariance is unaffected.

Roles:

* ``"flow"``: ``forward(x_t [B,K,T], t [B], m [B,T]) -> [B,K,T]`` raw velocity in the
  waveform domain (the caller applies ``project_perp``).  Exactly permutation
  equivariant over the K slots: the K source tokens share every weight, and the mixture
  token is told apart by its own type embedding.  ``slot_embedding=True`` **(choice, off
  by default and in the paper profile)** adds the regression role's learned slot embedding
  to the source tokens: the flow is then not equivariant, and tells its slots apart without
  having to learn to break their symmetry from the start noise alone (at t = 0 the K slots
  of ``x0`` differ only by ``P⊥ z``), which a small model does not learn in a few hundred
  steps (``config/tiny.yaml`` gives the measurements).
* ``"regression"``: ``forward(m [B,T]) -> [B,K,T]``.  There is no ``x_t`` and no ``t``
  (no time-embedding parameters exist).  The K source tokens start from a fixed
  **learned slot embedding** ``[K, Nb, D]`` (broadcast over frames); the slots are
  therefore distinguishable and the regression model is **not** permutation
  equivariant (it must not be: a regression separator has to break the symmetry to
  output different sources; PIT losses handle the order).

Paper configuration (``preset="libri2mix"``, the default): D=192, 6 blocks, 80 mel
bands, 4 heads, FFN hidden 576 -> 37.6M parameters (flow), 34.9M (regression); the
AudioSet configuration (``preset="audioset"``, D=384) has ~4x as many (149.7M / 138.9M): with
the published hyper-parameters it cannot have the 36M parameters that Table 8 states
(presumably Table 7's caption repeated); ``preset="audioset36m"`` is a D=384 variant with
smaller FFNs (hidden 1.125D, single FFN per sub-block, 128-d t-embedding) that does
land near 36M (37.7M flow, 35.3M regression), offered
for when a parameter-matched AudioSet model is wanted.  ``preset="tiny"`` (D=16, 1
block, 8 mel bands, 40 ms / 20 ms STFT, ~58k parameters) is the CPU size of the
tiny/ci profiles; any key can be overridden by a keyword argument.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint as _checkpoint

from ..numerics import sqrt
from .registry import register_architecture

__all__ = [
    "MB_TFLOCOFORMER_PRESETS",
    "CompressedSTFT",
    "MelBandSplit",
    "RMSGroupNorm",
    "ConvSwiGLU",
    "BSJA",
    "TSPA",
    "MBTFLocoformer",
    "MBTFLocoformerFlow",
    "MBTFLocoformerRegression",
    "mel_band_bins",
    "energy_normalized_hamming",
    "build_mb_tflocoformer",
]

#: Named configurations.  Every key is a constructor argument of :class:`MBTFLocoformer`.
MB_TFLOCOFORMER_PRESETS: dict[str, dict] = {
    # Table 7 (Libri2Mix): D=192, 6 blocks, 80 mels, BSJA time kernel 5, TSPA (5, 3)
    "libri2mix": dict(dim=192, n_blocks=6, n_mels=80, n_heads=4, ffn_mult=3.0, macaron=True),
    # Table 8 (AudioSet): D=384, otherwise as Table 7 (about 4x the parameters of Table 7)
    "audioset": dict(dim=384, n_blocks=6, n_mels=80, n_heads=8, ffn_mult=3.0, macaron=True),
    # D=384 with a 36M budget (choice): one Conv-SwiGLU FFN per sub-block, hidden 1.125D,
    # 128-d time embedding feeding the FiLM maps
    "audioset36m": dict(dim=384, n_blocks=6, n_mels=80, n_heads=8, ffn_mult=1.125, macaron=False, t_dim=128),
    # CPU size for the tiny / ci profiles (~0.3 s per training step of 8 x 2 s on one
    # CPU thread): 1 block, 8 mel bands, 40 ms frames / 20 ms hop to halve the frames
    "tiny": dict(dim=16, n_blocks=1, n_mels=8, n_heads=1, ffn_mult=2.0, macaron=False,
                 n_fft=640, hop_length=320),
}


# --------------------------------------------------------------------------- STFT front end
def energy_normalized_hamming(n_fft: int, hop: int) -> torch.Tensor:
    """Periodic Hamming window scaled so that its squared overlap-add is ~1 at ``hop``.

    With ``Σ_n w²(t - n·hop) ≈ 1`` and the 1/√N-normalised DFT (``normalized=True``),
    the STFT preserves signal energy (Parseval), so the spectral coefficients live on
    the waveform's scale whatever the frame size.
    """
    w = torch.hamming_window(n_fft, periodic=True, dtype=torch.float64, device="cpu")
    w = w * math.sqrt(hop / float((w ** 2).sum()))
    return w.float()


class CompressedSTFT(nn.Module):
    """STFT / iSTFT with power-law magnitude compression ``|X|^a e^{j angle X}`` (a = 0.33).

    ``encode(x [..., T]) -> complex [..., F, N]`` (compressed); ``decode(Y, T) -> [..., T]``
    applies ``|Y|^(1/a) e^{j angle Y}`` then the inverse STFT.  Always computed in float32.
    """

    def __init__(self, n_fft: int = 320, hop_length: int = 160, compression: float = 0.33, eps: float = 1e-8):
        super().__init__()
        if not 0.0 < compression <= 1.0:
            raise ValueError(f"compression exponent must be in (0, 1], got {compression}")
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.compression = float(compression)
        self.eps = float(eps)
        self.register_buffer("window", energy_normalized_hamming(self.n_fft, self.hop_length), persistent=False)

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    def stft(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        spec = torch.stft(x.reshape(-1, x.shape[-1]).float(), self.n_fft, self.hop_length, window=self.window,
                          center=True, pad_mode="constant", normalized=True, onesided=True, return_complex=True)
        return spec.reshape(*lead, *spec.shape[-2:])

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        lead = spec.shape[:-2]
        x = torch.istft(spec.reshape(-1, *spec.shape[-2:]), self.n_fft, self.hop_length, window=self.window,
                        center=True, normalized=True, onesided=True, length=length)
        return x.reshape(*lead, length)

    def compress(self, spec: torch.Tensor) -> torch.Tensor:
        power = spec.real.square() + spec.imag.square()
        return spec * (power + self.eps ** 2).pow((self.compression - 1.0) / 2.0)

    def decompress(self, spec: torch.Tensor) -> torch.Tensor:
        # (re² + im²)^((1/a - 1)/2): smooth at 0 (exponent > 0), no sqrt -> no NaN gradient
        power = spec.real.square() + spec.imag.square()
        return spec * power.pow((1.0 / self.compression - 1.0) / 2.0)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.compress(self.stft(x))

    def decode(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        return self.istft(self.decompress(spec), length)


# --------------------------------------------------------------------------- mel-band split
def _hz_to_mel(f):
    return 2595.0 * math.log10(1.0 + f / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_band_bins(n_mels: int, n_fft: int, sample_rate: int) -> list[list[int]]:
    """STFT bins of each of ``n_mels`` overlapping mel bands (HTK mel scale, 0 .. sr/2).

    Band b covers the support ``[p_b, p_{b+2}]`` of the b-th triangular mel filter
    (``p`` = ``n_mels + 2`` mel-spaced points).  A band too narrow to contain a bin
    centre gets the bin nearest to its centre ``p_{b+1}``.  Consecutive supports tile
    ``[0, sr/2]``, so every bin belongs to at least one band.
    """
    n_freqs = n_fft // 2 + 1
    freqs = [k * sample_rate / n_fft for k in range(n_freqs)]
    top = _hz_to_mel(sample_rate / 2.0)
    pts = [_mel_to_hz(top * i / (n_mels + 1)) for i in range(n_mels + 2)]
    bands = []
    for b in range(n_mels):
        lo, hi = pts[b], pts[b + 2]
        idx = [k for k, f in enumerate(freqs) if lo - 1e-9 <= f <= hi + 1e-9]
        if not idx:
            idx = [min(range(n_freqs), key=lambda k: abs(freqs[k] - pts[b + 1]))]
        bands.append(idx)
    covered = set(k for band in bands for k in band)
    assert covered == set(range(n_freqs)), "mel bands must cover every STFT bin"
    return bands


class MelBandSplit(nn.Module):
    """Learnable mel-band split (front end) and band merge (back end).

    ``split(Xc complex [..., F, N]) -> [..., Nb, N, D]``: the Re/Im parts of a band's
    bins go through that band's own linear layer (``2 n_b -> D``).  ``merge(h [..., Nb, N,
    D]) -> complex [..., F, N]``: each band's own linear layer (optionally after a
    per-band hidden layer of ``head_hidden`` units with SiLU) predicts Re/Im of its bins;
    bins shared by overlapping bands get the average of the bands' predictions.

    Implementation: the per-band weights are stored flat (the parameter count is exact:
    ``sum_b 2 n_b`` rows) and scattered at run time into a dense block-sparse matrix
    between the ``2F`` Re/Im bins and the ``Nb*D`` band features, so each direction is
    one matmul with no gather/scatter of activations (the overlap average is folded into
    the merge weights).
    """

    def __init__(self, n_mels: int, dim: int, n_fft: int = 320, sample_rate: int = 16000, head_hidden: int = 0):
        super().__init__()
        self.bands = mel_band_bins(n_mels, n_fft, sample_rate)
        self.n_bands = n_mels
        self.n_freqs = n_fft // 2 + 1
        self.dim = dim
        self.head_hidden = int(head_hidden)
        d_out = self.head_hidden or dim
        self.d_out = d_out
        counts = torch.zeros(self.n_freqs)
        for band in self.bands:
            counts[band] += 1
        rows, enc_pos, dec_pos, band_of_row = [], [], [], []
        two_f = 2 * self.n_freqs
        for b, band in enumerate(self.bands):
            for f in band:
                for c in range(2):
                    r = 2 * f + c  # Re/Im bin index in the [..., 2F] layout
                    rows.append(r)
                    enc_pos.append(r * n_mels + b)  # row of the dense [2F * Nb, D] encoder
                    dec_pos.append(b * two_f + r)  # row of the dense [Nb * 2F, d] decoder
                    band_of_row.append(b)
        rows_t = torch.tensor(rows, dtype=torch.long)
        self.register_buffer("rows", rows_t, persistent=False)
        self.register_buffer("enc_pos", torch.tensor(enc_pos, dtype=torch.long), persistent=False)
        self.register_buffer("dec_pos", torch.tensor(dec_pos, dtype=torch.long), persistent=False)
        self.register_buffer("row_inv_count", (1.0 / counts)[rows_t // 2], persistent=False)
        n = len(rows)
        self.enc_weight = nn.Parameter(torch.empty(n, dim))
        self.enc_bias = nn.Parameter(torch.empty(n_mels, dim))
        self.dec_weight = nn.Parameter(torch.empty(n, d_out))
        self.dec_bias = nn.Parameter(torch.empty(n))
        with torch.no_grad():  # PyTorch's nn.Linear init, band by band (fan_in = 2 n_b or d_out)
            start = 0
            for b, band in enumerate(self.bands):
                k = 2 * len(band)
                be, bd = 1.0 / math.sqrt(k), 1.0 / math.sqrt(d_out)
                self.enc_weight[start:start + k].uniform_(-be, be)
                self.enc_bias[b].uniform_(-be, be)
                self.dec_weight[start:start + k].uniform_(-bd, bd)
                self.dec_bias[start:start + k].uniform_(-bd, bd)
                start += k
        if self.head_hidden > 0:
            self.head_w = nn.Parameter(torch.empty(n_mels, dim, self.head_hidden))
            self.head_b = nn.Parameter(torch.zeros(n_mels, self.head_hidden))
            nn.init.uniform_(self.head_w, -1.0 / math.sqrt(dim), 1.0 / math.sqrt(dim))

    def split(self, spec: torch.Tensor) -> torch.Tensor:
        n_frames = spec.shape[-1]
        x = torch.view_as_real(spec).transpose(-3, -2).reshape(*spec.shape[:-2], n_frames, 2 * self.n_freqs)
        w = self.enc_weight.new_zeros(2 * self.n_freqs * self.n_bands, self.dim)
        w = w.index_copy(0, self.enc_pos, self.enc_weight).view(2 * self.n_freqs, self.n_bands * self.dim)
        h = (x @ w).view(*x.shape[:-1], self.n_bands, self.dim) + self.enc_bias  # [..., N, Nb, D]
        return h.transpose(-3, -2)  # [..., Nb, N, D]

    def merge(self, h: torch.Tensor) -> torch.Tensor:
        h = h.transpose(-3, -2)  # [..., N, Nb, D]
        if self.head_hidden > 0:
            h = F.silu(torch.einsum("...kd,kdh->...kh", h, self.head_w) + self.head_b)
        two_f = 2 * self.n_freqs
        w = self.dec_weight.new_zeros(self.n_bands * two_f, self.d_out)
        w = w.index_copy(0, self.dec_pos, self.dec_weight * self.row_inv_count[:, None])
        w = w.view(self.n_bands, two_f, self.d_out).transpose(1, 2).reshape(self.n_bands * self.d_out, two_f)
        bias = self.dec_bias.new_zeros(two_f).index_add(0, self.rows, self.dec_bias * self.row_inv_count)
        y = h.reshape(*h.shape[:-2], self.n_bands * self.d_out) @ w + bias  # [..., N, 2F]
        y = y.view(*y.shape[:-1], self.n_freqs, 2).transpose(-3, -2)  # [..., F, N, 2]
        return torch.view_as_complex(y.contiguous())


# --------------------------------------------------------------------------- block pieces
class RMSGroupNorm(nn.Module):
    """RMS normalisation in ``groups`` groups of the last axis, learnable gain (TF-Locoformer)."""

    def __init__(self, dim: int, groups: int = 4, eps: float = 1e-5):
        super().__init__()
        if dim % groups:
            raise ValueError(f"dim {dim} not divisible by {groups} groups")
        self.groups = groups
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shp = x.shape
        g = x.reshape(*shp[:-1], self.groups, shp[-1] // self.groups).float()
        g = g * torch.rsqrt(g.square().mean(-1, keepdim=True) + self.eps)
        return g.reshape(shp).to(x.dtype) * self.gain


class ConvSwiGLU(nn.Module):
    """Conv-SwiGLU FFN of TF-Locoformer along one sequence axis.

    ``Conv1d(D, 2H, k)`` -> ``a * SiLU(g)`` -> ``ConvTranspose1d(H, D, k)``; the input is
    zero-padded by ``k-1`` on both sides and the central ``L`` outputs are kept.
    ``forward(x [N, L, D]) -> [N, L, D]``.
    """

    def __init__(self, dim: int, hidden: int, kernel: int = 4):
        super().__init__()
        self.kernel = kernel
        self.hidden = hidden
        self.conv = nn.Conv1d(dim, 2 * hidden, kernel)
        self.deconv = nn.ConvTranspose1d(hidden, dim, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        p = self.kernel - 1
        h = self.conv(F.pad(x.transpose(1, 2), (p, p)))  # [N, 2H, L + k - 1]
        a, g = h.split(self.hidden, dim=1)
        y = self.deconv(a * F.silu(g))  # [N, D, L + 2k - 2]
        return y[..., p:p + length].transpose(1, 2)


def _rope(x: torch.Tensor, pos: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding (rotate-half form) of ``x [..., L, dh]`` at positions ``pos [L]``."""
    half = x.shape[-1] // 2
    freqs = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    ang = pos.to(torch.float32)[:, None] * freqs[None]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:2 * half]
    rot = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return rot if 2 * half == x.shape[-1] else torch.cat([rot, x[..., 2 * half:]], dim=-1)


def _attend(qkv: torch.Tensor, n_heads: int, pos: torch.Tensor | None) -> torch.Tensor:
    """Self-attention over axis -2 of ``qkv [N, L, 3A]`` -> ``[N, L, A]`` (RoPE if ``pos``)."""
    n, length, three_a = qkv.shape
    a = three_a // 3
    q, k, v = qkv.view(n, length, 3, n_heads, a // n_heads).permute(2, 0, 3, 1, 4)  # [N, H, L, dh] each
    if pos is not None:
        q, k = _rope(q, pos), _rope(k, pos)
    o = F.scaled_dot_product_attention(q, k, v)
    return o.transpose(1, 2).reshape(n, length, a)


def _modulate(x: torch.Tensor, mod: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    if mod is None:
        return x
    scale, shift = mod  # [B, D] each, x [B, S, Nb, N, D]
    return x * (1.0 + scale[:, None, None, None]) + shift[:, None, None, None]


class _MacaronSubBlock(nn.Module):
    """Shared skeleton: [FFN] -> attention -> FFN, each pre-normed and residual.

    ``ffn_axis`` is the axis the Conv-SwiGLU convolutions run along: ``"band"`` or ``"time"``.
    With time conditioning, a zero-initialised linear map of the t-embedding gives a
    (scale, shift) pair for each pre-norm.
    """

    ffn_axis = "time"

    def __init__(self, dim: int, n_heads: int, ffn_hidden: int, macaron: bool, ffn_kernel: int,
                 norm_groups: int, t_dim: int | None):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim {dim} not divisible by n_heads {n_heads}")
        self.dim = dim
        self.n_heads = n_heads
        self.macaron = macaron
        if macaron:
            self.norm_ffn0 = RMSGroupNorm(dim, norm_groups)
            self.ffn0 = ConvSwiGLU(dim, ffn_hidden, ffn_kernel)
        self.norm_attn = RMSGroupNorm(dim, norm_groups)
        self.norm_ffn1 = RMSGroupNorm(dim, norm_groups)
        self.ffn1 = ConvSwiGLU(dim, ffn_hidden, ffn_kernel)
        self.film = None
        if t_dim is not None:
            self.film = nn.Linear(t_dim, (6 if macaron else 4) * dim)
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def _ffn(self, ffn: ConvSwiGLU, h: torch.Tensor) -> torch.Tensor:
        b, s, nb, n, d = h.shape
        if self.ffn_axis == "time":
            return ffn(h.reshape(b * s * nb, n, d)).view(b, s, nb, n, d)
        y = ffn(h.transpose(2, 3).reshape(b * s * n, nb, d))
        return y.view(b, s, n, nb, d).transpose(2, 3)

    def attention(self, h: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        mods = [None] * 3
        if self.film is not None:
            if temb is None:
                raise ValueError("this block is time-conditioned: pass the t-embedding")
            chunks = self.film(F.silu(temb)).chunk(6 if self.macaron else 4, dim=-1)
            pairs = [(chunks[2 * i], chunks[2 * i + 1]) for i in range(len(chunks) // 2)]
            mods = pairs if self.macaron else [None] + pairs
        if self.macaron:
            x = x + self._ffn(self.ffn0, _modulate(self.norm_ffn0(x), mods[0]))
        x = x + self.attention(_modulate(self.norm_attn(x), mods[1]))
        x = x + self._ffn(self.ffn1, _modulate(self.norm_ffn1(x), mods[2]))
        return x


class BSJA(_MacaronSubBlock):
    """Band-source joint attention (FLOSS): per frame, CMHSA over the (source x band) tokens.

    Q/K/V: linear then depthwise conv along time (kernel ``time_kernel``); RoPE on the
    band index (shared by all sources of a band).  FFNs along the band axis.
    """

    ffn_axis = "band"

    def __init__(self, dim: int, n_heads: int, ffn_hidden: int, macaron: bool = True, ffn_kernel: int = 4,
                 norm_groups: int = 4, t_dim: int | None = None, time_kernel: int = 5):
        super().__init__(dim, n_heads, ffn_hidden, macaron, ffn_kernel, norm_groups, t_dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.qkv_conv = nn.Conv1d(3 * dim, 3 * dim, time_kernel, padding=time_kernel // 2, groups=3 * dim)
        self.out = nn.Linear(dim, dim, bias=False)

    def attention(self, h: torch.Tensor) -> torch.Tensor:
        b, s, nb, n, d = h.shape
        qkv = self.qkv(h).view(b * s * nb, n, 3 * d).transpose(1, 2)
        qkv = self.qkv_conv(qkv).view(b, s, nb, 3 * d, n).permute(0, 4, 1, 2, 3)  # [B, N, S, Nb, 3D]
        pos = torch.arange(nb, device=h.device).repeat(s)
        o = _attend(qkv.reshape(b * n, s * nb, 3 * d), self.n_heads, pos)
        o = self.out(o).view(b, n, s, nb, d)
        return o.permute(0, 2, 3, 1, 4)


class TSPA(_MacaronSubBlock):
    """Time-source parallel attention (FLOSS): a time branch and a source branch, summed.

    Time branch: per (source, band), CMHSA over frames; Q/K/V = linear then depthwise 2-D
    conv over (time, band) of kernel ``tf_kernel``; RoPE on the frame index.  Source
    branch: per (band, frame), plain MHSA over the ``S`` source tokens, no positions
    (permutation equivariant).  FFNs along time.
    """

    ffn_axis = "time"

    def __init__(self, dim: int, n_heads: int, ffn_hidden: int, macaron: bool = True, ffn_kernel: int = 4,
                 norm_groups: int = 4, t_dim: int | None = None, tf_kernel: tuple[int, int] = (5, 3)):
        super().__init__(dim, n_heads, ffn_hidden, macaron, ffn_kernel, norm_groups, t_dim)
        kt, kf = tf_kernel
        self.qkv_t = nn.Linear(dim, 3 * dim, bias=False)
        self.qkv_t_conv = nn.Conv2d(3 * dim, 3 * dim, (kt, kf), padding=(kt // 2, kf // 2), groups=3 * dim)
        self.out_t = nn.Linear(dim, dim, bias=False)
        self.qkv_s = nn.Linear(dim, 3 * dim, bias=False)
        self.out_s = nn.Linear(dim, dim, bias=False)

    def attention(self, h: torch.Tensor) -> torch.Tensor:
        b, s, nb, n, d = h.shape
        # time branch
        qkv = self.qkv_t(h).permute(0, 1, 4, 3, 2).reshape(b * s, 3 * d, n, nb)
        qkv = self.qkv_t_conv(qkv).view(b, s, 3 * d, n, nb).permute(0, 1, 4, 3, 2)  # [B, S, Nb, N, 3D]
        pos = torch.arange(n, device=h.device)
        o_t = _attend(qkv.reshape(b * s * nb, n, 3 * d), self.n_heads, pos)
        o_t = self.out_t(o_t).view(b, s, nb, n, d)
        # source branch
        qkv = self.qkv_s(h).permute(0, 2, 3, 1, 4).reshape(b * nb * n, s, 3 * d)
        o_s = self.out_s(_attend(qkv, self.n_heads, None)).view(b, nb, n, s, d).permute(0, 3, 1, 2, 4)
        return o_t + o_s


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding of ``1000 t`` followed by a 2-layer SiLU MLP."""

    def __init__(self, dim: int, freq_dim: int = 128, scale: float = 1000.0):
        super().__init__()
        self.freq_dim = freq_dim
        self.scale = scale
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        ang = (self.scale * t.float())[:, None] * freqs[None]
        return self.mlp(torch.cat([ang.sin(), ang.cos()], dim=-1))


# --------------------------------------------------------------------------- the model
class MBTFLocoformer(nn.Module):
    """MB-TFLocoformer core; use :class:`MBTFLocoformerFlow` / :class:`MBTFLocoformerRegression`.

    Args:
        n_sources: K output slots.
        time_conditioned: build the t-embedding and FiLM maps (flow role).
        dim: embedding size D (192 Libri2Mix, 384 AudioSet).
        n_blocks: number of (BSJA, TSPA) pairs.
        n_mels: mel bands of the band split.
        n_heads: attention heads (attention width = D).
        ffn_mult: Conv-SwiGLU hidden size as a multiple of D (TF-Locoformer: 3).
        macaron: two FFNs per sub-block (before and after attention), as TF-Locoformer.
        ffn_kernel: Conv-SwiGLU kernel (TF-Locoformer: 4).
        bsja_kernel: BSJA Q/K/V conv kernel along time (Table 7: 5).
        tspa_kernel: TSPA Q/K/V conv kernel over (time, band) (Table 7: (5, 3)).
        head_hidden: per-band hidden units of the band-merge head (0 = linear).
        t_freq_dim, t_dim: sinusoid size and width of the t-embedding (default ``t_dim = D``).
        sample_rate, n_fft, hop_length, compression: STFT front end (16 kHz, 320, 160, 0.33).
        normalize_input: divide inputs by the mixture RMS and rescale the output.
        grad_checkpoint: recompute each block in the backward pass (saves GPU memory).
        output: ``"mapping"`` (the spectrogram itself) or ``"mask"`` (a ratio mask on the mixture's STFT).
        slot_embedding: flow role only: add a learned embedding per slot to the source tokens (the
            regression role always has one), which makes the flow not permutation equivariant.
    """

    def __init__(self, n_sources: int, time_conditioned: bool, dim: int = 192, n_blocks: int = 6,
                 n_mels: int = 80, n_heads: int = 4, ffn_mult: float = 3.0, macaron: bool = True,
                 ffn_kernel: int = 4, bsja_kernel: int = 5, tspa_kernel: tuple[int, int] = (5, 3),
                 norm_groups: int = 4, head_hidden: int = 0, t_freq_dim: int = 128, t_dim: int | None = None,
                 sample_rate: int = 16000, n_fft: int = 320, hop_length: int = 160, compression: float = 0.33,
                 normalize_input: bool = True, grad_checkpoint: bool = False, output: str = "mapping",
                 slot_embedding: bool = False):
        super().__init__()
        if output not in ("mapping", "mask"):
            raise ValueError(f"mb_tflocoformer output = {output!r}; expected 'mapping' or 'mask'")
        self.output = output
        self.n_sources = int(n_sources)
        self.dim = dim
        self.time_conditioned = bool(time_conditioned)
        self.normalize_input = bool(normalize_input)
        self.grad_checkpoint = bool(grad_checkpoint)
        self.stft = CompressedSTFT(n_fft, hop_length, compression)
        self.band = MelBandSplit(n_mels, dim, n_fft, sample_rate, head_hidden)
        self.mix_embed = nn.Parameter(torch.randn(n_mels, dim) * 0.02)
        if not self.time_conditioned:
            t_dim = None
        if self.time_conditioned:
            self.src_embed = nn.Parameter(torch.randn(n_mels, dim) * 0.02)
            if slot_embedding:  # a choice, off in the paper's equivariant flow: see the module docstring
                self.slot_embed = nn.Parameter(torch.randn(self.n_sources, n_mels, dim) * 0.02)
            t_dim = int(t_dim or dim)
            self.time_embed = TimeEmbedding(t_dim, t_freq_dim)
        else:
            self.slot_embed = nn.Parameter(torch.randn(self.n_sources, n_mels, dim) * 0.02)
        hidden = int(round(ffn_mult * dim))
        common = dict(macaron=macaron, ffn_kernel=ffn_kernel, norm_groups=norm_groups, t_dim=t_dim)
        self.blocks = nn.ModuleList()
        for _ in range(n_blocks):
            self.blocks.append(BSJA(dim, n_heads, hidden, time_kernel=bsja_kernel, **common))
            self.blocks.append(TSPA(dim, n_heads, hidden, tf_kernel=tuple(tspa_kernel), **common))
        self.final_norm = RMSGroupNorm(dim, norm_groups)
        if output == "mask":  # the merge starts at zero: every slot starts as the mixture / K
            nn.init.zeros_(self.band.dec_weight)
            nn.init.zeros_(self.band.dec_bias)

    def _scale(self, m: torch.Tensor) -> torch.Tensor:
        if not self.normalize_input:
            return m.new_ones(m.shape[0], 1)
        return sqrt(m.float().square().mean(-1, keepdim=True)).clamp_min(1e-4)

    def _run(self, tokens: torch.Tensor, temb: torch.Tensor | None, length: int,
             mix_spec: torch.Tensor | None = None) -> torch.Tensor:
        x = tokens
        for blk in self.blocks:
            if self.grad_checkpoint and self.training and torch.is_grad_enabled():
                x = _checkpoint(blk, x, temb, use_reentrant=False)
            else:
                x = blk(x, temb)
        x = self.final_norm(x[:, :self.n_sources])
        dev = x.device.type
        with torch.autocast(device_type=dev, enabled=False):
            spec = self.band.merge(x.float())  # [B, K, F, N] complex (compressed)
            if self.output == "mask":  # a complex ratio mask on the mixture's (uncompressed) STFT
                return self.stft.istft((spec + 1.0 / self.n_sources) * mix_spec[:, None], length)
            return self.stft.decode(spec, length)

    def _mask_reference(self, m: torch.Tensor, scale: torch.Tensor) -> torch.Tensor | None:
        """The scaled mixture's STFT that ``output: mask`` multiplies (None for ``mapping``)."""
        return self.stft.stft(m / scale) if self.output == "mask" else None

    def _encode(self, wav: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=wav.device.type, enabled=False):
            return self.band.split(self.stft.encode(wav.float()))  # [B, S, Nb, N, D]


class MBTFLocoformerFlow(MBTFLocoformer):
    """Flow role: ``forward(x_t [B,K,T], t [B], m [B,T]) -> [B,K,T]`` raw velocity (equivariant)."""

    def __init__(self, n_sources: int, **kwargs):
        super().__init__(n_sources, time_conditioned=True, **kwargs)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        if x_t.dim() != 3 or m.dim() != 2 or x_t.shape[0] != m.shape[0] or x_t.shape[-1] != m.shape[-1]:
            raise ValueError(f"expected x_t [B,K,T] and m [B,T], got {tuple(x_t.shape)} and {tuple(m.shape)}")
        if x_t.shape[1] != self.n_sources:
            raise ValueError(f"model built for K={self.n_sources} slots, x_t has {x_t.shape[1]}")
        b, _, length = x_t.shape
        t = torch.as_tensor(t, device=x_t.device, dtype=torch.float32).reshape(-1).expand(b)
        scale = self._scale(m)
        wav = torch.cat([x_t, m[:, None]], dim=1) / scale[:, :, None]
        tokens = self._encode(wav).to(self.mix_embed.dtype)
        src = self.src_embed.expand(self.n_sources, -1, -1)
        if hasattr(self, "slot_embed"):  # built with slot_embedding=True
            src = src + self.slot_embed
        emb = torch.cat([src, self.mix_embed[None]], dim=0)
        tokens = tokens + emb[None, :, :, None, :]
        out = self._run(tokens, self.time_embed(t), length, self._mask_reference(m, scale))
        return (out * scale[:, :, None]).to(x_t.dtype)


class MBTFLocoformerRegression(MBTFLocoformer):
    """Regression role: ``forward(m [B,T]) -> [B,K,T]``; learned slot embeddings, not equivariant."""

    def __init__(self, n_sources: int, **kwargs):
        super().__init__(n_sources, time_conditioned=False, **kwargs)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        if m.dim() != 2:
            raise ValueError(f"expected a mixture batch [B, T], got {tuple(m.shape)}")
        b, length = m.shape
        scale = self._scale(m)
        mix = self._encode(m[:, None] / scale[:, :, None]) + self.mix_embed[None, None, :, None, :]
        n_frames = mix.shape[3]
        slots = self.slot_embed[None, :, :, None, :].expand(b, -1, -1, n_frames, -1)
        tokens = torch.cat([slots, mix], dim=1)
        out = self._run(tokens, None, length, self._mask_reference(m, scale))
        return (out * scale[:, :, None]).to(m.dtype)


@register_architecture("mb_tflocoformer")
def build_mb_tflocoformer(role: str, n_sources: int, data_shape: tuple[int, ...] = (), preset: str = "libri2mix",
                          **kwargs) -> MBTFLocoformer:
    """Registry builder: ``preset`` in :data:`MB_TFLOCOFORMER_PRESETS`, other kwargs override it.

    ``embed_dim`` is accepted as an alias of ``dim`` (Table 7's "Feature Embedding Dim.").

    ``role="flow"`` -> :class:`MBTFLocoformerFlow`; ``role="regression"`` ->
    :class:`MBTFLocoformerRegression`; ``"score"`` is not supported (audio has no BASIS track).
    """
    if data_shape and len(data_shape) != 1:
        raise ValueError(f"mb_tflocoformer separates mono waveforms (data_shape=(T,)), got {data_shape}")
    if preset not in MB_TFLOCOFORMER_PRESETS:
        raise KeyError(f"unknown mb_tflocoformer preset {preset!r}; choose from {sorted(MB_TFLOCOFORMER_PRESETS)}")
    if "embed_dim" in kwargs:  # the paper's "Feature Embedding Dim." is an alias of ``dim``
        embed_dim = kwargs.pop("embed_dim")
        if "dim" in kwargs and kwargs["dim"] != embed_dim:
            raise ValueError(f"embed_dim={embed_dim} and dim={kwargs['dim']} disagree")
        kwargs["dim"] = embed_dim
    cfg = {**MB_TFLOCOFORMER_PRESETS[preset], **kwargs}
    if "tspa_kernel" in cfg:
        cfg["tspa_kernel"] = tuple(cfg["tspa_kernel"])
    if role == "flow":
        return MBTFLocoformerFlow(n_sources, **cfg)
    if role == "regression":
        return MBTFLocoformerRegression(n_sources, **cfg)
    raise ValueError(f"mb_tflocoformer supports roles 'flow' and 'regression', not {role!r} "
                     f"(the score role is the image BASIS baseline)")
