"""surfbench.basis with the analytic score of a Gaussian prior."""
import math
import sys
from pathlib import Path

import torch

import pytest

from surfbench.basis import basis_separate, check_constraint_step, dsm_loss, geometric_sigmas
from surfbench.config import RunId, load_config, resolve_run
from surfbench.registry import registry
from surfbench.seeding import ItemNoise

MU, S = 0.5, 0.2  # prior N(MU, S² I) on each image


def gaussian_score(x, sigma):
    """Score of the prior convolved with N(0, σ²): −(x − μ)/(s² + σ²)."""
    sb = sigma.reshape(-1, *([1] * (x.dim() - 1)))
    return -(x - MU) / (S ** 2 + sb ** 2)


def _mixtures(b, k=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    imgs = (MU + S * torch.randn(b, k, 1, 4, 4, generator=g)).clamp(0, 1)
    return imgs, imgs.mean(1)  # BASIS protocol: the mixture is the average


def test_geometric_sigmas():
    s = geometric_sigmas(1.0, 0.01, 10)
    assert s.shape == (10,)
    assert abs(s[0].item() - 1.0) < 1e-6 and abs(s[-1].item() - 0.01) < 1e-8
    ratios = s[1:] / s[:-1]
    assert torch.allclose(ratios, torch.full_like(ratios, 0.01 ** (1 / 9)), rtol=1e-5)


def test_basis_satisfies_mixture_constraint_and_is_per_item():
    imgs, m = _mixtures(3)
    sig = geometric_sigmas(1.0, 0.01, 10)
    kw = dict(n_sources=2, sigmas=sig, steps_per_level=30)
    out = basis_separate(gaussian_score, m, noise=ItemNoise(5, [0, 1, 2]), **kw)
    assert out.shape == (3, 2, 1, 4, 4)
    assert out.min() >= 0 and out.max() <= 1
    err = (out.mean(1) - m).abs()
    # the residual K m − Σ a contracts by 1 − 2 K η/σ² = −0.2 per step (η/σ² = 0.3 at every level); its
    # stationary std is sqrt(K · 2η_L / (1 − 0.2²)) ≈ 0.011, i.e. ≈ 0.006 on the average m − mean_k a_k
    assert err.mean() < 0.015 and err.max() < 0.05, (err.mean(), err.max())
    # not collapsed onto the mixture: the two estimates differ
    assert (out[:, 0] - out[:, 1]).abs().mean() > 0.05
    # deterministic for the same seeds
    again = basis_separate(gaussian_score, m, noise=ItemNoise(5, [0, 1, 2]), **kw)
    assert torch.equal(out, again)
    # independent of batch composition: item 0 alone == item 0 in the batch
    alone = basis_separate(gaussian_score, m[:1], noise=ItemNoise(5, [0]), **kw)
    assert torch.equal(alone[0], out[0])
    other = basis_separate(gaussian_score, m, noise=ItemNoise(6, [0, 1, 2]), **kw)
    assert not torch.equal(other, out)


def test_basis_constraint_weight_matters():
    _, m = _mixtures(2, seed=1)
    sig = geometric_sigmas(1.0, 0.01, 10)
    loose = basis_separate(gaussian_score, m, 2, sig, steps_per_level=30, noise=ItemNoise(1, [0, 1]),
                           constraint_weight=0.0)
    assert (loose.mean(1) - m).abs().mean() > 0.05  # without the constraint the prior alone does not fit m


def test_basis_stationary_law_is_the_analytic_posterior():
    """One level, a long chain: the discretised Langevin law of (a_1 + a_2, a_1 − a_2) per pixel, worked out by hand.

    Prior N(μ, v) per pixel at level σ (v = s² + σ²) and the reference constraint w ||K m − a_1 − a_2||² / σ²
    (BASIS code: the mixture is the sum of the images, here K m).  With S = a_1 + a_2 and D = a_1 − a_2 one
    step is linear: D ← (1 − η/v) D + N(0, 4η), S ← S − (η/v)(S − 2μ) + (4wη/σ²)(K m − S) + N(0, 4η).  Hence
    E S = (2μ/v + 4wKm/σ²) / (1/v + 4w/σ²) (the continuous posterior mean, unaffected by the step),
    Var S = 4η / (1 − c_S²) with c_S = 1 − η/v − 4wη/σ², Var D = 4η / (1 − c_D²) with c_D = 1 − η/v.
    """
    k, sigma, eta, w, m_val = 2, 0.1, 0.002, 1.0, 0.3
    v = S ** 2 + sigma ** 2
    m = torch.full((8, 1, 32, 32), m_val, dtype=torch.float64)  # 8192 independent pixel chains
    torch.manual_seed(0)
    out = basis_separate(gaussian_score, m, k, torch.tensor([sigma]), steps_per_level=400, lr=eta, clamp=None,
                         constraint_weight=w)
    s_sum, d_diff = out.sum(1).flatten(), (out[:, 0] - out[:, 1]).flatten()
    c_s = 1 - eta / v - 4 * w * eta / sigma ** 2
    c_d = 1 - eta / v
    mean_s = (2 * MU / v + 4 * w * k * m_val / sigma ** 2) / (1 / v + 4 * w / sigma ** 2)
    var_s, var_d = 4 * eta / (1 - c_s ** 2), 4 * eta / (1 - c_d ** 2)
    n = s_sum.numel()
    assert abs(s_sum.mean().item() - mean_s) < 4 * math.sqrt(var_s / n), (s_sum.mean().item(), mean_s)
    assert abs(d_diff.mean().item()) < 4 * math.sqrt(var_d / n)
    assert math.isclose(s_sum.var().item(), var_s, rel_tol=0.07), (s_sum.var().item(), var_s)
    assert math.isclose(d_diff.var().item(), var_d, rel_tol=0.07), (d_diff.var().item(), var_d)


def test_basis_refuses_a_diverging_constraint_step():
    assert math.isclose(check_constraint_step(2, 1.0, 3e-5, 0.01), 0.6)  # the reference recipe
    with pytest.raises(ValueError, match="basis.lr or basis.constraint_weight"):
        check_constraint_step(4, 1.0, 3e-5, 0.01)  # 1.2: the residual grows by 1.4x per step
    m = torch.full((1, 1, 2, 2), 0.4)
    with pytest.raises(ValueError, match="diverges"):
        basis_separate(gaussian_score, m, 2, geometric_sigmas(1.0, 0.01, 3), steps_per_level=2, lr=1e-4)


class _FixedNoise:
    """Stands in for ItemNoise: hands out the given start point and Langevin noise, ``[B, K, *d]``."""

    def __init__(self, start, eps):
        self.start, self.eps = start, eps

    def rand(self, *shape):
        return self.start

    def randn(self, *shape):
        return self.eps


@pytest.mark.parametrize("order, expected", [("jacobi", (0.415, 0.595)), ("gauss_seidel", (0.415, 0.4875))])
def test_one_langevin_step_of_each_update_order_by_hand(order, expected):
    """K = 2, one pixel, one level σ = 0.1, one step with η = lr = 0.005 (η/σ² = 0.5, √(2η) = 0.1), w = 0.5 (the
    reference's CIFAR-10 weight: η/σ² (K m − Σ_j a_j)), score s(x) = −10 (x − 0.5); start a = (0.2, 0.6), average
    mixture 0.5 (K m = 1), noise ε = (1, −1).

    jacobi (both from the same state): residual 1 − 0.8 = 0.2,
        a_1 = 0.2 + 0.005·3 + 0.5·0.2 + 0.1 = 0.415,   a_2 = 0.6 − 0.005·1 + 0.5·0.2 − 0.1 = 0.595;
    gauss_seidel (a_2 sees the new a_1): a_1 = 0.415 as above, then residual 1 − (0.415 + 0.6) = −0.015,
        a_2 = 0.6 − 0.005 + 0.5·(−0.015) − 0.1 = 0.4875.
    """
    def score(x, sigma):
        return -10.0 * (x - 0.5)

    m = torch.tensor([[0.5]], dtype=torch.float64)
    noise = _FixedNoise(torch.tensor([[[0.2], [0.6]]], dtype=torch.float64),
                        torch.tensor([[[1.0], [-1.0]]], dtype=torch.float64))
    out = basis_separate(score, m, 2, torch.tensor([0.1], dtype=torch.float64), steps_per_level=1, lr=0.005, noise=noise,
                         constraint_weight=0.5, update_order=order)
    assert out.shape == (1, 2, 1)
    assert out.flatten().tolist() == pytest.approx(expected, abs=1e-12)


def test_gauss_seidel_stability_bound_is_per_source():
    # a joint step corrects the residual K times as fast as one source update of a sweep
    assert math.isclose(check_constraint_step(2, 0.5, 3e-5, 0.01, "gauss_seidel"), 0.15)  # the CIFAR-10 recipe
    assert math.isclose(check_constraint_step(2, 0.5, 3e-5, 0.01, "jacobi"), 0.3)
    assert math.isclose(check_constraint_step(4, 1.0, 3e-5, 0.01, "gauss_seidel"), 0.3)  # refused as jacobi
    with pytest.raises(ValueError, match="update_order"):
        check_constraint_step(2, 0.5, 3e-5, 0.01, "red_black")


def test_the_cifar10_recipe_through_dataset_overrides(monkeypatch):
    """The reference's per-dataset recipe as the paper profile writes it: MNIST keeps the profile's basis block,
    CIFAR-10 gets w = 0.5 and the Gauss–Seidel order, and the BASIS method samples with them."""
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "config" / "ci.yaml", overrides={
        "dataset_overrides": {"cifar10": {"basis": {"constraint_weight": 0.5, "update_order": "gauss_seidel"}}}})
    runs = {ds: resolve_run(cfg, RunId(ds, "basis", 0)) for ds in ("mnist", "cifar10")}
    recipe = {ds: (run["basis"]["constraint_weight"], run["basis"]["update_order"]) for ds, run in runs.items()}
    assert recipe == {"mnist": (1.0, "jacobi"), "cifar10": (0.5, "gauss_seidel")}
    assert runs["cifar10"]["basis"]["levels"] == runs["mnist"]["basis"]["levels"]  # the rest from the profile
    cls = registry().get("basis")
    module = sys.modules[cls.__module__]
    seen = []
    monkeypatch.setattr(module, "basis_separate", lambda *a, **kw: seen.append(kw) or torch.zeros(1, 2, 3, 8, 8))
    for ds, (w, order) in (("mnist", (1.0, "jacobi")), ("cifar10", (0.5, "gauss_seidel"))):
        cls(runs[ds], (3, 8, 8), 2, "cpu").separate(torch.zeros(1, 3, 8, 8), None)
        assert (seen[-1]["constraint_weight"], seen[-1]["update_order"]) == (w, order)


def test_dsm_loss_prefers_true_score():
    g = torch.Generator().manual_seed(3)
    x = MU + S * torch.randn(4096, 16, generator=g)
    sig = geometric_sigmas(1.0, 0.01, 10)
    true = dsm_loss(gaussian_score, x, sig, generator=torch.Generator().manual_seed(9))

    def too_sharp(xt, sigma):
        return 2.0 * gaussian_score(xt, sigma)

    def prior_only(xt, sigma):  # ignores the noise level
        return -(xt - MU) / S ** 2

    for wrong in (too_sharp, prior_only, lambda xt, sigma: torch.zeros_like(xt)):
        assert dsm_loss(wrong, x, sig, generator=torch.Generator().manual_seed(9)) > true * 1.05
    # the minimum of the λ(σ)=σ² weighted DSM loss for this Gaussian: E 0.5 (1 − σ²/(s²+σ²)) = 0.5 E s²/(s²+σ²)
    expected = 0.5 * (S ** 2 / (S ** 2 + sig ** 2)).mean().item()
    assert math.isclose(true.item(), expected, rel_tol=0.05)
