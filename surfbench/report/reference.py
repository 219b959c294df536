"""The paper's published numbers: the single source is ``results/reference/paper.csv``.

One row per published number, columns ``table,dataset,method,variant,metric,value,spread``:

* ``table``   -- the paper's table number as a string ("1", "2", "3", "4", "9");
* ``dataset`` -- ``mnist``, ``cifar10``, ``fuss``, ``librispeech_fuss``, ``libri2mix``;
* ``method``  -- a ``baselines/`` file name (``surf_remixit``, ...) or ``average`` (Table 2);
* ``variant`` -- ``""`` for main rows, ``alpha=0.9`` / ``batch_size=16`` / ``beta=0.5`` /
  ``beta=schedule`` (Table 9's "Proposed Sched." row) for the ablations;
* ``metric``  -- ``psnr``, ``lpips``, ``ssim``, ``fid``, ``is``, ``si_sdr``, ``estoi``,
  ``pesq``, ``dnsmos``, ``fuss_1s``, ``fuss_2si``, ``fuss_3si``, ``fuss_4si``, ``under``,
  ``equal``, ``over``;
* ``value``   -- the number as printed; ``spread`` -- the printed ``±`` (Table 2 IS), else empty.

The CSV keeps the printed digits (``0.580``, ``9.601``); :func:`printed_decimals` recovers how
many decimals the paper printed so the report can show the number exactly as published.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pandas as pd

COLUMNS = ("table", "dataset", "method", "variant", "metric", "value", "spread")
TABLES = ("1", "2", "3", "4", "9")
DATASETS = ("mnist", "cifar10", "fuss", "librispeech_fuss", "libri2mix")
METRICS = (
    "psnr", "lpips", "ssim", "fid", "is",
    "si_sdr", "estoi", "pesq", "dnsmos",
    "fuss_1s", "fuss_2si", "fuss_3si", "fuss_4si", "under", "equal", "over",
)

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "results" / "reference" / "paper.csv"


class ReferenceError(ValueError):
    """A malformed reference CSV; the message names the file and the line."""


def _parse_float(text: str, *, path: Path, line: int, column: str, allow_empty: bool) -> float:
    text = text.strip()
    if text == "":
        if allow_empty:
            return math.nan
        raise ReferenceError(f"{path}: line {line}: column {column!r} is empty")
    try:
        value = float(text)
    except ValueError:
        raise ReferenceError(f"{path}: line {line}: column {column!r} is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise ReferenceError(f"{path}: line {line}: column {column!r} is not finite: {text!r}")
    return value


def printed_decimals(text: str) -> int:
    """Decimals of a number as written (``"0.580"`` -> 3, ``"26"`` -> 0)."""
    text = str(text).strip()
    return len(text.split(".", 1)[1]) if "." in text else 0


def load_reference(path: str | Path | None = None) -> pd.DataFrame:
    """Load and validate the paper's numbers.

    Returns a DataFrame with the columns of :data:`COLUMNS` plus ``value_text`` (the value as
    written in the CSV, used to print the paper's digits); ``table``/``dataset``/``method``/
    ``variant``/``metric`` are ``str`` (``variant`` is ``""`` for main rows), ``value`` is
    ``float`` and ``spread`` is ``float`` (NaN where the paper prints none).

    Raises :class:`ReferenceError` (a ``ValueError``) naming the file and line on bad input:
    missing/extra columns, unknown table/dataset/metric, non-numeric values, duplicate keys.
    """
    path = Path(path) if path is not None else DEFAULT_PATH
    if not path.is_file():
        raise ReferenceError(f"{path}: reference file not found")
    records: list[dict] = []
    seen: dict[tuple, int] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise ReferenceError(f"{path}: line 1: file is empty, expected header {','.join(COLUMNS)}") from None
        header = [h.strip() for h in header]
        if tuple(header) != COLUMNS:
            raise ReferenceError(f"{path}: line 1: header {header} != expected {list(COLUMNS)}")
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(COLUMNS):
                raise ReferenceError(
                    f"{path}: line {line_no}: expected {len(COLUMNS)} fields, got {len(row)}: {row}")
            rec = {c: v.strip() for c, v in zip(COLUMNS, row)}
            for col in ("table", "dataset", "method", "metric"):
                if not rec[col]:
                    raise ReferenceError(f"{path}: line {line_no}: column {col!r} is empty")
            if rec["table"] not in TABLES:
                raise ReferenceError(f"{path}: line {line_no}: unknown table {rec['table']!r} (known: {TABLES})")
            if rec["dataset"] not in DATASETS:
                raise ReferenceError(f"{path}: line {line_no}: unknown dataset {rec['dataset']!r} (known: {DATASETS})")
            if rec["metric"] not in METRICS:
                raise ReferenceError(f"{path}: line {line_no}: unknown metric {rec['metric']!r} (known: {METRICS})")
            rec["value_text"] = rec["value"]
            rec["value"] = _parse_float(rec["value"], path=path, line=line_no, column="value", allow_empty=False)
            rec["spread"] = _parse_float(rec["spread"], path=path, line=line_no, column="spread", allow_empty=True)
            key = tuple(rec[c] for c in ("table", "dataset", "method", "variant", "metric"))
            if key in seen:
                raise ReferenceError(f"{path}: line {line_no}: duplicate of line {seen[key]} for {key}")
            seen[key] = line_no
            records.append(rec)
    df = pd.DataFrame.from_records(records, columns=list(COLUMNS) + ["value_text"])
    for col in ("table", "dataset", "method", "variant", "metric", "value_text"):
        df[col] = df[col].astype(str)
    df["value"] = df["value"].astype(float)
    df["spread"] = df["spread"].astype(float)
    return df
