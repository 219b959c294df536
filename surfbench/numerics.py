"""Floating-point building blocks whose results must not depend on the processor (surfbench/reproducible.py)."""
from __future__ import annotations

import torch


def sqrt(x: torch.Tensor) -> torch.Tensor:
    """``torch.sqrt``, correctly rounded on every processor (autograd flows through).

    On the CPU, ``torch.sqrt`` of a float32 tensor is MKL's ``vsSqrt``: exact on Intel's AVX2 branch, not
    correctly rounded in its other branches, and on AMD Zen 4/5 in a branch of its own that ``MKL_CBWR``
    does not reach (15-17% of values off by one unit in the last place, differently; docs/trust.md 3b).  The float64 square root
    is correctly rounded, and rounding it to float32 is too (53 >= 2 * 24 + 2 bits: no double rounding).
    """
    if x.device.type == "cpu" and x.dtype == torch.float32:
        return x.double().sqrt().float()
    return torch.sqrt(x)
