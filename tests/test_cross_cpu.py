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


def _train(data: Path, out: Path, cpu_kernels: str, qemu_cpu: str | None = None, mode: str = "train") -> str:
    env = {k: v for k, v in os.environ.items() if k not in kernel_env("avx2")}
    env.update(kernel_env(cpu_kernels), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    cmd = [sys.executable, str(SCRIPT), mode, str(data), str(out)]
    if qemu_cpu:
        cmd = ["qemu-x86_64", "-cpu", qemu_cpu] + cmd
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
    assert p.returncode == 0, f"{' '.join(cmd)} ({cpu_kernels}):\n{p.stderr[-3000:]}"
    return next(line.split()[1] for line in p.stdout.splitlines() if line.startswith("weights "))


def _here_and_emulated(tmp_path: Path, data: Path, cpu_kernels: str, mode: str = "train") -> dict[str, str]:
    """Weight hashes here and on each emulated processor (the emulations side by side, one core each)."""
    where = (None, *EMULATED)
    with ThreadPoolExecutor(2) as pool:
        hashes = pool.map(lambda c: _train(data, tmp_path / f"{mode}-{cpu_kernels}-{c or 'here'}", cpu_kernels, c, mode), where)
        out = {c or "here": h for c, h in zip(where, hashes)}
    print(f"{mode}, cpu_kernels {cpu_kernels}: " + ", ".join(f"{c} {h[:12]}" for c, h in out.items()))
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cross_cpu") / "data"
    p = subprocess.run([sys.executable, str(SCRIPT), "prepare", str(d)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return d


@pytest.mark.timeout(1800)
def test_avx2_kernels_give_the_same_weights_on_emulated_processors(tmp_path, data):
    assert env_prefix("avx2", 1).startswith("env ")  # the pipeline sets what this test sets
    hashes = _here_and_emulated(tmp_path, data, "avx2")
    assert len(set(hashes.values())) == 1, f"weights differ across processors with cpu_kernels avx2: {hashes}"


@pytest.mark.timeout(1800)
def test_the_variables_alone_are_not_enough(tmp_path, data):
    """Without the exact square root and the fused Adam step, the emulated processors train other weights."""
    hashes = _here_and_emulated(tmp_path, data, "avx2", mode="plain")
    assert hashes["here"] != hashes[EMULATED[0]]


@pytest.mark.timeout(1800)
def test_native_kernels_differ_on_an_emulated_processor(tmp_path, data):
    """The control: without the settings the emulated processors train other weights (else the first test
    proves nothing)."""
    hashes = _here_and_emulated(tmp_path, data, "native")
    assert hashes["here"] != hashes[EMULATED[0]] and hashes["here"] != hashes[EMULATED[1]]
