"""Benchmarks.  ``surfbench bench step``: wall time of one training step, the methods side by side.

    surfbench bench step [--config config/tiny.yaml] [--dataset mnist] [--model tiny|paper]
                         [--batch-size N] [--repeats R] [--warmup W] [--device cpu|cuda]
                         [--threads T] [--cases ...] [--json OUT]

What one "step" is: exactly what the trainer (:mod:`surfbench.train`) does per iteration —
``make_batch`` of the method's ``training_data``, ``method.training_step`` (which, for the
remixing methods, includes the teacher's sampling), ``zero_grad``, ``backward``, gradient
clipping, the Adam step and ``method.after_step`` (the EMA teacher update).  Data loading
from disk is not included: every case gets the same random batch of the dataset's shape
(``sources`` of ``[B, K, *d]``; MixIT draws ``2B`` examples as the trainer does, giving B
mixtures of mixtures).

Cases (one model configuration for all: the run config of ``--config`` with, under
``--model paper``, the models of ``config/paper.yaml``):

* ``supervised_flow`` — FLOSS, the reference of the ratios;
* ``surf_remixit/ema``, ``surf_self_remixing/ema`` — SURF in its EMA phase with β = 0, i.e. the
  teacher is the EMA flow sampled with ``sampler.euler_steps`` Euler steps of the hybrid
  velocity (every step evaluates the EMA model): the expensive case;
* ``surf_*/frozen`` — SURF in the frozen-MixIT phase (the teacher is one MixIT forward pass);
* ``remixit/*``, ``self_remixing/*`` — the regression counterparts, both phases;
* ``mixit`` — MixIT on mixtures of mixtures.

The MixIT teacher is randomly initialised (its weights do not change the cost).  Cases are
interleaved in rounds (each round runs every case once, the order rotated from round to
round) so that machine noise hits all of them alike; the report gives per case the median
and interquartile range of the step time and the ratio of medians to FLOSS.  The issue's
expectation — a SURF step costs at most 2.4 × a FLOSS step — is printed as PASS/ABOVE next
to the SURF ratios, as information (it is not an assertion: the exit status is 0 either way).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .atomic import write_json
from .config import DOMAIN_OF_DATASET, RunId, load_config, resolve_run
from .method import Method, Phase, StepContext
from .registry import registry
from .train import adam, make_batch, optimisation_step, output_slots, pick_device

#: the issue's expectation for a SURF step relative to a FLOSS step (information only)
SURF_RATIO_LIMIT = 2.4
REFERENCE = "supervised_flow"

#: (label, method, phase) of every case, in the order of the table
ALL_CASES: tuple[tuple[str, str, str], ...] = (
    ("supervised_flow", "supervised_flow", "train"),
    ("surf_remixit/ema", "surf_remixit", "ema"),
    ("surf_self_remixing/ema", "surf_self_remixing", "ema"),
    ("surf_remixit/frozen", "surf_remixit", "frozen_teacher"),
    ("surf_self_remixing/frozen", "surf_self_remixing", "frozen_teacher"),
    ("remixit/ema", "remixit", "ema"),
    ("self_remixing/ema", "self_remixing", "ema"),
    ("remixit/frozen", "remixit", "frozen_teacher"),
    ("self_remixing/frozen", "self_remixing", "frozen_teacher"),
    ("mixit", "mixit", "train"),
)


# ----------------------------------------------------------------------------- one training step
@dataclass
class StepCase:
    """One method in one phase, ready to run training steps on a fixed batch of sources."""

    label: str
    method: Method
    phase: str
    sources: torch.Tensor                 # [B or 2B, K, *d] on the CPU, as the trainer's data stream gives it
    domain: str
    mixit_cfg: dict
    phase_steps: int
    phase_step: int
    generator: torch.Generator = field(default_factory=torch.Generator)
    opt: torch.optim.Optimizer | None = None
    params: list = field(default_factory=list)
    step_no: int = 0
    last_loss: float = float("nan")

    def __post_init__(self):
        self.params = [p for p in self.method.student.parameters() if p.requires_grad]
        tcfg = self.method.training_cfg
        self.opt = adam(self.params, {"lr": 1e-3, "adam_betas": (0.9, 0.999), **tcfg})

    def context(self) -> StepContext:
        return StepContext(step=self.step_no, phase=self.phase, phase_step=self.phase_step,
                           phase_steps=self.phase_steps, generator=self.generator, device=self.method.device)

    def step(self) -> None:
        """One iteration exactly as ``surfbench.train`` runs it (minus logging and checkpoints)."""
        m = self.method
        ctx = self.context()
        batch = make_batch(type(m).training_data, self.sources, self.domain, self.mixit_cfg, self.generator, m.device,
                           slots=m.n_sources)
        self.last_loss = optimisation_step(m, batch, ctx, self.opt, self.params)
        self.step_no += 1


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- the harness
def time_rounds(steps: dict[str, Callable[[], None]], repeats: int, warmup: int = 1,
                device: torch.device | str = "cpu", clock: Callable[[], float] = time.perf_counter,
                progress: Callable[[str], None] | None = None, cpu_times: dict | None = None,
                cpu_clock: Callable[[], float] = time.process_time) -> dict[str, list[float]]:
    """Wall seconds of ``repeats`` calls of every step function, interleaved in rounds.

    Round ``r`` runs every case once, in the case order rotated by ``r`` (so no case is always
    first or last in a round); ``warmup`` unrecorded rounds come first.  CUDA work is
    synchronised before and after each timed call.  When ``cpu_times`` (a dict) is given it is
    filled, alike, with the CPU seconds of this process per call (``cpu_clock``): on a shared
    machine the CPU time of a single-threaded step is far less disturbed by other processes
    than its wall time (it is meaningless for CUDA work).
    """
    device = torch.device(device)
    labels = list(steps)
    times: dict[str, list[float]] = {k: [] for k in labels}
    if cpu_times is not None:
        cpu_times.update({k: [] for k in labels})
    for r in range(warmup + repeats):
        order = labels[r % len(labels):] + labels[:r % len(labels)]
        for label in order:
            _sync(device)
            c0, t0 = cpu_clock(), clock()
            steps[label]()
            _sync(device)
            dt, dc = clock() - t0, cpu_clock() - c0
            if r >= warmup:
                times[label].append(dt)
                if cpu_times is not None:
                    cpu_times[label].append(dc)
        if progress:
            progress(f"round {r + 1}/{warmup + repeats}" + (" (warm-up)" if r < warmup else ""))
    return times


def summarize(times: dict[str, list[float]], reference: str = REFERENCE, limit: float = SURF_RATIO_LIMIT,
              limited: Callable[[str], bool] = lambda label: label.startswith("surf_")) -> dict[str, dict]:
    """Median, IQR and the ratio of medians to ``reference`` per case (+ PASS/ABOVE for the limited cases)."""
    out: dict[str, dict] = {}
    ref_med = float(np.median(times[reference])) if reference in times and times[reference] else None
    for label, ts in times.items():
        a = np.asarray(ts, dtype=np.float64)
        q25, med, q75 = (float(v) for v in np.percentile(a, [25, 50, 75]))
        row = {"n": int(a.size), "median_s": med, "q25_s": q25, "q75_s": q75, "iqr_s": q75 - q25,
               "min_s": float(a.min()), "max_s": float(a.max()), "times_s": [float(v) for v in a]}
        if ref_med:
            row["ratio"] = med / ref_med
            if reference in times and len(times[reference]) == a.size:
                # per-round ratios (same round = same machine conditions): their spread
                rr = a / np.asarray(times[reference], dtype=np.float64)
                row["round_ratio_q25"], row["round_ratio_q75"] = (float(v) for v in np.percentile(rr, [25, 75]))
            if limited(label):
                row["limit"] = limit
                row["verdict"] = "PASS" if row["ratio"] <= limit else "ABOVE"
        out[label] = row
    return out


def format_table(summary: dict[str, dict], reference: str = REFERENCE, cpu_summary: dict[str, dict] | None = None) -> str:
    """Wall-time table (median, IQR, ratio of medians, IQR of the per-round ratios, verdict), plus the
    CPU-time median and ratio when ``cpu_summary`` is given (the verdict then follows the wall time)."""
    head = f"{'case':<26} {'wall med ms':>11} {'IQR ms':>9} {'ratio':>6} {'round IQR':>10}"
    if cpu_summary:
        head += f" {'cpu med ms':>10} {'ratio':>6}"
    lines = [head + "  note", "-" * (len(head) + 22)]
    for label, r in summary.items():
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else "-"
        spread = (f"{r['round_ratio_q25']:.2f}-{r['round_ratio_q75']:.2f}" if "round_ratio_q25" in r else "")
        note = "reference" if label == reference else (f"{r['verdict']} (<= {r['limit']}x)" if "verdict" in r else "")
        line = f"{label:<26} {1e3 * r['median_s']:>11.1f} {1e3 * r['iqr_s']:>9.1f} {ratio:>6} {spread:>10}"
        if cpu_summary:
            c = cpu_summary[label]
            cratio = f"{c['ratio']:.2f}" if "ratio" in c else "-"
            line += f" {1e3 * c['median_s']:>10.1f} {cratio:>6}"
        lines.append(line + f"  {note}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- building the cases
def data_shape(run_cfg: dict) -> tuple[int, ...]:
    ds = run_cfg["dataset"]
    if ds == "mnist":
        return (1, 28, 28)
    if ds == "cifar10":
        return (3, 32, 32)
    d = run_cfg["data"]
    return (int(round(float(d["clip_seconds"]) * int(d.get("sample_rate", 16000)))),)


def bench_config(config: str | Path, model: str, batch_size: int | None, clip_seconds: float | None = None) -> dict:
    """The profile ``config`` with the paper's models (``model: paper``); ``batch_size`` and ``clip_seconds``,
    when given, win over every layer of the profile that sets them (a domain's or a dataset's training)."""
    cfg = load_config(config)
    if batch_size is not None:
        layers = [cfg["training"]] + [block.get("training") for group in ("domains", "dataset_overrides")
                                      for block in cfg.get(group, {}).values()]
        for layer in layers:
            if layer is not None and (layer is cfg["training"] or "batch_size" in layer):
                layer["batch_size"] = int(batch_size)
    if model == "paper":
        paper = load_config(Path(config).resolve().parent / "paper.yaml")
        for dom, block in paper["domains"].items():
            cfg["domains"].setdefault(dom, {})["models"] = block.get("models", {})
    elif model != "tiny":
        raise ValueError(f"--model must be tiny or paper, got {model!r}")
    if clip_seconds is not None:
        cfg["datasets"]["libri2mix"]["clip_seconds"] = float(clip_seconds)
    return cfg


def random_sources(domain: str, n: int, k: int, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """A batch of the dataset's shape: half images in [0, 1/K] (images) or speech-like noise (audio)."""
    if domain == "image":
        return torch.rand((n, k, *shape), generator=gen) / k
    return 0.1 * torch.randn((n, k, *shape), generator=gen)


