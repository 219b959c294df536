"""``surfbench compare A B``: two results stores side by side, as a regression check.

Each cell is one (table, dataset, method, variant, metric), aggregated over seeds as the tables do
(:func:`surfbench.results.aggregate_seeds`: one seed, its bootstrap interval; several, the mean of the
seeds' means and a 95% t-interval).  The table follows from the protocol: ``table1`` -> 1, ``table2`` -> 2,
``table4`` -> 4, and a Table 9 ablation variant (``<method>@<variant>``) -> 9.  For each cell: both values,
B − A, whether the two 95% intervals overlap, and a status:

* ``ok``      — both values within the tolerance of each other (or both n/a);
* ``moved``   — ``|B − A|`` above the tolerance;
* ``only A`` / ``only B`` — the cell exists in one store only;
* ``n/a A`` / ``n/a B`` — a number on one side, "n/a" (not computed) on the other.

Every status but ``ok`` makes the exit status 1 (errors: 2).  Tolerances are absolute, in the metric's
units: ``--tol X`` for every metric, ``--tol psnr=0.05`` for one (repeatable); a metric without one gets
the golden tolerance of :data:`surfbench.golden.DEFAULT_ATOL`.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

from .atomic import write_json

PROTOCOL_TABLE = {"table1": "1", "table2": "2", "table3": "3", "table4": "4"}
KEY = ["table", "dataset", "method", "variant", "metric"]


def resolve_store(path: str | Path, profile: str | None) -> tuple[Path, list[str]]:
    """The results root of ``path`` (itself, or its ``results/``) and the profiles it holds."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such results store")
    for root in (path, path / "results"):
        if not root.is_dir():
            continue
        profiles = sorted(p.name for p in root.iterdir() if p.is_dir() and (any(p.glob("*/*/seed*/metrics.json"))
                                                                             or any(p.glob("*/*/seed*/table2/metrics.json"))))
        if (profile in profiles) if profile else profiles:
            return root, profiles
    if profile:
        raise FileNotFoundError(f"{path}: no results of profile {profile!r} (looked in {path}/{profile} and "
                                f"{path}/results/{profile})")
    raise FileNotFoundError(f"{path}: no metrics.json below it; not a results store")


def cells(root: Path, profile: str) -> pd.DataFrame:
    """One row per cell of a store: the seeds' aggregate (``aggregate_seeds``) with its table."""
    from .results import aggregate_seeds, collect

    df = collect(root, profile)
    if df.empty:
        return pd.DataFrame(columns=KEY)
    agg = aggregate_seeds(df)
    agg["table"] = [("9" if v else PROTOCOL_TABLE.get(p, p)) for p, v in zip(agg["protocol"], agg["variant"].fillna(""))]
    return agg


def parse_tolerances(specs) -> tuple[float | None, dict[str, float]]:
    """``["0.1", "psnr=0.05"]`` -> ``(0.1, {"psnr": 0.05})``."""
    default, per = None, {}
    for s in specs or []:
        name, eq, value = str(s).rpartition("=")
        try:
            v = float(value)
        except ValueError:
            raise ValueError(f"--tol {s!r}: expected a number or METRIC=NUMBER") from None
        if not (v >= 0 and math.isfinite(v)):
            raise ValueError(f"--tol {s!r}: a tolerance is a finite number >= 0")
        if eq:
            per[name] = v
        else:
            default = v
    return default, per


def tolerance(metric: str, default: float | None, per: dict[str, float]) -> float:
    from .golden import DEFAULT_ATOL, FALLBACK_ATOL

    if metric in per:
        return per[metric]
    if default is not None:
        return default
    return DEFAULT_ATOL.get(metric, FALLBACK_ATOL)


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _side(r) -> dict:
    if r is None:
        return None
    mean = _num(r["mean"]) if bool(r["available"]) else None
    return {"mean": mean, "ci95": [_num(r["ci_low"]), _num(r["ci_high"])], "n_seeds": int(r["n_seeds"]),
            "available": bool(r["available"]) and mean is not None, "reason": str(r.get("reason") or ""),
            "imported_from": str(r.get("imported_from") or "")}


