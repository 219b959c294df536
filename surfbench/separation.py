"""Separation procedures shared by methods: sampling a flow model, reducing MixIT slots, drawing t."""
from __future__ import annotations

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


def draw_times(batch: int, per_example: bool, generator: torch.Generator, device) -> torch.Tensor:
    """``t ~ U(0, 1)``: one per example, or one per batch (the paper's listing) broadcast to ``[B]``."""
    t = torch.rand(batch if per_example else 1, generator=generator)
    return t.expand(batch).to(device)


def reduce_slots_top_energy(est: torch.Tensor, n_sources: int, mixtures: torch.Tensor) -> torch.Tensor:
    """MixIT's M slots -> K estimates: keep the K most energetic slots, then make them sum to the mixture.

    (METHOD.md, config ``mixit.reduce: top_energy``; a choice.)  The remainder
    ``m - Σ kept`` is spread equally over the kept slots (mixture-consistency projection).
    """
    energy = est.flatten(2).pow(2).sum(-1)  # [B, M]
    idx = energy.topk(n_sources, dim=1).indices.sort(dim=1).values
    kept = torch.gather(est, 1, idx.view(*idx.shape, *([1] * (est.dim() - 2))).expand(-1, -1, *est.shape[2:]))
    return project_perp(kept) + mixtures.unsqueeze(1) / n_sources
