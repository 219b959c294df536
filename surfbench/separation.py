"""Separation procedures shared by methods: sampling a flow model, reducing MixIT slots, drawing t."""
from __future__ import annotations

import itertools

import torch

from .flow import VelocityFn, euler_sample, mixture_consistent_start, mixture_rms, project_perp


def noise_std(mixtures: torch.Tensor, training_cfg: dict) -> torch.Tensor:
    """Standard deviation of the start noise per mixture, ``[B, 1, 1...]`` (config ``sigma_z``, ``sigma_z_scale``)."""
    b = mixtures.shape[0]
    std = torch.full((b,), float(training_cfg["sigma_z"]), device=mixtures.device, dtype=mixtures.dtype)
    if training_cfg.get("sigma_z_scale", "absolute") == "mixture_rms":
        std = std * mixture_rms(mixtures)
    return std.view(b, 1, *([1] * (mixtures.dim() - 1)))


def start_noise(mixtures: torch.Tensor, n_sources: int, training_cfg: dict, noise=None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """``x0`` of Eq. 4 for real mixtures; ``noise`` (per item) or ``generator`` (training) draws ``z``."""
    shape = (n_sources, *mixtures.shape[1:])
    if noise is not None:
        z = noise.randn(*shape)
    else:
        z = torch.randn((mixtures.shape[0], *shape), generator=generator)
    return mixture_consistent_start(mixtures, noise_std(mixtures, training_cfg) * z.to(mixtures.device, mixtures.dtype))


def flow_separate(velocity_fn: VelocityFn, mixtures: torch.Tensor, n_sources: int, training_cfg: dict, steps: int,
                  noise=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample ``[B, K, *d]`` separations: Euler from ``x0`` (Eq. 4) to t = 1 (5 steps in the paper)."""
    x0 = start_noise(mixtures, n_sources, training_cfg, noise, generator)
    return euler_sample(velocity_fn, x0, mixtures, steps)


def draw_times(batch: int, training_cfg: dict, generator: torch.Generator, device) -> torch.Tensor:
    """``t = u ** time_power``, ``u ~ U(0, 1)``, broadcast to ``[B]``: one per example, or one per batch (the
    paper's listing) by ``time_sampling``.  ``time_power`` 1 is the paper's ``t ~ U(0, 1)``; above 1 the density
    ``t ** (1/p - 1) / p`` puts more of the training near t = 0, where the Euler sampler starts (a choice)."""
    per_example = training_cfg["time_sampling"] == "per_example"
    t = torch.rand(batch if per_example else 1, generator=generator)
    power = float(training_cfg.get("time_power", 1.0))
    if power != 1.0:
        t = t.pow(power)
    return t.expand(batch).to(device)


#: ``mixit.teacher_reduction``: label-free rules that turn MixIT's M slots into K estimates
TEACHER_REDUCTIONS = ("top_energy", "merge_closest")


def _top_energy_slots(est: torch.Tensor, n_sources: int) -> torch.Tensor:
    """Indices ``[B, K]`` (ascending) of the K slots of ``est: [B, M, *d]`` with the most energy."""
    energy = est.flatten(2).pow(2).sum(-1)  # [B, M]
    return energy.topk(n_sources, dim=1).indices.sort(dim=1).values


def reduce_slots_top_energy(est: torch.Tensor, n_sources: int, mixtures: torch.Tensor) -> torch.Tensor:
    """MixIT's M slots -> K estimates: keep the K most energetic slots, then make them sum to the mixture.

    (METHOD.md, config ``mixit.teacher_reduction: top_energy``; a choice.)  The remainder
    ``m - Σ kept`` is spread equally over the kept slots (mixture-consistency projection).
    """
    idx = _top_energy_slots(est, n_sources)
    kept = torch.gather(est, 1, idx.view(*idx.shape, *([1] * (est.dim() - 2))).expand(-1, -1, *est.shape[2:]))
    return project_perp(kept) + mixtures.unsqueeze(1) / n_sources


def reduce_slots_merge_closest(est: torch.Tensor, n_sources: int, mixtures: torch.Tensor) -> torch.Tensor:
    """MixIT's M slots -> K estimates without labels: keep the K most energetic slots and add every other slot,
    whole, to the kept slot it is closest to (largest cosine similarity; ties: the first kept slot).

    (Config ``mixit.teacher_reduction: merge_closest``; a choice.)  Every slot goes to exactly one estimate,
    so estimates of mixture-consistent slots sum to the mixture; the projection only removes rounding.
    """
    b, k = est.shape[0], n_sources
    flat = est.flatten(2)  # [B, M, D]
    kept = _top_energy_slots(est, k)  # [B, K]
    unit = flat / flat.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    kept_unit = torch.gather(unit, 1, kept.unsqueeze(-1).expand(-1, -1, unit.shape[-1]))  # [B, K, D]
    owner = (unit @ kept_unit.transpose(1, 2)).argmax(-1)  # [B, M]: the estimate each slot joins
    owner = owner.scatter(1, kept, torch.arange(k, device=est.device).expand(b, k))  # a kept slot is its own
    w = torch.nn.functional.one_hot(owner, k).transpose(1, 2).to(flat.dtype)  # [B, K, M]
    merged = (w @ flat).view(b, k, *est.shape[2:])
    return project_perp(merged) + mixtures.unsqueeze(1) / n_sources


def reduce_slots(est: torch.Tensor, n_sources: int, mixtures: torch.Tensor, rule: str) -> torch.Tensor:
    """MixIT's M slots ``[B, M, *d]`` -> K estimates ``[B, K, *d]`` by the label-free ``rule``
    (``mixit.teacher_reduction``)."""
    if rule == "top_energy":
        return reduce_slots_top_energy(est, n_sources, mixtures)
    if rule == "merge_closest":
        return reduce_slots_merge_closest(est, n_sources, mixtures)
    raise ValueError(f"mixit.teacher_reduction = {rule!r} is not one of {TEACHER_REDUCTIONS}")


def reduce_slots_oracle(est: torch.Tensor, references: torch.Tensor, tau: float = 1e-3,
                        eps: float = 1e-8) -> torch.Tensor:
    """MixIT's M slots -> K estimates by the best assignment **given the references** (for scoring only).

    Each slot goes to one reference; estimate k is the sum of the slots assigned to reference k; the
    assignment minimises ``Σ_k 10 log10(||r_k − Σ_{slots→k} x̂||² + τ ||r_k||² + eps)`` over all ``K^M``
    (Wisdom et al. 2020, Eq. 3, with the references as the targets: ``mixit.apply`` of
    google-research/sound-separation, ``models/train/mixit.py``, which allows fewer references than
    estimates; the loss is its ``log_mse_loss`` with the 30 dB cap, ``τ = mixit.tau``).  For scoring, every
    reference with any energy receives at least one slot when there are enough slots (our choice: an empty
    estimate of a speaker would score 0 dB SI-SDR, more than a poor separation; the smoke run of the paper
    profile showed barely trained 4-slot models scored that way); a silent reference may receive none.  Estimates of mixture-consistent slots sum to the mixture.
    Config ``evaluation.extra_slots: oracle_assignment``.
    """
    if est.shape[0] != references.shape[0] or est.shape[2:] != references.shape[2:]:
        raise ValueError(f"reduce_slots_oracle: est {tuple(est.shape)} vs references {tuple(references.shape)}")
    b, n_slots = est.shape[:2]
    k = references.shape[1]
    e, r = est.flatten(2), references.flatten(2)  # [B, M, D], [B, K, D]
    assign = torch.tensor(list(itertools.product(range(k), repeat=n_slots)), device=est.device)  # [P, M]
    w = torch.nn.functional.one_hot(assign, k).transpose(1, 2).to(torch.float64)  # [P, K, M]
    with torch.no_grad():
        e64, r64 = e.double(), r.double()
        gram = e64 @ e64.transpose(1, 2)  # [B, M, M]
        cross = r64 @ e64.transpose(1, 2)  # [B, K, M]
        energy = r64.pow(2).sum(-1)  # [B, K]
        err = (energy.unsqueeze(1) - 2 * torch.einsum("pkm,bkm->bpk", w, cross)
               + torch.einsum("pkm,bmn,pkn->bpk", w, gram, w)).clamp_min(0)  # [B, P, K]
        score = (10 * torch.log10(err + tau * energy.unsqueeze(1) + eps)).sum(-1)  # [B, P]
        # a reference with energy gets at least one slot where the slots suffice: an empty estimate scores
        # 0 dB SI-SDR, more than a poor one, so a method would gain from separating less
        starved = ((w.sum(-1) == 0).unsqueeze(0) & (energy > 0).unsqueeze(1)).any(-1)  # [B, P]
        score = torch.where(starved & (~starved).any(1, keepdim=True), torch.inf, score)
        best = score.argmin(dim=1)  # [B]
    return (w[best].to(e.dtype) @ e).view(b, k, *est.shape[2:])
