"""Permutation (slot-swap) equivariance of every registered architecture.

The t = 0 alignment of FLOSS (``surfbench.flow.floss_align``, paper Eq. 7-9) gives a valid flow
matching path only if the velocity field is permutation-equivariant at t = 0 (paper App. C.1,
Prop. C.1, assumption 3): ``v(σx, 0, m) = σ v(x, 0, m)``.  This file measures, for every
architecture the registry builds, the relative change

    e(P) = ||f(P x) - P f(x)|| / ||f(x)||

under a permutation ``P`` of the K source slots, and asserts the property each architecture is
*documented* to have (:data:`FLOW_EQUIVARIANT`):

* ``mb_tflocoformer`` flow: equivariant (every weight shared by the K source tokens, the mixture is an
  extra token with its own type embedding; ``surfbench/nn/locoformer.py``) -> ``e`` at float32
  round-off (< ``EQUIVARIANT_TOL``);
* ``unet`` / ``ncsnpp`` flow, ``slot_sharing: stacked`` (the default): the K slots are stacked as input
  and output *channels* (``surfbench/nn/image_adapters.py``, ``FlowNet``) -> not equivariant, ``e`` far
  above ``NOT_EQUIVARIANT_MIN`` (1.2-1.9 on the raw or ``P⊥``-projected velocity);
* ``unet`` / ``ncsnpp`` flow, ``slot_sharing: shared`` (``SharedSlotFlowNet``: one backbone shared by
  the slots, slot k sees ``[x_k, m, Σ_{j≠k} x_j]``) -> equivariant.

Each flow model is measured raw, behind the mixture-consistency projection layer
(``consistent_velocity``, ``P⊥``) and behind ``PreconditionedFlow`` (``training.flow_preconditioning:
edm``, both ``sigma_z_scale`` settings) + ``P⊥``: the chains the methods use.  Points: the alignment
input itself (``t = 0``, ``x0 = m/K + P⊥z`` of Eq. 4), where the velocity *and* the alignment estimate
``x̂1 = x0 + v`` are compared, and a random ``(x_t, t)`` with per-example ``t``.  ``P⊥`` and the
preconditioning commute with slot permutations: they neither create nor repair equivariance
(``test_projection_and_preconditioning_commute_with_permutations``).

Regression models (``forward(m) -> [B, K, *d]``) have no slot input, so equivariance is not defined for
them; the only slot-symmetric regression model outputs K identical slots, which separates nothing.
Every regression model must therefore break the slot symmetry: ``||P f(m) - f(m)|| / ||f(m)||`` clearly
above zero (the locoformer's learned ``slot_embed``, the output channels of the image models, the
per-slot masks of Conv-TasNet).  The score role has one source and no slots.

Initialisation: several layers are zero-initialised (NCSN++ ``init_scale = 0``: the last conv of every
residual block, the attention outputs and the lowest-resolution output conv; the locoformer's FiLM
maps, so ``t`` has no effect at init).  Every model is measured at init *and* after :func:`_perturb`
adds random weights everywhere.  Models are in ``eval()`` mode: NCSN++ has dropout 0.1, which in
training mode makes any model stochastic, hence not equivariant call to call.

Sensitivity: ``test_detector_catches_a_broken_locoformer`` breaks the locoformer on purpose (an embedding
on slot 0 only, std 0.02 or 1e-3; positions over the source axis) and checks the measurement sees it.
"""
from __future__ import annotations

import math

import pytest
import torch

from surfbench.flow import PreconditionedFlow, consistent_velocity, mixture_consistent_start, project_perp
from surfbench.nn import architectures, build_model
from surfbench.nn.image_adapters import SLOT_SHARING

