"""Golden regression: the ``ci`` profile's metric values, committed with explicit tolerances.

Layout (one file per dataset, method[@variant] and protocol)::

    tests/golden/<profile>/<dataset>/<method_dir>.json          # table1 (images) / table4 (speech)
    tests/golden/<profile>/<dataset>/<method_dir>/table2.json   # CIFAR-10 Table 2 protocol

each holding::

    {"format": "surfbench-golden/1", "dataset": ..., "method": ..., "variant": ..., "protocol": ...,
     "metrics": {name: {"value": float | null, "atol": float | null, "reason": str}},
     "provenance": {"seeds": [...], "config_hash": ..., "dataset_hash": ..., "model_hash": ...,
                    "git_commit": ..., "surfbench_version": ..., "environment": {...},
                    "training_environments": [fingerprint, ...]}}

``value`` is the metric's mean over the evaluated items (over seeds, if several);
``value: null`` marks a metric that was unavailable where the golden file was made
(e.g. LPIPS/FID/IS without their pretrained weights: offline CI); such a metric is not
compared.  ``atol`` is the absolute tolerance of that metric, written in the file and
kept by ``--update`` (defaults: :data:`DEFAULT_ATOL`, justified in docs/trust.md).

* :func:`extract` reads a results store into ``{key: entry}``;
* :func:`check` compares with the golden files and returns the failures (a value outside
  its tolerance, a result or registered method without a golden file, a golden file
  without a result or without a registered method);
* :func:`update` rewrites the golden files on purpose (``surfbench golden --update``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .atomic import write_json
from .config import method_dir
from .environment import differences, fingerprint
from .results import load_metrics

GOLDEN_FORMAT = "surfbench-golden/1"

#: Absolute tolerance per metric (units of the metric), derived in docs/trust.md ("Tolerances"): with the
#: portable kernels (``cpu_kernels: avx2``) training is bit-identical on every processor measured, the metric
#: libraries differ by ~1e-16 (ESTOI) where measured, and DNSMOS's onnxruntime, which follows the processor,
#: by ~1e-6 between versions; each tolerance is >= 1000x that and <= 1/16 of what the smallest deliberate
#: fault moves (one Euler step fewer).  LPIPS, FID, IS and KID need weights the offline machines lack:
#: their tolerances are not measured yet.
DEFAULT_ATOL = {
    "psnr": 1e-3,        # dB
    "ssim": 1e-5,
    "lpips": 0.002,
    "fid": 0.5,
    "is": 0.05,
    "kid": 0.001,
    "si_sdr": 1e-3,      # dB
    "si_sdr_i": 1e-3,    # dB
    "si_sdri": 1e-3,     # dB (config/table name of si_sdr_i)
    "estoi": 1e-5,
    "pesq": 1e-3,        # wide-band PESQ (registered as pesq_wb)
    "pesq_wb": 1e-3,
    "dnsmos": 1e-3,      # DNSMOS OVRL (registered as dnsmos_ovrl)
    "dnsmos_ovrl": 1e-3,
}
FALLBACK_ATOL = 1e-3  # a metric registered later without an entry above (edit the file to choose)


def golden_key(dataset: str, method_dir: str, protocol: str) -> str:
    if protocol in ("table2", "table3"):  # evaluations in their own subfolder of the run
        return f"{dataset}/{method_dir}/{protocol}"
    return f"{dataset}/{method_dir}"


def golden_dir_of(root: str | Path, profile: str) -> Path:
    return Path(root) / profile


# ----------------------------------------------------------------------------- extract
def extract(results_root: str | Path, profile: str) -> dict:
    """``{key: entry}`` with per-metric means of every run under ``results_root/profile``.

    Several seeds of one (dataset, method[@variant], protocol) are averaged; a metric
    unavailable in any seed is recorded as ``None`` with its reason.
    """
    root = Path(results_root) / profile
    runs: dict[str, list[dict]] = {}
    for path in sorted(root.glob("**/metrics.json")):
        blob = load_metrics(path)
        key = golden_key(blob["dataset"], method_dir(blob["method"], blob.get("variant") or ""), blob["protocol"])
        runs.setdefault(key, []).append(blob)
    out = {}
    for key, blobs in sorted(runs.items()):
        blobs = sorted(blobs, key=lambda b: b["seed"])
        first = blobs[0]
        names = sorted({n for b in blobs for n in b["metrics"]})
        metrics, reasons = {}, {}
        for n in names:
            ms = [b["metrics"].get(n) for b in blobs]
            if all(m is not None and m.get("available") and m.get("mean") is not None for m in ms):
                metrics[n] = float(sum(float(m["mean"]) for m in ms) / len(ms))
            else:
                metrics[n] = None
                reasons[n] = "; ".join(sorted({(m or {}).get("reason") or "missing" for m in ms
                                               if not (m and m.get("available"))}))
        out[key] = {
            "dataset": first["dataset"], "method": first["method"], "variant": first.get("variant", ""),
            "protocol": first["protocol"], "metrics": metrics, "reasons": reasons,
            "provenance": {
                "seeds": [b["seed"] for b in blobs],
                "config_hash": [b.get("config_hash") for b in blobs],
                "dataset_hash": first.get("dataset_hash"),
                "model_hash": [b.get("model_hash") for b in blobs],
                "git_commit": first.get("git_commit"),
                "surfbench_version": first.get("surfbench_version"),
                "schema_version": first.get("schema_version"),
                "environment": first.get("environment"),
                "training_environments": [fingerprint(e) for e in first.get("training_environments") or []],
            },
        }
    return out


# ----------------------------------------------------------------------------- golden files
def load_goldens(golden_dir: str | Path) -> dict:
    """Every golden file under ``golden_dir`` (``tests/golden/<profile>``) as ``{key: blob}``."""
    golden_dir = Path(golden_dir)
    out = {}
    for path in sorted(golden_dir.glob("**/*.json")):
        try:
            blob = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e}); fix it or regenerate with `surfbench golden --update`") from e
        if not isinstance(blob, dict) or blob.get("format") != GOLDEN_FORMAT:
            raise ValueError(f"{path}: not a {GOLDEN_FORMAT} file; regenerate with `surfbench golden --update`")
        key = path.relative_to(golden_dir).with_suffix("").as_posix()
        blob["_path"] = str(path)
        out[key] = blob
    return out


def _fmt(v) -> str:
    return "null" if v is None else f"{v:.6g}"


def check(results: dict, goldens: dict, methods: list[str] | None = None) -> list[str]:
    """Failures (empty when all is well): one line per problem, naming the key, metric and values.

    ``results`` from :func:`extract`; ``goldens`` from :func:`load_goldens`; ``methods``:
    the registered method names (each must have at least one golden file).
    """
    failures = []
    for key in sorted(set(results) - set(goldens)):
        failures.append(f"{key}: result without a golden file ({key}.json); if the new method/run is intended, "
                        f"run `surfbench golden --update`")
    for key in sorted(set(goldens) - set(results)):
        failures.append(f"{key}: golden file {goldens[key].get('_path', key + '.json')} without a result "
                        f"(method removed or renamed, or its run is no longer planned); run `surfbench golden --update`")
    if methods is not None:
        golden_methods = {g.get("method") for g in goldens.values()}
        for m in sorted(set(methods) - golden_methods):
            failures.append(f"method {m!r} is registered but has no golden file; add it to the ci profile and run "
                            f"`surfbench golden --update`")
        for m in sorted(golden_methods - set(methods)):
            failures.append(f"golden files name method {m!r}, which is not registered (no baselines/{m}.py); "
                            f"run `surfbench golden --update`")
    for key in sorted(set(results) & set(goldens)):
        got, want = results[key]["metrics"], goldens[key].get("metrics", {})
        for name in sorted(set(got) - set(want)):
            failures.append(f"{key}: metric {name!r} = {_fmt(got[name])} has no golden value; run `surfbench golden --update`")
        for name, g in sorted(want.items()):
            value, atol = g.get("value"), g.get("atol")
            if value is None:
                continue  # unavailable where the golden was made: not compared
            if atol is None or not (isinstance(atol, (int, float)) and atol >= 0):
                failures.append(f"{key}: metric {name!r}: golden file has no valid absolute tolerance (atol={atol!r})")
                continue
            if name not in got:
                failures.append(f"{key}: metric {name!r} missing from the results (golden {_fmt(value)})")
                continue
            v = got[name]
            if v is None:
                reason = results[key].get("reasons", {}).get(name, "")
                failures.append(f"{key}: metric {name!r} unavailable ({reason}); golden {_fmt(value)}")
                continue
            diff = abs(v - value) if math.isfinite(v) else math.inf
            if not diff <= atol:
                failures.append(f"{key}: {name} = {_fmt(v)}, golden {_fmt(value)} ± {atol:g} "
                                f"(off by {diff:.3g}, {diff / atol if atol else math.inf:.1f}x the tolerance)")
    return failures


def _describe(env: dict | None) -> str:
    if not env:
        return "not recorded"
    cpu, libs = env.get("cpu") or {}, env.get("libraries") or {}
    return (f"{cpu.get('model')} ({cpu.get('isa')}), cpu_kernels {(env.get('cpu_kernels') or {}).get('setting')}, "
            f"torch {libs.get('torch')}, numpy {libs.get('numpy')}, {(env.get('threads') or {}).get('torch')} thread(s), "
            f"device {env.get('device')}")


def environment_report(results: dict, goldens: dict) -> list[str]:
    """Where the golden files and this run were computed, and how the environments differ (printed on failure)."""
    common = sorted(set(results) & set(goldens))
    if not common:
        return []
    gold, run = goldens[common[0]].get("provenance", {}), results[common[0]]["provenance"]
    lines = [f"environments ({common[0]}):",
             f"  golden (commit {gold.get('git_commit')}): {_describe(gold.get('environment'))}",
             f"  run    (commit {run.get('git_commit')}): {_describe(run.get('environment'))}"]
    diffs = differences(gold.get("environment"), run.get("environment"))
    return lines + ([f"  differs: {d}" for d in diffs] or ["  no difference in the recorded environments"])


def update(results: dict, golden_dir: str | Path, previous: dict | None = None) -> list[Path]:
    """Write the golden files of ``results`` (tolerances already in the files are kept); remove orphans."""
    golden_dir = Path(golden_dir)
    previous = load_goldens(golden_dir) if previous is None and golden_dir.exists() else (previous or {})
    written = []
    for key, entry in sorted(results.items()):
        old = previous.get(key, {}).get("metrics", {})
        metrics = {}
        for name, v in sorted(entry["metrics"].items()):
            atol = old.get(name, {}).get("atol")
            if atol is None:
                atol = DEFAULT_ATOL.get(name, FALLBACK_ATOL)
            metrics[name] = {"value": v, "atol": atol if v is not None else None,
                             "reason": entry.get("reasons", {}).get(name, "")}
        blob = {"format": GOLDEN_FORMAT, "dataset": entry["dataset"], "method": entry["method"],
                "variant": entry["variant"], "protocol": entry["protocol"], "metrics": metrics,
                "provenance": entry["provenance"]}
        written.append(write_json(golden_dir / f"{key}.json", blob, indent=2, sort_keys=True))
    for key in sorted(set(previous) - set(results)):
        p = Path(previous[key].get("_path", golden_dir / f"{key}.json"))
        if p.exists():
            p.unlink()
    for d in sorted((p for p in golden_dir.glob("**/*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(d.iterdir()):
            d.rmdir()
    return written


def run(results_root: str | Path, profile: str, golden_root: str | Path, do_update: bool = False,
        file=None) -> int:
    """The ``surfbench golden`` command: 0 when the results match the golden files (or after ``--update``)."""
    import sys

    from .registry import registry

    file = file or sys.stdout
    root = Path(results_root) / profile
    if not root.is_dir():
        raise FileNotFoundError(f"no results under {root}; run `snakemake --cores 2 tables --configfile "
                                f"config/{profile}.yaml` first (or pass --results)")
    results = extract(results_root, profile)
    gdir = golden_dir_of(golden_root, profile)
    if do_update:
        written = update(results, gdir)
        print(f"wrote {len(written)} golden files under {gdir}", file=file)
        return 0
    goldens = load_goldens(gdir)
    failures = check(results, goldens, registry().names())
    for f in failures:
        print(f"FAIL {f}", file=file)
    if failures:
        for line in environment_report(results, goldens):
            print(line, file=file)
    n_metrics = sum(1 for e in results.values() for v in e["metrics"].values() if v is not None)
    print(f"golden {profile}: {len(results)} runs, {n_metrics} metric values, {len(failures)} failures", file=file)
    return 1 if failures else 0
