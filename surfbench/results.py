"""The results store: one ``metrics.json`` (+ ``items.csv``) per run, versioned and written atomically.

``metrics.json`` (schema version 2)::

    {"schema_version": 2, "surfbench_version": ..., "git_commit": ..., "profile": ..., "dataset": ...,
     "method": ..., "variant": ..., "seed": ..., "protocol": "table1" | "table2" | ...,
     "config_hash": ..., "dataset_hash": ..., "model_hash": ..., "n_items": ..., "runtime_s": ...,
     "metrics": {name: {"mean", "sem", "ci95": [lo, hi], "n", "higher_is_better", "kind": "item"|"set",
                        "available": bool, "reason": str, "spread": float|null}},
     "method_info": {display_name, supervised, generative, citation},
     "scoring_note": str,                   # how the scored estimates were made, if not plain separation
                                            # (MixIT's slot reduction; absent before it existed: "")
     "evaluation": {...},                   # the profile's evaluation settings it ran with (image_pairing,
                                            # extra_slots, batch_size, ...; absent before they were recorded)
     "environment": {...},                  # the evaluation's (surfbench.environment.capture)
     "training_environments": [{...}, ...], # the training's, one per environment it ran in (null: unknown)
     "train_hash": ...}                     # content hash of the training set the model was trained on (the
                                            # manifest's train_hash; Table 3: the AudioSet clips; absent before)

Version 1 had no ``environment`` / ``training_environments``; it loads with both ``null``.

``items.csv`` holds the per-item values (one row per separated image / source).  It is
written first and ``metrics.json`` last, so a ``metrics.json`` only exists beside a
complete ``items.csv``: an evaluation killed midway leaves no file that looks complete.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .atomic import write_text as _atomic_write_text  # the name tests/test_results_store.py spies on

SCHEMA_VERSION = 2


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def summarize(values, higher_is_better: bool, n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean, standard error and a 95% percentile-bootstrap interval of the mean (NaNs refused)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("summarize: no values")
    if not np.isfinite(v).all():
        raise ValueError(f"summarize: {int((~np.isfinite(v)).sum())} non-finite per-item values")
    mean = float(v.mean())
    sem = float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else 0.0
    rng = np.random.default_rng(seed)
    if v.size > 1:
        idx = rng.integers(0, v.size, size=(n_boot, v.size))
        boots = v[idx].mean(1)
        lo, hi = np.percentile(boots, [2.5, 97.5])
    else:
        lo = hi = mean
    return {"mean": mean, "sem": sem, "ci95": [float(lo), float(hi)], "n": int(v.size),
            "higher_is_better": bool(higher_is_better), "kind": "item", "available": True, "reason": "", "spread": None}


def write_run_results(out_dir: str | Path, *, header: dict, items: pd.DataFrame, metrics: dict) -> Path:
    """Write ``items.csv`` then ``metrics.json`` atomically; returns the metrics path."""
    out_dir = Path(out_dir)
    _atomic_write_text(out_dir / "items.csv", items.to_csv(index=False))
    blob = {"schema_version": SCHEMA_VERSION, "surfbench_version": __version__, "git_commit": git_commit(),
            **header, "metrics": metrics}
    path = out_dir / "metrics.json"
    _atomic_write_text(path, json.dumps(blob, indent=2, sort_keys=True) + "\n")
    return path


# ----------------------------------------------------------------------------- loading (every schema version)
def _upgrade(blob: dict, path: Path) -> dict:
    v = blob.get("schema_version")
    if v is None:
        raise ValueError(f"{path}: no schema_version; not a surfbench metrics file")
    if v > SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {v} is newer than this surfbench ({SCHEMA_VERSION}); upgrade surfbench")
    if v == 1:  # 1 -> 2: the environments were not recorded
        blob = {**blob, "environment": None, "training_environments": None}
    # a later version adds its upgrade step here (v -> v+1) and keeps old fixtures in tests/
    return blob


def load_metrics(path: str | Path) -> dict:
    path = Path(path)
    try:
        blob = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); delete it and rerun the evaluation") from e
    return _upgrade(blob, path)


IMPORTED_FILE = "imported.json"  # beside a metrics.json that `surfbench import` brought in (surfbench/bundle.py)


def imported_info(metrics_path: str | Path) -> dict | None:
    """Where an imported result came from (its ``imported.json``: label, bundle, checks), or ``None`` for a local run.

    The note names the sha256 of the ``metrics.json`` it came with: when the pipeline later recomputed that
    run here (and replaced ``metrics.json``), the stale note is ignored."""
    from .weights import file_sha256

    metrics_path = Path(metrics_path)
    p = metrics_path.parent / IMPORTED_FILE
    if not p.is_file():
        return None
    try:
        info = json.loads(p.read_text())
    except json.JSONDecodeError:
        info = {}
    if not isinstance(info, dict):
        info = {}
    want = info.get("metrics_sha256")
    if want and metrics_path.is_file() and file_sha256(metrics_path) != want:
        return None
    return info


def imported_label(info: dict | None) -> str:
    """``""`` for a local run, else the text the tables print: ``<label> (bundle <name>, imported <date>)``."""
    if info is None:
        return ""
    label = str(info.get("label") or "an unnamed bundle")
    when = str(info.get("imported_at") or "")[:10]
    bundle = info.get("bundle")
    extra = ", ".join(x for x in (f"bundle {bundle}" if bundle and bundle != label else "",
                                  f"imported {when}" if when else "") if x)
    return f"{label} ({extra})" if extra else label


def collect(results_root: str | Path, profile: str) -> pd.DataFrame:
    """Every run's metrics as a long frame (one row per run and metric).

    ``imported_from``: ``""`` for a run computed here, else where ``surfbench import`` brought it from."""
    from .environment import fingerprint

    rows = []
    root = Path(results_root) / profile
    for path in sorted(root.glob("**/metrics.json")):
        blob = load_metrics(path)
        info = blob.get("method_info", {})
        env = fingerprint(blob.get("environment"), *(blob.get("training_environments") or []))
        imported_from = imported_label(imported_info(path))
        for name, m in blob["metrics"].items():
            rows.append({
                "protocol": blob["protocol"], "dataset": blob["dataset"], "method": blob["method"],
                "variant": blob.get("variant", ""), "seed": blob["seed"], "metric": name,
                "mean": m.get("mean"), "ci_low": (m.get("ci95") or [None, None])[0], "ci_high": (m.get("ci95") or [None, None])[1],
                "spread": m.get("spread"), "higher_is_better": m["higher_is_better"], "available": m["available"],
                "reason": m.get("reason", ""), "display_name": info.get("display_name", blob["method"]),
                "supervised": info.get("supervised"), "generative": info.get("generative"), "path": str(path),
                "environment": env, "n_items": m.get("n"), "n_missing": m.get("n_missing") or 0,
                "scoring_note": blob.get("scoring_note") or "", "imported_from": imported_from,
            })
    return pd.DataFrame(rows)


def _reasons(rows: pd.DataFrame) -> str:
    """The seeds' non-empty reasons, once each (an available value's reason says which items are missing)."""
    return "; ".join(sorted({r for r in rows["reason"].astype(str) if r.strip()}))


def _scoring_notes(rows: pd.DataFrame) -> str:
    """The seeds' notes on how their estimates were scored, once each ("" when none was recorded)."""
    if "scoring_note" not in rows:
        return ""
    return "; ".join(sorted({str(n) for n in rows["scoring_note"].fillna("") if str(n).strip()}))


