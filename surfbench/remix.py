"""Remixing across the batch (paper Eq. 14-15).

The teacher's estimates ``X̄: [B, K, *d]`` are flattened to ``B·K`` rows; a uniform
permutation ``Π`` of the rows regroups them into ``B`` new K-tuples
``X̃ = Π X̄`` with ``X̃.flatten(0, 1) = X̄.flatten(0, 1)[pi]``.

Under ``torchrun`` (N processes, each with ``b = B/N`` mixtures) ``Π`` acts on the
**global** batch, as Algorithm 1 asks (``Π ~ U(S_BK)``), not on each process's ``b``:
:func:`draw_global_remix` returns a :class:`GlobalRemix`, which :func:`remix` and
:func:`unremix` accept in place of the permutation tensor.  With one process it returns
the plain tensor, so single-process runs are exactly what they were.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def draw_remix_permutation(batch: int, n_sources: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """A uniform permutation ``Π`` of the ``batch * n_sources`` rows, LongTensor ``[B*K]``."""
    n = batch * n_sources
    gen_device = generator.device if generator is not None else device
    pi = torch.randperm(n, generator=generator, device=gen_device)
    return pi.to(device) if device is not None else pi


class GlobalRemix:
    """``Π`` over the global batch of ``world`` processes; this process (``rank``) holds ``b`` rows of it.

    The global batch is the processes' batches in rank order: process ``r`` owns mixtures
    ``r·b … (r+1)·b − 1``, both of ``X̄`` (the observed mixtures) and of ``X̃ = Π X̄`` (the
    remixed ones); every process has the same ``b`` (the trainer's batches do).  :meth:`remix` gathers ``X̄`` from every process and returns this
    process's rows of ``Π X̄``; :meth:`unremix` gathers the remixed rows and returns this
    process's rows of ``Π⁻¹ X̃``, i.e. the ones that belong to its own observed mixtures.

    Gradients: the gather is autograd-aware (``torch.distributed.nn.functional.all_gather``);
    its backward *sums* over the processes the gradients that their losses send to a row.
    Each process's loss is the mean over its ``b`` mixtures, so the losses add up to
    ``N·L`` (``L``: the single-process loss on the ``B`` mixtures), and DDP's average over
    the N processes gives each one exactly ``∇L``: no further scaling.
    """

    def __init__(self, pi: torch.Tensor, rank: int, world: int):
        self.pi, self.rank, self.world = pi, rank, world

    def _own_rows(self, x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        """Rows of ``perm`` (``[B·K]``) that make this process's ``b`` K-tuples, ``[b, K]``."""
        b, k = x.shape[:2]
        if perm.numel() != self.world * b * k:
            raise ValueError(f"GlobalRemix: pi has {perm.numel()} entries for {self.world} processes x {b}x{k} rows")
        return perm.view(self.world * b, k)[self.rank * b:(self.rank + 1) * b]

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        """``[b, K, *d]`` of every process -> ``[B·K, *d]`` in rank order (autograd-aware)."""
        from torch.distributed.nn.functional import all_gather  # with a backward, unlike dist.all_gather

        return torch.cat(all_gather(x)).flatten(0, 1)

    def remix(self, x_bar: torch.Tensor) -> torch.Tensor:
        return self._gather(x_bar)[self._own_rows(x_bar, self.pi)]

    def unremix(self, x_tilde: torch.Tensor) -> torch.Tensor:
        return self._gather(x_tilde)[self._own_rows(x_tilde, torch.argsort(self.pi))]


def draw_global_remix(batch: int, n_sources: int, generator: torch.Generator | None = None,
                      device=None) -> torch.Tensor | GlobalRemix:
    """``Π ~ U(S_BK)`` over the mixtures of all processes; ``batch`` is this process's ``b``.

    One process: the tensor of :func:`draw_remix_permutation` (``B = b``).  Several
    (``torch.distributed`` initialised): rank 0 draws ``Π`` of the ``B = N·b`` mixtures from
    its ``generator`` and broadcasts it, so every process holds the same ``Π`` (the other
    ranks' generators are not used); a :class:`GlobalRemix`.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return draw_remix_permutation(batch, n_sources, generator, device)
    rank, world = dist.get_rank(), dist.get_world_size()
    if rank == 0:
        pi = draw_remix_permutation(world * batch, n_sources, generator, device)
    else:
        pi = torch.empty(world * batch * n_sources, dtype=torch.long, device=device)
    dist.broadcast(pi, src=0)
    return GlobalRemix(pi, rank, world)


def remix(x: torch.Tensor, pi: torch.Tensor | GlobalRemix) -> torch.Tensor:
    """Eq. 14: ``X̃ = Π X̄``, i.e. ``X̃.flatten(0, 1) = X̄.flatten(0, 1)[pi]`` (this process's rows for a GlobalRemix)."""
    if isinstance(pi, GlobalRemix):
        return pi.remix(x)
    if pi.numel() != x.shape[0] * x.shape[1]:
        raise ValueError(f"remix: pi has {pi.numel()} entries for {x.shape[0]}x{x.shape[1]} rows")
    return x.flatten(0, 1)[pi].reshape(x.shape)


def unremix(x_tilde: torch.Tensor, pi: torch.Tensor | GlobalRemix) -> torch.Tensor:
    """``Π⁻¹``: rows back to the mixtures they came from; ``unremix(remix(x, pi), pi) == x``."""
    if isinstance(pi, GlobalRemix):
        return pi.unremix(x_tilde)
    if pi.numel() != x_tilde.shape[0] * x_tilde.shape[1]:
        raise ValueError(f"unremix: pi has {pi.numel()} entries for {x_tilde.shape[0]}x{x_tilde.shape[1]} rows")
    inv = torch.argsort(pi)
    return x_tilde.flatten(0, 1)[inv].reshape(x_tilde.shape)


def sum_sources(x: torch.Tensor) -> torch.Tensor:
    """Eq. 15: ``(I_B ⊗ 1ᵀ) X`` — each group of K rows summed to a mixture, ``[B, *d]``."""
    return x.sum(1)
