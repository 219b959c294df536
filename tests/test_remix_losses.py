"""surfbench.remix and surfbench.losses against direct / brute-force references."""
import itertools
import math

import pytest
import torch

from surfbench.flow import (
    consistent_velocity,
    denoiser_estimate,
    floss_align,
    floss_interpolant,
    flow_matching_residual,
    mixture_consistent_start,
)
from surfbench.losses import (
    mixit_loss,
    neg_snr_pit_loss,
    remixit_loss,
    rm_fm_loss,
    self_remixing_loss,
    sr_fm_loss,
)
from surfbench.pit import inverse_permutation, permute
from surfbench.remix import draw_remix_permutation, remix, sum_sources, unremix


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


class RandomField(torch.nn.Module):
    def __init__(self, k, d, seed=0):
        super().__init__()
        g = _gen(seed)
        self.w = torch.nn.Parameter(torch.randn(k * d, k * d, generator=g, dtype=torch.float64) / d)
        self.u = torch.randn(d, k * d, generator=g, dtype=torch.float64) / d
        self.c = torch.randn(k * d, generator=g, dtype=torch.float64)

    def forward(self, x, t, m):
        b = x.shape[0]
        h = x.reshape(b, -1) @ self.w + m.reshape(b, -1) @ self.u + t[:, None] * self.c
        return torch.tanh(h).reshape(x.shape)


# --------------------------------------------------------------------------- remix

def test_draw_remix_permutation_is_a_permutation_and_seeded():
    pi = draw_remix_permutation(5, 3, generator=_gen(1))
    assert pi.dtype == torch.long and pi.shape == (15,)
    assert torch.equal(pi.sort().values, torch.arange(15))
    assert torch.equal(pi, draw_remix_permutation(5, 3, generator=_gen(1)))
    # uniform-ish: over many draws every row lands in every position
    counts = torch.zeros(6, 6)
    g = _gen(2)
    for _ in range(600):
        p = draw_remix_permutation(3, 2, generator=g)
        counts[torch.arange(6), p] += 1
    assert counts.min() > 60 and counts.max() < 140