#: Documented flow-role property of each architecture (True = permutation-equivariant over the K slots).
#: Keep in step with docs/architecture.md and the model docstrings: a change here is a change of whether
#: the paper's App. C.1 assumption holds for that architecture.
FLOW_EQUIVARIANT = {
    "mb_tflocoformer": True,
    "unet": False,  # with the default slot_sharing: stacked
    "ncsnpp": False,
}
#: The image models' ``slot_sharing`` model key (``surfbench.nn.image_adapters.SLOT_SHARING``).
SLOT_SHARING_EQUIVARIANT = {"stacked": False, "shared": True}
IMAGE_ARCHS = {"unet", "ncsnpp"}
#: Architectures without a flow role (building one raises ValueError).
NO_FLOW_ROLE = {"convtasnet"}

EQUIVARIANT_TOL = 1e-5  # float32 round-off on the velocity: measured <= 1.5e-6 (paper-size locoformer)
#: On ``x̂1 = x0 + v(x0, 0, m)`` under EDM preconditioning ``c_skip = -1`` cancels ``P⊥x0``, leaving the
#: small ``c_out·P⊥F``: round-off of ``x0``'s size relative to a small result, measured up to 6e-6.
ALIGNMENT_TOL = 1e-4
#: "Clearly above" (1000x the tolerance).  Smallest measured for the channel-stacked image models: 0.04,
#: the EDM-preconditioned velocity at t = 0, dominated by its analytic, equivariant ``c_skip·P⊥x0`` term.
NOT_EQUIVARIANT_MIN = 0.01
SLOT_ASYMMETRY_MIN = 0.02  # regression: smallest measured 0.14 (locoformer tiny, K = 3, at init: its slot_embed)

