"""Permutation-invariant training (PIT) over the K source slots (paper Eq. 3).

Conventions used everywhere in surfbench:

* a batch of sources is ``[B, K, *d]``;
* ``cost[b, i, j]`` is the cost of pairing estimate slot ``i`` with reference slot ``j``;
* a permutation ``perm[b]`` is a LongTensor row where ``perm[b, i] = j`` means
  estimate slot ``i`` is paired with reference slot ``j``;
* ``permute(ref, perm)[b, i] = ref[b, perm[b, i]]`` reorders the references so
  that slot ``i`` lines up with estimate slot ``i`` (this is ``Υ x`` in the paper).
"""
from __future__ import annotations

import itertools
from typing import Callable

import numpy as np
import torch

#: For K up to this value every permutation is tried; above it the Hungarian
#: algorithm is used.  Both give the same optimum (tested); exhaustive search is
#: exact and batched on the device, Hungarian runs per mixture on the CPU.
EXHAUSTIVE_MAX_K = 3


def pairwise_mse(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``cost[b, i, j] = mean((est[b, i] - ref[b, j])**2)``, shape ``[B, K, K]``."""
    if est.shape != ref.shape:
        raise ValueError(f"pairwise_mse: shapes differ: est {tuple(est.shape)} vs ref {tuple(ref.shape)}")
    e = est.flatten(2)
    r = ref.flatten(2)
    # ||e_i - r_j||^2 = |e_i|^2 + |r_j|^2 - 2 e_i.r_j ; computed directly for exactness.
    diff = e.unsqueeze(2) - r.unsqueeze(1)  # [B, K, K, D]
    return diff.pow(2).mean(-1)


def all_permutations(k: int, device=None) -> torch.Tensor:
    """All ``k!`` permutations of ``range(k)`` as a ``[k!, k]`` LongTensor."""
    return torch.tensor(list(itertools.permutations(range(k))), dtype=torch.long, device=device)


def best_permutation(cost: torch.Tensor, exhaustive_max_k: int = EXHAUSTIVE_MAX_K) -> torch.Tensor:
    """Per-mixture permutation minimising ``sum_i cost[b, i, perm[b, i]]``.

    ``cost``: ``[B, K, K]``.  Returns ``perm``: ``[B, K]`` (long, on ``cost.device``).
    """
    if cost.dim() != 3 or cost.shape[1] != cost.shape[2]:
        raise ValueError(f"best_permutation: cost must be [B, K, K], got {tuple(cost.shape)}")
    b, k, _ = cost.shape
    if k <= exhaustive_max_k:
        perms = all_permutations(k, cost.device)  # [P, K]
        # total[b, p] = sum_i cost[b, i, perms[p, i]]
        idx = perms.unsqueeze(0).expand(b, -1, -1)  # [B, P, K]
        gathered = torch.gather(cost.unsqueeze(1).expand(-1, perms.shape[0], -1, -1), 3, idx.unsqueeze(-1)).squeeze(-1)
        total = gathered.sum(-1)  # [B, P]
        return perms[total.argmin(dim=1)]
    return hungarian_permutation(cost)


def hungarian_permutation(cost: torch.Tensor) -> torch.Tensor:
    """Same contract as :func:`best_permutation`, always by ``scipy.optimize.linear_sum_assignment``."""
    from scipy.optimize import linear_sum_assignment  # here, not at import: scipy.optimize costs ~0.7 s per job

    c = cost.detach().to("cpu", torch.float64).numpy()
    out = np.empty(c.shape[:2], dtype=np.int64)
    for i in range(c.shape[0]):
        rows, cols = linear_sum_assignment(c[i])
        out[i, rows] = cols
    return torch.from_numpy(out).to(cost.device)


def permute(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``y[b, i] = x[b, perm[b, i]]`` for ``x: [B, K, *d]``, ``perm: [B, K]``."""
    idx = perm.view(*perm.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return torch.gather(x, 1, idx)


def inverse_permutation(perm: torch.Tensor) -> torch.Tensor:
    """``inv`` with ``permute(permute(x, perm), inv) == x``."""
    return torch.argsort(perm, dim=-1)


def pit_align(
    est: torch.Tensor,
    ref: torch.Tensor,
    pairwise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = pairwise_mse,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reorder ``ref`` to best match ``est``; returns ``(permute(ref, perm), perm)``. No gradient flows into the choice."""
    with torch.no_grad():
        perm = best_permutation(pairwise(est, ref))
    return permute(ref, perm), perm
