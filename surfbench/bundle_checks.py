"""What every run in a result bundle must satisfy, checked by ``surfbench export`` before it packs a run and by
``surfbench import`` before it stores one (:mod:`surfbench.bundle`): the results schema, each protocol's
metrics.json in its own folder, every per-item summary recomputed from ``items.csv`` as the evaluation computes
it, Table 3's FUSS files read back and re-summarised, a registered (or fully described) method, and a
``config.yaml`` that hashes to the recorded ``config_hash``.  Each check raises :class:`BundleError` listing
every problem it found.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

FUSS_EXAMPLES, FUSS_SUMMARY = "fuss_examples.csv", "fuss_summary.json"
#: where a run keeps each protocol's results (workflow/rules/evaluate.smk's PROTOCOL_DIR): table1/table4 in the run
#: folder itself, the others in a folder of their own
PROTOCOL_DIRS = {"table2": "table2", "table3": "table3"}
#: the result files of each of those folders that a bundle carries, metrics.json first (+ examples.npz where the
#: evaluation writes one, with --with-examples)
RESULT_FILES = {"": ("metrics.json", "items.csv"), "table2": ("metrics.json", "items.csv"),
                "table3": ("metrics.json", "items.csv", FUSS_EXAMPLES, FUSS_SUMMARY)}
#: agreement of a recorded summary with the one recomputed from items.csv (the same code on the same
#: values gives the same bits; this only absorbs a different numpy's last ulp)
SUMMARY_RTOL, SUMMARY_ATOL = 1e-9, 1e-12
METHOD_INFO_KEYS = ("display_name", "supervised", "generative", "citation")


class BundleError(ValueError):
    """A bundle that cannot be exported or imported; the message says why and what to do."""


# ----------------------------------------------------------------------------- checks shared by export and import
def check_schema(blob, where: str) -> dict:
    """The blob upgraded to this surfbench's schema, or a :class:`BundleError` naming the version."""
    from .results import SCHEMA_VERSION, _upgrade

    if not isinstance(blob, dict):
        raise BundleError(f"{where}: not a JSON object; not a surfbench metrics file")
    v = blob.get("schema_version")
    known = f"1..{SCHEMA_VERSION}"
    if isinstance(v, bool) or not isinstance(v, int):
        raise BundleError(f"{where}: unknown schema_version {v!r} (this surfbench reads {known}); "
                          f"not a surfbench metrics file, or a corrupt one")
    if v > SCHEMA_VERSION:
        raise BundleError(f"{where}: schema_version {v} is newer than this surfbench reads ({known}); "
                          f"upgrade surfbench to import it")
    if v < 1:
        raise BundleError(f"{where}: unknown schema_version {v} (this surfbench reads {known})")
    blob = _upgrade(blob, Path(where))
    missing = [k for k in ("profile", "dataset", "method", "seed", "protocol", "dataset_hash", "config_hash",
                           "model_hash", "metrics") if blob.get(k) in (None, "")]
    if missing:
        raise BundleError(f"{where}: metrics.json lacks {', '.join(missing)}")
    if not isinstance(blob["metrics"], dict):
        raise BundleError(f"{where}: 'metrics' is not an object")
    return blob


def check_folder(blob: dict, sub: str, where: str, run: str) -> None:
    """A protocol's metrics.json lies in that protocol's folder of its run (:data:`PROTOCOL_DIRS`), and nowhere else."""
    home = PROTOCOL_DIRS.get(blob["protocol"], "")
    if home != sub:
        raise BundleError(f"{where}: holds a {blob['protocol']} result, whose place is "
                          f"{run}/{home + '/' if home else ''}metrics.json; refused")


def _close(a, b, atol: float = SUMMARY_ATOL) -> bool:
    if a is None or b is None:
        return a is None and b is None
    a, b = float(a), float(b)
    if not (math.isfinite(a) and math.isfinite(b)):
        return a == b
    return abs(a - b) <= atol + SUMMARY_RTOL * max(abs(a), abs(b))


def _summary_mismatch(m: dict, want: dict, n_boot, source: str, atol: float = SUMMARY_ATOL) -> list[str]:
    """The fields of a recorded per-item summary ``m`` that differ from ``want`` (the evaluation's own summary of the
    values read from ``source``); the interval only where the evaluation settings record its bootstrap."""
    fields = [("mean", m.get("mean"), want["mean"]), ("sem", m.get("sem"), want["sem"]), ("n", m.get("n"), want["n"]),
              ("n_missing", m.get("n_missing", 0) or 0, want.get("n_missing", 0))]
    if n_boot:
        ci = m.get("ci95") or [None, None]
        fields += [("ci95 low", ci[0], want["ci95"][0]), ("ci95 high", ci[1], want["ci95"][1])]
    return [f"{f} {got!r} in metrics.json, {exp!r} from {source}" for f, got, exp in fields if not _close(got, exp, atol)]