# ---------------------------------------------------------------------------------------------- cases
TINY_UNET = {"arch": "unet", "base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1}  # ci profile
TINY_PROFILE_UNET = {"arch": "unet", "base_channels": 16, "channel_mults": [1, 2], "num_res_blocks": 1,
                     "fourier_scale": 1.0}  # the tiny profile's flow model
TINY_NCSNPP = {"arch": "ncsnpp", "nf": 16, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [16]}
PAPER_NCSNPP = {"arch": "ncsnpp"}  # Table 6 defaults (15.9M flow parameters at 3x32x32; < 1 s per forward)
TINY_LOCO = {"arch": "mb_tflocoformer", "preset": "tiny"}  # tiny profile
CI_LOCO = {"arch": "mb_tflocoformer", "preset": "tiny", "dim": 8}  # ci profile
PAPER_LOCO = {"arch": "mb_tflocoformer"}  # Table 7 (libri2mix preset: 37.6M flow / 34.9M regression)
CONVTASNET = {"arch": "convtasnet"}  # "small" preset, tiny / ci profiles
PAPER_CONVTASNET = {"arch": "convtasnet", "preset": "paper"}

MNIST, CIFAR, AUDIO = (1, 28, 28), (3, 32, 32), (16000,)
AUDIO_LEN = 4000  # 0.25 s: the audio models accept any length
PAPER_AUDIO_LEN = 800  # 6 STFT frames: ~1.3 s per forward of the 37.6M-parameter locoformer on one thread

# (spec, data_shape, K values)
FLOW_CASES = [
    pytest.param(TINY_UNET, MNIST, (2,), id="unet-ci-mnist"),
    pytest.param(TINY_PROFILE_UNET, CIFAR, (2,), id="unet-tiny-cifar"),
    pytest.param(dict(TINY_UNET, channel_mults=[1, 2, 2], attn_resolutions=[7]), MNIST, (2, 3), id="unet-attn-mnist"),
    pytest.param(TINY_NCSNPP, CIFAR, (2,), id="ncsnpp-tiny-cifar"),
    pytest.param(PAPER_NCSNPP, CIFAR, (2,), id="ncsnpp-paper-cifar"),
    pytest.param(TINY_LOCO, AUDIO, (2, 3), id="loco-tiny"),
    pytest.param(CI_LOCO, AUDIO, (2,), id="loco-ci"),
    pytest.param(dict(TINY_LOCO, n_blocks=2, macaron=True, n_mels=12, head_hidden=8), AUDIO, (2, 3), id="loco-macaron"),
    pytest.param(dict(TINY_UNET, slot_sharing="stacked"), MNIST, (2,), id="unet-stacked-mnist"),
    pytest.param(dict(TINY_UNET, slot_sharing="shared"), MNIST, (2, 3), id="unet-shared-mnist"),
    pytest.param(dict(TINY_PROFILE_UNET, slot_sharing="shared", attn_resolutions=[16]), CIFAR, (2,),
                 id="unet-shared-cifar"),
    pytest.param(dict(TINY_NCSNPP, slot_sharing="shared"), CIFAR, (2, 3), id="ncsnpp-shared-cifar"),
]
PAPER_FLOW_CASES = [pytest.param(PAPER_LOCO, AUDIO, (2,), id="loco-paper")]

REGRESSION_CASES = [
    pytest.param(TINY_UNET, MNIST, (2, 4), id="unet-ci-mnist"),  # 4 = the MixIT teacher's output slots
    pytest.param(TINY_NCSNPP, CIFAR, (2,), id="ncsnpp-tiny-cifar"),
    pytest.param(PAPER_NCSNPP, CIFAR, (2, 4), id="ncsnpp-paper-cifar"),
    pytest.param(TINY_LOCO, AUDIO, (2, 3), id="loco-tiny"),
    pytest.param(PAPER_LOCO, AUDIO, (2,), id="loco-paper"),
    pytest.param(CONVTASNET, AUDIO, (2, 4), id="convtasnet-small"),
    pytest.param(dict(CONVTASNET, mixture_consistency=True, mask_act="relu"), AUDIO, (4,), id="convtasnet-mc-relu"),
    pytest.param(PAPER_CONVTASNET, AUDIO, (4,), id="convtasnet-paper"),
]

#: Smallest spec of each architecture, to check that every registered one is covered above.
SMALLEST = {"unet": (TINY_UNET, MNIST), "ncsnpp": (TINY_NCSNPP, CIFAR),
            "mb_tflocoformer": (CI_LOCO, AUDIO), "convtasnet": (CONVTASNET, AUDIO)}


# ---------------------------------------------------------------------------------------------- helpers
def _perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere, so that zero-initialised layers (FiLM, NCSN++ init_scale 0) take part."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.add_(torch.randn(p.shape, generator=g) * (0.3 / math.sqrt(p[0].numel())))
            else:
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return model


def _perms(k: int) -> list[list[int]]:
    """A transposition of the first two slots, and for K > 2 a cyclic shift too."""
    swap = [1, 0] + list(range(2, k))
    return [swap] if k == 2 else [swap, list(range(1, k)) + [0]]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).double().norm() / b.double().norm())


def equivariance_error(f, x: torch.Tensor, t: torch.Tensor, m: torch.Tensor, perm) -> tuple[float, float, float]:
    """``(e_v, spread, e_x̂1)`` of a velocity function ``f`` for the slot permutation ``perm``:

    * ``e_v = ||f(Px) - P f(x)|| / ||f(x)||``, the equivariance error of the velocity;
    * ``spread = ||P f(x) - f(x)|| / ||f(x)||``: how different the output slots are (a model with
      identical output slots is trivially equivariant, so the equivariant cases require a spread);
    * ``e_x̂1``: the same error for what ``floss_align`` compares with the permuted targets at ``t = 0``,
      ``P⊥ x̂1 = P⊥(x + f(x))`` (the slot mean ``m/K`` of ``x̂1`` is the same in every slot and does not
      move the argmin).  Under ``PreconditionedFlow`` at ``t = 0``, ``c_skip = -1`` cancels ``P⊥x0``
      analytically and ``x̂1 = m/K + c_out P⊥F``: the network's share of ``v`` is small
      (``c_out = sigma_data``) but alone decides the alignment, so ``e_v`` understates what matters there.
    """
    with torch.no_grad():
        v = f(x, t, m)
        vp = f(x[:, perm], t, m)
    assert torch.isfinite(v).all() and float(v.norm()) > 0
    x1_hat, x1_hat_p = project_perp(x + v), project_perp(x[:, perm] + vp)
    assert float(x1_hat.norm()) > 0
    return _rel(vp, v[:, perm]), _rel(v[:, perm], v), _rel(x1_hat_p, x1_hat[:, perm])


