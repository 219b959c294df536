"""The same numbers on other processors: training under ``cpu_kernels: avx2`` on this machine and on
processors emulated by QEMU (an Intel Haswell and an AMD Zen 1, both AVX2 without AVX-512) gives
bit-identical weights; with the machines' own kernels (``native``) it does not, which shows the
emulation is close enough to a real other processor for the check to fail (surfbench/reproducible.py,
docs/trust.md "Across processors").

QEMU's user-mode emulator runs this machine's Python and libraries with another CPUID (vendor, model,
instruction sets, caches) and computes ``rcpps``/``rsqrtps``, whose results are implementation-defined,
as exact quotients: where a kernel depends on the processor, its bits change.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from surfbench.reproducible import env_prefix, kernel_env

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "cross_cpu_train.py"
#: QEMU models: an Intel with AVX2 (MKL takes its Intel branches) and an AMD with AVX2 (its other ones)
EMULATED = ("Haswell-v4", "EPYC-v3")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("qemu-x86_64") is None,
                       reason="qemu-user is not installed (apt-get install qemu-user): it emulates the other processors"),
]


def _train(data: Path, out: Path, cpu_kernels: str, qemu_cpu: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in kernel_env("avx2")}
    env.update(kernel_env(cpu_kernels), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    cmd = [sys.executable, str(SCRIPT), "train", str(data), str(out)]
    if qemu_cpu:
        cmd = ["qemu-x86_64", "-cpu", qemu_cpu] + cmd
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
    assert p.returncode == 0, f"{' '.join(cmd)} ({cpu_kernels}):\n{p.stderr[-3000:]}"
    return next(line.split()[1] for line in p.stdout.splitlines() if line.startswith("weights "))


@pytest.mark.timeout(1800)
def test_avx2_kernels_give_the_same_weights_on_emulated_processors(tmp_path):
    assert env_prefix("avx2", 1).startswith("env ")  # the pipeline sets what this test sets
    data = tmp_path / "data"
    p = subprocess.run([sys.executable, str(SCRIPT), "prepare", str(data)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    with ThreadPoolExecutor(2) as pool:  # the two emulations side by side (one core each)
        emulated = dict(zip(EMULATED, pool.map(lambda c: _train(data, tmp_path / c, "avx2", c), EMULATED)))
    here = _train(data, tmp_path / "native-avx2", "avx2")
    print(f"avx2 kernels: here {here[:12]}, " + ", ".join(f"{c} {h[:12]}" for c, h in emulated.items()))
    assert set(emulated.values()) == {here}, f"weights differ across processors with cpu_kernels avx2: {emulated}, here {here}"


@pytest.mark.timeout(1800)
def test_native_kernels_differ_on_an_emulated_processor(tmp_path):
    """The control: without the settings the emulated Intel trains other weights (else the test above proves nothing)."""
    data = tmp_path / "data"
    p = subprocess.run([sys.executable, str(SCRIPT), "prepare", str(data)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    with ThreadPoolExecutor(2) as pool:
        here, there = pool.map(lambda c: _train(data, tmp_path / (c or "native"), "native", c), (None, EMULATED[0]))
    print(f"native kernels: here {here[:12]}, {EMULATED[0]} {there[:12]}")
    assert here != there
