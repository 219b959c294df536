"""Remixing across the batch (paper Eq. 14-15).

The teacher's estimates ``X̄: [B, K, *d]`` are flattened to ``B·K`` rows; a uniform
permutation ``Π`` of the rows regroups them into ``B`` new K-tuples
``X̃ = Π X̄`` with ``X̃.flatten(0, 1) = X̄.flatten(0, 1)[pi]``.
"""
from __future__ import annotations

import torch


def draw_remix_permutation(batch: int, n_sources: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """A uniform permutation ``Π`` of the ``batch * n_sources`` rows, LongTensor ``[B*K]``."""
    n = batch * n_sources
    gen_device = generator.device if generator is not None else device
    pi = torch.randperm(n, generator=generator, device=gen_device)
    return pi.to(device) if device is not None else pi


def remix(x: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
    """Eq. 14: ``X̃ = Π X̄``, i.e. ``X̃.flatten(0, 1) = X̄.flatten(0, 1)[pi]``."""
    if pi.numel() != x.shape[0] * x.shape[1]:
        raise ValueError(f"remix: pi has {pi.numel()} entries for {x.shape[0]}x{x.shape[1]} rows")
    return x.flatten(0, 1)[pi].reshape(x.shape)


def unremix(x_tilde: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
    """``Π⁻¹``: rows back to the mixtures they came from; ``unremix(remix(x, pi), pi) == x``."""
    if pi.numel() != x_tilde.shape[0] * x_tilde.shape[1]:
        raise ValueError(f"unremix: pi has {pi.numel()} entries for {x_tilde.shape[0]}x{x_tilde.shape[1]} rows")
    inv = torch.argsort(pi)
    return x_tilde.flatten(0, 1)[inv].reshape(x_tilde.shape)


def sum_sources(x: torch.Tensor) -> torch.Tensor:
    """Eq. 15: ``(I_B ⊗ 1ᵀ) X`` — each group of K rows summed to a mixture, ``[B, *d]``."""
    return x.sum(1)
