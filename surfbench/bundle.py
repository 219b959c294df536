"""Result bundles: ``surfbench export`` packs runs, ``surfbench import`` checks them into a results store.

A bundle is a gzipped tar::

    bundle.json                                               the manifest (format surfbench-bundle/1)
    runs/<profile>/<dataset>/<method>[@<variant>]/seed<k>/
        config.yaml                                           always
        metrics.json    items.csv                             Tables 1, 4 and 9, where the run has them
        table2/metrics.json    table2/items.csv               the Table 2 protocol, where the run has it
        table3/metrics.json    table3/items.csv               the Table 3 protocol, where the run has it
        table3/fuss_examples.csv    table3/fuss_summary.json    (its FUSS values per example, and their summary)
        examples.npz    table3/examples.npz                   with --with-examples, where the evaluation wrote them
        model.pt                                              with --with-weights only

``bundle.json``: ``{"format", "created", "label", "surfbench_version", "git_commit", "with_weights",
"runs": [{"path", "profile", "dataset", "method", "variant", "seed", "protocols"}],
"files": {member: {"sha256", "size"}}}``.  A run's place in the bundle comes from its ``metrics.json``
(not from the folder it was exported from).

Import reads the tar member by member and refuses it, before anything is written, when

* a member is not a plain file or folder (links, devices), has an absolute name, a ``..`` or an
  unexpected name, is larger than its limit, or the members add up to more than :data:`LIMITS` allow;
* a file differs from its sha256 in ``bundle.json`` (corrupt in transit);
* ``metrics.json`` has a ``schema_version`` this surfbench cannot read (older versions are upgraded as
  :func:`surfbench.results.load_metrics` does: 1 -> 2), or lacks a field;
* a protocol's ``metrics.json`` lies elsewhere than in its folder (Table 2: ``table2/``, Table 3: ``table3/``,
  the others: the run folder), or the run it describes is not the one it lies in;
* its ``dataset_hash`` is not the hash of this benchmark's evaluation set for that profile and dataset:
  the ``eval_hash`` (``eval_table2_hash`` for Table 2) of ``<data>/<profile>/<dataset>/manifest.json``,
  the manifest the pipeline writes when it prepares the data; for Table 3, whatever the run's dataset, the
  ``eval_fuss_hash`` and (``dataset_hashes.eval_librispeech_fuss``) the ``eval_librispeech_fuss_hash`` of the
  ``fuss`` dataset's manifest, on whose evaluation sets every Table 3 run is scored.  Where that data is not
  prepared here, the import is refused with the command that prepares it: a hash recorded elsewhere (a golden
  file) could be stale, and the local manifest is what the tables' own runs were checked against;
* a summary (mean, standard error, n, items missing, and the bootstrap interval where the evaluation
  settings are recorded) differs from what the evaluation's own :func:`surfbench.evaluate._item_summary`
  computes from ``items.csv`` (set-level metrics, FID and IS, have no per-item values and are taken as they
  are: said in ``imported.json``).  Table 3: the LibriSpeech + FUSS summaries from its ``librispeech_fuss``
  rows; the FUSS metrics (1S, 2Si, 3Si, 4Si, MSi, under/equal/over) and ``fuss_summary.json`` from
  ``fuss_examples.csv`` read back (:func:`surfbench.score_fuss.read_examples`) and summarised by the
  evaluation's :func:`surfbench.evaluate.fuss_metrics` and ``FussAccumulator.summary``: that file's dB values
  have 6 decimals, so the dB figures agree within 1e-6 dB, not to the bit; its rows must be ``items.csv``'s
  ``fuss`` rows;
* ``config.yaml`` does not hash to the recorded ``config_hash``, or ``model.pt`` (when shipped) to ``model_hash``;
* the method is not registered here (no ``baselines/<name>.py``) and its ``method_info`` lacks
  ``display_name``, ``supervised``, ``generative`` or ``citation``;
* the store already holds that run (profile, dataset, method, variant, seed) with other contents,
  or the same trained model (``model_hash``) under another seed: a result is never overwritten, and
  one model never counts as two seeds.  The identical result again is skipped.

Every imported file is stored byte for byte as exported; beside each
``metrics.json`` an ``imported.json`` says where it came from and what was checked.  The results store
reads it (:func:`surfbench.results.imported_info`), so the tables footnote imported values.
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import re
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import yaml

from .atomic import atomic_path, copy_file, write_json
from .config import method_dir
from .weights import file_sha256

BUNDLE_FORMAT = "surfbench-bundle/1"
IMPORT_FORMAT = "surfbench-import/1"
MANIFEST = "bundle.json"
IMPORTED = "imported.json"  # beside every imported metrics.json
EXAMPLES, WEIGHTS = "examples.npz", "model.pt"
FUSS_EXAMPLES, FUSS_SUMMARY = "fuss_examples.csv", "fuss_summary.json"
#: where a run keeps each protocol's results (workflow/rules/evaluate.smk's PROTOCOL_DIR): table1/table4 in the run
#: folder itself, the others in a folder of their own
PROTOCOL_DIRS = {"table2": "table2", "table3": "table3"}
#: the result files of each of those folders that a bundle carries, metrics.json first (+ examples.npz where the
#: evaluation writes one, with --with-examples)
RESULT_FILES = {"": ("metrics.json", "items.csv"), "table2": ("metrics.json", "items.csv"),
                "table3": ("metrics.json", "items.csv", FUSS_EXAMPLES, FUSS_SUMMARY)}
HAS_EXAMPLES = ("", "table3")

#: what an import reads at most (bytes / members); a bundle over a limit is refused before it is unpacked
LIMITS = {
    "file": 256 * 2**20,        # any file but model.pt
    "weights": 4 * 2**30,       # one model.pt
    "total": 16 * 2**30,        # all members together
    "members": 20000,
}
#: agreement of a recorded summary with the one recomputed from items.csv (the same code on the same
#: values gives the same bits; this only absorbs a different numpy's last ulp)
SUMMARY_RTOL, SUMMARY_ATOL = 1e-9, 1e-12
METHOD_INFO_KEYS = ("display_name", "supervised", "generative", "citation")

_SEG = r"[A-Za-z0-9_][A-Za-z0-9_.=@+,-]*"
_FILES = ["config.yaml", WEIGHTS] + [f"{sub + '/' if sub else ''}{n}" for sub, names in RESULT_FILES.items()
                                     for n in names + ((EXAMPLES,) if sub in HAS_EXAMPLES else ())]
_MEMBER = re.compile(rf"^runs/(?P<run>{_SEG}/{_SEG}/{_SEG}/seed[0-9]+)/(?P<file>{'|'.join(map(re.escape, _FILES))})$")
_DIR = re.compile(rf"^runs(/{_SEG}){{0,3}}(/seed[0-9]+(/(?:{'|'.join(PROTOCOL_DIRS.values())}))?)?$")


class BundleError(ValueError):
    """A bundle that cannot be exported or imported; the message says why and what to do."""


def run_path(blob: dict, profile: str | None = None) -> str:
    """``<profile>/<dataset>/<method>[@<variant>]/seed<k>`` of a metrics.json blob."""
    return (f"{profile or blob['profile']}/{blob['dataset']}/"
            f"{method_dir(blob['method'], blob.get('variant') or '')}/seed{blob['seed']}")


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


def _check_folder(blob: dict, sub: str, where: str, run: str) -> None:
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


# ----------------------------------------------------------------------------- export
def find_runs(paths) -> list[Path]:
    """Run folders (``.../seed<k>``) at or below ``paths``: each folder holding a metrics.json, or one in a protocol's
    own folder (``table2/``, ``table3/``)."""
    found: dict[Path, None] = {}
    for p in map(Path, paths):
        if not p.exists():
            raise BundleError(f"{p}: no such run folder")
        cands = [p / "metrics.json"] if (p / "metrics.json").is_file() else []
        cands += sorted(p.glob("**/metrics.json"))
        for m in cands:
            d = m.parent.parent if m.parent.name in PROTOCOL_DIRS.values() else m.parent
            found.setdefault(d.resolve(), None)
    if not found:
        raise BundleError(f"no metrics.json at or below {', '.join(map(str, paths))}; export evaluated runs "
                          f"(results/<profile>/<dataset>/<method>/seed<k>)")
    return list(found)


def export_bundle(run_dirs, out: str | Path, *, with_weights: bool = False, with_examples: bool = False,
                  label: str | None = None) -> dict:
    """Write ``out`` (a .tar.gz) with the runs at or below ``run_dirs``; returns the manifest.

    Each run is checked as an import would check it (schema, config hash, summaries against items.csv),
    except the evaluation set, which the importing side checks against its own data."""
    from . import __version__
    from .results import git_commit

    out = Path(out)
    members: list[tuple[str, Path]] = []
    runs, seen = [], {}
    for d in find_runs(run_dirs):
        blobs = {}
        for sub in RESULT_FILES:
            mpath = d / sub / "metrics.json" if sub else d / "metrics.json"
            if not mpath.is_file():
                continue
            try:
                raw = json.loads(mpath.read_text())
            except json.JSONDecodeError as e:
                raise BundleError(f"{mpath}: not valid JSON ({e})") from e
            blob = check_schema(raw, str(mpath))
            _check_folder(blob, sub, str(mpath), str(d))
            check_results(blob, mpath.parent, str(mpath))
            blobs[sub] = blob
        first = next(iter(blobs.values()))
        rp = run_path(first)
        for b in blobs.values():
            if run_path(b) != rp:
                raise BundleError(f"{d}: its metrics files disagree on the run ({run_path(b)} vs {rp})")
        if rp in seen:
            raise BundleError(f"{d} and {seen[rp]} are the same run ({rp}); export one of them")
        seen[rp] = d
        if not (d / "config.yaml").is_file():
            raise BundleError(f"{d}: no config.yaml; a result is exported with the configuration that made it")
        check_config(first, (d / "config.yaml").read_text(), str(d / "config.yaml"))
        files = ["config.yaml"]
        for sub in blobs:
            extra = (EXAMPLES,) if with_examples and sub in HAS_EXAMPLES and (d / sub / EXAMPLES).is_file() else ()
            files += [f"{sub + '/' if sub else ''}{n}" for n in RESULT_FILES[sub] + extra]
        if with_weights:
            if not (d / WEIGHTS).is_file():
                raise BundleError(f"{d}: --with-weights, but it has no {WEIGHTS}")
            if file_sha256(d / WEIGHTS) != first["model_hash"]:
                raise BundleError(f"{d / WEIGHTS} does not hash to the model_hash its metrics.json records")
            files.append(WEIGHTS)
        members += [(f"runs/{rp}/{f}", d / f) for f in files]
        runs.append({"path": rp, "profile": first["profile"], "dataset": first["dataset"], "method": first["method"],
                     "variant": first.get("variant") or "", "seed": first["seed"],
                     "protocols": sorted(b["protocol"] for b in blobs.values())})
    manifest = {"format": BUNDLE_FORMAT, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "label": label or out.name.split(".")[0], "surfbench_version": __version__,
                "git_commit": git_commit(), "with_weights": with_weights, "runs": runs,
                "files": {name: {"sha256": file_sha256(src), "size": src.stat().st_size} for name, src in members}}
    blob = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    with atomic_path(out) as tmp:
        with tarfile.open(tmp, "w:gz", format=tarfile.PAX_FORMAT) as tar:
            def add(name: str, data_or_path) -> None:
                info = tarfile.TarInfo(name)
                info.mode, info.mtime, info.uname, info.gname = 0o644, int(_dt.datetime.now().timestamp()), "", ""
                if isinstance(data_or_path, bytes):
                    info.size = len(data_or_path)
                    tar.addfile(info, io.BytesIO(data_or_path))
                else:
                    info.size = data_or_path.stat().st_size
                    with open(data_or_path, "rb") as f:
                        tar.addfile(info, f)
            add(MANIFEST, blob)
            for name, src in members:
                add(name, src)
    return manifest


# ----------------------------------------------------------------------------- reading a bundle safely
def _member_problem(m: tarfile.TarInfo) -> str | None:
    name = m.name
    p = PurePosixPath(name)
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or "\\" in name or "\x00" in name:
        return f"member {name!r} has an absolute or non-portable path"
    if ".." in p.parts:
        return f"member {name!r} has a '..' component (path traversal)"
    if m.issym() or m.islnk():
        return f"member {name!r} is a {'symbolic' if m.issym() else 'hard'} link (to {m.linkname!r}); bundles hold plain files only"
    if m.isdir():
        return None if _DIR.match(name.rstrip("/")) else f"unexpected folder {name!r}"
    if not m.isfile() or m.issparse():
        return f"member {name!r} is not a plain file (a device, FIFO or sparse file)"
    if name != MANIFEST and not _MEMBER.match(name):
        return (f"unexpected member {name!r}: a bundle holds {MANIFEST} and runs/<profile>/<dataset>/<method>/seed<k>/"
                f"{{{', '.join(_FILES)}}} only")
    return None


def unpack(bundle: str | Path, dest: Path, limits: dict | None = None) -> dict:
    """Check every member of ``bundle`` and copy the plain files under ``dest``; returns the manifest.

    Nothing is extracted by ``tarfile`` itself: each member's name, type and size is checked first, and its
    bytes are copied (at most its declared size) to ``dest / name``."""
    lim = {**LIMITS, **(limits or {})}
    bundle = Path(bundle)
    if not bundle.is_file():
        raise BundleError(f"{bundle}: no such bundle")
    names, total = set(), 0
    try:
        tar = tarfile.open(bundle, "r:*")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise BundleError(f"{bundle}: not a (gzipped) tar file ({e})") from e
    with tar:
        try:
            for i, m in enumerate(tar):
                if i >= lim["members"]:
                    raise BundleError(f"{bundle}: more than {lim['members']} members; refused")
                why = _member_problem(m)
                if why:
                    raise BundleError(f"{bundle}: {why}; refused, nothing imported")
                if m.isdir():
                    continue
                if m.name in names:
                    raise BundleError(f"{bundle}: member {m.name!r} appears twice; refused")
                names.add(m.name)
                cap = lim["weights"] if m.name.endswith("/" + WEIGHTS) else lim["file"]
                if m.size > cap:
                    raise BundleError(f"{bundle}: member {m.name!r} is {m.size} bytes, over the limit of {cap}; refused")
                total += m.size
                if total > lim["total"]:
                    raise BundleError(f"{bundle}: the members add up to more than {lim['total']} bytes; refused")
                target = dest / m.name
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                with open(target, "wb") as f:
                    left = m.size
                    while left > 0:
                        chunk = src.read(min(left, 1 << 20))
                        if not chunk:
                            raise BundleError(f"{bundle}: member {m.name!r} is truncated")
                        f.write(chunk)
                        left -= len(chunk)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise BundleError(f"{bundle}: a corrupt or truncated tar ({type(e).__name__}: {e})") from e
    if MANIFEST not in names:
        raise BundleError(f"{bundle}: no {MANIFEST}; not a surfbench bundle (make one with `surfbench export`)")
    try:
        manifest = json.loads((dest / MANIFEST).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{bundle}: {MANIFEST} is not valid JSON ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise BundleError(f"{bundle}: {MANIFEST} has format {got!r}, this surfbench reads {BUNDLE_FORMAT}")
    listed = manifest.get("files") or {}
    present = names - {MANIFEST}
    for name in sorted(present - set(listed)):
        raise BundleError(f"{bundle}: member {name!r} is not listed in {MANIFEST}")
    for name in sorted(set(listed) - present):
        raise BundleError(f"{bundle}: {MANIFEST} lists {name!r}, which the bundle lacks")
    for name in sorted(present):
        if file_sha256(dest / name) != listed[name].get("sha256"):
            raise BundleError(f"{bundle}: {name} does not match its sha256 in {MANIFEST} (corrupt or edited after export)")
    return manifest


# ----------------------------------------------------------------------------- import
@dataclass
class StagedRun:
    path: str                        # <profile>/<dataset>/<method_dir>/seed<k> in the bundle
    src: Path                        # its staged folder
    blobs: dict = field(default_factory=dict)  # "" | "table2" -> upgraded metrics blob
    target: str = ""                 # the same, under the importing profile
    checks: list = field(default_factory=list)
    not_checked: list = field(default_factory=list)
    notes: list = field(default_factory=list)  # e.g. how its config differs from this profile's run of it
    status: str = "new"              # "new" | "identical"


def _dataset_check(blob: dict, profile: str, data_root: Path, where: str) -> str:
    """The evaluation sets a result records are this benchmark's: each hash equal to its key in the local manifest
    of the data it was evaluated on (Table 3: the ``fuss`` dataset's, :data:`surfbench.plan.TABLE3_EVAL_DATASET`)."""
    from .plan import TABLE3_EVAL_DATASET

    protocol = blob["protocol"]
    dataset = TABLE3_EVAL_DATASET if protocol == "table3" else blob["dataset"]
    manifest = data_root / profile / dataset / "manifest.json"
    # (the field of metrics.json, its value, the manifest's key, the evaluation set in words)
    if protocol == "table3":
        hashes = blob.get("dataset_hashes") or {}
        wanted = [("dataset_hash", blob["dataset_hash"], "eval_fuss_hash", f"{dataset} FUSS evaluation set"),
                  ("dataset_hashes.eval_fuss", hashes.get("eval_fuss"), "eval_fuss_hash", f"{dataset} FUSS evaluation set"),
                  ("dataset_hashes.eval_librispeech_fuss", hashes.get("eval_librispeech_fuss"),
                   "eval_librispeech_fuss_hash", f"{dataset} LibriSpeech + FUSS evaluation set")]
    elif protocol == "table2":
        wanted = [("dataset_hash", blob["dataset_hash"], "eval_table2_hash", f"{dataset} Table 2 evaluation set")]
    else:
        wanted = [("dataset_hash", blob["dataset_hash"], "eval_hash", f"{dataset} evaluation set")]
    if not manifest.is_file():
        why = (f" (Table 3 results of every dataset are evaluated on the {dataset} dataset's evaluation sets)"
               if protocol == "table3" else "")
        raise BundleError(
            f"{where}: cannot check its evaluation set: the {dataset} data of profile {profile} is not prepared "
            f"here ({manifest} is missing){why}. Run `snakemake data --configfile config/{profile}.yaml` in this working "
            f"directory (or pass --data DIR), then import again")
    try:
        man = json.loads(manifest.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{manifest}: not valid JSON ({e}); rerun `snakemake data`") from e
    problems = []
    for field_name, got, key, what in wanted:
        want = man.get(key)
        if not want:
            raise BundleError(f"{manifest} records no {key}; rerun `snakemake data --configfile config/{profile}.yaml`")
        if got != want:
            problems.append(f"evaluated on another evaluation set: its {field_name} is {got}, but this benchmark's {what} "
                            f"of profile {profile} has {key} {want} ({manifest})")
    if problems:
        raise BundleError(f"{where}: " + "; ".join(problems) + "; a result on another evaluation set is not comparable, "
                          "refused")
    return ", ".join(f"{f} = {k}" for f, _, k, _ in wanted) + f" of {manifest}"


def _flat(d, prefix="") -> dict:
    if not isinstance(d, dict):
        return {prefix: d}
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_difference(run_cfg: dict, profile_cfg: dict | None) -> str | None:
    """How ``run_cfg`` differs from ``profile_cfg``'s own resolved config of the same run (``None``: no profile
    config to compare with).  Not a refusal: a result may come from other settings, and this says which."""
    from .config import NON_SEMANTIC_TRAINING_KEYS, RunId, resolve_run

    if profile_cfg is None:
        return None
    try:
        ours = resolve_run(profile_cfg, RunId(run_cfg["dataset"], run_cfg["method"], int(run_cfg["seed"]),
                                              run_cfg.get("variant") or ""))
    except Exception as e:  # an unregistered method, a dataset the profile disables ...
        return f"not compared with profile {profile_cfg['profile']}'s configuration ({type(e).__name__}: {e})"
    ignore = {"profile"} | {f"training.{k}" for k in NON_SEMANTIC_TRAINING_KEYS}
    a, b = _flat(ours), _flat(run_cfg)
    diff = [f"{k} {a.get(k)!r} here, {b.get(k)!r} in the bundle" for k in sorted(set(a) | set(b))
            if k not in ignore and a.get(k) != b.get(k)]
    if not diff:
        return f"config.yaml = profile {profile_cfg['profile']}'s configuration of this run (profile name aside)"
    return (f"config.yaml differs from profile {profile_cfg['profile']}'s configuration of this run in {len(diff)} "
            f"key(s): " + "; ".join(diff[:8]) + ("; ..." if len(diff) > 8 else ""))


def _store_index(store: Path) -> dict[str, list[tuple[Path, dict]]]:
    """model_hash -> [(metrics.json, blob)] of every run in the store (every profile)."""
    from .results import load_metrics

    out: dict[str, list] = {}
    if store.is_dir():
        for p in sorted(store.glob("*/**/metrics.json")):
            try:
                b = load_metrics(p)
            except ValueError:
                continue
            out.setdefault(b.get("model_hash"), []).append((p, b))
    return out


def _provenance_diff(old: dict, new: dict) -> str:
    diffs = [f"{k} {old.get(k)} here, {new.get(k)} in the bundle"
             for k in ("model_hash", "config_hash", "dataset_hash", "git_commit") if old.get(k) != new.get(k)]
    if not diffs:
        same = old.get("metrics") == new.get("metrics")
        diffs = ["the same model, configuration and data" + (
            " and the same metric values, but another evaluation record (runtime, environment)" if same
            else ", but other metric values (evaluated again)")]
    return "; ".join(diffs)


def stage_runs(manifest: dict, staged: Path, results_root: Path, data_root: Path, profile: str | None,
               profile_configs=None) -> list[StagedRun]:
    """Check every run of an unpacked bundle; returns them, or raises one :class:`BundleError` listing every refusal."""
    runs_dir = staged / "runs"
    run_paths = sorted({m.group("run") for m in map(_MEMBER.match, manifest.get("files", {})) if m})
    if not run_paths:
        raise BundleError("the bundle holds no runs")
    index = _store_index(results_root)
    refusals, out, targets = [], [], {}
    for rp in run_paths:
        src = runs_dir / rp
        where = f"{rp}"
        try:
            run = StagedRun(rp, src)
            for sub in RESULT_FILES:
                m = src / sub / "metrics.json" if sub else src / "metrics.json"
                if not m.is_file():
                    continue
                w = f"{where}/{sub + '/' if sub else ''}metrics.json"
                try:
                    raw = json.loads(m.read_text())
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise BundleError(f"{w}: not valid JSON ({e})") from e
                blob = check_schema(raw, w)
                if run_path(blob) != rp:
                    raise BundleError(f"{w}: describes {run_path(blob)} ({blob['protocol']}) but lies at {rp}")
                _check_folder(blob, sub, w, rp)
                checks, unchecked = check_results(blob, m.parent, w)
                run.checks.append(_dataset_check(blob, profile or blob["profile"], data_root, w))
                run.checks += checks
                run.not_checked += unchecked
                run.blobs[sub] = blob
            if not run.blobs:
                raise BundleError(f"{where}: no metrics.json")
            first = next(iter(run.blobs.values()))
            if not (src / "config.yaml").is_file():
                raise BundleError(f"{where}: no config.yaml")
            check_config(first, (src / "config.yaml").read_text(), f"{where}/config.yaml")
            run.checks.append("config.yaml hashes to config_hash")
            if profile_configs is not None:
                diff = config_difference(yaml.safe_load((src / "config.yaml").read_text()),
                                         profile_configs(profile or first["profile"]))
                if diff:
                    (run.checks if diff.startswith("config.yaml = ") else run.notes).append(diff)
            run.checks.append(check_method(first, where))
            if (src / WEIGHTS).is_file():
                if file_sha256(src / WEIGHTS) != first["model_hash"]:
                    raise BundleError(f"{where}/{WEIGHTS} does not hash to the recorded model_hash {first['model_hash']}")
                run.checks.append("model.pt hashes to model_hash")
            run.target = run_path(first, profile or first["profile"])
            if run.target in targets:
                raise BundleError(f"{where}: the bundle holds this run twice ({targets[run.target]}, {rp})")
            targets[run.target] = rp
            run.status = _collision(run, results_root, index)
            out.append(run)
        except BundleError as e:
            refusals.append(str(e))
    if refusals:
        raise BundleError("import refused, nothing imported:\n  " + "\n  ".join(refusals))
    return out


def _collision(run: StagedRun, results_root: Path, index: dict) -> str:
    dest = results_root / run.target
    identical = []
    for sub, blob in run.blobs.items():
        here = dest / sub / "metrics.json" if sub else dest / "metrics.json"
        there = run.src / sub / "metrics.json" if sub else run.src / "metrics.json"
        if here.is_file():
            from .results import load_metrics

            same = all((here.parent / n).is_file() and (here.parent / n).read_bytes() == (there.parent / n).read_bytes()
                       for n in RESULT_FILES[sub])
            if not same:
                try:
                    old = load_metrics(here)
                except ValueError:
                    old = {}
                raise BundleError(
                    f"{run.path}: {here} already holds this run ({blob['protocol']}) with different provenance "
                    f"({_provenance_diff(old, blob)}); an existing result is never overwritten: refused. "
                    f"Another seed is added as a new run; to replace this one, remove {dest} first")
            identical.append(sub)
    for sub, blob in run.blobs.items():
        for p, b in index.get(blob["model_hash"], []):
            same_run = p.resolve() == ((dest / sub / "metrics.json") if sub else (dest / "metrics.json")).resolve()
            if not same_run and b.get("protocol") == blob["protocol"]:
                raise BundleError(
                    f"{run.path}: the same trained model (model_hash {blob['model_hash']}) is already in the store as "
                    f"{p.parent if not sub else p.parent.parent} (seed {b.get('seed')}); one model counts once, refused")
    if identical and len(identical) == len(run.blobs):
        return "identical"
    if identical:
        raise BundleError(f"{run.path}: {dest} holds part of this run already; remove it or export the whole run")
    if dest.exists() and any(dest.iterdir()):
        stray = sorted(p.name for p in dest.iterdir())
        raise BundleError(f"{run.path}: {dest} exists without this run's metrics.json ({', '.join(stray)}): perhaps "
                          f"a run still in progress here; refused, never overwritten")
    return "new"


def import_bundle(bundle: str | Path, results_root: str | Path = "results", data_root: str | Path = "data",
                  profile: str | None = None, label: str | None = None, dry_run: bool = False,
                  limits: dict | None = None, profile_configs=None) -> list[StagedRun]:
    """Check ``bundle`` and copy its runs into ``results_root`` (all of them, or none); returns the runs.

    ``profile_configs``: ``profile -> validated config or None``, to say how each run's config.yaml differs
    from that profile's own configuration of it (a note, not a refusal)."""
    bundle, results_root, data_root = Path(bundle), Path(results_root), Path(data_root)
    with tempfile.TemporaryDirectory(prefix="surfbench-import-") as tmp:
        staged = Path(tmp)
        manifest = unpack(bundle, staged, limits)
        runs = stage_runs(manifest, staged, results_root, data_root, profile, profile_configs)
        if dry_run:
            return runs
        bsha = file_sha256(bundle)
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        for run in runs:
            if run.status == "identical":
                continue
            dest = results_root / run.target
            sidecar = {"format": IMPORT_FORMAT, "label": label or manifest.get("label") or bundle.name,
                       "bundle": bundle.name, "bundle_sha256": bsha, "imported_at": now,
                       "exported_at": manifest.get("created"), "exported_by": {
                           "surfbench_version": manifest.get("surfbench_version"), "git_commit": manifest.get("git_commit")},
                       "path_in_bundle": run.path, "checks": run.checks, "not_checked": run.not_checked,
                       "notes": run.notes}
            # metrics.json last (as the evaluation writes it): a store never shows a result without its files
            for name in ("config.yaml", WEIGHTS):
                if (run.src / name).is_file():
                    copy_file(run.src / name, dest / name)
            for sub in run.blobs:
                d_src, d_dst = (run.src / sub, dest / sub) if sub else (run.src, dest)
                for name in RESULT_FILES[sub][1:] + ((EXAMPLES,) if sub in HAS_EXAMPLES else ()):
                    if (d_src / name).is_file():
                        copy_file(d_src / name, d_dst / name)
                # tied to this metrics.json: a later local run of the same folder is not taken for an import
                write_json(d_dst / IMPORTED, {**sidecar, "metrics_sha256": file_sha256(d_src / "metrics.json")},
                           indent=2, sort_keys=True)
            for sub in sorted(run.blobs, key=lambda s: s == ""):  # table2/3 first, the main metrics.json last
                d_src, d_dst = (run.src / sub, dest / sub) if sub else (run.src, dest)
                copy_file(d_src / "metrics.json", d_dst / "metrics.json")
        return runs


# ----------------------------------------------------------------------------- the commands
def cmd_export(args) -> int:
    m = export_bundle(args.run_dirs, args.output, with_weights=args.with_weights, with_examples=args.with_examples,
                      label=args.label)
    size = Path(args.output).stat().st_size
    print(f"wrote {args.output} ({len(m['runs'])} runs, {len(m['files'])} files, {size} bytes"
          f"{', with weights' if args.with_weights else ', no weights'})")
    for r in m["runs"]:
        print(f"  {r['path']}  ({', '.join(r['protocols'])})")
    return 0


def cmd_import(args) -> int:
    from .config import load_config

    results, data, cfg = args.results, args.data, None
    if args.config:
        cfg = load_config(args.config)
        results = results or cfg["paths"]["results"]
        data = data or cfg["paths"]["data"]
    cache: dict = {}

    def profile_config(name: str):
        """--config when it is that profile, else config/<name>.yaml where it exists (None otherwise)."""
        if name not in cache:
            if cfg is not None and cfg["profile"] == name:
                cache[name] = cfg
            else:
                path = Path("config") / f"{name}.yaml"
                try:
                    cache[name] = load_config(path) if path.is_file() else None
                except (ValueError, KeyError, FileNotFoundError):
                    cache[name] = None
        return cache[name]

    runs = import_bundle(args.bundle, results or "results", data or "data", profile=args.profile, label=args.label,
                         dry_run=args.dry_run, profile_configs=profile_config)
    verb = "would import" if args.dry_run else "imported"
    for r in runs:
        if r.status == "identical":
            print(f"already present, identical: {Path(results or 'results') / r.target}")
        else:
            print(f"{verb} {r.path} -> {Path(results or 'results') / r.target}")
            for c in r.checks:
                print(f"    checked: {c}")
            for c in r.not_checked:
                print(f"    not checked: {c}")
            for c in r.notes:
                print(f"    note: {c}")
    n = sum(r.status == "new" for r in runs)
    print(f"{verb} {n} run(s), {len(runs) - n} already present")
    return 0