def _item_problems(blob: dict, items: pd.DataFrame, prefix: str = "") -> tuple[list[str], list[str], list[str]]:
    """``(problems, checked, not_checked)`` of the metrics ``prefix + <column>`` of ``blob``: each summary recomputed
    from its ``items`` column with the evaluation's own :func:`surfbench.evaluate._item_summary`."""
    from . import metrics as _metrics  # noqa: F401
    from .evaluate import _item_summary, metric_info
    from .metrics import audio as _audio, image as _image  # noqa: F401  (they register their metrics)

    problems, checked, unchecked = [], [], []
    n_boot = (blob.get("evaluation") or {}).get("bootstrap_samples")
    n_items = blob.get("n_items")
    has_items = len(items.columns) > 0
    if blob["protocol"] != "table2" and n_items is not None and has_items and len(items) != n_items:
        problems.append(f"items.csv has {len(items)} rows, metrics.json says n_items {n_items}")
    for col in [c for c in items.columns if c not in ("mixture", "slot")]:
        if prefix + col not in blob["metrics"]:
            problems.append(f"items.csv has values of {col!r} but metrics.json has no summary of it"
                            + (f" ({prefix + col!r})" if prefix else ""))
    for name, m in sorted((k, v) for k, v in blob["metrics"].items() if k.startswith(prefix)):
        col_name = name[len(prefix):]
        if not isinstance(m, dict):
            problems.append(f"metric {name!r}: not an object")
            continue
        try:
            info = metric_info(col_name)
        except KeyError:
            problems.append(f"metric {name!r} is not a metric this surfbench knows")
            continue
        hib = info.higher_is_better
        if m.get("kind") != info.kind:  # a per-item metric passed off as set-level would escape the recomputation
            problems.append(f"metric {name!r}: kind {m.get('kind')!r}, but {col_name} is a{'n' if info.kind == 'item' else ''} "
                            f"{info.kind}-level metric")
            continue
        if bool(m.get("higher_is_better")) != hib:
            problems.append(f"metric {name!r}: higher_is_better {m.get('higher_is_better')!r}, but {col_name} is "
                            f"{'higher' if hib else 'lower'}-is-better")
        col = items[col_name] if col_name in items.columns else None
        if not m.get("available"):
            if m.get("mean") is not None:
                problems.append(f"metric {name!r}: unavailable but has a mean {m.get('mean')!r}")
            if col is not None and np.isfinite(pd.to_numeric(col, errors="coerce").to_numpy(float)).any():
                problems.append(f"metric {name!r}: unavailable in metrics.json but items.csv has values of it")
            continue
        if m.get("kind") == "set":
            if m.get("mean") is None or not math.isfinite(float(m["mean"])):
                problems.append(f"metric {name!r}: available set-level metric without a finite mean")
            unchecked.append(name)
            continue
        if col is None:
            problems.append(f"metric {name!r}: metrics.json has a per-item summary but items.csv has no {col_name!r} column")
            continue
        values = pd.to_numeric(col, errors="coerce").to_numpy(np.float64)
        ok = np.isfinite(values)
        if not ok.any():
            problems.append(f"metric {name!r}: available, but items.csv has no finite value of it")
            continue
        want = _item_summary(values, hib, n_boot or 1000, blob["seed"], name, {})
        bad = _summary_mismatch(m, want, n_boot, "items.csv")
        if bad:
            problems.append(f"metric {name!r}: the summary does not match its {int(ok.sum())} per-item values "
                            f"({'; '.join(bad)}): tampered with or corrupt")
        else:
            checked.append(name)
    return problems, checked, unchecked


def _json_mismatch(got, want, atol: float, key: str = "") -> list[str]:
    """Where ``got`` (a JSON value) differs from ``want``: numbers within ``atol``, everything else equal."""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return [f"{key or 'the file'} {got!r}, {want!r} recomputed"]
        return [d for k in want for d in _json_mismatch(got.get(k), want[k], atol, f"{key}.{k}" if key else str(k))]
    numbers = (int, float)
    if isinstance(want, numbers) and not isinstance(want, bool) and isinstance(got, numbers) and not isinstance(got, bool):
        return [] if _close(got, want, atol) else [f"{key} {got!r}, {want!r} recomputed"]
    return [] if got == want else [f"{key} {got!r}, {want!r} recomputed"]


