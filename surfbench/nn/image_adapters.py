"""Adapters turning a generic image backbone into the three model roles.

A *backbone* is any module with ``forward(h: [B, Cin, H, W], cond: [B] | None) -> [B, Cout, H, W]``
(``cond`` is the scalar conditioning, ignored by a backbone built with ``conditional=False``).
The adapters implement the role contracts of :mod:`surfbench.nn.registry` and
``docs/architecture.md``:

* :class:`FlowNet`       ``forward(x_t [B,K,C,H,W], t [B], m [B,C,H,W]) -> [B,K,C,H,W]`` (raw velocity;
  the caller applies the mixture-consistency projection ``project_perp``).  The K slots are stacked as
  channels (``slot_sharing: stacked``, the default): **not** permutation-equivariant over the slots;
* :class:`SharedSlotFlowNet` (``slot_sharing: shared``, a choice): the same contract, one backbone with
  weights shared by the K slots, permutation-equivariant by construction (paper App. C.1's assumption);
* :class:`RegressionNet` ``forward(m [B,C,H,W]) -> [B,K,C,H,W]`` (no time, no noise input);
* :class:`ScoreNet`      ``forward(x [B,C,H,W], sigma [B]) -> [B,C,H,W]`` (conditioned on ``log sigma``,
  output divided by ``sigma`` when ``scale_by_sigma``, as NCSN++'s "Scale by Sigma", Song et al. 2021).

:func:`build_image_model` is the shared builder behind ``@register_architecture("unet")`` and
``@register_architecture("ncsnpp")``.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn as nn

# Backbone constructor arguments fixed by the role/data, never taken from the config.
_ROLE_DETERMINED = ("in_channels", "out_channels", "image_size", "conditional")


def _batch_vector(v, batch: int, ref: torch.Tensor) -> torch.Tensor:
    """A scalar or ``[B]`` conditioning value as a float ``[B]`` tensor on ``ref``'s device."""
    v = torch.as_tensor(v, dtype=ref.dtype, device=ref.device).reshape(-1)
    if v.numel() == 1:
        v = v.expand(batch)
    if v.shape != (batch,):
        raise ValueError(f"conditioning must be a scalar or have shape [{batch}], got {tuple(v.shape)}")
    return v


class FlowNet(nn.Module):
    """Flow-matching velocity model: input channels ``K*C`` (noisy sources) ``+ C`` (mixture), cond ``t``.

    The slots are channels with their own weights: **not** permutation-equivariant over the K slots
    (``tests/test_equivariance.py``); :class:`SharedSlotFlowNet` is the equivariant choice.
    """

    role = "flow"

    def __init__(self, backbone: nn.Module, n_sources: int, channels: int):
        super().__init__()
        self.backbone = backbone
        self.n_sources = int(n_sources)
        self.channels = int(channels)

    def _check(self, x_t: torch.Tensor, m: torch.Tensor) -> None:
        B, K, C = x_t.shape[:3]
        if K != self.n_sources or C != self.channels:
            raise ValueError(f"{type(self).__name__} expects x_t [B,{self.n_sources},{self.channels},H,W], "
                             f"got {tuple(x_t.shape)}")
        if m.shape != (B, C) + tuple(x_t.shape[3:]):
            raise ValueError(f"mixture shape {tuple(m.shape)} does not match x_t {tuple(x_t.shape)}")

    def forward(self, x_t: torch.Tensor, t, m: torch.Tensor) -> torch.Tensor:
        self._check(x_t, m)
        B = x_t.shape[0]
        h = torch.cat([x_t.flatten(1, 2), m], dim=1)
        out = self.backbone(h, _batch_vector(t, B, x_t))
        return out.view(x_t.shape)


class SharedSlotFlowNet(FlowNet):
    """Permutation-equivariant flow model: one backbone shared by the K slots (``slot_sharing: shared``).

    Slot ``k`` is one item of a ``B*K`` batch with input channels ``[x_k, m, Σ_{j≠k} x_j]`` (``3C``) and
    output channels ``C`` (slot ``k``'s velocity), conditioned on ``t``.  Every slot sees its own state and
    a symmetric function of the others through the same weights, so permuting the slots of ``x_t``
    permutes the output the same way (up to float round-off in the sum): the assumption of the t = 0
    alignment argument (paper App. C.1, Prop. C.1).  A forward costs K backbone passes (a ``B*K`` batch)
    against one for the channel-stacked :class:`FlowNet`; the parameter count is about the same.
    """

    def forward(self, x_t: torch.Tensor, t, m: torch.Tensor) -> torch.Tensor:
        self._check(x_t, m)
        B, K = x_t.shape[:2]
        others = x_t.sum(1, keepdim=True) - x_t
        h = torch.cat([x_t, m.unsqueeze(1).expand_as(x_t), others], dim=2)  # [B, K, 3C, H, W]
        cond = _batch_vector(t, B, x_t).repeat_interleave(K)
        out = self.backbone(h.flatten(0, 1), cond)
        return out.view(x_t.shape)


