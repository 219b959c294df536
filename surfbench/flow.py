"""Flow matching for source separation (FLOSS, paper Section 2.2; SURF pieces of Section 3).

Shapes: sources ``[B, K, *d]``, mixtures ``[B, *d]``, times ``t: [B]``.
A *velocity function* has the contract ``velocity_fn(x_t, t, m) -> [B, K, *d]``;
wrap a raw :class:`FlowNet` with :func:`consistent_velocity` to apply the
mixture-consistency projection layer ``P⊥`` to its outputs.

Permutations follow :mod:`surfbench.pit`: ``permute(x1, perm)[b, i] = x1[b, perm[b, i]]``.
"""
from __future__ import annotations

from typing import Callable

import torch

from surfbench.pit import best_permutation, pairwise_mse, permute
from surfbench.numerics import sqrt

VelocityFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- helpers

def _as_batch_t(t, batch: int, like: torch.Tensor) -> torch.Tensor:
    """``t`` (float, 0-d, ``[1]`` or ``[B]``) as a ``[B]`` tensor on ``like``'s device/dtype."""
    t = torch.as_tensor(t, device=like.device, dtype=like.dtype)
    if t.dim() == 0 or t.numel() == 1:
        return t.reshape(1).expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t must be a scalar or [B]={batch}, got {tuple(t.shape)}")
    return t