def _inputs(shape, k, length, seed=0, batch=2):
    """``x`` (sources-like), ``m`` (near their sum), ``z`` (start noise) and ``t ~ U[0, 1)`` per example."""
    g = torch.Generator().manual_seed(seed)
    d = (length,) if length else tuple(shape)
    x = torch.randn(batch, k, *d, generator=g)
    m = x.sum(1) + 0.1 * torch.randn(batch, *d, generator=g)
    z = torch.randn(batch, k, *d, generator=g)
    return x, m, z, torch.rand(batch, generator=g)


def _velocity_fns(net, k):
    """The raw network, ``P⊥ net`` and ``P⊥ PreconditionedFlow(net)``, as the methods build them."""
    return {
        "raw": net,
        "pperp": consistent_velocity(net),
        "edm+pperp": consistent_velocity(PreconditionedFlow(net, k, sigma_z=1.0, sigma_data=0.09)),
        "edm-rms+pperp": consistent_velocity(PreconditionedFlow(net, k, sigma_z=1.0, sigma_data=0.5,
                                                                sigma_z_scale="mixture_rms")),
    }


def _measure_flow(spec, shape, k, length, perturb, wrappers=None, random_t=True, batch=2):
    """All measurements of one flow model: a list of ``(label, error, slot spread)``.

    For every wrapper and permutation: ``v`` and ``x̂1`` at the alignment input (``t = 0``, ``x0`` of
    Eq. 4), and ``v`` at a random ``(x_t, t)`` if ``random_t``."""
    torch.manual_seed(0)
    net = build_model(spec, "flow", k, shape).eval()
    if perturb:
        _perturb(net)
    x, m, z, t = _inputs(shape, k, length, batch=batch)
    x0 = mixture_consistent_start(m, z)
    out = []
    for name, f in _velocity_fns(net, k).items():
        if wrappers is not None and name not in wrappers:
            continue
        for perm in _perms(k):
            e_v, spread, e_x1 = equivariance_error(f, x0, torch.zeros(batch), m, perm)
            out += [(f"{name} t=0,x0 v perm={perm}", e_v, spread), (f"{name} t=0,x0 x̂1 perm={perm}", e_x1, spread)]
            if random_t:
                e_v, spread, _ = equivariance_error(f, x, t, m, perm)
                out.append((f"{name} t~U v perm={perm}", e_v, spread))
    return out


def documented_flow_equivariance(spec: dict) -> bool:
    if spec["arch"] in IMAGE_ARCHS:
        return SLOT_SHARING_EQUIVARIANT[spec.get("slot_sharing", "stacked")]
    return FLOW_EQUIVARIANT[spec["arch"]]


def _check_flow(spec, out):
    arch = spec["arch"] + (f" (slot_sharing: {spec['slot_sharing']})" if "slot_sharing" in spec else "")
    if documented_flow_equivariance(spec):
        for label, e, spread in out:
            tol = ALIGNMENT_TOL if "x̂1" in label else EQUIVARIANT_TOL
            assert e < tol, f"{arch} is documented as permutation-equivariant, but {label}: error {e:.3g}"
            assert spread > SLOT_ASYMMETRY_MIN, f"{label}: output slots (almost) identical ({spread:.3g}): vacuous"
    else:
        for label, e, _ in out:
            assert e > NOT_EQUIVARIANT_MIN, (
                f"{arch} is documented as NOT permutation-equivariant (slots stacked as channels), but {label} "
                f"changes by only {e:.3g}: update FLOW_EQUIVARIANT and the documentation if this is intended")


