"""surfbench.flow: mixture consistency, Euler against closed forms, interpolant, hybrid teacher, alignment."""
import itertools

import pytest
import torch

from surfbench.flow import (
    consistent_velocity,
    denoiser_estimate,
    euler_sample,
    floss_align,
    floss_interpolant,
    flow_matching_residual,
    hybrid_velocity,
    linear_beta,
    mixture_consistent_start,
    project_perp,
    squared_error_loss,
)
from surfbench.pit import permute


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


class RandomField(torch.nn.Module):
    """A fixed, nonlinear, time- and mixture-dependent raw velocity field (not consistent by itself)."""

    def __init__(self, k, d, seed=0):
        super().__init__()
        g = _gen(seed)
        self.w = torch.randn(k * d, k * d, generator=g) / d
        self.u = torch.randn(d, k * d, generator=g) / d
        self.c = torch.randn(k * d, generator=g)

    def forward(self, x, t, m):
        b = x.shape[0]
        h = x.reshape(b, -1) @ self.w + m.reshape(b, -1) @ self.u + t[:, None] * self.c
        return (3.0 * torch.tanh(h) + 1.0).reshape(x.shape)  # +1: a large non-zero source mean


def test_project_perp_sums_to_zero():
    x = torch.randn(4, 3, 2, 5, generator=_gen(1)) * 10 + 3
    p = project_perp(x)
    assert p.sum(1).abs().max() < 1e-5
    # P⊥ is a projection: idempotent, and it leaves zero-mean tensors unchanged
    assert torch.allclose(project_perp(p), p, atol=1e-6)
    assert torch.allclose(p + x.mean(1, keepdim=True), x, atol=1e-6)


def test_mixture_consistent_start_sums_to_m():
    g = _gen(2)
    m = torch.randn(5, 3, 8, generator=g)
    z = torch.randn(5, 4, 3, 8, generator=g) * 1.7
    x0 = mixture_consistent_start(m, z)
    assert x0.shape == z.shape
    assert (x0.sum(1) - m).abs().max() < 1e-5
    # the noise part is the projected z
    assert torch.allclose(x0 - m.unsqueeze(1) / 4, z - z.mean(1, keepdim=True), atol=1e-6)


@pytest.mark.parametrize("steps", [1, 5, 20])
def test_euler_sample_is_mixture_consistent(steps):
    g = _gen(3)
    b, k, d = 6, 3, 16
    m = torch.randn(b, d, generator=g) * 2
    x0 = mixture_consistent_start(m, torch.randn(b, k, d, generator=g))
    raw = RandomField(k, d, seed=4)
    # sanity: the raw field itself does not preserve the mixture
    assert (euler_sample(raw, x0, m, steps).sum(1) - m).abs().max() > 0.1
    x1 = euler_sample(consistent_velocity(raw), x0, m, steps)
    assert (x1.sum(1) - m).abs().max() <= 1e-5


def test_euler_constant_field_endpoint():
    g = _gen(5)
    x0 = torch.randn(3, 2, 7, generator=g, dtype=torch.float64)
    c = torch.randn(3, 2, 7, generator=g, dtype=torch.float64)
    out = euler_sample(lambda x, t, m: c, x0, None, steps=5)
    assert torch.allclose(out, x0 + c, atol=1e-12)


@pytest.mark.parametrize("a,n", [(0.7, 5), (-1.3, 3), (2.0, 10)])
def test_euler_linear_field_closed_form(a, n):
    x0 = torch.randn(2, 3, 4, generator=_gen(6), dtype=torch.float64)
    out = euler_sample(lambda x, t, m: a * x, x0, None, steps=n)
    assert torch.allclose(out, x0 * (1 + a / n) ** n, rtol=1e-12, atol=1e-12)


def test_euler_uses_the_right_times():
    # v(x, t) = t: Euler gives sum_i (1/n)(i/n) = (n-1)/(2n)
    n = 4
    x0 = torch.zeros(2, 2, 3, dtype=torch.float64)
    seen = []

    def v(x, t, m):
        assert t.shape == (2,)
        seen.append(t[0].item())
        return t.view(-1, 1, 1).expand_as(x)

    out = euler_sample(v, x0, None, steps=n)
    assert seen == [0.0, 0.25, 0.5, 0.75]
    assert torch.allclose(out, torch.full_like(x0, (n - 1) / (2 * n)))


def test_floss_interpolant_endpoints_and_per_example_t():
    g = _gen(7)
    x0, x1 = torch.randn(3, 2, 5, generator=g), torch.randn(3, 2, 5, generator=g)
    xt, target = floss_interpolant(x0, x1, torch.zeros(3))
    assert torch.equal(xt, x0) and torch.allclose(target, x1 - x0)
    xt, _ = floss_interpolant(x0, x1, torch.ones(3))
    assert torch.allclose(xt, x1)
    t = torch.tensor([0.0, 0.5, 1.0])
    xt, _ = floss_interpolant(x0, x1, t)
    assert torch.allclose(xt[0], x0[0]) and torch.allclose(xt[1], 0.5 * (x0[1] + x1[1])) and torch.allclose(xt[2], x1[2])
    # a scalar t (the paper's listing: one t per batch) broadcasts
    xt_s, _ = floss_interpolant(x0, x1, torch.tensor([0.25]))
    assert torch.allclose(xt_s, 0.75 * x0 + 0.25 * x1)