def _bcast(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``[B]`` -> ``[B, 1, ..., 1]`` broadcastable against ``x``."""
    return t.reshape(t.shape[0], *([1] * (x.dim() - 1)))


# --------------------------------------------------------------------------- projection / start point

def project_perp(x: torch.Tensor) -> torch.Tensor:
    """``P⊥ x = x - mean over sources`` (axis 1 of ``[B, K, *d]``); the outputs sum to zero over sources."""
    return x - x.mean(dim=1, keepdim=True)


def consistent_velocity(model: Callable) -> VelocityFn:
    """The mixture-consistency projection layer: ``(x_t, t, m) -> P⊥ model(x_t, t, m)``."""

    def velocity_fn(x_t: torch.Tensor, t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return project_perp(model(x_t, t, m))

    return velocity_fn


def mixture_consistent_start(m: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Eq. 4: ``x0 = m/K (every slot) + P⊥ z``; ``z: [B, K, *d]`` already scaled by ``sigma_z``. ``Σ_k x0_k = m``."""
    if m.shape != (z.shape[0],) + tuple(z.shape[2:]):
        raise ValueError(f"mixture_consistent_start: m {tuple(m.shape)} does not match z {tuple(z.shape)}")
    k = z.shape[1]
    return m.unsqueeze(1) / k + project_perp(z)


def mixture_rms(m: torch.Tensor) -> torch.Tensor:
    """RMS of each mixture ``m: [B, *d]`` as ``[B]`` (floored at 1e-8): the level ``sigma_z_scale: mixture_rms`` follows."""
    return sqrt(m.reshape(m.shape[0], -1).pow(2).mean(1)).clamp_min(1e-8)


# --------------------------------------------------------------------------- network preconditioning

def velocity_preconditioning(t: torch.Tensor, sigma_n2: torch.Tensor, sigma_d2: torch.Tensor):
    """Coefficients ``(c_in, c_skip, c_out)`` of the preconditioned velocity network (choice).

    The velocity model is ``v(x_t) = c_skip·x̃_t + c_out·F(c_in·x̃_t, t, m)`` where ``x̃_t = P⊥ x_t``,
    following the preconditioning principle of Karras et al. 2022 ("Elucidating the Design Space of
    Diffusion-Based Generative Models", EDM, Sec. 5 and App. B.6) applied to the FLOSS velocity target.
    In the ``P⊥`` subspace ``x̃_t = (1-t)·n + t·u`` with start noise ``n`` (per-element variance
    ``sigma_n2``) and source deviation ``u`` (variance ``sigma_d2``), and the target is ``u - n``:

    * ``c_in = 1 / std(x̃_t)`` gives the network a unit-variance input at every ``t``;
    * ``c_skip = Cov(u - n, x̃_t) / Var(x̃_t)`` is the linear least-squares estimate of the target
      (``-1`` at ``t = 0``: the start noise is removed analytically, not reproduced by the network);
    * ``c_out² = Var(u - n) - c_skip·Cov(u - n, x̃_t)`` is that estimate's residual variance, so ``F``'s
      target has unit variance at every ``t``.

    All arguments broadcast against each other (``t`` as ``[B, 1, ...]``).
    """
    var = (1 - t) ** 2 * sigma_n2 + t ** 2 * sigma_d2
    cov = t * sigma_d2 - (1 - t) * sigma_n2
    c_skip = cov / var
    c_out = sqrt((sigma_d2 + sigma_n2 - c_skip * cov).clamp_min(0))
    return var.rsqrt(), c_skip, c_out


def source_spread(x1: torch.Tensor, relative_to_mixture: bool = False) -> float:
    """``sigma_data`` of :class:`PreconditionedFlow`: the standard deviation of ``P⊥ x1`` over all elements.

    ``x1: [N, K, *d]`` sources.  ``relative_to_mixture`` (for ``sigma_z_scale: mixture_rms``) divides each
    example by the RMS of its mixture ``Σ_k x1_k`` first.  Population std (divide by the element count).
    """
    dev = project_perp(x1.double())
    if relative_to_mixture:
        dev = dev / _bcast(mixture_rms(x1.double().sum(1)), dev)
    return float(dev.pow(2).mean().sqrt())


class PreconditionedFlow(torch.nn.Module):
    """A raw flow network ``F`` wrapped as ``v = c_skip·P⊥x_t + c_out·F(m/K + c_in·P⊥x_t, t, m)``.

    Config (``training.flow_preconditioning: edm``, a choice; the paper's network outputs the velocity
    directly, ``none``): the noise level is the start noise of Eq. 4 (``sigma_z``, scaled by the mixture
    RMS under ``sigma_z_scale: mixture_rms``), whose ``P⊥`` projection has variance
    ``sigma_z²·(K-1)/K``; ``sigma_data`` is the standard deviation of ``P⊥ x1`` (sources minus their
    mean over slots) on the training data, relative to the mixture RMS under ``mixture_rms``.
    The loss (Eq. 10) and the sampler are unchanged: only the function family the network spans
    is reparameterised (see :func:`velocity_preconditioning`).
    """

    def __init__(self, net: torch.nn.Module, n_sources: int, sigma_z: float, sigma_data: float,
                 sigma_z_scale: str = "absolute"):
        super().__init__()
        if sigma_z <= 0 or sigma_data <= 0:
            raise ValueError(f"PreconditionedFlow: sigma_z ({sigma_z}) and sigma_data ({sigma_data}) must be > 0")
        if sigma_z_scale not in ("absolute", "mixture_rms"):
            raise ValueError(f"PreconditionedFlow: unknown sigma_z_scale {sigma_z_scale!r}")
        self.net = net
        self.n_sources = int(n_sources)
        self.sigma_z = float(sigma_z)
        self.sigma_data = float(sigma_data)
        self.sigma_z_scale = sigma_z_scale

    def forward(self, x_t: torch.Tensor, t, m: torch.Tensor) -> torch.Tensor:
        b, k = x_t.shape[0], self.n_sources
        if x_t.shape[1] != k:
            raise ValueError(f"PreconditionedFlow built for {k} sources, got x_t {tuple(x_t.shape)}")
        t_vec = _as_batch_t(t, b, x_t)
        tt = _bcast(t_vec, x_t)
        scale = _bcast(mixture_rms(m), x_t) if self.sigma_z_scale == "mixture_rms" else torch.ones_like(tt)
        sigma_n2 = (self.sigma_z * scale) ** 2 * (k - 1) / k
        sigma_d2 = (self.sigma_data * scale) ** 2
        c_in, c_skip, c_out = velocity_preconditioning(tt, sigma_n2, sigma_d2)
        x_dev = project_perp(x_t)
        f = self.net(m.unsqueeze(1) / k + c_in * x_dev, t_vec, m)
        return c_skip * x_dev + c_out * f


#: floor of ``1 - t`` in :class:`DenoiserFlow` (a float32-safe divisor; the samplers never come near it)
DENOISER_MIN_GAP = 1e-3


class DenoiserFlow(torch.nn.Module):
    """A raw flow network ``D`` read as an estimate of the sources: ``v = (D(x_t, t, m) - x_t) / (1 - t)``.

    Config (``training.flow_preconditioning: denoiser``, a choice): the paper's denoiser view (Eq. 18-19,
    ``E[x1 | x_t] ≈ x_t + (1 - t) v``) solved for ``v``, so the network predicts ``x1`` rather than the
    velocity. On the interpolant of Eq. 11, ``x1 - x_t = (1 - t)(x1 - x0)``, so the loss of Eq. 10 is
    ``||D - σx1||² / (1 - t)²``: under ``log_loss`` the weight is an additive constant and the gradient
    is that of the plain ``x1`` error. The Euler sampler's last step (``dt = 1 - t``) lands on the
    network's last estimate. With a network whose untrained output is the mixture / K in every slot
    (``mb_tflocoformer`` with ``output: mask``) the untrained flow returns the unseparated mixture, not
    its start noise. ``1 - t`` is floored at :data:`DENOISER_MIN_GAP` (t is drawn in [0, 1)).
    """

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x_t: torch.Tensor, t, m: torch.Tensor) -> torch.Tensor:
        t_vec = _as_batch_t(t, x_t.shape[0], x_t)
        gap = _bcast((1 - t_vec).clamp_min(DENOISER_MIN_GAP), x_t)
        return (self.net(x_t, t_vec, m) - x_t) / gap


