"""What a number was computed with: library versions, processor, kernel settings, thread counts, GPU.

:func:`capture` is recorded in every ``model.pt`` (the training process; one entry per environment a
resumed training ran in) and every ``metrics.json`` (the evaluation).  :func:`fingerprint` condenses the
part that can change a number, so two results can be told apart (the tables footnote a cell whose
seeds came from different environments; ``surfbench golden`` prints both sides when a check fails).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path

from .reproducible import CPU_KERNELS, KERNEL_VARIABLES, PORTABLE

#: distributions whose version is recorded: the numerical stack and every metric library
LIBRARIES = ("torch", "torchvision", "torchaudio", "numpy", "scipy", "pesq", "pystoi", "speechmos",
             "onnxruntime", "librosa", "torch-fidelity", "lpips", "scikit-image", "soundfile")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpuinfo() -> dict:
    """Vendor, model name and the widest vector instruction set of this processor (Linux ``/proc/cpuinfo``)."""
    out = {"vendor": None, "model": platform.processor() or None, "isa": None}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return out
    fields = {}
    for line in text.splitlines():
        if ":" not in line:
            if fields:
                break  # the first processor is enough
            continue
        k, v = line.split(":", 1)
        fields.setdefault(k.strip(), v.strip())
    flags = set(fields.get("flags", "").split())
    out["vendor"] = fields.get("vendor_id")
    out["model"] = fields.get("model name", out["model"])
    out["isa"] = next((isa for isa, flag in (("avx512", "avx512f"), ("avx2", "avx2"), ("avx", "avx"), ("sse4_2", "sse4_2"))
                       if flag in flags), "other" if flags else None)
    return out


def kernel_setting(variables: dict) -> str:
    """The ``cpu_kernels`` setting whose environment ``variables`` is, or ``custom``."""
    set_vars = {k: v for k, v in variables.items() if v is not None}
    return next((name for name, env in CPU_KERNELS.items() if env == set_vars), "custom")


def _gpu(device) -> dict | None:
    import torch

    if device is None or torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return None
    idx = torch.device(device).index or 0
    driver = None
    try:
        driver = Path("/proc/driver/nvidia/version").read_text().split("Kernel Module")[1].split()[0]
    except (OSError, IndexError):
        pass
    return {"name": torch.cuda.get_device_name(idx), "count": torch.cuda.device_count(), "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "driver": driver}


def capture(device=None) -> dict:
    """This process's environment (call it after ``torch.set_num_threads``)."""
    import torch

    variables = {k: os.environ.get(k) for k in KERNEL_VARIABLES}
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": {d: _version(d) for d in LIBRARIES},
        "cpu": {**_cpuinfo(), "torch_capability": torch.backends.cpu.get_cpu_capability()},
        "cpu_kernels": {"setting": kernel_setting(variables), "variables": variables},
        "threads": {"torch": torch.get_num_threads(), **{k: os.environ.get(k) for k in THREAD_VARIABLES}},
        "device": str(device) if device is not None else "cpu",
        "gpu": _gpu(device),
    }


def numeric_part(env: dict | None) -> dict | None:
    """What can change a number: versions, kernel settings, threads, device; the processor only where the
    kernels are the machine's own (``cpu_kernels: native``: another processor picks other kernels)."""
    if not env:
        return None
    part = {k: env.get(k) for k in ("python", "libraries", "cpu_kernels", "threads", "device")}
    part["gpu"] = (env.get("gpu") or {}).get("name")
    if (env.get("cpu_kernels") or {}).get("setting") not in PORTABLE:
        cpu = env.get("cpu") or {}
        part["cpu"] = {k: cpu.get(k) for k in ("vendor", "model", "torch_capability")}
    return part


def fingerprint(*envs: dict | None) -> str | None:
    """A short hash of :func:`numeric_part` of one or several environments (``None`` when none is known)."""
    parts = [numeric_part(e) for e in envs]
    if all(p is None for p in parts):
        return None
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def differences(a: dict | None, b: dict | None, prefix: str = "") -> list[str]:
    """``key: a -> b`` for every leaf that differs between two environments (for error messages)."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return [] if a == b else [f"{prefix or 'environment'}: {a!r} -> {b!r}"]
    out = []
    for k in sorted(set(a) | set(b)):
        out += differences(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
    return out
