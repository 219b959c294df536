"""The same numbers on every x86 processor: the kernel settings of CPU jobs (imports no torch: the Snakefile uses it).

A CPU job's numbers depend on which kernels the libraries pick for the processor they run on:

* PyTorch's own vectorised kernels dispatch on the instruction set (``ATEN_CPU_CAPABILITY``:
  ``default``, ``avx2``, ``avx512``); reductions round differently with another vector width;
* oneDNN (convolutions) picks JIT kernels up to ``ONEDNN_MAX_CPU_ISA``;
* MKL (matrix products, im2col convolutions, ``torch.sqrt``) dispatches on the instruction set *and*
  the vendor; ``MKL_CBWR`` pins a branch, and its ``COMPATIBLE`` branch (SSE2 without the
  ``rcpps``/``rsqrtps`` approximations, whose results differ between Intel and AMD) is the only one
  MKL documents as giving the same results on Intel and non-Intel processors;
* numpy/scipy's OpenBLAS dispatches on the processor model (``OPENBLAS_CORETYPE``).

:data:`CPU_KERNELS` maps the profile key ``cpu_kernels`` to the environment a job runs in (the pipeline
prefixes every job's command with it, see :func:`env_prefix`; ``surfbench.environment`` records it in
every result).  Two things no environment variable reaches, handled in code:

* MKL's vector-math ``vsSqrt`` (what ``torch.sqrt`` of a float32 CPU tensor calls) ignores ``MKL_CBWR``
  on AMD Zen 4/5 and rounds differently there: ``surfbench.numerics.sqrt`` is correctly rounded everywhere;
* ``torch.optim.Adam``'s default (foreach) step takes that square root too: the trainer uses the
  fused Adam kernel, whose square root is the processor's exact one.

Measured (docs/trust.md, "Across processors"): with ``cpu_kernels: avx2`` the ci training runs are
bit-identical on an AMD Zen 5 with AVX-512 and on an Intel Haswell and an AMD Zen 1 (both AVX2) emulated
with QEMU; without it, all three differ.
"""
from __future__ import annotations

import shlex

#: ``cpu_kernels`` value -> environment of every job.  ``native``: each library picks the fastest kernels
#: of the machine (nothing set).  ``avx2``: kernels every x86-64 processor since 2013 (Intel Haswell, AMD
#: Zen) runs identically.
CPU_KERNELS: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_CBWR": "COMPATIBLE",
        "OPENBLAS_CORETYPE": "Haswell",
    },
}

#: the settings whose numbers do not depend on the processor (among those with the instruction set)
PORTABLE = frozenset({"avx2"})

#: every variable :data:`CPU_KERNELS` may set (recorded in results whether set or not)
KERNEL_VARIABLES = sorted({k for env in CPU_KERNELS.values() for k in env})


def kernel_env(cpu_kernels: str) -> dict[str, str]:
    """The environment variables of one ``cpu_kernels`` setting (a ValueError names the valid ones)."""
    try:
        return dict(CPU_KERNELS[cpu_kernels])
    except KeyError:
        raise ValueError(f"cpu_kernels: unknown setting {cpu_kernels!r}; expected one of {sorted(CPU_KERNELS)}") from None


def env_prefix(cpu_kernels: str, threads: int) -> str:
    """``env VAR=... `` for a job's shell command: the kernel settings and the job's thread counts.

    The thread counts are set for OpenMP, MKL and OpenBLAS too: a library that reads them at load time
    must see the job's count, not one thread per core of the machine.
    """
    env = kernel_env(cpu_kernels)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(int(threads))
    return "env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items())) + " "