def precondition_flow(net: torch.nn.Module, n_sources: int, training_cfg: dict) -> torch.nn.Module:
    """Wrap a raw flow network as configured by ``training.flow_preconditioning`` (``none``: unchanged)."""
    kind = training_cfg.get("flow_preconditioning", "none")
    if kind == "none":
        return net
    if kind == "denoiser":
        return DenoiserFlow(net)
    if kind != "edm":
        raise ValueError(f"training.flow_preconditioning = {kind!r}; expected 'none', 'edm' or 'denoiser'")
    if training_cfg.get("sigma_data") is None:
        raise KeyError("training.flow_preconditioning = 'edm' needs training.sigma_data "
                       "(the standard deviation of P⊥ x1, the sources minus their slot mean, on the training data; "
                       "`surfbench sigma-data DATA_DIR` measures it)")
    return PreconditionedFlow(net, n_sources, float(training_cfg["sigma_z"]), float(training_cfg["sigma_data"]),
                              training_cfg.get("sigma_z_scale", "absolute"))


# --------------------------------------------------------------------------- training pieces

def floss_align(
    velocity_fn: VelocityFn, x0: torch.Tensor, x1: torch.Tensor, m: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 7-9: PIT alignment at ``t = 0`` (no gradient).

    ``x̂1 = x0 + v(x0, 0, m)``; ``perm = argmin_σ ||x̂1 - σ x1||²`` per mixture.
    Returns ``(permute(x1, perm), perm)``.
    """
    with torch.no_grad():
        t0 = torch.zeros(x0.shape[0], device=x0.device, dtype=x0.dtype)
        x1_hat = x0 + velocity_fn(x0, t0, m)
        perm = best_permutation(pairwise_mse(x1_hat, x1))
    return permute(x1, perm), perm


def floss_interpolant(x0: torch.Tensor, x1_aligned: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 11: ``x_t = (1-t) x0 + t σx1`` and target velocity ``σx1 - x0`` (``t`` per example, broadcast)."""
    tb = _bcast(_as_batch_t(t, x0.shape[0], x0), x0)
    x_t = (1 - tb) * x0 + tb * x1_aligned
    return x_t, x1_aligned - x0


def flow_matching_residual(
    velocity_fn: VelocityFn, x0: torch.Tensor, x1_aligned: torch.Tensor, t, m: torch.Tensor
) -> torch.Tensor:
    """Eq. 23 (Alg. 2 line 18): ``R_t = v(x_t, t, m) - (σx1 - x0)``, shape ``[B, K, *d]``."""
    tt = _as_batch_t(t, x0.shape[0], x0)
    x_t, target = floss_interpolant(x0, x1_aligned, tt)
    return velocity_fn(x_t, tt, m) - target


def squared_error_loss(
    e: torch.Tensor, log_loss: bool = False, log_eps: float = 1e-8, reduction: str = "mean"
) -> torch.Tensor:
    """Squared-error loss of an error tensor ``e: [B, ...]``.

    * plain (images, Eq. 10): ``e.pow(2).mean()`` over all elements, as the paper's listing;
    * ``log_loss`` (audio, App. D.5, "log-loss on the flow matching velocity squared
      error"): the exact form is our **choice** (config keys ``log_loss``/``log_eps``):
      per example ``10*log10(mean(e[b]**2) + log_eps)``, then the mean over ``b``.

    ``reduction="none"`` returns the ``[B]`` per-example values (mean of squares, or its log form).
    """
    per_example = e.reshape(e.shape[0], -1).pow(2).mean(dim=1)
    if log_loss:
        per_example = 10.0 * torch.log10(per_example + log_eps)
    if reduction == "none":
        return per_example
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if log_loss:
        return per_example.mean()
    return e.pow(2).mean()


def flow_matching_loss(
    velocity_fn: VelocityFn,
    x0: torch.Tensor,
    x1_aligned: torch.Tensor,
    t,
    m: torch.Tensor,
    log_loss: bool = False,
    log_eps: float = 1e-8,
) -> torch.Tensor:
    """Eq. 10: ``||v(x_t, t, m) - (σx1 - x0)||²`` (or its log form, see :func:`squared_error_loss`)."""
    r = flow_matching_residual(velocity_fn, x0, x1_aligned, t, m)
    return squared_error_loss(r, log_loss=log_loss, log_eps=log_eps)


# --------------------------------------------------------------------------- sampling

def euler_sample(velocity_fn: VelocityFn, x0: torch.Tensor, m: torch.Tensor, steps: int) -> torch.Tensor:
    """Euler ODE solve from ``t = 0`` to ``t = 1``: ``x <- x + (1/steps) v(x, i/steps, m)``.

    With a projected ``velocity_fn`` and ``x0`` from :func:`mixture_consistent_start`
    every iterate sums to ``m`` over sources.  No ``no_grad`` here: the caller decides.
    """
    if steps < 1:
        raise ValueError("euler_sample: steps must be >= 1")
    b = x0.shape[0]
    dt = 1.0 / steps
    x = x0
    for i in range(steps):
        t = torch.full((b,), i / steps, device=x0.device, dtype=x0.dtype)
        x = x + dt * velocity_fn(x, t, m)
    return x


def denoiser_estimate(x_t: torch.Tensor, t, v: torch.Tensor) -> torch.Tensor:
    """Eq. 19/25: ``E[x1 | x_t] ≈ x_t + (1 - t) v``."""
    tb = _bcast(_as_batch_t(t, x_t.shape[0], x_t), x_t)
    return x_t + (1 - tb) * v


def hybrid_velocity(velocity_fn: VelocityFn, anchor: torch.Tensor, x0: torch.Tensor, beta: float) -> VelocityFn:
    """App. D.3 hybrid teacher: ``v_β = anchor - x0`` where ``t < β``, else ``velocity_fn(x_t, t, m)``.

    ``anchor``: the frozen MixIT estimate reduced to K slots ``[B, K, *d]`` (it should be
    mixture-consistent so the samples stay so); ``x0``: the start point of the same
    sampling run.  The switch is decided per example on ``t: [B]``; ``velocity_fn`` is
    only evaluated on the examples with ``t >= β`` (not at all if there are none).
    """
    straight = anchor - x0

    def v_beta(x_t: torch.Tensor, t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        tt = _as_batch_t(t, x_t.shape[0], x_t)
        use_model = tt >= beta
        if bool(use_model.all()):
            return velocity_fn(x_t, tt, m)
        if not bool(use_model.any()):
            return straight.to(x_t.dtype)
        idx = use_model.nonzero(as_tuple=True)[0]
        out = straight.to(x_t.dtype).clone()
        out[idx] = velocity_fn(x_t[idx], tt[idx], m[idx]).to(out.dtype)
        return out

    return v_beta


def linear_beta(step: int, decay_steps: int, start: float = 1.0, end: float = 0.0) -> float:
    """β schedule of App. D.3: linear from ``start`` to ``end`` over ``decay_steps``, then ``end``."""
    if decay_steps <= 0:
        return float(end)
    frac = min(max(step / decay_steps, 0.0), 1.0)
    return float(start + (end - start) * frac)
