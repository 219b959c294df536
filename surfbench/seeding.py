"""Deterministic randomness, one stream per item.

An evaluation item's result must not depend on which batch it lands in, how large
the batch is, or how many workers run (issue: determinism).  Every random draw
that belongs to an item therefore comes from that item's own generator, seeded
from ``(run seed, item index)``.  Training randomness (not tied to items) uses
one generator per process, seeded from ``(run seed, rank)``.
"""
from __future__ import annotations

import hashlib
import random
from typing import Sequence

import numpy as np
import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed derived from any printable parts (stable across runs and platforms)."""
    h = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


class ItemNoise:
    """Standard-normal / uniform draws where row ``i`` comes from item ``item_ids[i]``'s own stream.

    ``noise.randn(*shape)`` returns ``[len(item_ids), *shape]``; successive calls
    advance each item's stream, so a sampler that draws at every step stays per item.
    """

    def __init__(self, seed: int, item_ids: Sequence[int], device: torch.device | str = "cpu", tag: str = "sample"):
        self.device = torch.device(device)
        self.generators = []
        for i in item_ids:
            g = torch.Generator()
            g.manual_seed(derive_seed(seed, tag, int(i)))
            self.generators.append(g)

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        out = torch.stack([torch.randn(shape, generator=g, dtype=dtype) for g in self.generators])
        return out.to(self.device)

    def rand(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        out = torch.stack([torch.rand(shape, generator=g, dtype=dtype) for g in self.generators])
        return out.to(self.device)
