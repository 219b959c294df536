"""Same numbers on every machine: the kernel settings of a job, the exact square root, the fused Adam
step, the environment recorded in results, and what `surfbench golden` prints when a check fails.
(The cross-processor check itself, under QEMU, is tests/test_cross_cpu.py.)"""
from __future__ import annotations

import copy
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from surfbench import environment as E
from surfbench import golden as G
from surfbench.numerics import sqrt
from surfbench.reproducible import CPU_KERNELS, env_prefix, kernel_env

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- kernel settings
def test_env_prefix_sets_the_kernels_and_the_job_threads():
    assert env_prefix("avx2", 3).split() == [
        "env", "ATEN_CPU_CAPABILITY=avx2", "MKL_CBWR=COMPATIBLE", "MKL_NUM_THREADS=3", "OMP_NUM_THREADS=3",
        "ONEDNN_MAX_CPU_ISA=AVX2", "OPENBLAS_CORETYPE=Haswell", "OPENBLAS_NUM_THREADS=3"]
    assert env_prefix("native", 1).split() == ["env", "MKL_NUM_THREADS=1", "OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1"]
    with pytest.raises(ValueError, match=r"cpu_kernels: unknown setting 'avx512'; expected one of \['avx2', 'native'\]"):
        kernel_env("avx512")


