"""The preconditioned flow network (``training.flow_preconditioning: edm``, surfbench.flow).

References: the coefficients are checked against a least-squares fit on sampled Gaussian data
(numpy), the t = 0 and mixture-level behaviour against hand-worked answers.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from surfbench.flow import (
    DENOISER_MIN_GAP,
    DenoiserFlow,
    PreconditionedFlow,
    consistent_velocity,
    euler_sample,
    flow_matching_loss,
    mixture_consistent_start,
    precondition_flow,
    project_perp,
    source_spread,
    velocity_preconditioning,
)
from surfbench.config import RunId, load_config, resolve_run
from surfbench.registry import registry


class _Zero(torch.nn.Module):
    """F ≡ 0: the preconditioned velocity is its skip term alone."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x_t, t, m):
        self.seen.append((x_t.detach().clone(), t.detach().clone(), m.detach().clone()))
        return torch.zeros_like(x_t)


class _One(_Zero):
    def forward(self, x_t, t, m):
        super().forward(x_t, t, m)
        return torch.ones_like(x_t)


@pytest.mark.parametrize("t", [0.0, 0.1, 0.5, 0.9])
def test_coefficients_are_the_least_squares_fit_of_the_velocity(t):
    """x̃ = (1-t) n + t u, target u - n: c_skip is the regression slope, c_out the residual std, c_in 1/std(x̃)."""
    rng = np.random.default_rng(0)
    sn, sd, n_samp = 0.7, 0.09, 400_000
    n = rng.normal(0, sn, n_samp)
    u = rng.normal(0, sd, n_samp)
    x = (1 - t) * n + t * u
    v = u - n
    slope = np.dot(x, v) / np.dot(x, x)
    resid = v - slope * x
    c_in, c_skip, c_out = velocity_preconditioning(torch.tensor(t, dtype=torch.float64),
                                                   torch.tensor(sn ** 2, dtype=torch.float64),
                                                   torch.tensor(sd ** 2, dtype=torch.float64))
    assert float(c_skip) == pytest.approx(slope, rel=1e-2, abs=1e-3)
    assert float(c_out) == pytest.approx(resid.std(), rel=1e-2)
    assert float(c_in) * x.std() == pytest.approx(1.0, rel=1e-2)


def test_coefficients_at_the_ends_of_the_path():
    """t = 0: x̃ = n, target u - n: c_skip = -1, c_out = σ_d. t = 1: x̃ = u: c_skip = 1, c_out = σ_n."""
    sn2, sd2 = torch.tensor(0.5), torch.tensor(0.01)
    c_in, c_skip, c_out = velocity_preconditioning(torch.tensor(0.0), sn2, sd2)
    assert (float(c_skip), float(c_out), float(c_in)) == pytest.approx((-1.0, 0.1, 0.5 ** -0.5))
    c_in, c_skip, c_out = velocity_preconditioning(torch.tensor(1.0), sn2, sd2)
    assert (float(c_skip), float(c_out), float(c_in)) == pytest.approx((1.0, 0.5 ** 0.5, 10.0))


def test_at_t0_the_start_noise_is_removed_analytically():
    """With F ≡ 0 one Euler step from x0 lands on m/K exactly (c_skip(0) = -1), whatever z is."""
    g = torch.Generator().manual_seed(1)
    m = torch.rand(3, 1, 5, 5, generator=g)
    z = torch.randn(3, 2, 1, 5, 5, generator=g)
    x0 = mixture_consistent_start(m, z)
    net = PreconditionedFlow(_Zero(), 2, sigma_z=1.0, sigma_data=0.09)
    x1 = euler_sample(consistent_velocity(net), x0, m, steps=1)
    torch.testing.assert_close(x1, m.unsqueeze(1).expand_as(x1) / 2, atol=1e-6, rtol=0)


def test_network_sees_unit_variance_input_and_its_output_is_scaled_by_c_out():
    g = torch.Generator().manual_seed(2)
    B, K, sz, sd, t = 4096, 2, 1.0, 0.1, 0.3
    u = project_perp(sd * (2 ** 0.5) * torch.randn(B, K, 1, 1, 1, generator=g))   # P⊥ of K=2 halves the variance
    m = torch.rand(B, 1, 1, 1, generator=g)
    x0 = mixture_consistent_start(m, sz * torch.randn(B, K, 1, 1, 1, generator=g))
    x_t = (1 - t) * x0 + t * (m.unsqueeze(1) / K + u)
    inner = _One()
    v = PreconditionedFlow(inner, K, sigma_z=sz, sigma_data=sd)(x_t, torch.full((B,), t), m)
    seen = inner.seen[0][0] - m.unsqueeze(1) / K          # the network's x input, minus the slot mean it carries
    assert float(seen.std()) == pytest.approx(1.0, rel=0.05)
    c_in, c_skip, c_out = velocity_preconditioning(torch.tensor(t), torch.tensor(sz ** 2 / 2), torch.tensor(sd ** 2))
    torch.testing.assert_close(v, c_skip * project_perp(x_t) + c_out, atol=1e-6, rtol=0)


