"""Architecture registry: a model is chosen by config (``model: {arch: <name>, ...}``).

A builder is registered with :func:`register_architecture` and called as
``builder(role=..., n_sources=..., data_shape=..., **kwargs)``; it returns a module
obeying the contract of its role (see ``docs/architecture.md``):

* ``"flow"``:        ``forward(x_t [B,K,*d], t [B], m [B,*d]) -> [B,K,*d]`` (raw velocity)
* ``"regression"``:  ``forward(m [B,*d]) -> [B,K,*d]``  (no time, no noise input)
* ``"score"``:       ``forward(x [B,*d], sigma [B]) -> [B,*d]`` (one source, n_sources ignored)
"""
from __future__ import annotations

import difflib
from typing import Callable

import torch.nn as nn

ROLES = ("flow", "regression", "score")
_ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


def register_architecture(name: str):
    def deco(fn):
        if name in _ARCHITECTURES:
            raise ValueError(f"architecture {name!r} registered twice")
        _ARCHITECTURES[name] = fn
        return fn

    return deco


def architectures() -> list[str]:
    return sorted(_ARCHITECTURES)


def build_model(spec: dict, role: str, n_sources: int, data_shape: tuple[int, ...]) -> nn.Module:
    """Build the model described by ``spec`` (a config mapping with key ``arch``) for ``role``."""
    if role not in ROLES:
        raise ValueError(f"unknown model role {role!r}; expected one of {ROLES}")
    spec = dict(spec)
    arch = spec.pop("arch", None)
    if arch not in _ARCHITECTURES:
        near = difflib.get_close_matches(str(arch), _ARCHITECTURES, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise KeyError(f"model.arch = {arch!r} is not a known architecture ({', '.join(architectures())}).{hint}")
    return _ARCHITECTURES[arch](role=role, n_sources=n_sources, data_shape=tuple(data_shape), **spec)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