def test_the_variables_take_effect_in_a_job():
    """What a job started with the prefix sees: torch's kernels at AVX2, MKL in its COMPATIBLE branch."""
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    p = subprocess.run(env_prefix("avx2", 1) + f"{sys.executable} -c '{code}'", shell=True, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() in ("AVX2", "DEFAULT")  # DEFAULT on a processor without AVX2


def test_the_pipeline_runs_every_job_in_the_profile_environment(tmp_path):
    """The dry run's shell commands (-p) carry the ci profile's kernels and thread count."""
    snakemake = Path(sys.executable).with_name("snakemake")
    p = subprocess.run([str(snakemake), "-n", "-p", "--nolock", "tables", "-s", str(ROOT / "Snakefile"), "--configfile",
                        str(ROOT / "config" / "ci.yaml"), "--directory", str(tmp_path)], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    commands = [line.strip().removeprefix("Shell command: ") for line in p.stdout.splitlines() if " -m surfbench." in line]
    kinds = {c.split(" -m ")[1].split()[0] for c in commands}
    assert {"surfbench.train", "surfbench.evaluate", "surfbench.cli"} <= kinds
    assert all(c.startswith(env_prefix("avx2", 1)) for c in commands), [c for c in commands if not c.startswith("env ")][:3]


# ----------------------------------------------------------------------------- what no variable reaches
def test_sqrt_is_correctly_rounded_and_differentiable():
    x = torch.rand(50_000, generator=torch.Generator().manual_seed(0)) * torch.logspace(-30, 30, 50_000)
    exact = torch.from_numpy(np.sqrt(x.numpy().astype(np.float64)).astype(np.float32))  # IEEE sqrt, rounded once more
    assert torch.equal(sqrt(x), exact)
    y = x[:100].clone().requires_grad_(True)
    sqrt(y).sum().backward()
    assert torch.allclose(y.grad, 0.5 / exact[:100], rtol=1e-6)
    assert sqrt(x.double()).dtype == torch.float64 and torch.equal(sqrt(x.double()), x.double().sqrt())


def test_training_uses_the_fused_adam_step():
    """PyTorch's fused Adam equals the textbook update (Kingma & Ba, Alg. 1) computed in float64."""
    from surfbench.train import adam

    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = adam([w], {"lr": 0.1, "adam_betas": (0.9, 0.99)})
    assert opt.defaults["fused"] is True
    ref, m, v = w.detach().double().clone(), 0.0, 0.0
    for t in range(1, 4):
        g = torch.tensor([0.5, 1.0, -2.0], dtype=torch.float64) * t
        w.grad = g.float()
        opt.step()
        m, v = 0.9 * m + 0.1 * g, 0.99 * v + 0.01 * g * g
        ref = ref - 0.1 * (m / (1 - 0.9 ** t)) / ((v / (1 - 0.99 ** t)).sqrt() + 1e-8)
    assert torch.allclose(w.detach().double(), ref, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- the environment in results
def _env(**changes) -> dict:
    env = {"python": "3.11.7", "platform": "Linux", "libraries": {"torch": "2.11.0", "numpy": "2.4.6"},
           "cpu": {"vendor": "AuthenticAMD", "model": "AMD EPYC", "isa": "avx512", "torch_capability": "AVX2"},
           "cpu_kernels": {"setting": "avx2", "variables": dict(CPU_KERNELS["avx2"])},
           "threads": {"torch": 1, "OMP_NUM_THREADS": "1"}, "device": "cpu", "gpu": None}
    for path, value in changes.items():
        d = env
        *head, last = path.split("__")
        for k in head:
            d = d[k]
        d[last] = value
    return env


def test_capture_records_versions_processor_kernels_and_threads(monkeypatch):
    for k, v in kernel_env("avx2").items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    env = E.capture("cpu")
    assert env["libraries"]["torch"] == torch.__version__.split("+")[0] and env["libraries"]["numpy"] == np.__version__
    assert set(E.LIBRARIES) == set(env["libraries"])
    assert env["cpu_kernels"] == {"setting": "avx2", "variables": kernel_env("avx2")}
    assert env["threads"]["torch"] == torch.get_num_threads() and env["threads"]["OMP_NUM_THREADS"] == "1"
    assert env["cpu"]["torch_capability"] == torch.backends.cpu.get_cpu_capability() and env["gpu"] is None
    json.dumps(env)  # recorded as JSON
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    assert E.capture("cpu")["cpu_kernels"]["setting"] == "custom"


def test_fingerprint_tells_apart_what_changes_numbers():
    base = E.fingerprint(_env())
    assert E.fingerprint(_env(platform="other kernel build")) == base
    # under the portable kernels the processor does not change the numbers (tests/test_cross_cpu.py) ...
    assert E.fingerprint(_env(cpu__model="Intel Xeon", cpu__vendor="GenuineIntel")) == base
    # ... under the machine's own it does
    native = {"setting": "native", "variables": {k: None for k in CPU_KERNELS["avx2"]}}
    assert (E.fingerprint(_env(cpu_kernels=native)) != E.fingerprint(_env(cpu_kernels=native, cpu__model="Intel Xeon")))
    for change in ({"libraries__torch": "2.12.0"}, {"threads__torch": 2}, {"device": "cuda:0"}, {"python": "3.12.1"}):
        assert E.fingerprint(_env(**change)) != base, change
    assert E.fingerprint(None) is None and E.fingerprint(_env(), _env()) != base  # training + evaluation


def test_differences_name_every_changed_leaf():
    assert E.differences(_env(), _env()) == []
    d = E.differences(_env(), _env(libraries__numpy="2.5.0", cpu__model="Intel Xeon"))
    assert d == ["cpu.model: 'AMD EPYC' -> 'Intel Xeon'", "libraries.numpy: '2.4.6' -> '2.5.0'"]
    assert E.differences(None, _env()) == [f"environment: None -> {_env()!r}"]


def test_golden_failure_prints_both_environments(tmp_path, monkeypatch):
    entry = {"dataset": "mnist", "method": "mixit", "variant": "", "protocol": "table1", "metrics": {"psnr": 10.5},
             "reasons": {}, "provenance": {"git_commit": "abc", "environment": _env(cpu__model="Intel Xeon")}}
    gold = {"format": G.GOLDEN_FORMAT, "dataset": "mnist", "method": "mixit", "variant": "", "protocol": "table1",
            "metrics": {"psnr": {"value": 10.0, "atol": 0.1}}, "provenance": {"git_commit": "def", "environment": _env()}}
    lines = G.environment_report({"mnist/mixit": entry}, {"mnist/mixit": gold})
    assert lines[1].startswith("  golden (commit def): AMD EPYC (avx512), cpu_kernels avx2, torch 2.11.0")
    assert lines[2].startswith("  run    (commit abc): Intel Xeon (avx512)")
    assert lines[3:] == ["  differs: cpu.model: 'AMD EPYC' -> 'Intel Xeon'"]
    # through the command: a failing check prints them after the failures
    monkeypatch.setattr(G, "extract", lambda root, profile: {"mnist/mixit": copy.deepcopy(entry)})
    monkeypatch.setattr(G, "load_goldens", lambda d: {"mnist/mixit": copy.deepcopy(gold)})
    import surfbench.registry as reg

    monkeypatch.setattr(reg, "registry", lambda: type("R", (), {"names": staticmethod(lambda: ["mixit"])})())
    (tmp_path / "ci").mkdir()
    out = io.StringIO()
    assert G.run(tmp_path, "ci", tmp_path, file=out) == 1
    text = out.getvalue()
    assert "FAIL mnist/mixit: psnr = 10.5" in text and "differs: cpu.model: 'AMD EPYC' -> 'Intel Xeon'" in text
