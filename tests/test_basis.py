"""surfbench.basis with the analytic score of a Gaussian prior."""
import math

import torch

from surfbench.basis import basis_separate, dsm_loss, geometric_sigmas
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
    # stationary constraint residual ≈ sqrt(2η_L)/sqrt(K)/sqrt(1 − 0.7²) ≈ 0.008 per pixel (η/σ² = 0.3 at every level)
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