def make_case(label: str, method: Method, phase: str, sources: torch.Tensor, domain: str, mixit_cfg: dict,
              seed: int = 0) -> StepCase:
    """A ready :class:`StepCase`.  For the EMA phase the teacher is initialised from the student (as at
    the start of the phase) and the step is placed where β = 0 (the teacher flow runs every Euler step)."""
    phase_steps, phase_step = 1000, 0
    if phase == "ema":
        phase_step = phase_steps - 1   # past the linear decay of β for any decay_fraction <= 1
    gen = torch.Generator()
    gen.manual_seed(seed)
    case = StepCase(label, method, phase, sources, domain, mixit_cfg, phase_steps, phase_step, generator=gen)
    if phase != "train":
        method.on_phase_start(Phase(phase, phase_steps), case.context())
    return case


def build_cases(cfg: dict, dataset: str, device: torch.device, wanted: list[str] | None = None,
                seed: int = 0) -> tuple[list[StepCase], dict]:
    reg = registry()
    domain = DOMAIN_OF_DATASET[dataset]
    cases_spec = [c for c in ALL_CASES if wanted is None or c[0] in wanted]
    unknown = set(wanted or []) - {c[0] for c in ALL_CASES}
    if unknown:
        raise ValueError(f"unknown case(s) {sorted(unknown)}; choose from {[c[0] for c in ALL_CASES]}")
    if REFERENCE not in [c[0] for c in cases_spec]:
        cases_spec.insert(0, ALL_CASES[0])
    gen = torch.Generator()
    gen.manual_seed(seed)
    mixit_run = resolve_run(cfg, RunId(dataset, "mixit", seed))
    shape = data_shape(mixit_run)
    k = 2
    B = int(resolve_run(cfg, RunId(dataset, REFERENCE, seed))["training"]["batch_size"])
    sources = random_sources(domain, 2 * B, k, shape, gen)   # the same batch for every case
    torch.manual_seed(seed)
    teacher = reg.get("mixit")(mixit_run, shape, output_slots(mixit_run, k), device)   # randomly initialised, frozen
    for mod in teacher.modules_to_save().values():
        mod.requires_grad_(False)
        mod._surfbench_frozen_teacher = True
    teacher.eval_modules()
    info = {"dataset": dataset, "domain": domain, "data_shape": list(shape), "n_sources": k,
            "output_slots": output_slots(mixit_run, k), "batch_size": B,
            "models": mixit_run["models"], "euler_steps": mixit_run["sampler"]["euler_steps"], "params": {}}
    out: list[StepCase] = []
    for label, name, phase in cases_spec:
        run_cfg = resolve_run(cfg, RunId(dataset, name, seed))
        if int(run_cfg["training"]["batch_size"]) != B:
            run_cfg["training"]["batch_size"] = B   # same batch for all (a method override may differ)
        cls = reg.get(name)
        torch.manual_seed(seed)
        method = cls(run_cfg, shape, output_slots(run_cfg, k, cls.training_data), device)  # the profile's slots
        if cls.teacher:
            method.set_teacher(teacher)
        src = sources if cls.training_data == "mixtures_of_mixtures" else sources[:B]
        case = make_case(label, method, phase, src, domain, run_cfg["mixit"], seed)
        if phase == "ema" and hasattr(method, "beta"):
            info.setdefault("beta", {})[label] = method.beta(case.context())
        info["params"][label] = sum(p.numel() for p in method.student.parameters())
        out.append(case)
    return out, info