def test_remix_moves_rows_as_pi_says_and_unremix_inverts():
    g = _gen(3)
    b, k = 4, 3
    x = torch.randn(b, k, 2, 5, generator=g)
    pi = draw_remix_permutation(b, k, generator=g)
    xt = remix(x, pi)
    for r in range(b * k):  # row r of the remixed batch is row pi[r] of the original (row = b*K + k)
        src = pi[r].item()
        assert torch.equal(xt[r // k, r % k], x[src // k, src % k])
    assert torch.equal(unremix(xt, pi), x)
    assert torch.equal(remix(unremix(x, pi), pi), x)
    assert torch.equal(sum_sources(x), x[:, 0] + x[:, 1] + x[:, 2])
    # total energy over the batch is unchanged by remixing
    assert torch.allclose(sum_sources(xt).sum(0), sum_sources(x).sum(0), atol=1e-5)


# --------------------------------------------------------------------------- SR-FM = Self-Remixing regression (Eq. 26-30)

def _surf_setup(seed, b=5, k=3, d=6, t=None):
    g = _gen(seed)
    x_bar = torch.randn(b, k, d, generator=g, dtype=torch.float64)  # teacher samples X̄ of the observed batch
    mixtures = x_bar.sum(1)  # M: observed mixtures = sums of the teacher samples (unremixed targets)
    pi = draw_remix_permutation(b, k, generator=g)
    x1 = remix(x_bar, pi)
    m_tilde = sum_sources(x1)
    x0 = mixture_consistent_start(m_tilde, torch.randn(b, k, d, generator=g, dtype=torch.float64))
    vf = consistent_velocity(RandomField(k, d, seed=seed + 1))
    x1_al, ups = floss_align(vf, x0, x1, m_tilde)
    if t is None:
        t = torch.rand(b, generator=g, dtype=torch.float64)
    return dict(x_bar=x_bar, M=mixtures, pi=pi, x1=x1, m_tilde=m_tilde, x0=x0, vf=vf, x1_al=x1_al, ups=ups, t=t)


def _self_remixing_denoiser_regression(s):
    """Eq. 26-28 computed directly: ||(I⊗1ᵀ) Π⁻¹ Υ⁻¹ X̂1 − M||² per example, X̂1 = X_t + (1−t) v."""
    x_t, _ = floss_interpolant(s["x0"], s["x1_al"], s["t"])
    t = s["t"].expand(x_t.shape[0]) if s["t"].numel() == 1 else s["t"]
    v = s["vf"](x_t, t, s["m_tilde"])
    x1_hat = denoiser_estimate(x_t, t, v)
    b, k = x1_hat.shape[:2]
    inv = inverse_permutation(s["ups"])
    out = torch.zeros_like(s["M"])
    # explicit loops: row (b, i) of Υ⁻¹X̂1 is x1_hat[b, inv[b, i]]; it came from original row pi[b*K+i]
    for bb in range(b):
        for i in range(k):
            orig = s["pi"][bb * k + i].item()
            out[orig // k] += x1_hat[bb, inv[bb, i]]
    return ((out - s["M"]) ** 2).mean(-1)


def test_sr_fm_equals_self_remixing_denoiser_regression_shared_t():
    t = torch.tensor([0.37], dtype=torch.float64)  # one t per batch, as in the paper's listing
    s = _surf_setup(11, t=t)
    R = flow_matching_residual(s["vf"], s["x0"], s["x1_al"], s["t"], s["m_tilde"])
    per_ex = sr_fm_loss(R, s["ups"], s["pi"], reduction="none")
    direct = _self_remixing_denoiser_regression(s)
    assert torch.allclose(direct, (1 - t) ** 2 * per_ex, rtol=1e-10, atol=1e-12)
    assert torch.allclose(sr_fm_loss(R, s["ups"], s["pi"]), per_ex.mean())
    assert per_ex.min() > 1e-4  # not trivially zero


def test_sr_fm_equals_self_remixing_denoiser_regression_per_example_t():
    # with one t per remixed mixture the (1−t) factor acts on the remixed rows before Π⁻¹
    s = _surf_setup(12)
    R = flow_matching_residual(s["vf"], s["x0"], s["x1_al"], s["t"], s["m_tilde"])
    direct = _self_remixing_denoiser_regression(s)
    weighted = sr_fm_loss((1 - s["t"]).view(-1, 1, 1) * R, s["ups"], s["pi"], reduction="none")
    assert torch.allclose(direct, weighted, rtol=1e-10, atol=1e-12)


def test_sr_fm_matches_paper_listing():
    s = _surf_setup(13)
    R = flow_matching_residual(s["vf"], s["x0"], s["x1_al"], s["t"], s["m_tilde"])
    b, k, d = R.shape
    # App. D.1 listing, literally
    ups_inv = torch.argsort(s["ups"], dim=1)
    res = torch.gather(R, 1, ups_inv.unsqueeze(-1).expand(-1, -1, d))
    res_unshuffled = res.reshape(b * k, d)[torch.argsort(s["pi"])].reshape(b, k, d)
    listing = (res_unshuffled.sum(dim=1) ** 2).mean()
    assert torch.allclose(sr_fm_loss(R, s["ups"], s["pi"]), listing, rtol=1e-12)
    assert torch.allclose(rm_fm_loss(R), (R ** 2).mean(), rtol=1e-12)


def test_rm_fm_with_ground_truth_equals_supervised_floss_from_scratch():
    g = _gen(14)
    b, k, d = 4, 3, 5
    x = torch.randn(b, k, d, generator=g, dtype=torch.float64)  # ground-truth sources as the "teacher"
    pi = torch.arange(b * k)  # identity remix
    x1 = remix(x, pi)
    m = sum_sources(x1)
    z = torch.randn(b, k, d, generator=g, dtype=torch.float64)
    t = torch.rand(b, generator=g, dtype=torch.float64)
    model = RandomField(k, d, seed=15)
    vf = consistent_velocity(model)
    x0 = mixture_consistent_start(m, z)
    x1_al, ups = floss_align(vf, x0, x1, m)
    loss = rm_fm_loss(flow_matching_residual(vf, x0, x1_al, t, m))

    # from scratch: Eq. 4, 7-9, 11, 10 with explicit loops and brute-force PIT
    total = 0.0
    for bb in range(b):
        x0b = m[bb] / k + z[bb] - z[bb].mean(0)
        raw0 = model(x0b[None], torch.zeros(1, dtype=torch.float64), m[bb][None])[0]
        x1hat = x0b + raw0 - raw0.mean(0)
        best = min(itertools.permutations(range(k)), key=lambda p: ((x1hat - x[bb, list(p)]) ** 2).sum().item())
        tgt = x[bb, list(best)]
        xt = (1 - t[bb]) * x0b + t[bb] * tgt
        raw = model(xt[None], t[bb][None], m[bb][None])[0]
        v = raw - raw.mean(0)
        total = total + ((v - (tgt - x0b)) ** 2).mean()
    assert torch.allclose(loss, total / b, rtol=1e-10)
    # gradients flow into the model
    loss.backward()
    assert model.w.grad is not None and model.w.grad.abs().sum() > 0


# --------------------------------------------------------------------------- regression remixing baselines

def test_remixit_loss_is_pit_mse():
    g = _gen(16)
    b, k, d = 6, 3, 8
    target = torch.randn(b, k, d, generator=g)
    sw = torch.stack([torch.randperm(k, generator=g) for _ in range(b)])
    est = permute(target, sw) + 0.1 * torch.randn(b, k, d, generator=g)
    loss, perm = remixit_loss(est, target)
    assert torch.equal(perm, sw)
    ref = torch.stack([
        min(((est[bb] - target[bb, list(p)]) ** 2).mean() for p in itertools.permutations(range(k))) for bb in range(b)
    ]).mean()
    assert torch.allclose(loss, ref, rtol=1e-6)


@pytest.mark.parametrize("k", [2, 3])
def test_self_remixing_loss_direct(k):
    g = _gen(17)
    b, d = 8, 7
    x_bar = torch.randn(b, k, d, generator=g)
    mixtures = x_bar.sum(1) + 0.05 * torch.randn(b, d, generator=g)
    pi = draw_remix_permutation(b, k, generator=g)
    target = remix(x_bar, pi)
    sw = torch.stack([torch.randperm(k, generator=g) for _ in range(b)])
    est = permute(target, sw) + 0.1 * torch.randn(b, k, d, generator=g)
    if k == 3:  # some Υ must not be their own inverse, or Υ and Υ⁻¹ could be confused
        assert (inverse_permutation(sw) != sw).any()
    loss, perm = self_remixing_loss(est, target, pi, mixtures)
    assert torch.equal(perm, sw)
    # direct: estimate slot i matches target slot perm[i]; that target row came from original row pi[b*K + perm[i]]
    recon = torch.zeros_like(mixtures)
    for bb in range(b):
        for i in range(k):
            orig = pi[bb * k + perm[bb, i]].item()
            recon[orig // k] += est[bb, i]
    assert torch.allclose(loss, ((recon - mixtures) ** 2).mean(), rtol=1e-6)
    # a perfect student reproduces the teacher's mixtures
    loss0, _ = self_remixing_loss(permute(target, sw), target, pi, x_bar.sum(1))
    assert loss0 < 1e-10


# --------------------------------------------------------------------------- MixIT

def _mixit_brute(est, mixtures, tau=1e-3, eps=1e-8):
    b, n = est.shape[:2]
    vals, assigns = [], []
    for bb in range(b):
        best = None
        for a in itertools.product((0, 1), repeat=n):
            tot = 0.0
            for j in range(2):
                ŝ = sum((est[bb, k] for k in range(n) if a[k] == j), torch.zeros_like(mixtures[bb, j]))
                s = mixtures[bb, j]
                tot += 10 * math.log10(((s - ŝ) ** 2).sum().item() + tau * (s ** 2).sum().item() + eps)
            if best is None or tot < best[0]:
                best = (tot, a)
        vals.append(best[0])
        assigns.append(list(best[1]))
    return torch.tensor(vals), torch.tensor(assigns)


def test_mixit_picks_true_assignment_and_hits_30db_cap():
    g = _gen(18)
    b, n, d = 3, 4, 3 * 8 * 8
    src = torch.randn(b, n, d, generator=g, dtype=torch.float64)
    m1 = src[:, 0] + src[:, 1]
    m2 = src[:, 2] + src[:, 3]
    mixtures = torch.stack([m1, m2], 1).reshape(b, 2, 3, 8, 8)
    shuffles = torch.stack([torch.randperm(n, generator=g) for _ in range(b)])
    est = torch.stack([src[bb, shuffles[bb]] for bb in range(b)]).reshape(b, n, 3, 8, 8)
    loss, assign = mixit_loss(est, mixtures)
    true_assign = (shuffles >= 2).long()  # slots holding sources 2, 3 go to m2
    assert torch.equal(assign, true_assign)
    e1 = (m1 ** 2).sum(-1)
    e2 = (m2 ** 2).sum(-1)
    cap = (10 * torch.log10(1e-3 * e1 + 1e-8) + 10 * torch.log10(1e-3 * e2 + 1e-8)).mean()
    assert torch.allclose(loss, cap, rtol=1e-9)
    # i.e. each mixture sits 30 dB below its energy
    assert torch.allclose(cap, (10 * torch.log10(e1) + 10 * torch.log10(e2)).mean() - 60, atol=1e-6)


@pytest.mark.parametrize("n_slots", [2, 3, 4])
def test_mixit_matches_brute_force(n_slots):
    g = _gen(19 + n_slots)
    b, d = 5, 20
    est = torch.randn(b, n_slots, d, generator=g, requires_grad=True)
    mixtures = torch.randn(b, 2, d, generator=g)
    loss, assign = mixit_loss(est, mixtures)
    vals, ref_assign = _mixit_brute(est.detach(), mixtures)
    assert torch.allclose(loss, vals.mean().float(), rtol=1e-5)
    assert torch.equal(assign, ref_assign)
    per_ex, _ = mixit_loss(est, mixtures, reduction="none")
    assert torch.allclose(per_ex, vals.float(), rtol=1e-5)
    loss.backward()
    assert est.grad is not None and est.grad.abs().sum() > 0


def test_mixit_snr_cap_changes_choice():
    # a quiet second mixture: putting every slot on m1 reconstructs it exactly (-inf dB without the cap),
    # but with the 30 dB cap the split that explains both mixtures to -6 dB each wins.
    g = _gen(25)
    b, d = 2, 50
    m1 = torch.randn(b, d, generator=g)
    m2 = torch.randn(b, d, generator=g)
    m2 = m2 * (1e-3 * (m1 ** 2).sum(-1, keepdim=True) / (m2 ** 2).sum(-1, keepdim=True)).sqrt()
    est = torch.stack([m1 - m2 / 2, m2 / 2], 1)
    mixtures = torch.stack([m1, m2], 1)
    loss, assign = mixit_loss(est, mixtures)
    vals, ref_assign = _mixit_brute(est, mixtures)
    assert torch.equal(assign, ref_assign)
    assert torch.equal(assign, torch.tensor([[0, 1], [0, 1]]))
    assert torch.allclose(loss, vals.mean().float(), rtol=1e-5)
    _, no_cap = _mixit_brute(est, mixtures, tau=0.0)
    assert torch.equal(no_cap, torch.tensor([[0, 0], [0, 0]]))  # the cap is what decides


# --------------------------------------------------------------------------- supervised regression

def test_neg_snr_pit_loss_value_and_slot_invariance():
    g = _gen(30)
    b, k, d = 4, 3, 16
    ref = torch.randn(b, k, d, generator=g)
    est = ref + 0.3 * torch.randn(b, k, d, generator=g)
    loss, perm = neg_snr_pit_loss(est, ref)
    # brute force reference: min over perms of the mean over slots of 10 log10 ||x - x̂||²
    vals = []
    for bb in range(b):
        vals.append(min(
            sum(10 * math.log10(((ref[bb, p[i]] - est[bb, i]) ** 2).sum().item() + 1e-8) for i in range(k)) / k
            for p in itertools.permutations(range(k))
        ))
    assert loss.item() == pytest.approx(sum(vals) / b, rel=1e-5)
    assert torch.equal(perm, torch.arange(k).expand(b, k))
    sw = torch.stack([torch.randperm(k, generator=g) for _ in range(b)])
    loss_sw, perm_sw = neg_snr_pit_loss(permute(est, sw), ref)
    assert torch.allclose(loss_sw, loss, rtol=1e-6)
    assert torch.equal(perm_sw, sw)
