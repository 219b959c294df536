"""Mixture recipes shared by every dataset (METHOD.md: BASIS protocol, MixIT mixtures of mixtures)."""
from __future__ import annotations

import numpy as np
import torch


def basis_pairs(n_images: int, n_mixtures: int | None, rng: np.random.Generator) -> np.ndarray:
    """Pairs of distinct images of one split (BASIS protocol: the mixture is their average).

    ``n_mixtures=None`` or ``<= n_images // 2``: disjoint pairs (each image used at most once);
    more mixtures than that: independent pairs of two distinct images.
    """
    if n_images < 2:
        raise ValueError(f"need at least 2 images to form a mixture, got {n_images}")
    if n_mixtures is None or n_mixtures <= n_images // 2:
        perm = rng.permutation(n_images)
        n = n_images // 2 if n_mixtures is None else n_mixtures
        return perm[: 2 * n].reshape(n, 2).astype(np.int64)
    a = rng.integers(0, n_images, n_mixtures)
    b = (a + rng.integers(1, n_images, n_mixtures)) % n_images  # b != a, uniform over the others
    return np.stack([a, b], 1).astype(np.int64)


def mixtures_of_mixtures(sources: torch.Tensor, single_source_prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """MixIT input from ``2B`` K-source examples: ``[B, 2, *d]`` — the two mixtures of each mixture of mixtures.

    Each of the two mixtures keeps all its K sources, or, with probability
    ``single_source_prob``, only its first source (images, Wisdom et al. 2020:
    with K = 2 this gives MoMs of 2/3/4 sources with 25/50/25 %).  The single source
    keeps its scale in the sum, so every source has the same scale in every mixture.
    """
    if sources.shape[0] % 2:
        raise ValueError(f"mixtures_of_mixtures needs an even number of examples, got {sources.shape[0]}")
    mixtures = sources.sum(1)
    if single_source_prob > 0:
        single = torch.rand(sources.shape[0], generator=generator) < single_source_prob
        single = single.to(sources.device).view(-1, *([1] * (mixtures.dim() - 1)))
        mixtures = torch.where(single, sources[:, 0], mixtures)
    return mixtures.view(sources.shape[0] // 2, 2, *mixtures.shape[1:])