def compare_stores(a: str | Path, b: str | Path, profile: str | None = None, tol=None) -> dict:
    """The comparison as a dict (``cells``, ``summary``, ``exit_status``), ready for JSON."""
    root_a, prof_a = resolve_store(a, profile)
    root_b, prof_b = resolve_store(b, profile)
    if profile is None:
        common = sorted(set(prof_a) & set(prof_b))
        if len(common) != 1:
            raise ValueError(f"--profile needed: {a} holds {prof_a or 'none'}, {b} holds {prof_b or 'none'}")
        profile = common[0]
    default, per = parse_tolerances(tol)
    ca, cb = cells(root_a, profile), cells(root_b, profile)
    ia = {tuple(r[k] for k in KEY): r for r in ca.to_dict("records")}
    ib = {tuple(r[k] for k in KEY): r for r in cb.to_dict("records")}
    order = {t: i for i, t in enumerate(["1", "2", "3", "4", "9"])}
    keys = sorted(set(ia) | set(ib), key=lambda k: (order.get(k[0], 99), k[0], *k[1:]))
    out = []
    for k in keys:
        sa, sb = _side(ia.get(k)), _side(ib.get(k))
        t = tolerance(k[4], default, per)
        cell = dict(zip(KEY, k), a=sa, b=sb, tol=t, diff=None, ci_overlap=None)
        if sa is None or sb is None:
            cell["status"] = "only A" if sb is None else "only B"
        elif not sa["available"] and not sb["available"]:
            cell["status"] = "ok"
        elif not sa["available"] or not sb["available"]:
            cell["status"] = "n/a A" if not sa["available"] else "n/a B"
        else:
            d = sb["mean"] - sa["mean"]
            cell["diff"] = d
            (la, ha), (lb, hb) = sa["ci95"], sb["ci95"]
            if None not in (la, ha, lb, hb):
                cell["ci_overlap"] = bool(max(la, lb) <= min(ha, hb))
            cell["status"] = "ok" if abs(d) <= t else "moved"
        out.append(cell)
    summary = {s: sum(c["status"] == s for c in out) for s in ("ok", "moved", "only A", "only B", "n/a A", "n/a B")}
    summary["cells"] = len(out)
    return {"a": str(root_a), "b": str(root_b), "profile": profile,
            "tolerance": {"default": default, "per_metric": per,
                          "otherwise": "surfbench.golden.DEFAULT_ATOL"}, "cells": out, "summary": summary,
            "exit_status": 0 if summary["ok"] == len(out) else 1}


def _fmt(side: dict | None) -> str:
    if side is None:
        return "--"
    if not side["available"]:
        return "n/a"
    lo, hi = side["ci95"]
    ci = f" [{lo:.4g}, {hi:.4g}]" if lo is not None and hi is not None else ""
    return f"{side['mean']:.6g}{ci}" + (f" ({side['n_seeds']} seeds)" if side["n_seeds"] > 1 else "") + \
        (" *" if side["imported_from"] else "")


def render(result: dict, only_changes: bool = False) -> str:
    """The comparison as a text table (``only_changes``: the cells that are not ``ok``) and a summary line."""
    rows = [["table", "dataset", "method", "variant", "metric", "A", "B", "B-A", "tol", "95% CIs overlap", "status"]]
    for c in result["cells"]:
        if only_changes and c["status"] == "ok":
            continue
        rows.append([c["table"], c["dataset"], c["method"], c["variant"] or "-", c["metric"], _fmt(c["a"]), _fmt(c["b"]),
                     "" if c["diff"] is None else f"{c['diff']:+.4g}", f"{c['tol']:g}",
                     {True: "yes", False: "NO", None: "-"}[c["ci_overlap"]], c["status"]])
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"A: {result['a']}  B: {result['b']}  profile {result['profile']}"]
    for i, r in enumerate(rows):
        lines.append("  ".join(x.ljust(w[j]) if j < 5 or j == len(r) - 1 else x.rjust(w[j]) for j, x in enumerate(r)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * x for x in w))
    s = result["summary"]
    if only_changes:
        lines.append(f"({result['summary']['ok']} cells within the tolerance not shown)")
    if any(_imp(c) for c in result["cells"]):
        lines.append("*: imported with `surfbench import` (imported.json beside its metrics.json)")
    lines.append(f"compare: {s['cells']} cells: {s['ok']} ok, {s['moved']} moved beyond the tolerance, "
                 f"{s['only A']} only in A, {s['only B']} only in B, {s['n/a A'] + s['n/a B']} n/a on one side only"
                 f" -> exit {result['exit_status']}")
    return "\n".join(lines)


def _imp(c) -> bool:
    return any(side and side["imported_from"] for side in (c["a"], c["b"]))


def cmd_compare(args) -> int:
    result = compare_stores(args.a, args.b, profile=args.profile, tol=args.tol)
    print(render(result, only_changes=args.only_changes), file=sys.stdout)
    if args.json:
        write_json(args.json, result, indent=2, sort_keys=False)
        print(f"wrote {args.json}")
    return result["exit_status"]