def _table3_problems(blob: dict, items: pd.DataFrame, folder: Path) -> tuple[list[str], list[str]]:
    """``(problems, checks)`` of a Table 3 result in ``folder`` (:func:`surfbench.evaluate.evaluate_table3`): the
    LibriSpeech + FUSS summaries from the ``librispeech_fuss`` rows of ``items``; the FUSS metrics and
    ``fuss_summary.json`` from ``fuss_examples.csv`` read back (:func:`surfbench.score_fuss.read_examples`) and
    summarised by the evaluation's own :func:`surfbench.evaluate.fuss_metrics` and
    :meth:`~surfbench.metrics.fuss.FussAccumulator.summary`; the ``fuss`` rows of ``items`` against that file."""
    from .evaluate import FUSS_METRICS, LSFUSS_PREFIX, SPEECH_METRIC_NAMES, fuss_metrics
    from .score_fuss import CSV_DECIMALS, read_examples

    problems, checks = [], []
    if "set" not in items.columns:
        return ["items.csv has no 'set' column: not the items of a Table 3 evaluation"], []
    sets = items["set"].astype(str)
    fuss, ls = items[sets == "fuss"].reset_index(drop=True), items[sets == "librispeech_fuss"].reset_index(drop=True)
    other = sorted(set(sets) - {"fuss", "librispeech_fuss"})
    if other:
        problems.append(f"items.csv has rows of set {', '.join(map(repr, other))}; Table 3 has 'fuss' and 'librispeech_fuss'")
    for key, n in (("n_items", len(items)), ("n_fuss_examples", len(fuss)), ("n_librispeech_fuss", len(ls))):
        if blob.get(key) != n:
            problems.append(f"metrics.json says {key} {blob.get(key)!r}, items.csv has {n}")
    known = set(FUSS_METRICS) | {k for k in blob["metrics"] if k.startswith(LSFUSS_PREFIX)}
    for name in sorted(set(blob["metrics"]) - known):
        problems.append(f"metric {name!r} is not a Table 3 metric (FUSS: {', '.join(FUSS_METRICS)}; "
                        f"LibriSpeech + FUSS: {LSFUSS_PREFIX}<speech metric>)")
    # LibriSpeech + FUSS: per-item speech metrics, as for Table 4
    ls_blob = {**blob, "n_items": None}
    bad, checked, _ = _item_problems(ls_blob, ls[[c for c in ls.columns if c in SPEECH_METRIC_NAMES]], LSFUSS_PREFIX)
    problems += bad
    checks.append(f"summaries of {', '.join(checked)} recomputed from items.csv" if checked
                  else "no LibriSpeech + FUSS summary to recompute")
    # FUSS: the per-example rows read back, summarised by the evaluation's code
    try:
        acc, rows = read_examples(folder / FUSS_EXAMPLES)
    except (ValueError, UnicodeDecodeError, csv.Error) as e:
        return problems + [str(e).replace(str(folder / FUSS_EXAMPLES), FUSS_EXAMPLES)], checks
    mine = [[str(r.example), *(None if pd.isna(getattr(r, c)) else int(getattr(r, c)) for c in ("n_ref_active", "n_est_active")),
             str(r.separation)] for r in fuss.itertuples()] if len(fuss) else []
    theirs = [[r[0], r[1] if r[1] != "" else None, r[2] if r[2] != "" else None, r[3]] for r in rows]
    if mine != theirs:
        i = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
        problems.append(f"items.csv's fuss rows (example, n_ref_active, n_est_active, separation) differ from "
                        f"{FUSS_EXAMPLES} from example {i}: {mine[i] if i < len(mine) else 'none'} against "
                        f"{theirs[i] if i < len(theirs) else 'none'}")
    n_boot = (blob.get("evaluation") or {}).get("bootstrap_samples")
    atol = 10.0 ** -CSV_DECIMALS  # the file's dB values are rounded to half a unit of this; so is any mean of them
    want = fuss_metrics(acc, n_boot or 1000, blob["seed"])
    for key, (_, hib) in FUSS_METRICS.items():
        m, w = blob["metrics"].get(key), want[key]
        if not isinstance(m, dict):
            problems.append(f"metric {key!r}: {'missing from metrics.json' if m is None else 'not an object'}")
            continue
        bad = [f"{f} {m.get(f)!r} in metrics.json, {w[f]!r} from {FUSS_EXAMPLES}"
               for f in ("available", "kind", "higher_is_better") if m.get(f) != w[f]]
        if not bad and w["available"]:
            bad = _summary_mismatch(m, w, n_boot, FUSS_EXAMPLES, SUMMARY_ATOL if w.get("unit") == "" else atol)
        if bad:
            problems.append(f"metric {key!r}: does not match {FUSS_EXAMPLES} ({'; '.join(bad)}): tampered with or corrupt")
    try:
        summary = json.loads((folder / FUSS_SUMMARY).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        summary = e
    if not isinstance(summary, dict):
        problems.append(f"{FUSS_SUMMARY}: not a JSON object ({summary})")
    else:
        bad = _json_mismatch(summary, {**acc.summary(), "skipped": list(acc.skipped)}, atol)
        if bad:
            problems.append(f"{FUSS_SUMMARY} does not match {FUSS_EXAMPLES} ({'; '.join(bad)}): tampered with or corrupt")
    checks += [f"FUSS metrics {', '.join(FUSS_METRICS)} and {FUSS_SUMMARY} recomputed from {FUSS_EXAMPLES} with the "
               f"evaluation's code (its dB values have {CSV_DECIMALS} decimals: agreement within {atol:g} dB), its rows "
               f"= items.csv's fuss rows"]
    return problems, checks


def check_results(blob: dict, folder: Path, where: str) -> tuple[list[str], list[str]]:
    """Every summary in ``folder``'s metrics.json (``blob``) recomputed, as the evaluation computes it, from the files
    beside it: ``items.csv``, and for Table 3 also ``fuss_examples.csv`` / ``fuss_summary.json``.

    Returns ``(checks, not_checked)``, lines for ``imported.json``; raises :class:`BundleError` listing each
    disagreement."""
    protocol = blob["protocol"]
    for name in RESULT_FILES[PROTOCOL_DIRS.get(protocol, "")][1:]:
        if not (folder / name).is_file():
            raise BundleError(f"{where}: no {name} beside it; its summaries cannot be checked")
    items = _read_items(folder / "items.csv", where, dtype={"example": str} if protocol == "table3" else None)
    if protocol == "table3":
        problems, checks = _table3_problems(blob, items, folder)
        unchecked = []
    else:
        problems, checked, unchecked = _item_problems(blob, items)
        checks = [f"summaries of {', '.join(checked)} recomputed from items.csv" if checked
                  else "no per-item summary to recompute"]
    if problems:
        raise BundleError(f"{where}: " + "; ".join(problems))
    return ([f"{protocol}: {c}" for c in checks],
            [f"{protocol} {n}: a set-level metric, not recomputable from items.csv" for n in unchecked])


def check_method(blob: dict, where: str) -> str:
    from .registry import registry

    if blob["method"] in registry().names():
        return f"method {blob['method']} registered here"
    info = blob.get("method_info") or {}
    missing = [k for k in METHOD_INFO_KEYS if k not in info or info[k] is None or
               (k in ("supervised", "generative") and not isinstance(info[k], bool)) or
               (k in ("display_name", "citation") and not str(info[k]).strip())]
    if missing:
        raise BundleError(f"{where}: method {blob['method']!r} is not registered here (no baselines/{blob['method']}.py) "
                          f"and its method_info lacks {', '.join(missing)}; add the method, or export its result "
                          f"with complete metadata ({', '.join(METHOD_INFO_KEYS)})")
    return f"method {blob['method']} not registered here; its metadata came with it"


def check_config(blob: dict, cfg_text: str, where: str) -> None:
    from .config import config_hash

    try:
        cfg = yaml.safe_load(cfg_text)
    except yaml.YAMLError as e:
        raise BundleError(f"{where}: config.yaml is not valid YAML ({e})") from e
    if not isinstance(cfg, dict):
        raise BundleError(f"{where}: config.yaml is not a mapping")
    for k in ("dataset", "method", "seed"):
        if cfg.get(k) != blob.get(k):
            raise BundleError(f"{where}: config.yaml says {k} {cfg.get(k)!r}, metrics.json {blob.get(k)!r}")
    if (cfg.get("variant") or "") != (blob.get("variant") or ""):
        raise BundleError(f"{where}: config.yaml says variant {cfg.get('variant')!r}, metrics.json {blob.get('variant')!r}")
    h = config_hash(cfg)
    if h != blob["config_hash"]:
        raise BundleError(f"{where}: config.yaml hashes to {h}, but metrics.json records config_hash "
                          f"{blob['config_hash']}: not the configuration this result was computed with")


def _read_items(path: Path | None, where: str, dtype=None) -> pd.DataFrame:
    if path is None:
        return pd.DataFrame()
    try:
        return pd.read_csv(path, dtype=dtype)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except Exception as e:  # ParserError, UnicodeDecodeError ...
        raise BundleError(f"{where}: items.csv is not a readable CSV ({type(e).__name__}: {e})") from e