# ---------------------------------------------------------------------------------------------- tests
def test_every_registered_architecture_is_covered():
    """A new architecture (or a new flow role) must declare its documented property here."""
    covered = {p.values[0]["arch"] for p in FLOW_CASES + PAPER_FLOW_CASES + REGRESSION_CASES}
    for arch in architectures():
        assert arch in SMALLEST and arch in covered, f"architecture {arch!r} has no equivariance case"
        spec, shape = SMALLEST[arch]
        try:
            build_model(spec, "flow", 2, shape)
            has_flow = True
        except ValueError:
            has_flow = False
        if has_flow:
            assert arch in FLOW_EQUIVARIANT, f"{arch!r} builds a flow model: document whether it is equivariant"
        else:
            assert arch in NO_FLOW_ROLE
        build_model(spec, "regression", 2, shape)  # every architecture has a regression role
    assert set(SLOT_SHARING) == set(SLOT_SHARING_EQUIVARIANT)
    shared = {(p.values[0]["arch"], p.values[0].get("slot_sharing", "stacked")) for p in FLOW_CASES}
    assert {(a, v) for a in IMAGE_ARCHS for v in SLOT_SHARING} <= shared, "every image arch x slot_sharing value"


@pytest.mark.parametrize("role", ["regression", "score"])
def test_slot_sharing_is_a_flow_only_choice(role):
    with pytest.raises(ValueError, match="flow role only"):
        build_model(dict(TINY_UNET, slot_sharing="shared"), role, 2, MNIST)
    with pytest.raises(ValueError, match="slot_sharing"):
        build_model(dict(TINY_UNET, slot_sharing="tied"), "flow", 2, MNIST)


@pytest.mark.parametrize("perturb", [False, True], ids=["init", "perturbed"])
@pytest.mark.parametrize("spec,shape,ks", FLOW_CASES)
def test_flow_slot_swap(spec, shape, ks, perturb):
    length = AUDIO_LEN if len(shape) == 1 else None
    for k in ks:
        _check_flow(spec, _measure_flow(spec, shape, k, length, perturb))


@pytest.mark.parametrize("spec,shape,ks", PAPER_FLOW_CASES)
def test_paper_size_flow_slot_swap(spec, shape, ks):
    """Paper configuration (perturbed), at the alignment input, one short example (~3 s)."""
    for k in ks:
        out = _measure_flow(spec, shape, k, PAPER_AUDIO_LEN, perturb=True, wrappers=("raw",), random_t=False, batch=1)
        _check_flow(spec, out)


@pytest.mark.parametrize("perturb", [False, True], ids=["init", "perturbed"])
@pytest.mark.parametrize("spec,shape,ks", REGRESSION_CASES)
def test_regression_breaks_slot_symmetry(spec, shape, ks, perturb):
    """No slot input, so no equivariance to test: the K outputs must differ (else nothing is separated),
    with and without the mixture-consistency projection the methods apply."""
    paper_loco = spec == PAPER_LOCO
    length = None if len(shape) != 1 else PAPER_AUDIO_LEN if paper_loco else AUDIO_LEN
    for k in ks:
        torch.manual_seed(0)
        net = build_model(spec, "regression", k, shape).eval()
        if perturb:
            _perturb(net)
        _, m, _, _ = _inputs(shape, k, length, batch=1 if paper_loco else 2)
        with torch.no_grad():
            est = net(m)
        assert est.shape == (m.shape[0], k, *m.shape[1:]) and torch.isfinite(est).all()
        consistent = project_perp(est) + m.unsqueeze(1) / k  # Method.mixture_consistent
        for label, y in (("raw", est), ("mixture-consistent", consistent)):
            for perm in _perms(k):
                spread = _rel(y[:, perm], y)
                assert spread > SLOT_ASYMMETRY_MIN, (
                    f"{label} K={k} perm={perm}: output slots nearly identical ({spread:.3g})")


