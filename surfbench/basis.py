"""BASIS separation (Jayaram & Thickstun 2020): a noise-conditional score prior on single
sources, then annealed Langevin dynamics on every source with the mixture constraint.

Images follow the BASIS protocol: sources are full images ``a_k`` in ``[0, 1]`` and the
observed mixture is their **average** ``m = (1/K) Σ_k a_k``.  The returned estimates are
full images ``[B, K, *d]`` (not the half images ``a_k / K`` used elsewhere in surfbench).

``score_fn(x: [N, *d], sigma: [N]) -> [N, *d]`` (the ``ScoreNet`` contract).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def geometric_sigmas(sigma_max: float = 1.0, sigma_min: float = 0.01, levels: int = 10) -> torch.Tensor:
    """Noise levels ``σ_1 > ... > σ_L``, geometric from ``sigma_max`` to ``sigma_min`` (float32, ``[levels]``)."""
    if levels == 1:
        return torch.tensor([float(sigma_max)])
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), levels, dtype=torch.float64)).float()


def dsm_loss(score_fn: ScoreFn, x: torch.Tensor, sigmas: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Denoising score matching (NCSN, Song & Ermon 2019) with weight ``λ(σ) = σ²``.

    One level ``σ`` drawn uniformly per example; ``x̃ = x + σ z``;
    loss = mean over examples of ``0.5 σ² · mean_pixels (s(x̃, σ) + z/σ)²``.
    """
    b = x.shape[0]
    gen_device = generator.device if generator is not None else x.device
    sig = sigmas.to(device=x.device, dtype=x.dtype)
    idx = torch.randint(len(sig), (b,), generator=generator, device=gen_device).to(x.device)
    z = torch.randn(x.shape, generator=generator, device=gen_device, dtype=x.dtype).to(x.device)
    sigma = sig[idx]
    sb = sigma.reshape(b, *([1] * (x.dim() - 1)))
    score = score_fn(x + sb * z, sigma)
    per_example = (score + z / sb).reshape(b, -1).pow(2).mean(dim=1)
    return (0.5 * sigma.pow(2) * per_example).mean()


#: ``basis.update_order``: all sources from the same state (the reference's MNIST code) or one after the
#: other, each seeing the sources already updated (its CIFAR-10 code)
UPDATE_ORDERS = ("jacobi", "gauss_seidel")


def check_constraint_step(n_sources: int, constraint_weight: float, lr: float, sigma_min: float,
                          update_order: str = "jacobi") -> float:
    """``g = K w lr / σ_L²`` (jacobi) or ``g = w lr / σ_L²`` (gauss_seidel); raises ``ValueError`` (naming the
    config keys) when ``g ≥ 1``.

    ``η/σ² = lr/σ_L²`` at every level.  A joint (jacobi) step of :func:`basis_separate` multiplies the
    mixture residual ``K m − Σ_j a_j`` by ``1 − 2g``; a Gauss–Seidel sweep multiplies it by ``1 − 2g``
    once per source.  ``g ≥ 1`` overshoots by at least as much as it corrects, and the chain diverges.
    The reference recipes: MNIST (K = 2, w = 1, lr = 3e-5, σ_L = 0.01, jacobi) has ``g = 0.6``,
    CIFAR-10 (w = 0.5, gauss_seidel) ``g = 0.15``.
    """
    if update_order not in UPDATE_ORDERS:
        raise ValueError(f"basis.update_order = {update_order!r} is not one of {UPDATE_ORDERS}")
    n = n_sources if update_order == "jacobi" else 1
    gain = n * constraint_weight * lr / sigma_min**2
    if gain >= 1.0:
        what = "K * constraint_weight" if update_order == "jacobi" else "constraint_weight"
        raise ValueError(
            f"basis ({update_order}): {what} * lr / sigma_min^2 = {n * constraint_weight} * {lr} / {sigma_min:.4g}^2"
            f" = {gain:.3g} >= 1: each Langevin step overshoots the mixture constraint by more than it corrects and the"
            f" chain diverges; lower basis.lr or basis.constraint_weight, or raise basis.sigma_min")
    return gain