def _imported(rows: pd.DataFrame) -> tuple[str, int]:
    """Where the seeds' imported results came from, once each, and how many seeds were imported."""
    if "imported_from" not in rows:
        return "", 0
    labels = [str(x) for x in rows["imported_from"].fillna("") if str(x).strip()]
    return "; ".join(sorted(set(labels))), len(labels)


def aggregate_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """Across seeds: mean of the per-seed means and a 95% t-interval (one seed: that run's own bootstrap interval).

    ``n_environments``: how many different environments (``surfbench.environment.fingerprint``; an
    unrecorded one counts as one more) the available seeds were computed in.  ``n_missing``: items that
    could not be scored (NaN in ``items.csv``) over the available seeds, ``n_items`` those that were.
    ``scoring_note``: the seeds' notes on how their estimates were scored, once each.  ``imported_from`` /
    ``n_imported``: where the available seeds that ``surfbench import`` brought in came from, and how many.
    """
    from scipy import stats

    if df.empty:
        return df
    keys = ["protocol", "dataset", "method", "variant", "metric"]
    out = []
    for key, g in df.groupby(keys, dropna=False, sort=True):
        first = g.iloc[0]
        avail = g[g["available"]]
        row = dict(zip(keys, key))
        row.update(higher_is_better=bool(first["higher_is_better"]), display_name=first["display_name"],
                   supervised=first["supervised"], generative=first["generative"], n_seeds=len(avail),
                   n_environments=len(set(avail["environment"].fillna("unrecorded"))) if "environment" in avail else 1,
                   n_missing=int(avail["n_missing"].fillna(0).sum()) if "n_missing" in avail else 0,
                   n_items=int(avail["n_items"].fillna(0).sum()) if "n_items" in avail else 0,
                   scoring_note=_scoring_notes(g))
        row["imported_from"], row["n_imported"] = _imported(avail if not avail.empty else g)
        if avail.empty:
            row.update(mean=np.nan, ci_low=np.nan, ci_high=np.nan, available=False,
                       reason="; ".join(sorted(set(g["reason"].astype(str)))), spread=np.nan)
        elif len(avail) == 1:
            a = avail.iloc[0]
            row.update(mean=a["mean"], ci_low=a["ci_low"], ci_high=a["ci_high"], available=True, reason=_reasons(avail),
                       spread=a["spread"])
        else:
            vals = avail["mean"].astype(float).to_numpy()
            half = stats.t.ppf(0.975, len(vals) - 1) * vals.std(ddof=1) / np.sqrt(len(vals))
            row.update(mean=vals.mean(), ci_low=vals.mean() - half, ci_high=vals.mean() + half, available=True,
                       reason=_reasons(avail), spread=np.nan)
        out.append(row)
    return pd.DataFrame(out)