def test_mixture_rms_scaling_makes_the_velocity_scale_equivariant():
    """Under sigma_z_scale = mixture_rms, scaling (x_t, m) by c scales v by c (F ≡ 1: c_skip·x̃ + c_out).

    c_skip depends on σ_n/σ_d only; c_out must follow the mixture level, and the network's noise
    input c_in·x̃ must not."""
    g = torch.Generator().manual_seed(3)
    x_t = torch.randn(2, 3, 100, generator=g)
    m = x_t.sum(1)
    inner = _One()
    net = PreconditionedFlow(inner, 3, sigma_z=1.0, sigma_data=0.5, sigma_z_scale="mixture_rms")
    t = torch.tensor([0.2, 0.7])
    torch.testing.assert_close(net(7.0 * x_t, t, 7.0 * m), 7.0 * net(x_t, t, m), atol=1e-5, rtol=1e-5)
    (a, _, ma), (b, _, mb) = inner.seen
    torch.testing.assert_close(a - ma.unsqueeze(1) / 3, b - mb.unsqueeze(1) / 3, atol=1e-5, rtol=1e-5)
    absolute = PreconditionedFlow(_One(), 3, sigma_z=1.0, sigma_data=0.5)
    assert not torch.allclose(absolute(7.0 * x_t, t, 7.0 * m), 7.0 * absolute(x_t, t, m))


def test_precondition_flow_config():
    raw = _Zero()
    assert precondition_flow(raw, 2, {"sigma_z": 1.0}) is raw
    assert precondition_flow(raw, 2, {"flow_preconditioning": "none", "sigma_z": 1.0}) is raw
    wrapped = precondition_flow(raw, 2, {"flow_preconditioning": "edm", "sigma_z": 0.5, "sigma_data": 0.1})
    assert isinstance(wrapped, PreconditionedFlow) and wrapped.net is raw
    assert (wrapped.sigma_z, wrapped.sigma_data, wrapped.sigma_z_scale) == (0.5, 0.1, "absolute")
    with pytest.raises(KeyError, match="training.sigma_data"):
        precondition_flow(raw, 2, {"flow_preconditioning": "edm", "sigma_z": 1.0, "sigma_data": None})
    with pytest.raises(ValueError, match="training.flow_preconditioning"):
        precondition_flow(raw, 2, {"flow_preconditioning": "karras", "sigma_z": 1.0})


def test_config_key_reaches_the_flow_methods_only():
    ci = Path(__file__).resolve().parents[1] / "config" / "ci.yaml"
    cfg = load_config(ci, overrides={"training": {"flow_preconditioning": "edm", "sigma_data": 0.09}})
    for name in ("supervised_flow", "surf_remixit", "supervised_regression", "basis"):
        rc = resolve_run(cfg, RunId("mnist", name, 0))
        method = registry().get(name)(rc, (1, 28, 28), 2, "cpu")
        assert isinstance(method.student, PreconditionedFlow) == (name in ("supervised_flow", "surf_remixit"))
    with pytest.raises(Exception, match="flow_preconditioning"):
        load_config(ci, overrides={"training": {"flow_preconditioning": "karras"}})


def test_source_spread_hand_worked():
    # example 0: sources [1, 1] and [3, 3] -> P⊥ = ∓1 everywhere; example 1: [0, 0] and [0, 4] -> 0, ∓2
    x1 = torch.tensor([[[1.0, 1.0], [3.0, 3.0]], [[0.0, 0.0], [0.0, 4.0]]])
    assert source_spread(x1) == pytest.approx(1.5 ** 0.5)                  # (4·1 + 2·4) / 8 elements
    # relative: divide by mixture RMS 4 and sqrt(8): (4/16 + 8/8) / 8
    assert source_spread(x1, relative_to_mixture=True) == pytest.approx((1.25 / 8) ** 0.5)


