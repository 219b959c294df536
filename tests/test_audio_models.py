"""Audio backbones of the speech track: Conv-TasNet (MixIT teacher) and MB-TFLocoformer.

Forward passes only at small sizes; the paper configurations are built (on the meta
device where they are large) and their parameters counted.
"""
import itertools

import pytest
import torch

from surfbench.nn import architectures, build_model, count_parameters
from surfbench.nn.convtasnet import CONVTASNET_PRESETS, ConvTasNet
from surfbench.nn.locoformer import (
    MB_TFLOCOFORMER_PRESETS,
    CompressedSTFT,
    MBTFLocoformerFlow,
    MBTFLocoformerRegression,
    MelBandSplit,
    TimeEmbedding,
    mel_band_bins,
)

PAPER_PARAMS = 36e6
LENGTHS = (16000, 16037)  # a multiple of every hop, and one that is not


def _loco(role, k, **kw):
    spec = {"arch": "mb_tflocoformer", "preset": "tiny", **kw}
    return build_model(spec, role, k, (16000,))


def _randomize_film(model):
    """FiLM maps are zero-initialised (blocks start unmodulated); give them weights."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for blk in model.blocks:
            blk.film.weight.copy_(torch.randn(blk.film.weight.shape, generator=g) * 0.2)
            blk.film.bias.copy_(torch.randn(blk.film.bias.shape, generator=g) * 0.2)


def test_registered():
    assert {"convtasnet", "mb_tflocoformer"} <= set(architectures())


# ----------------------------------------------------------------------------- Conv-TasNet
@pytest.mark.parametrize("length", LENGTHS)
def test_convtasnet_shapes(length):
    torch.manual_seed(0)
    model = build_model({"arch": "convtasnet"}, "regression", 4, (length,))
    assert isinstance(model, ConvTasNet)
    m = torch.randn(2, length)
    out = model(m)
    assert out.shape == (2, 4, length)
    assert torch.isfinite(out).all()


def test_convtasnet_options():
    torch.manual_seed(0)
    m = torch.randn(2, 3001)
    mc = build_model({"arch": "convtasnet", "mixture_consistency": True, "mask_act": "relu"}, "regression", 3, (3001,))
    out = mc(m)
    assert out.shape == (2, 3, 3001)
    torch.testing.assert_close(out.sum(1), m, atol=1e-5, rtol=1e-5)
    # sigmoid masks: every slot's encoder coefficients are a fraction of the mixture's
    plain = build_model({"arch": "convtasnet"}, "regression", 2, (3001,))
    assert plain.mask_act == "sigmoid"


@pytest.mark.parametrize("preset", ["small", "paper"])
def test_convtasnet_decoder_is_the_transposed_convolution(preset):
    """The decoder's matrix product + overlap-add against PyTorch's own ``conv_transpose1d`` with the same
    weights, forward and both gradients (float64, so any misplaced sample shows far above rounding)."""
    torch.manual_seed(0)
    model = build_model({"arch": "convtasnet", "preset": preset}, "regression", 2, (4000,)).double()
    n_frames = 7
    est = torch.randn(3, model.n_filters, n_frames, dtype=torch.float64, requires_grad=True)
    ours = model._decode(est)
    ref = torch.nn.functional.conv_transpose1d(est, model.decoder.weight, stride=model.stride).squeeze(1)
    assert ours.shape == ref.shape == (3, (n_frames + 1) * model.stride)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(ours, (est, model.decoder.weight), g)
    want = torch.autograd.grad(ref, (est, model.decoder.weight), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_convtasnet_global_layer_norm_by_hand():
    """gLN (Luo & Mesgarani Eq. 13): per example, the mean and biased variance over channels and time, eps under
    the square root, then gamma and beta per channel; against the formula written out in float64."""
    from surfbench.nn.convtasnet import GlobalLayerNorm

    torch.manual_seed(0)
    norm = GlobalLayerNorm(5, eps=1e-3).double()
    with torch.no_grad():
        norm.gamma.copy_(torch.randn(1, 5, 1))
        norm.beta.copy_(torch.randn(1, 5, 1))
    x = torch.randn(2, 5, 11, dtype=torch.float64) * torch.tensor([1.0, 30.0]).view(2, 1, 1) + 4.0
    mean = x.mean(dim=(1, 2), keepdim=True)
    var = ((x - mean) ** 2).sum(dim=(1, 2), keepdim=True) / (5 * 11)
    want = norm.gamma * (x - mean) / torch.sqrt(var + 1e-3) + norm.beta
    torch.testing.assert_close(norm(x), want, rtol=1e-12, atol=1e-12)
    # per example: scaling one example does not change the other's output
    x2 = x.clone()
    x2[1] *= 10
    torch.testing.assert_close(norm(x2)[0], want[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("role", ["flow", "score"])
def test_convtasnet_rejects_other_roles(role):
    with pytest.raises(ValueError, match="regression"):
        build_model({"arch": "convtasnet"}, role, 2, (16000,))


def test_convtasnet_paper_size():
    n = count_parameters(build_model({"arch": "convtasnet", "preset": "paper"}, "regression", 4, (32000,)))
    small = count_parameters(build_model({"arch": "convtasnet"}, "regression", 4, (32000,)))
    print(f"\nConv-TasNet parameters: paper {n:,}  small {small:,}")
    assert 1e6 <= n <= 5e6  # "a smaller ConvTasNet"
    assert small < n


# ----------------------------------------------------------------------------- STFT front end
@pytest.mark.parametrize("length", LENGTHS)
def test_compressed_stft_round_trip(length):
    torch.manual_seed(0)
    stft = CompressedSTFT(n_fft=320, hop_length=160, compression=0.33)
    x = torch.randn(3, length) * 0.3
    spec = stft.stft(x)
    assert spec.shape == (3, 161, length // 160 + 1)
    xc = stft.compress(spec)
    torch.testing.assert_close(xc.abs(), spec.abs() ** 0.33, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.angle(xc[spec.abs() > 1e-3]), torch.angle(spec[spec.abs() > 1e-3]),
                               atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(stft.decompress(xc), spec, atol=1e-4, rtol=1e-4)
    assert (stft.decode(stft.encode(x), length) - x).abs().max() < 1e-4


def test_window_energy_normalised():
    stft = CompressedSTFT(320, 160)
    w2 = stft.window.double() ** 2
    # squared overlap-add at hop 160 averages to 1 (energy-preserving STFT)
    ola = w2[:160] + w2[160:]
    assert abs(float(ola.mean()) - 1.0) < 1e-6
    x = torch.randn(1, 16000, dtype=torch.float32)
    e_spec = float(stft.stft(x).abs().square().sum())
    # one-sided spectrum holds ~half the energy of the two-sided one
    assert 0.4 < e_spec / float(x.square().sum()) < 0.6


def test_mel_bands_cover_every_bin():
    bands = mel_band_bins(80, 320, 16000)
    assert len(bands) == 80 and all(len(b) >= 1 for b in bands)
    assert set(itertools.chain.from_iterable(bands)) == set(range(161))
    assert bands[0][0] == 0 and bands[-1][-1] == 160


@pytest.mark.parametrize("n_mels", [80, 8])
@pytest.mark.parametrize("length", LENGTHS)
def test_band_split_and_merge_identity_reconstructs(n_mels, length):
    """STFT -> compression -> band split -> (identity) -> band merge -> decompression -> iSTFT."""
    torch.manual_seed(0)
    stft = CompressedSTFT(320, 160)
    width = max(len(b) for b in mel_band_bins(n_mels, 320, 16000))
    bs = MelBandSplit(n_mels, 2 * width, 320, 16000)
    with torch.no_grad():  # each band copies its own Re/Im bins into its first 2 n_b features
        bs.enc_weight.zero_(), bs.dec_weight.zero_(), bs.enc_bias.zero_(), bs.dec_bias.zero_()
        row = 0
        for band in bs.bands:
            for j in range(2 * len(band)):
                bs.enc_weight[row, j] = 1.0
                bs.dec_weight[row, j] = 1.0
                row += 1
    x = torch.randn(2, 3, length) * 0.2
    h = bs.split(stft.encode(x))
    assert h.shape == (2, 3, n_mels, length // 160 + 1, 2 * width)
    y = stft.decode(bs.merge(h), length)
    assert (y - x).abs().max() < 1e-4


# ----------------------------------------------------------------------------- MB-TFLocoformer
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("k", [2, 3])
def test_locoformer_shapes(length, k):
    torch.manual_seed(0)
    flow = _loco("flow", k)
    reg = _loco("regression", k)
    assert isinstance(flow, MBTFLocoformerFlow) and isinstance(reg, MBTFLocoformerRegression)
    x, m, t = torch.randn(2, k, length), torch.randn(2, length), torch.rand(2)
    v = flow(x, t, m)
    assert v.shape == (2, k, length) and torch.isfinite(v).all()
    out = reg(m)
    assert out.shape == (2, k, length) and torch.isfinite(out).all()


@pytest.mark.parametrize("length", LENGTHS)
def test_locoformer_paper_front_end_small_body(length):
    """The paper's STFT (20 ms / 10 ms) and 16 mel bands with a tiny body: shapes and gradients."""
    torch.manual_seed(0)
    flow = _loco("flow", 2, n_mels=16, n_fft=320, hop_length=160, n_blocks=2, n_heads=2, macaron=True)
    x, m, t = torch.randn(2, 2, length), torch.randn(2, length), torch.rand(2)
    v = flow(x, t, m)
    assert v.shape == (2, 2, length)
    v.square().mean().backward()
    grads = [p.grad for p in flow.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_flow_is_permutation_equivariant():
    torch.manual_seed(0)
    k = 3
    flow = _loco("flow", k, n_blocks=2, n_mels=12, macaron=True).eval()
    _randomize_film(flow)
    x, m, t = torch.randn(2, k, 4000), torch.randn(2, 4000), torch.rand(2)
    with torch.no_grad():
        v = flow(x, t, m)
        for perm in ([1, 0, 2], [2, 0, 1], [2, 1, 0]):
            vp = flow(x[:, perm], t, m)
            torch.testing.assert_close(vp, v[:, perm], atol=1e-5, rtol=1e-5)


def test_flow_depends_on_t_and_inputs():
    torch.manual_seed(0)
    flow = _loco("flow", 2).eval()
    _randomize_film(flow)
    x, m = torch.randn(2, 2, 4000), torch.randn(2, 4000)
    with torch.no_grad():
        v1 = flow(x, torch.full((2,), 0.1), m)
        v2 = flow(x, torch.full((2,), 0.9), m)
        v3 = flow(x + torch.randn_like(x), torch.full((2,), 0.1), m)
    assert (v1 - v2).abs().max() > 1e-3
    assert (v1 - v3).abs().max() > 1e-3
    # per-example t: changing example 0's t leaves example 1 untouched
    with torch.no_grad():
        v4 = flow(x, torch.tensor([0.9, 0.1]), m)
    torch.testing.assert_close(v4[1], v1[1], atol=1e-5, rtol=1e-5)
    assert (v4[0] - v1[0]).abs().max() > 1e-3


def test_regression_has_no_time_parameters():
    reg = _loco("regression", 2, n_blocks=2, macaron=True)
    names = [n for n, _ in reg.named_parameters()]
    assert not any("time_embed" in n or "film" in n or "src_embed" in n for n in names)
    assert not any(isinstance(mod, TimeEmbedding) for mod in reg.modules())
    assert any("slot_embed" in n for n in names)  # learned slot queries: not equivariant
    flow = _loco("flow", 2, n_blocks=2, macaron=True)
    assert count_parameters(reg) < count_parameters(flow)
    with pytest.raises(TypeError):
        reg(torch.randn(1, 2, 3200), torch.rand(1), torch.randn(1, 3200))


def test_locoformer_rejects_score_role_and_bad_shapes():
    with pytest.raises(ValueError, match="flow"):
        build_model({"arch": "mb_tflocoformer", "preset": "tiny"}, "score", 1, (16000,))
    flow = _loco("flow", 2)
    with pytest.raises(ValueError):
        flow(torch.randn(1, 3, 3200), torch.rand(1), torch.randn(1, 3200))


def _count(preset, role):
    with torch.device("meta"):
        model = build_model({"arch": "mb_tflocoformer", "preset": preset}, role, 4, (32000,))
    return count_parameters(model)


def test_paper_configuration_parameter_counts():
    counts = {(p, r): _count(p, r) for p in ("libri2mix", "audioset", "audioset36m") for r in ("flow", "regression")}
    print("\nMB-TFLocoformer parameters (4 output sources):")
    for (p, r), n in counts.items():
        print(f"  {p:12s} {r:10s} {n / 1e6:7.2f}M  ({n / PAPER_PARAMS - 1:+.1%} vs 36M)")
    defaults = MB_TFLOCOFORMER_PRESETS["libri2mix"]
    assert defaults["dim"] == 192 and defaults["n_blocks"] == 6 and defaults["n_mels"] == 80
    for role in ("flow", "regression"):
        # Table 7 (Libri2Mix): 36M +- 10%
        assert abs(counts[("libri2mix", role)] / PAPER_PARAMS - 1) <= 0.10
        # D=384 with a reduced FFN reaches the same budget
        assert abs(counts[("audioset36m", role)] / PAPER_PARAMS - 1) <= 0.10
        # Table 8's hyper-parameters (D=384) cannot give 36M: about 4x
        assert counts[("audioset", role)] > 3 * PAPER_PARAMS
    # the builder's default is the paper's Libri2Mix model
    with torch.device("meta"):
        default = build_model({"arch": "mb_tflocoformer"}, "flow", 4, (32000,))
    assert count_parameters(default) == counts[("libri2mix", "flow")]


def test_presets_are_constructor_arguments():
    for name in MB_TFLOCOFORMER_PRESETS:
        with torch.device("meta"):
            build_model({"arch": "mb_tflocoformer", "preset": name}, "regression", 2, (16000,))
    for name in CONVTASNET_PRESETS:
        build_model({"arch": "convtasnet", "preset": name}, "regression", 2, (16000,))
    with pytest.raises(KeyError):
        build_model({"arch": "mb_tflocoformer", "preset": "nope"}, "flow", 2, (16000,))
    # embed_dim is an alias of dim
    model = build_model({"arch": "mb_tflocoformer", "preset": "tiny", "embed_dim": 8}, "flow", 2, (16000,))
    assert model.dim == 8
    with pytest.raises(ValueError):
        build_model({"arch": "mb_tflocoformer", "embed_dim": 8, "dim": 16}, "flow", 2, (16000,))


# ----------------------------------------------------------------------------- output: mask
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("k", [2, 3])
def test_mask_output_starts_as_the_mixture_over_k(length, k):
    """``output: mask``: the merge starts at zero, so an untrained model puts m / K in every slot (the
    STFT round trip of the mixture, checked against the mixture itself), whatever x_t and t are."""
    torch.manual_seed(0)
    m = torch.randn(2, length)
    with torch.no_grad():
        out_r = _loco("regression", k, output="mask")(m)
        out_f = _loco("flow", k, output="mask")(torch.randn(2, k, length), torch.rand(2), m)
    want = (m / k).unsqueeze(1).expand(2, k, length)
    torch.testing.assert_close(out_r, want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out_f, want, atol=1e-5, rtol=1e-4)
    # the default (spectral mapping) does not: its untrained output is unrelated to the mixture
    with torch.no_grad():
        mapped = _loco("regression", k)(m)
    assert (mapped - want).abs().max() > 1e-2


def test_mask_output_is_a_ratio_mask_on_the_mixture_stft():
    """After training steps the output is (merge + 1/K) ⊙ STFT(m) through the iSTFT: a hand-built mask
    (a constant per slot through the merge bias) gives that constant times the mixture."""
    torch.manual_seed(0)
    model = _loco("regression", 2, output="mask")
    with torch.no_grad():
        model.band.dec_bias.fill_(0.25)  # every Re bin and Im bin of every slot: mask 0.5 + 0.25 + 0.25j
    m = torch.randn(2, 16000)
    with torch.no_grad():
        out = model(m)
    stft = model.stft
    want = stft.istft(torch.complex(torch.tensor(0.75), torch.tensor(0.25)) * stft.stft(m), m.shape[-1])
    torch.testing.assert_close(out, want.unsqueeze(1).expand_as(out), atol=1e-5, rtol=1e-4)


def test_mask_flow_stays_equivariant_and_output_is_checked():
    torch.manual_seed(0)
    flow = _loco("flow", 3, output="mask", n_blocks=2, n_mels=12).eval()
    _randomize_film(flow)
    with torch.no_grad():  # give the merge weights so the slots differ
        flow.band.dec_weight.normal_(0, 0.2)
    x, m, t = torch.randn(2, 3, 4000), torch.randn(2, 4000), torch.rand(2)
    with torch.no_grad():
        v = flow(x, t, m)
        torch.testing.assert_close(flow(x[:, [2, 0, 1]], t, m), v[:, [2, 0, 1]], atol=1e-5, rtol=1e-5)
    assert (v[:, 0] - v[:, 1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="output"):
        _loco("regression", 2, output="masks")


# ----------------------------------------------------------------------------- flow slot_embedding
def test_flow_slot_embedding_is_added_to_the_source_tokens_and_breaks_equivariance():
    """``slot_embedding``: a per-slot embedding on the source tokens. The same vector in every slot is the
    equivariant flow with that vector added to its source embedding (hand-worked); different vectors make the
    flow tell its slots apart (swapping the inputs no longer swaps the outputs)."""
    torch.manual_seed(0)
    plain = _loco("flow", 3, n_blocks=2, n_mels=12).eval()
    slotted = _loco("flow", 3, n_blocks=2, n_mels=12, slot_embedding=True).eval()
    assert not hasattr(plain, "slot_embed")
    missing = slotted.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing == ["slot_embed"]
    _randomize_film(plain)
    _randomize_film(slotted)
    x, m, t = torch.randn(2, 3, 4000), torch.randn(2, 4000), torch.rand(2)
    c = torch.randn(12, plain.dim) * 0.5
    with torch.no_grad():
        slotted.slot_embed.copy_(c.expand(3, -1, -1))
        plain.src_embed.add_(c)
        torch.testing.assert_close(slotted(x, t, m), plain(x, t, m), atol=1e-5, rtol=1e-5)
        slotted.slot_embed.normal_(0, 0.5)
        v = slotted(x, t, m)
        swapped = slotted(x[:, [1, 0, 2]], t, m)
    assert (swapped - v[:, [1, 0, 2]]).abs().max() > 1e-3
    # an untrained mask flow still starts at m / K in every slot
    with torch.no_grad():
        out = _loco("flow", 2, output="mask", slot_embedding=True)(torch.randn(2, 2, 4000), torch.rand(2), m)
    torch.testing.assert_close(out, (m / 2).unsqueeze(1).expand_as(out), atol=1e-5, rtol=1e-4)
