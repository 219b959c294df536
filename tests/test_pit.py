"""PIT (surfbench.pit): exhaustive, Hungarian and a pure-Python brute force agree."""
import itertools

import pytest
import torch

from surfbench.pit import (
    best_permutation,
    hungarian_permutation,
    inverse_permutation,
    pairwise_mse,
    permute,
    pit_align,
)


def brute_force(cost_b):
    """Pure Python: (best total, best perm, second-best total) of one [K, K] cost matrix."""
    k = len(cost_b)
    totals = []
    for p in itertools.permutations(range(k)):
        totals.append((sum(cost_b[i][p[i]] for i in range(k)), p))
    totals.sort()
    return totals[0][0], list(totals[0][1]), totals[1][0]


def total_cost(cost, perm):
    return torch.gather(cost, 2, perm.unsqueeze(-1)).squeeze(-1).sum(-1)


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_best_permutation_matches_brute_force(k):
    g = torch.Generator().manual_seed(100 + k)
    cost = torch.rand(16, k, k, generator=g, dtype=torch.float64)
    perm_best = best_permutation(cost)
    perm_hung = hungarian_permutation(cost)
    perm_exh = best_permutation(cost, exhaustive_max_k=k)  # forced exhaustive, even above 3
    for name, perm in [("best", perm_best), ("hungarian", perm_hung), ("exhaustive", perm_exh)]:
        # every row is a permutation
        assert torch.equal(perm.sort(-1).values, torch.arange(k).expand(16, k)), name
    tot = {n: total_cost(cost, p) for n, p in [("best", perm_best), ("hung", perm_hung), ("exh", perm_exh)]}
    n_unique = 0
    for b in range(16):
        ref_total, ref_perm, second = brute_force(cost[b].tolist())
        for n, t in tot.items():
            assert abs(t[b].item() - ref_total) < 1e-12, (n, b)
        if second - ref_total > 1e-9:
            n_unique += 1
            assert perm_best[b].tolist() == ref_perm
            assert perm_hung[b].tolist() == ref_perm
            assert perm_exh[b].tolist() == ref_perm
    assert n_unique >= 12  # random costs: the optimum is almost always unique


def test_permute_inverse_identity():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, 3, 5, generator=g)
    perm = torch.stack([torch.randperm(4, generator=g) for _ in range(6)])
    y = permute(x, perm)
    for b in range(6):
        for i in range(4):
            assert torch.equal(y[b, i], x[b, perm[b, i]])
    inv = inverse_permutation(perm)
    assert torch.equal(permute(y, inv), x)
    assert torch.equal(permute(permute(x, inv), perm), x)


def test_pairwise_mse_definition():
    g = torch.Generator().manual_seed(1)
    e, r = torch.randn(2, 3, 7, generator=g), torch.randn(2, 3, 7, generator=g)
    c = pairwise_mse(e, r)
    assert torch.allclose(c[1, 0, 2], ((e[1, 0] - r[1, 2]) ** 2).mean())


@pytest.mark.parametrize("k", [2, 3, 4])
def test_pit_align_recovers_swap(k):
    g = torch.Generator().manual_seed(7)
    ref = torch.randn(5, k, 32, generator=g)
    swap = torch.stack([torch.randperm(k, generator=g) for _ in range(5)])
    est = permute(ref, swap) + 0.01 * torch.randn(5, k, 32, generator=g)
    aligned, perm = pit_align(est, ref)
    assert torch.equal(perm, swap)
    assert torch.equal(aligned, permute(ref, swap))