def test_sigma_data_command_measures_a_prepared_set(tmp_path, capsys):
    import json

    from surfbench.cli import main
    from surfbench.data.recipes import basis_pairs
    from surfbench.data.store import save_npz_atomic

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(40, 1, 8, 8), dtype=np.uint8)
    pairs = basis_pairs(40, None, rng)
    save_npz_atomic(tmp_path / "train.npz", images=imgs, pairs=pairs)
    assert main(["sigma-data", str(tmp_path)]) == 0
    got = json.loads(capsys.readouterr().out)
    # numpy reference: half images a/2, b/2 of each pair; P⊥ for K = 2 is ±(a - b)/4
    a = imgs[pairs[:, 0]].astype(np.float64) / 255
    b = imgs[pairs[:, 1]].astype(np.float64) / 255
    assert got["examples"] == len(pairs)
    assert got["sigma_data"] == pytest.approx(np.sqrt(np.mean(((a - b) / 4) ** 2)), rel=1e-5)
    assert main(["sigma-data", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


# ----------------------------------------------------------------------------- flow_preconditioning: denoiser
class _Constant(torch.nn.Module):
    """D ≡ a fixed source estimate (whatever x_t and t)."""

    def __init__(self, x1_hat):
        super().__init__()
        self.x1_hat = x1_hat

    def forward(self, x_t, t, m):
        return self.x1_hat.expand_as(x_t)


def test_denoiser_velocity_hand_worked():
    """v = (D - x_t) / (1 - t): with D = 3 everywhere, x_t = 1 at t = 0.5, v = 4; at t = 1 the gap is floored."""
    x_t = torch.ones(1, 2, 5)
    net = precondition_flow(_Constant(torch.full((1, 2, 5), 3.0)), 2, {"flow_preconditioning": "denoiser"})
    assert isinstance(net, DenoiserFlow)
    torch.testing.assert_close(net(x_t, torch.tensor([0.5]), x_t.sum(1)), torch.full((1, 2, 5), 4.0))
    v1 = net(x_t, torch.tensor([1.0]), x_t.sum(1))
    torch.testing.assert_close(v1, torch.full((1, 2, 5), 2.0 / DENOISER_MIN_GAP))


def test_denoiser_euler_lands_on_the_estimate_and_loss_is_the_x1_error():
    """The Euler sampler's last step lands on D's estimate (projected to mixture consistency); on the
    interpolant of Eq. 11 the residual is (D - x1) / (1 - t), so the log loss differs from the x1 error's
    log by 20 log10(1 - t) and has the same gradient."""
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(3, 2, 50, generator=g)
    m = x1.sum(1)
    x1_hat = torch.randn(3, 2, 50, generator=g)
    x1_hat = x1_hat - x1_hat.mean(1, keepdim=True) + m.unsqueeze(1) / 2  # a mixture-consistent estimate
    v = consistent_velocity(precondition_flow(_Constant(x1_hat), 2, {"flow_preconditioning": "denoiser"}))
    x0 = mixture_consistent_start(m, torch.randn(3, 2, 50, generator=g))
    for steps in (1, 5):
        torch.testing.assert_close(euler_sample(v, x0, m, steps), x1_hat, atol=1e-5, rtol=1e-5)

    weight = torch.nn.Parameter(torch.tensor(0.3))

    class _Scaled(torch.nn.Module):
        def forward(self, x_t, t, m):
            return weight * x1_hat

    t = torch.tensor([0.1, 0.5, 0.8])
    vf = precondition_flow(_Scaled(), 2, {"flow_preconditioning": "denoiser"})
    loss = flow_matching_loss(vf, x0, x1, t, m, log_loss=True)
    (g_flow,) = torch.autograd.grad(loss, weight)
    x1_err = 10 * torch.log10((weight * x1_hat - x1).reshape(3, -1).pow(2).mean(1) + 1e-8)
    gap_db = -20 * torch.log10(1 - t)
    torch.testing.assert_close(loss, (x1_err + gap_db).mean(), atol=1e-4, rtol=1e-5)
    (g_x1,) = torch.autograd.grad(x1_err.mean(), weight)
    torch.testing.assert_close(g_flow, g_x1, atol=1e-5, rtol=1e-4)


def test_untrained_mask_flow_returns_the_mixture_over_k():
    """An untrained ``mb_tflocoformer`` with ``output: mask`` under ``denoiser``: the sampler returns m / K
    in every slot (the Average baseline), not its start noise."""
    from surfbench.nn import build_model

    torch.manual_seed(0)
    raw = build_model({"arch": "mb_tflocoformer", "preset": "tiny", "output": "mask"}, "flow", 2, (8000,))
    v = consistent_velocity(precondition_flow(raw, 2, {"flow_preconditioning": "denoiser"}))
    m = torch.randn(2, 8000)
    x0 = mixture_consistent_start(m, torch.randn(2, 2, 8000))
    with torch.no_grad():
        out = euler_sample(v, x0, m, 5)
    torch.testing.assert_close(out, (m / 2).unsqueeze(1).expand_as(out), atol=1e-4, rtol=1e-4)


def test_denoiser_key_reaches_the_flow_methods_only():
    ci = Path(__file__).resolve().parents[1] / "config" / "ci.yaml"
    cfg = load_config(ci, overrides={"training": {"flow_preconditioning": "denoiser"}})
    for name in ("supervised_flow", "surf_self_remixing", "remixit", "mixit"):
        rc = resolve_run(cfg, RunId("libri2mix", name, 0))
        method = registry().get(name)(rc, (16000,), 2, "cpu")
        assert isinstance(method.student, DenoiserFlow) == (name in ("supervised_flow", "surf_self_remixing"))