@torch.no_grad()
def basis_separate(
    score_fn: ScoreFn,
    mixture: torch.Tensor,
    n_sources: int,
    sigmas: torch.Tensor,
    steps_per_level: int = 100,
    lr: float = 3e-5,
    noise=None,
    clamp: tuple[float, float] | None = (0.0, 1.0),
    constraint_weight: float = 1.0,
    update_order: str = "jacobi",
) -> torch.Tensor:
    """Annealed Langevin separation of averaged mixtures ``mixture: [B, *d]`` into ``[B, K, *d]`` images.

    Init ``a_k ~ U[0, 1]``; for each level ``σ`` (``steps_per_level`` steps,
    ``η = lr (σ/σ_L)²``)::

        a_k += η s(a_k, σ) − w (η/σ²) ∇_{a_k} ||K m − Σ_j a_j||² + sqrt(2η) ε
             = η s(a_k, σ) + 2 w (η/σ²) (K m − Σ_j a_j)        + sqrt(2η) ε

    The reference code (BASIS, ``ncsn/runners/multiple_mnist_runner.py``) penalises
    ``||m_sum − Σ_j a_j||²`` with ``m_sum`` the **sum** of the full images; the observed
    mixture here is their average ``m``, so ``m_sum = K m``.  Written with the average the
    penalty is ``K² ||m − mean_j a_j||²``: the factor ``K²`` is part of the reference's
    constraint and is kept.  ``w = constraint_weight`` is a config **choice**: 1.0 is the
    reference's MNIST code; its CIFAR-10 code (``cifar_runner.py``) drops the 2 of the
    gradient, i.e. ``w = 0.5``.
    ``update_order`` (a config **choice**): ``"jacobi"`` updates every source from the same state,
    as the reference's MNIST code; ``"gauss_seidel"`` updates them one after the other, source ``k``'s
    residual ``K m − Σ_j a_j`` already holding the new ``a_j`` of ``j < k``, as its CIFAR-10 code
    (``x0 += ...`` then ``x1 += ...`` with the updated ``x0``).  Both evaluate every score, and draw
    every noise, before the sweep (a source's score depends on that source only, which is not updated
    before its turn), so the two orders see the same random numbers.
    The mixture residual contracts by ``1 − 2 K w η/σ²`` per joint step, by ``1 − 2 w η/σ²`` per
    source update of a sweep (``η/σ² = lr/σ_L²`` at every level); a step that diverges is refused
    (:func:`check_constraint_step`).
    Clamped to ``clamp`` (``[0, 1]``) at the end only (``None``: no clamp).
    ``noise``: an :class:`~surfbench.seeding.ItemNoise` (``.rand``/``.randn`` returning
    ``[B, *shape]``) so the result of an item is independent of its batch; ``None``:
    the global torch generator.
    """
    b, d = mixture.shape[0], tuple(mixture.shape[1:])
    k = int(n_sources)
    dev, dt = mixture.device, mixture.dtype

    def draw(kind: str) -> torch.Tensor:
        if noise is None:
            fn = torch.rand if kind == "rand" else torch.randn
            return fn((b, k, *d), device=dev, dtype=dt)
        out = noise.rand(k, *d) if kind == "rand" else noise.randn(k, *d)
        return out.to(device=dev, dtype=dt)

    sig = sigmas.detach().to("cpu", torch.float64)
    sigma_last = float(sig[-1])
    check_constraint_step(k, constraint_weight, lr, sigma_last, update_order)
    a = draw("rand")
    for sigma in sig.tolist():
        eta = lr * (sigma / sigma_last) ** 2
        sigma_vec = torch.full((b * k,), sigma, device=dev, dtype=dt)
        for _ in range(steps_per_level):
            score = score_fn(a.flatten(0, 1), sigma_vec).reshape(a.shape)
            noise_step = math.sqrt(2 * eta) * draw("randn")
            if update_order == "jacobi":
                resid = k * mixture - a.sum(dim=1)  # K m − Σ_j a_j (the reference's m_sum − Σ_j a_j), [B, *d]
                grad_constraint = -2.0 * resid.unsqueeze(1)  # ∇_{a_k} ||K m − Σ_j a_j||², the same for every k
                a = a + eta * score - constraint_weight * (eta / sigma**2) * grad_constraint + noise_step
            else:
                a = a.clone()
                for j in range(k):  # Gauss–Seidel: source j's residual holds the sources updated before it
                    grad_constraint = -2.0 * (k * mixture - a.sum(dim=1))
                    a[:, j] += (eta * score[:, j] - constraint_weight * (eta / sigma**2) * grad_constraint
                                + noise_step[:, j])
    if clamp is not None:
        a = a.clamp(clamp[0], clamp[1])
    return a
