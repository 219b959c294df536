"""Exponential moving average teacher (SURF Alg. 2 line 22; Self-Remixing / ReMixIT teachers)."""
from __future__ import annotations

import torch
from torch import nn


def unwrap_module(module: nn.Module) -> nn.Module:
    """The plain module inside DDP / DataParallel (``.module``) or ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            module = module.module
        elif hasattr(module, "_orig_mod") and isinstance(getattr(module, "_orig_mod"), nn.Module):
            module = module._orig_mod
        else:
            return module


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, alpha: float) -> None:
    """``θ_T ← α θ_T + (1 − α) θ`` for every parameter (in place on the teacher).

    Buffers (e.g. normalisation running statistics) are not averaged: they are
    copied from the student.  This covers every floating buffer, and integer
    ones such as ``num_batches_tracked`` too.
    """
    t_mod, s_mod = unwrap_module(teacher), unwrap_module(student)
    t_params = dict(t_mod.named_parameters())
    s_params = dict(s_mod.named_parameters())
    if t_params.keys() != s_params.keys():
        raise ValueError("ema_update: teacher and student have different parameters")
    for name, tp in t_params.items():
        sp = s_params[name].detach()
        tp.mul_(alpha).add_(sp.to(tp.dtype), alpha=1.0 - alpha)
    t_bufs = dict(t_mod.named_buffers())
    s_bufs = dict(s_mod.named_buffers())
    if t_bufs.keys() != s_bufs.keys():
        raise ValueError("ema_update: teacher and student have different buffers")
    for name, tb in t_bufs.items():
        # buffers are copied from the student, not averaged
        tb.copy_(s_bufs[name])