def machine_description(device: torch.device) -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    d = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
         "platform": platform.platform(), "torch_threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        d["gpu"] = torch.cuda.get_device_name(device)
    try:
        d["loadavg_start"] = list(os.getloadavg())
    except OSError:
        pass
    return d


# ----------------------------------------------------------------------------- CLI
def cmd_step(argv) -> int:
    ap = argparse.ArgumentParser(prog="surfbench bench step",
                                 description="Time per training step of the methods, side by side (ratios to FLOSS).")
    ap.add_argument("--config", default="config/tiny.yaml", help="profile whose training settings are used")
    ap.add_argument("--dataset", default="mnist", choices=sorted(DOMAIN_OF_DATASET))
    ap.add_argument("--model", default="tiny", choices=["tiny", "paper"],
                    help="tiny: the models of --config; paper: those of config/paper.yaml (NCSN++ / MB-TFLocoformer)")
    ap.add_argument("--batch-size", type=int, default=None, help="mixtures per step (default: the profile's)")
    ap.add_argument("--clip-seconds", type=float, default=None, help="audio clip length (default: the profile's)")
    ap.add_argument("--repeats", type=int, default=10, help="timed rounds (each round runs every case once)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--cases", nargs="+", default=None, metavar="CASE",
                    help=f"subset of cases (the reference {REFERENCE} is always run): {', '.join(c[0] for c in ALL_CASES)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the numbers to this JSON file")
    a = ap.parse_args(argv)
    if a.repeats < 1 or a.warmup < 0:
        raise ValueError("--repeats must be >= 1 and --warmup >= 0")
    torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    cfg = bench_config(a.config, a.model, a.batch_size, a.clip_seconds)
    cases, info = build_cases(cfg, a.dataset, device, a.cases, a.seed)
    machine = machine_description(device)
    print(f"surfbench bench step: {a.dataset} ({info['domain']}, shape {tuple(info['data_shape'])}), model={a.model}, "
          f"batch {info['batch_size']}, {a.repeats} rounds (+{a.warmup} warm-up), device {device}, "
          f"{torch.get_num_threads()} thread(s)", file=sys.stderr, flush=True)
    t0 = time.time()
    cpu_times: dict | None = {} if device.type == "cpu" else None
    times = time_rounds({c.label: c.step for c in cases}, a.repeats, a.warmup, device,
                        progress=lambda s: print(f"  {s} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True),
                        cpu_times=cpu_times)
    summary = summarize(times)
    cpu_summary = summarize(cpu_times) if cpu_times else None
    try:
        machine["loadavg_end"] = list(os.getloadavg())
    except OSError:
        pass
    print(f"\nmachine: {machine['cpu']}, {machine['cpu_count']} CPUs, torch {machine['torch']}, "
          f"{machine['torch_threads']} thread(s), device {machine['device']}" + (f" ({machine['gpu']})" if "gpu" in machine else ""))
    archs = ", ".join(f"{k}={v.get('arch')}" for k, v in info["models"].items())
    print(f"model: {a.model} ({archs}); "
          f"flow params {info['params'].get(REFERENCE, 0) / 1e6:.2f}M; batch {info['batch_size']}; "
          f"teacher Euler steps {info['euler_steps']}; EMA-phase beta {sorted(set(info.get('beta', {}).values()))}")
    print(format_table(summary, cpu_summary=cpu_summary))
    print(f"(ratio = median / median of {REFERENCE}; round IQR = interquartile range of the per-round ratios; "
          f"cpu = CPU time of this process, less disturbed by other load on a shared machine; "
          f"the SURF expectation is <= {SURF_RATIO_LIMIT}x on the wall time, information only; "
          f"total {time.time() - t0:.0f} s)")
    if a.json:
        blob = {"format": "surfbench-bench-step/1", "command": "surfbench bench step " + " ".join(argv),
                "args": vars(a), "machine": machine, "setup": info, "reference": REFERENCE,
                "surf_ratio_limit": SURF_RATIO_LIMIT, "cases": summary, "cpu_time_cases": cpu_summary}
        print(f"wrote {write_json(a.json, blob, indent=2, default=str)}")
    return 0


# ----------------------------------------------------------------------------- metric throughput
def average_estimates(sources: torch.Tensor) -> torch.Tensor:
    """What ``baselines/average.py`` separates (``m / K`` in every slot), built from the sources without
    instantiating a method: a realistic estimate to score."""
    k = sources.shape[1]
    return (sources.sum(1, keepdim=True) / k).expand_as(sources).contiguous()


def image_metric_throughput(sources: torch.Tensor, metrics: list[str], options: dict, repeats: int) -> list[dict]:
    """Images/s of :func:`surfbench.metrics.image.evaluate_images`: the whole suite, then each metric alone.

    Unavailable metrics (weights absent) are listed, not timed.  Set-level FID/IS features are
    cached per image set after the first call, as in the pipeline; the first (uncached) call is
    reported separately as ``first_s``, the median over ``repeats`` further calls as ``median_s``.
    """
    from .metrics.image import evaluate_images, missing_weights

    est = average_estimates(sources)
    k = sources.shape[1]
    n_images = sources.shape[0] * k
    missing = missing_weights({**options, "metrics": metrics})
    usable = [m for m in metrics if m not in missing]
    rows = []
    for label, names in [("suite", usable)] + [(m, [m]) for m in usable]:
        if not names:
            continue
        opts = {**options, "metrics": names}
        t = time.perf_counter()
        evaluate_images(est, sources, k, opts)
        first = time.perf_counter() - t
        walls = []
        for _ in range(repeats):
            t = time.perf_counter()
            evaluate_images(est, sources, k, opts)
            walls.append(time.perf_counter() - t)
        med = float(np.median(walls))
        rows.append({"case": label, "metrics": names, "items": n_images, "first_s": first, "median_s": med,
                     "items_per_s": n_images / med})
    for m, why in missing.items():
        rows.append({"case": m, "metrics": [m], "items": n_images, "unavailable": why})
    return rows


def speech_metric_throughput(sources: torch.Tensor, sr: int, metrics: list[str], workers: list[int],
                             repeats: int) -> list[dict]:
    """Clips/s of :func:`surfbench.metrics.audio.evaluate_speech` for each worker count, side by side
    (rounds interleave the worker counts so machine noise hits them alike)."""
    from .metrics.audio import evaluate_speech

    est = average_estimates(sources)
    mix = sources.sum(1)
    n_clips = sources.shape[0] * sources.shape[1]
    evaluate_speech(est[:1], sources[:1], mix[:1], sr, workers=1, metrics=metrics)  # imports, ONNX sessions, numba
    walls: dict[int, list[float]] = {w: [] for w in workers}
    for r in range(repeats):
        order = workers[r % len(workers):] + workers[:r % len(workers)]
        for w in order:
            t = time.perf_counter()
            evaluate_speech(est, sources, mix, sr, workers=w, metrics=metrics)
            walls[w].append(time.perf_counter() - t)
    base = float(np.median(walls[workers[0]]))
    return [{"case": f"{w} process{'es' if w > 1 else ''}", "workers": w, "metrics": metrics, "items": n_clips,
             "median_s": float(np.median(walls[w])), "items_per_s": n_clips / float(np.median(walls[w])),
             "speedup": base / float(np.median(walls[w]))} for w in workers]


def cmd_metrics(argv) -> int:
    from .data.store import load_split

    ap = argparse.ArgumentParser(prog="surfbench bench metrics",
                                 description="Throughput of the metric suites on a prepared evaluation set "
                                             "(images/s; speech clips/s with one process and one per core).")
    ap.add_argument("--config", default="config/tiny.yaml", help="profile: its evaluation settings and data folder")
    ap.add_argument("--dataset", default="mnist", choices=sorted(DOMAIN_OF_DATASET))
    ap.add_argument("--data", default=None, help="prepared dataset folder (default: data/<profile>/<dataset>; "
                                                 "`snakemake data` makes it)")
    ap.add_argument("--n", type=int, default=None, help="first N evaluation mixtures (default: all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, nargs="+", default=None,
                    help="speech: process counts compared (default: 1 and the number of CPU cores)")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--json", default=None, help="write the numbers to this JSON file")
    a = ap.parse_args(argv)
    if a.repeats < 1:
        raise ValueError("--repeats must be >= 1")
    torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    cfg = load_config(a.config)
    data = Path(a.data or Path("data") / cfg["profile"] / a.dataset)
    evalset = load_split(data, "eval")
    sources = evalset.all()[: a.n] if a.n else evalset.all()
    ecfg = cfg["evaluation"]
    t0 = time.time()
    if evalset.domain == "image":
        options = {"lpips_net": ecfg["lpips_net"], "lpips_resize": ecfg["lpips_resize"], "device": str(device),
                   "cache_dir": str(Path("work") / cfg["profile"] / "cache"), "set_id": f"bench-{a.dataset}-{evalset.content_hash[:16]}"}
        rows = image_metric_throughput(sources, list(ecfg["image_metrics"]), options, a.repeats)
        unit = "images/s"
    else:
        from .evaluate import SPEECH_METRIC_NAMES

        workers = a.workers or sorted({1, os.cpu_count() or 1})
        metrics = [SPEECH_METRIC_NAMES[n] for n in ecfg["speech_metrics"]]
        rows = speech_metric_throughput(sources, int(cfg["datasets"][a.dataset]["sample_rate"]), metrics, workers, a.repeats)
        unit = "clips/s"
    machine = machine_description(device)
    print(f"surfbench bench metrics: {a.dataset} evaluation set {data} ({sources.shape[0]} mixtures, "
          f"shape {tuple(sources.shape[1:])}), {a.repeats} repeats, {machine['cpu']}, {machine['cpu_count']} CPUs")
    print(f"| case | metrics | items | median s | {unit} | note |")
    print("|---|---|---:|---:|---:|---|")
    for r in rows:
        if "unavailable" in r:
            print(f"| {r['case']} | {', '.join(r['metrics'])} | {r['items']} | | | unavailable: {r['unavailable']} |")
            continue
        note = f"speedup {r['speedup']:.2f}x" if "speedup" in r else (f"first call {r['first_s']:.2f} s" if "first_s" in r else "")
        print(f"| {r['case']} | {', '.join(r['metrics'])} | {r['items']} | {r['median_s']:.3f} | {r['items_per_s']:.1f} | {note} |")
    print(f"(estimates: the Average baseline's m/K, scored against the references; total {time.time() - t0:.0f} s)")
    if a.json:
        blob = {"format": "surfbench-bench-metrics/1", "command": "surfbench bench metrics " + " ".join(argv),
                "args": vars(a), "machine": machine, "unit": unit, "rows": rows}
        print(f"wrote {write_json(a.json, blob, indent=2, default=str)}")
    return 0


BENCHMARKS = {"step": cmd_step, "metrics": cmd_metrics}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: surfbench bench {step,metrics} [options]   (surfbench bench step --help)")
        return 0 if argv else 2
    if argv[0] in BENCHMARKS:
        return BENCHMARKS[argv[0]](argv[1:])
    raise ValueError(f"unknown benchmark {argv[0]!r}; available: {', '.join(BENCHMARKS)}")


if __name__ == "__main__":
    sys.exit(main())