def test_projection_and_preconditioning_commute_with_permutations():
    """``P⊥`` and ``PreconditionedFlow`` are equivariant wrappers: an equivariant toy net stays
    equivariant and a slot-specific one stays broken, whatever the wrapper."""
    k, d = 3, 5
    g = torch.Generator().manual_seed(0)
    w_shared = torch.randn(d, d, generator=g)
    w_slot = torch.randn(k, d, d, generator=g)

    def shared(x, t, m):  # per-slot map with shared weights + a symmetric function of all slots
        return torch.tanh(x @ w_shared + x.sum(1, keepdim=True) + m[:, None] + t[:, None, None])

    def per_slot(x, t, m):  # slot-specific weights: not equivariant
        return torch.tanh(torch.einsum("bkd,kde->bke", x, w_slot) + m[:, None])

    x, m, z = torch.randn(2, k, d, generator=g), torch.randn(2, d, generator=g), torch.randn(2, k, d, generator=g)
    x0, t = mixture_consistent_start(m, z), torch.rand(2, generator=g)
    for name, f in _velocity_fns(shared, k).items():
        for xx, tt in ((x0, torch.zeros(2)), (x, t)):
            for perm in _perms(k):
                e_v, _, e_x1 = equivariance_error(f, xx, tt, m, perm)
                assert e_v < 1e-6 and e_x1 < 1e-5, name
    for name, f in _velocity_fns(per_slot, k).items():
        e_v, _, e_x1 = equivariance_error(f, x0, torch.zeros(2), m, _perms(k)[0])
        assert e_v > NOT_EQUIVARIANT_MIN and e_x1 > NOT_EQUIVARIANT_MIN, name


def _break_slot_embedding(net, scale):
    """Deliberate fault: an extra embedding added to the tokens of source slot 0 only."""
    orig = net._encode
    bump = torch.randn(net.band.n_bands, net.dim, generator=torch.Generator().manual_seed(3)) * scale

    def _encode(wav):
        h = orig(wav).clone()
        h[:, 0] = h[:, 0] + bump[:, None, :]
        return h

    net._encode = _encode


def _break_source_positions(monkeypatch):
    """Deliberate fault: rotary positions over the source axis in the TSPA source branch."""
    import surfbench.nn.locoformer as L

    orig = L._attend

    def _attend(qkv, n_heads, pos):
        if pos is None:  # only the source branch attends without positions
            pos = torch.arange(qkv.shape[1], device=qkv.device)
        return orig(qkv, n_heads, pos)

    monkeypatch.setattr(L, "_attend", _attend)


@pytest.mark.parametrize("fault", ["slot_embedding", "slot_embedding_1e-3", "source_positions"])
def test_detector_catches_a_broken_locoformer(fault, monkeypatch):
    """The measurement is sensitive: small slot-specific changes to the equivariant model are caught."""
    torch.manual_seed(0)
    net = _perturb(build_model(TINY_LOCO, "flow", 2, AUDIO).eval())
    if fault.startswith("slot_embedding"):
        _break_slot_embedding(net, 1e-3 if fault.endswith("1e-3") else 0.02)  # src_embed is ~N(0, 0.02²)
    else:
        _break_source_positions(monkeypatch)
    x, m, z, _ = _inputs(AUDIO, 2, AUDIO_LEN)
    x0 = mixture_consistent_start(m, z)
    e_v, spread, e_x1 = equivariance_error(consistent_velocity(net), x0, torch.zeros(2), m, [1, 0])
    assert e_v > 10 * EQUIVARIANT_TOL and e_x1 > 10 * EQUIVARIANT_TOL
    with pytest.raises(AssertionError, match="documented as permutation-equivariant"):
        _check_flow(TINY_LOCO, [("broken t=0,x0 v", e_v, spread)])