#: ``slot_sharing`` values of the image flow models (model key; the other roles have no slot input).
SLOT_SHARING = ("stacked", "shared")


class RegressionNet(nn.Module):
    """Separation by regression: input is the mixture only (no time conditioning, no noise input)."""

    role = "regression"

    def __init__(self, backbone: nn.Module, n_sources: int, channels: int):
        super().__init__()
        self.backbone = backbone
        self.n_sources = int(n_sources)
        self.channels = int(channels)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        B, C = m.shape[:2]
        if C != self.channels:
            raise ValueError(f"RegressionNet expects m [B,{self.channels},H,W], got {tuple(m.shape)}")
        out = self.backbone(m, None)
        return out.view(B, self.n_sources, C, *m.shape[2:])


class ScoreNet(nn.Module):
    """Noise-conditional score of one source (BASIS prior).

    The backbone is conditioned on ``log(sigma)`` (the convention of NCSN++ with Fourier embedding);
    with ``scale_by_sigma`` its output is divided by ``sigma`` (Table 6, "Scale by Sigma").
    """

    role = "score"

    def __init__(self, backbone: nn.Module, channels: int, scale_by_sigma: bool = True):
        super().__init__()
        self.backbone = backbone
        self.channels = int(channels)
        self.scale_by_sigma = bool(scale_by_sigma)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        B = x.shape[0]
        sigma = _batch_vector(sigma, B, x)
        out = self.backbone(x, torch.log(sigma))
        if self.scale_by_sigma:
            out = out / sigma.view(B, *([1] * (x.dim() - 1)))
        return out


def backbone_options(backbone_cls) -> list[str]:
    """Config keys accepted for a backbone class (its constructor arguments not fixed by the role)."""
    params = inspect.signature(backbone_cls.__init__).parameters
    return [p for p in params if p != "self" and p not in _ROLE_DETERMINED]


def build_image_model(backbone_cls, role: str, n_sources: int, data_shape, **kwargs) -> nn.Module:
    """Build ``backbone_cls`` for ``role`` on images of shape ``data_shape = (C, H, W)``.

    * ``"flow"``: backbone ``Cin = K*C + C``, ``Cout = K*C``, conditional, wrapped in :class:`FlowNet`;
      with ``slot_sharing="shared"``: ``Cin = 3C``, ``Cout = C``, wrapped in :class:`SharedSlotFlowNet`;
    * ``"regression"``: ``Cin = C``, ``Cout = K*C``, ``conditional=False``, :class:`RegressionNet`;
    * ``"score"``: ``Cin = Cout = C``, conditional, :class:`ScoreNet` (extra option ``scale_by_sigma``).

    Unknown options raise :class:`TypeError` naming the key.
    """
    allowed = backbone_options(backbone_cls)
    extra = {"scale_by_sigma"} if role == "score" else set()
    slot_sharing = kwargs.pop("slot_sharing", "stacked")
    if slot_sharing not in SLOT_SHARING:
        raise ValueError(f"slot_sharing = {slot_sharing!r}; expected one of {SLOT_SHARING}")
    if slot_sharing != "stacked" and role != "flow":
        raise ValueError(f"slot_sharing = {slot_sharing!r} is for the flow role only: a {role} model has no slot "
                         f"input, and weights shared by the slots would give K identical outputs")
    unknown = sorted(k for k in kwargs if k not in allowed and k not in extra)
    if unknown:
        where = f"{backbone_cls.__name__} ({role} role)"
        raise TypeError(
            f"unknown model option(s) {', '.join(repr(k) for k in unknown)} for {where}; "
            f"allowed: {', '.join(sorted(set(allowed) | extra | {'slot_sharing'}))}"
        )
    data_shape = tuple(int(s) for s in data_shape)
    if len(data_shape) != 3:
        raise ValueError(f"image models need data_shape (C, H, W), got {data_shape}")
    C, H, _ = data_shape
    K = int(n_sources)
    if role == "flow":
        if slot_sharing == "shared":
            bb = backbone_cls(in_channels=3 * C, out_channels=C, image_size=H, conditional=True, **kwargs)
            return SharedSlotFlowNet(bb, K, C)
        bb = backbone_cls(in_channels=K * C + C, out_channels=K * C, image_size=H, conditional=True, **kwargs)
        return FlowNet(bb, K, C)
    if role == "regression":
        bb = backbone_cls(in_channels=C, out_channels=K * C, image_size=H, conditional=False, **kwargs)
        return RegressionNet(bb, K, C)
    if role == "score":
        scale_by_sigma = kwargs.pop("scale_by_sigma", True)
        bb = backbone_cls(in_channels=C, out_channels=C, image_size=H, conditional=True, **kwargs)
        return ScoreNet(bb, C, scale_by_sigma=scale_by_sigma)
    raise ValueError(f"unknown model role {role!r}")
