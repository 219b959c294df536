"""Training losses of SURF and its baselines.

Conventions: sources ``[B, K, *d]``, mixtures ``[B, *d]``; permutations as in
:mod:`surfbench.pit` (``permute(ref, perm)[b, i] = ref[b, perm[b, i]]``, ``Υ``);
remix permutations ``pi`` as in :mod:`surfbench.remix` (``Π``: a tensor, or a ``GlobalRemix`` over all processes).
Every loss takes ``reduction="mean"`` (scalar) or ``"none"`` (``[B]`` per example).
"""
from __future__ import annotations

import itertools

import torch

from surfbench.flow import squared_error_loss
from surfbench.pit import best_permutation, inverse_permutation, pairwise_mse, permute, pit_align
from surfbench.remix import sum_sources, unremix


def _reduce(per_example: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_example
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return per_example.mean()


def _mse_per_example(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).reshape(a.shape[0], -1).pow(2).mean(dim=1)


# --------------------------------------------------------------------------- SURF (flow matching)

def rm_fm_loss(R: torch.Tensor, log_loss: bool = False, log_eps: float = 1e-8, reduction: str = "mean") -> torch.Tensor:
    # Eq. 24 (SURF-ReMixIT): ||R_t||^2 on the remixed, aligned batch.
    return squared_error_loss(R, log_loss=log_loss, log_eps=log_eps, reduction=reduction)


def sr_fm_mixture_residual(R: torch.Tensor, upsilon: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
    """``(I_B ⊗ 1ᵀ) Π⁻¹ Υ⁻¹ R``: the ``[B, *d]`` residual on the observed mixtures (Eq. 30)."""
    r = permute(R, inverse_permutation(upsilon))  # Υ⁻¹: back to the remixed (teacher-sample) order
    return sum_sources(unremix(r, pi))  # Π⁻¹, then sum each group of K rows


def sr_fm_loss(
    R: torch.Tensor, upsilon: torch.Tensor, pi: torch.Tensor, log_loss: bool = False, log_eps: float = 1e-8,
    reduction: str = "mean",
) -> torch.Tensor:
    # Eq. 30 (SURF-Self-Remixing): ||(I_B ⊗ 1ᵀ) Π⁻¹ Υ⁻¹ R_t||^2, as in the App. D.1 listing.
    return squared_error_loss(sr_fm_mixture_residual(R, upsilon, pi), log_loss=log_loss, log_eps=log_eps,
                              reduction=reduction)


# --------------------------------------------------------------------------- regression remixing baselines

def remixit_loss(est: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    # Eq. 16 (ReMixIT): per-mixture PIT MSE ||Υ⁻¹X̂ − X̃||^2 (= ||X̂ − ΥX̃||^2) against the remixed teacher targets.
    target_aligned, perm = pit_align(est, target)
    return _reduce(_mse_per_example(est, target_aligned), reduction), perm


def self_remixing_loss(
    est: torch.Tensor, target: torch.Tensor, pi: torch.Tensor, mixtures: torch.Tensor, reduction: str = "mean"
) -> tuple[torch.Tensor, torch.Tensor]:
    # Eq. 17 (Self-Remixing): ||(I_B ⊗ 1ᵀ) Π⁻¹ Υ⁻¹ X̂ − M||^2 against the observed mixtures M.
    _, perm = pit_align(est, target)  # est slot i <-> target slot perm[b, i]
    est_in_target_order = permute(est, inverse_permutation(perm))  # Υ⁻¹X̂
    recon = sum_sources(unremix(est_in_target_order, pi))
    return _reduce(_mse_per_example(recon, mixtures), reduction), perm


# --------------------------------------------------------------------------- MixIT

def all_assignments(n_slots: int, device=None) -> torch.Tensor:
    """All ``2^M`` assignments of ``M`` slots to two mixtures, ``[2^M, M]`` in {0, 1}."""
    return torch.tensor(list(itertools.product((0, 1), repeat=n_slots)), dtype=torch.long, device=device)


def mixit_loss(
    est: torch.Tensor, mixtures: torch.Tensor, tau: float = 1e-3, eps: float = 1e-8, reduction: str = "mean"
) -> tuple[torch.Tensor, torch.Tensor]:
    """MixIT (Wisdom et al. 2020): ``min_A Σ_j ℓ(m_j, Σ_{k: A_k=j} x̂_k)``, ``ℓ(s, ŝ) = 10 log10(||s−ŝ||² + τ||s||² + eps)``.

    ``est: [B, M, *d]`` (M output slots), ``mixtures: [B, 2, *d]`` (the two mixtures
    whose sum the model saw).  ``τ = 1e-3`` caps the SNR at 30 dB.  Norms are sums over
    all elements.  The minimum over all ``2^M`` assignments is found exactly, batched:
    squared errors of every assignment come from Gram matrices in float64 (no grad);
    the loss of the chosen assignment is then computed directly (with grad).
    Returns ``(loss, assignment [B, M] in {0, 1})`` (0: slot -> mixtures[:, 0]).
    """
    if mixtures.shape[1] != 2 or mixtures.shape[0] != est.shape[0] or mixtures.shape[2:] != est.shape[2:]:
        raise ValueError(f"mixit_loss: est {tuple(est.shape)} vs mixtures {tuple(mixtures.shape)}")
    b, n_slots = est.shape[:2]
    e = est.flatten(2)  # [B, M, D]
    s = mixtures.flatten(2)  # [B, 2, D]
    assign = all_assignments(n_slots, est.device)  # [P, M]
    w = torch.stack([assign == 0, assign == 1], dim=1).to(torch.float64)  # [P, 2, M]
    with torch.no_grad():
        e64, s64 = e.detach().double(), s.detach().double()
        gram = e64 @ e64.transpose(1, 2)  # [B, M, M]
        cross = s64 @ e64.transpose(1, 2)  # [B, 2, M]
        energy = s64.pow(2).sum(-1)  # [B, 2]
        err = (
            energy.unsqueeze(1)
            - 2 * torch.einsum("pjk,bjk->bpj", w, cross)
            + torch.einsum("pjk,bkl,pjl->bpj", w, gram, w)
        ).clamp_min(0)  # [B, P, 2]
        cost = (10 * torch.log10(err + tau * energy.unsqueeze(1) + eps)).sum(-1)  # [B, P]
        best = cost.argmin(dim=1)  # [B]
    w_best = w[best].to(e.dtype)  # [B, 2, M]
    est_mix = torch.einsum("bjk,bkd->bjd", w_best, e)  # [B, 2, D]
    per_mix = 10 * torch.log10((s - est_mix).pow(2).sum(-1) + tau * s.pow(2).sum(-1) + eps)  # [B, 2]
    return _reduce(per_mix.sum(-1), reduction), assign[best]


# --------------------------------------------------------------------------- supervised regression

def neg_snr_pit_loss(
    est: torch.Tensor, ref: torch.Tensor, eps: float = 1e-8, reduction: str = "mean"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Supervised regression (Section 5.1): PIT with ``ℓ(x, x̂) = 10 log10(||x − x̂||² + eps)`` per source.

    The permutation minimises the sum of ``ℓ`` over slots (:func:`best_permutation` on
    the pairwise ``ℓ`` matrix); the loss is the mean of ``ℓ`` over slots (and examples).
    Returns ``(loss, perm)`` with ``perm`` in the :mod:`surfbench.pit` convention.
    """
    d = est[0, 0].numel()
    with torch.no_grad():
        cost = 10 * torch.log10(pairwise_mse(est.detach(), ref.detach()) * d + eps)  # [B, K, K]
        perm = best_permutation(cost)
    ref_aligned = permute(ref, perm)
    per_source = 10 * torch.log10((est - ref_aligned).flatten(2).pow(2).sum(-1) + eps)  # [B, K]
    return _reduce(per_source.mean(-1), reduction), perm
