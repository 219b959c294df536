"""Floating-point building blocks whose results must not depend on the processor (surfbench/reproducible.py)."""
from __future__ import annotations

import torch


def sqrt(x: torch.Tensor) -> torch.Tensor:
    """``torch.sqrt``, correctly rounded on every processor (autograd flows through).

    On the CPU, ``torch.sqrt`` of a float32 tensor is MKL's ``vsSqrt``: exact on Intel's AVX2 branch,
    a polynomial refinement elsewhere that rounds differently on AMD Zen 4/5 than on other processors
    (about 17% of values differ by one unit in the last place; docs/trust.md).  The float64 square root
    is correctly rounded, and rounding it to float32 is too (53 >= 2 * 24 + 2 bits: no double rounding).
    """
    if x.device.type == "cpu" and x.dtype == torch.float32:
        return x.double().sqrt().float()
    return torch.sqrt(x)