def test_flow_matching_residual_and_denoiser():
    g = _gen(8)
    b, k, d = 4, 2, 6
    x0, x1 = torch.randn(b, k, d, generator=g), torch.randn(b, k, d, generator=g)
    t = torch.rand(b, generator=g)
    m = x1.sum(1)
    # a perfect model of the conditional path has zero residual
    oracle = lambda x, tt, mm: x1 - x0  # noqa: E731
    assert flow_matching_residual(oracle, x0, x1, t, m).abs().max() < 1e-6
    # ...and its denoiser estimate at any t is x1
    xt, _ = floss_interpolant(x0, x1, t)
    assert torch.allclose(denoiser_estimate(xt, t, x1 - x0), x1, atol=1e-6)
    zero = lambda x, tt, mm: torch.zeros_like(x)  # noqa: E731
    assert torch.allclose(flow_matching_residual(zero, x0, x1, t, m), x0 - x1)


def test_squared_error_loss_forms():
    e = torch.randn(3, 2, 5, generator=_gen(9))
    assert torch.allclose(squared_error_loss(e), (e ** 2).mean())
    per = torch.stack([(e[b] ** 2).mean() for b in range(3)])
    assert torch.allclose(squared_error_loss(e, reduction="none"), per)
    logv = torch.stack([10 * torch.log10((e[b] ** 2).mean() + 1e-3) for b in range(3)])
    assert torch.allclose(squared_error_loss(e, log_loss=True, log_eps=1e-3), logv.mean())


def test_hybrid_velocity_switches_at_beta():
    g = _gen(10)
    b, k, d = 4, 2, 3
    x0, anchor = torch.randn(b, k, d, generator=g), torch.randn(b, k, d, generator=g)
    m = anchor.sum(1)
    calls = []

    def model(x, t, mm):
        calls.append(x.shape[0])
        return torch.full_like(x, 100.0) + t.view(-1, 1, 1)

    beta = 0.4
    v = hybrid_velocity(model, anchor, x0, beta)
    below = torch.nextafter(torch.tensor(beta), torch.tensor(0.0)).item()
    out = v(x0, torch.full((b,), below), m)
    assert torch.equal(out, anchor - x0) and calls == []  # model not evaluated
    out = v(x0, torch.full((b,), beta), m)
    assert torch.allclose(out, torch.full_like(x0, 100.0 + beta)) and calls == [b]
    # mixed batch: decided per example, model evaluated only on the t >= beta rows
    t = torch.tensor([below, beta, 0.9, 0.0])
    out = v(x0, t, m)
    assert torch.equal(out[0], (anchor - x0)[0]) and torch.equal(out[3], (anchor - x0)[3])
    assert torch.allclose(out[1], torch.full((k, d), 100.0 + beta))
    assert torch.allclose(out[2], torch.full((k, d), 100.9))
    assert calls[-1] == 2
    # beta = 1: Euler goes straight from x0 to the anchor
    x1 = euler_sample(hybrid_velocity(model, anchor, x0, 1.0), x0, m, steps=5)
    assert torch.allclose(x1, anchor, atol=1e-6)


def test_linear_beta():
    assert linear_beta(0, 100) == 1.0
    assert linear_beta(25, 100) == pytest.approx(0.75)
    assert linear_beta(50, 100) == pytest.approx(0.5)
    assert linear_beta(100, 100) == 0.0
    assert linear_beta(1000, 100) == 0.0
    assert linear_beta(10, 0) == 0.0
    assert linear_beta(5, -1, start=1.0, end=0.2) == 0.2
    assert linear_beta(5, 10, start=0.8, end=0.2) == pytest.approx(0.5)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_floss_align_recovers_model_permutation(k):
    g = _gen(20 + k)
    b, d = 16, 10
    x1 = torch.randn(b, k, d, generator=g)
    m = x1.sum(1)
    x0 = mixture_consistent_start(m, 10 * torch.randn(b, k, d, generator=g))  # x0 far from x1: the +x0 matters
    sigma = torch.stack([torch.randperm(k, generator=g) for _ in range(b)])
    target = permute(x1, sigma)
    seen_t = []

    def model(x, t, mm):  # a model that predicts the velocity towards σ x1 from x
        seen_t.append(t.clone())
        return target - x

    aligned, perm = floss_align(model, x0, x1, m)
    assert torch.equal(seen_t[0], torch.zeros(b))
    assert torch.equal(perm, sigma)
    assert torch.equal(aligned, target)
    # independent check by brute force on one example
    x1_hat = x0[0] + model(x0, torch.zeros(b), m)[0]
    errs = {p: ((x1_hat - x1[0, list(p)]) ** 2).sum().item() for p in itertools.permutations(range(k))}
    assert list(min(errs, key=errs.get)) == perm[0].tolist()
