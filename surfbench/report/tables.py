"""LaTeX and Markdown tables: our numbers beside the paper's, in the paper's layout.

Input ("ours"): a long DataFrame aggregated over seeds, one row per
(table, dataset, method, variant, metric) with the columns

    table, dataset, method, variant, metric, mean, ci_low, ci_high, n_seeds,
    higher_is_better, available, reason, display_name, supervised, generative

Only ``table, dataset, method, metric, mean`` are required; the others get defaults
(``variant=""``, no interval, ``n_seeds=1``, ``available=True``, direction and metadata from the
layout).  The paper's numbers come from :func:`surfbench.report.reference.load_reference`.

Cell format (both outputs): ``ours (paper)`` in one column per metric -- our mean, ``± half-width
of the 95% interval`` when more than one seed, then the paper's published number in parentheses
(small in LaTeX).  ``n/a`` + footnote marker: the metric was not computed (the reason is the
footnote); ``--``: no result for this cell in this profile.  A value imported with ``surfbench import``
(``imported_from``, ``n_imported``) carries a footnote naming where it came from.  A marker after a row's name: a note on
how that method's estimates were scored (``scoring_note``, e.g. MixIT's slot reduction).  Bold /
underline: best / second best by *our* means (rounded as printed; ties share the mark), among the
unsupervised rows (Tables 1, 3, 4), all rows (Table 2) or each ablation group (Table 9).

Display names of the paper's rows are the paper's (per table); ``supervised`` / ``generative``
come from the results when present (layout fallback); a method that is not in the paper is
appended after the paper's rows, named by its ``display_name``.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from ..atomic import write_bytes, write_text
from .layouts import LAYOUTS, METRICS, Layout, Row, get_layout
from .reference import load_reference, printed_decimals

KEY = ["table", "dataset", "method", "variant", "metric"]
REQUIRED = ("table", "dataset", "method", "metric", "mean")
OPTIONAL_DEFAULTS = {
    "variant": "",
    "ci_low": math.nan,
    "ci_high": math.nan,
    "n_seeds": 1,
    "n_environments": 1,
    "n_missing": 0,
    "n_items": 0,
    "higher_is_better": None,
    "available": True,
    "reason": "",
    "display_name": None,
    "supervised": None,
    "generative": None,
    "scoring_note": "",
    "imported_from": "",
    "n_imported": 0,
}
DEFAULT_REASON = "not computed in this profile"

# ---------------------------------------------------------------------------------------------
# input normalisation


def _is_missing(v) -> bool:
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _to_bool(v) -> bool | None:
    if _is_missing(v):
        return None
    if isinstance(v, str):
        s = v.strip().lower()
        if s in ("true", "1", "yes", "y", "t"):
            return True
        if s in ("false", "0", "no", "n", "f", ""):
            return False
        raise ValueError(f"not a boolean: {v!r}")
    return bool(v)


def _to_float(v) -> float:
    if _is_missing(v):
        return math.nan
    return float(v)


def _to_text(v) -> str:
    return "" if _is_missing(v) else str(v)


def _table_key(v) -> str:
    s = _to_text(v).strip()
    try:  # 1, 1.0, "1" -> "1"
        f = float(s)
        if f.is_integer():
            return str(int(f))
    except ValueError:
        pass
    return s


def prepare_ours(ours: pd.DataFrame | None) -> pd.DataFrame:
    """Validate the long results frame and fill optional columns; one row per key."""
    cols = REQUIRED + tuple(OPTIONAL_DEFAULTS)
    if ours is None or len(ours) == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    missing = [c for c in REQUIRED if c not in ours.columns]
    if missing:
        raise ValueError(f"results frame lacks column(s) {missing}; has {list(ours.columns)}")
    records = []
    for i, rec in enumerate(ours.to_dict("records")):
        out = {}
        try:
            out["table"] = _table_key(rec["table"])
            for c in ("dataset", "method", "metric"):
                out[c] = _to_text(rec[c])
            out["variant"] = _to_text(rec.get("variant", ""))
            out["mean"] = _to_float(rec["mean"])
            out["ci_low"] = _to_float(rec.get("ci_low"))
            out["ci_high"] = _to_float(rec.get("ci_high"))
            n = rec.get("n_seeds", 1)
            out["n_seeds"] = 1 if _is_missing(n) else int(n)
            for c, default in (("n_environments", 1), ("n_missing", 0), ("n_items", 0), ("n_imported", 0)):
                v = rec.get(c, default)
                out[c] = default if _is_missing(v) else int(v)
            out["higher_is_better"] = _to_bool(rec.get("higher_is_better"))
            av = _to_bool(rec.get("available", True))
            out["available"] = True if av is None else av
            out["reason"] = _to_text(rec.get("reason", ""))
            out["scoring_note"] = _to_text(rec.get("scoring_note", ""))
            out["imported_from"] = _to_text(rec.get("imported_from", ""))
            dn = rec.get("display_name")
            out["display_name"] = None if _is_missing(dn) or str(dn) == "" else str(dn)
            out["supervised"] = _to_bool(rec.get("supervised"))
            out["generative"] = _to_bool(rec.get("generative"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"results frame row {i} ({rec}): {exc}") from exc
        records.append(out)
    df = pd.DataFrame.from_records(records, columns=list(cols))
    dup = df.duplicated(subset=KEY, keep=False)
    if dup.any():
        first = df[dup].iloc[0]
        raise ValueError(f"results frame has duplicate rows for key {tuple(first[c] for c in KEY)}")
    return df


# ---------------------------------------------------------------------------------------------
# table model shared by the LaTeX and Markdown renderers


@dataclass
class Cell:
    kind: str                       # "value" | "na" | "missing"
    mean: float = math.nan
    half: float | None = None       # half-width of the 95% interval (n_seeds > 1)
    decimals: int = 2
    higher_is_better: bool = True
    reason: str = ""
    marker: str = ""                # footnote letter: the reason of "na", or a note on a value
    mark: str = ""                  # "" | "best" | "second"
    paper: str | None = None        # the paper's number, plain text with "±"
    paper_latex: str | None = None
    n_seeds: int = 1

    def ours_plain(self) -> str:
        s = f"{self.mean:.{self.decimals}f}"
        if self.half is not None:
            s += f" ± {self.half:.{self.decimals}f}"
        return s

    def ours_latex(self) -> str:
        s = f"{self.mean:.{self.decimals}f}"
        if self.half is not None:
            s += rf" \pm {self.half:.{self.decimals}f}"
        return s


@dataclass
class RowModel:
    row: Row
    name: str                       # plain display name
    name_latex: str
    supervised: bool | None
    generative: bool | None
    extra: bool
    cells: list[Cell] = field(default_factory=list)
    marker: str = ""                # footnote letter(s) after the name: how its estimates were scored


@dataclass
class TableModel:
    layout: Layout
    profile: str
    rows: list[RowModel]
    columns: list[tuple[int, str]]  # (group index, metric key)
    footnotes: list[tuple[str, str]]  # (marker, text)
    notes: list[str]
    n_seeds: list[int]
    has_ours: bool


def _notes_list(notes) -> list[str]:
    if notes is None:
        return []
    if isinstance(notes, str):
        return [notes] if notes.strip() else []
    return [str(n) for n in notes if str(n).strip()]


def _marker(i: int) -> str:
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(ord("a") + r) + s
    return s


def _paper_text(ref_row) -> tuple[str, str]:
    text = ref_row.get("value_text") if hasattr(ref_row, "get") else None
    value = float(ref_row["value"])
    dec = printed_decimals(text) if text not in (None, "") and not _is_missing(text) else None
    if dec is None:
        dec = METRICS[ref_row["metric"]].decimals
    plain = latex = f"{value:.{dec}f}"
    spread = ref_row.get("spread") if hasattr(ref_row, "get") else None
    if spread is not None and not _is_missing(spread):
        plain += f" ± {float(spread):.{dec}f}"
        latex += rf"$\pm${float(spread):.{dec}f}"
    return plain, latex


def build_model(table_id, ours, reference: pd.DataFrame | None, profile: str, notes=None) -> TableModel:
    layout = get_layout(table_id)
    tid = layout.table_id
    o = prepare_ours(ours)
    o = o[o["table"] == tid]
    if reference is None:
        reference = load_reference()
    ref = reference[reference["table"].astype(str) == tid]

    ours_idx = {tuple(r[c] for c in KEY): r for r in o.to_dict("records")}
    ref_idx = {}
    for r in ref.to_dict("records"):
        r["variant"] = _to_text(r.get("variant", ""))
        ref_idx[tuple(str(r[c]) for c in KEY)] = r

    # metadata per method from the results (first non-null wins; prefer this table's rows)
    meta: dict[str, dict] = {}
    for r in o.to_dict("records"):
        m = meta.setdefault(r["method"], {"display_name": None, "supervised": None, "generative": None})
        for k in m:
            if m[k] is None and r[k] is not None:
                m[k] = r[k]

    # rows: the paper's, then extras
    rows: list[Row] = list(layout.rows)
    if layout.extra_rows:
        if layout.per_group_method:
            known = {r.variant for r in layout.rows}
            gm = {g.method for g in layout.groups}
            for v in dict.fromkeys(o[o["method"].isin(gm)]["variant"]):
                if v not in known:
                    rows.append(Row(None, v or "main", v, "Other"))
        else:
            known = set(layout.paper_methods)
            for m in dict.fromkeys(o["method"]):
                if m not in known:
                    rows.append(Row(m, (meta.get(m, {}).get("display_name") or m)))
    n_paper = len(layout.rows)

    row_models = []
    for i, r in enumerate(rows):
        mm = meta.get(r.method, {}) if r.method else {}
        sup = mm.get("supervised")
        gen = mm.get("generative")
        row_models.append(RowModel(
            row=r, name=r.name, name_latex=r.name_latex or latex_escape(r.name),
            supervised=r.supervised if sup is None else sup,
            generative=r.generative if gen is None else gen,
            extra=i >= n_paper,
        ))

    columns = [(gi, m) for gi, g in enumerate(layout.groups) for m in g.metrics]
    reasons: dict[str, str] = {}
    seeds: set[int] = set()
    for rm in row_models:
        for gi, mk in columns:
            g = layout.groups[gi]
            metric = METRICS[mk]
            method = g.method or rm.row.method
            key = (tid, g.dataset, method, rm.row.variant, mk)
            rec = ours_idx.get(key)
            pref = ref_idx.get(key)
            cell = Cell(kind="missing", decimals=metric.decimals, higher_is_better=metric.higher_is_better)
            if pref is not None:
                cell.paper, cell.paper_latex = _paper_text(pref)
            if rec is not None:
                if rec["higher_is_better"] is not None:
                    cell.higher_is_better = rec["higher_is_better"]
                if rec["available"] and math.isfinite(rec["mean"]):
                    cell.kind = "value"
                    cell.mean = rec["mean"]
                    cell.n_seeds = rec["n_seeds"]
                    seeds.add(rec["n_seeds"])
                    lo, hi = rec["ci_low"], rec["ci_high"]
                    if rec["n_seeds"] > 1 and math.isfinite(lo) and math.isfinite(hi):
                        cell.half = (hi - lo) / 2.0
                    cell_notes = []
                    if rec["n_missing"] > 0:
                        planned = rec["n_items"] + rec["n_missing"]
                        why = rec["reason"].strip() or "the others could not be scored (NaN in items.csv)"
                        cell_notes.append(f"computed on {rec['n_items']} of {planned} items: {why}")
                    if rec["n_environments"] > 1:
                        cell_notes.append(f"the seeds of this value were computed in {rec['n_environments']} different "
                                          f"environments (library versions, thread counts, device, or the processor "
                                          f"under cpu_kernels: native; each run's metrics.json records its own)")
                    if rec["imported_from"].strip():
                        cell_notes.append(imported_note(rec["imported_from"], rec["n_imported"], rec["n_seeds"]))
                    cell.marker = ",".join(reasons.setdefault(n, _marker(len(reasons))) for n in cell_notes)
                else:
                    cell.kind = "na"
                    reason = rec["reason"].strip() or (
                        DEFAULT_REASON if not rec["available"] else "value missing (NaN) in the results")
                    cell.reason, cell.marker = reason, reasons.setdefault(f"n/a: {reason}", _marker(len(reasons)))
            rm.cells.append(cell)
    # a note on how a method's estimates were scored (MixIT's M slots -> K) marks its row, after the cells' notes
    for rm in row_models:
        scoring: dict[str, None] = {}  # ordered set: the row's notes, once each
        for gi, mk in columns:
            g = layout.groups[gi]
            rec = ours_idx.get((tid, g.dataset, g.method or rm.row.method, rm.row.variant, mk))
            if rec is not None and rec["scoring_note"].strip():
                scoring[rec["scoring_note"]] = None
        rm.marker = ",".join(reasons.setdefault(n, _marker(len(reasons))) for n in scoring)

    _rank(layout, row_models, len(columns))
    return TableModel(
        layout=layout, profile=profile, rows=row_models, columns=columns,
        footnotes=[(mk, text) for text, mk in reasons.items()], notes=_notes_list(notes),
        n_seeds=sorted(seeds), has_ours=len(o) > 0,
    )


def imported_note(source: str, n_imported: int, n_seeds: int) -> str:
    """The footnote of a value that `surfbench import` brought in (surfbench/bundle.py)."""
    who = "imported" if n_imported >= n_seeds or n_imported == 0 else f"{n_imported} of its {n_seeds} seeds imported"
    return (f"{who} from {source}: not computed here; checked on import against this benchmark's evaluation set "
            f"(dataset hash) and against its per-item values (items.csv)")


#: rows that are references, not methods: never ranked among the unsupervised methods
#: (the unseparated mixture; Table 2 ranks all rows, as the paper does)
REFERENCE_METHODS = frozenset({"average"})


def _rank(layout: Layout, rows: list[RowModel], ncols: int) -> None:
    if layout.rank_scope == "group":
        scopes: dict[str, list[RowModel]] = {}
        for r in rows:
            scopes.setdefault(r.row.group, []).append(r)
        pools = list(scopes.values())
    elif layout.rank_scope == "unsupervised":
        pools = [[r for r in rows if r.supervised is not True and r.row.method not in REFERENCE_METHODS]]
    else:
        pools = [rows]
    for pool in pools:
        for j in range(ncols):
            cells = [r.cells[j] for r in pool if r.cells[j].kind == "value"]
            if not cells:
                continue
            # rounding as printed: numbers that print the same share the mark
            hib = cells[0].higher_is_better
            vals = sorted({round(c.mean, c.decimals) for c in cells}, reverse=hib)
            for c in cells:
                v = round(c.mean, c.decimals)
                if v == vals[0]:
                    c.mark = "best"
                elif len(vals) > 1 and v == vals[1]:
                    c.mark = "second"


# ---------------------------------------------------------------------------------------------
# LaTeX

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
    "×": r"$\times$", "±": r"$\pm$", "α": r"$\alpha$", "β": r"$\beta$", "σ": r"$\sigma$",
    "↑": r"$\uparrow$", "↓": r"$\downarrow$", "–": "--", "—": "---", "≈": r"$\approx$",
    "≤": r"$\leq$", "≥": r"$\geq$", "µ": r"$\mu$", "μ": r"$\mu$", "→": r"$\rightarrow$",
    "✓": r"$\surd$", "…": r"\ldots{}",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters (and map a few Unicode symbols) in plain text."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _cell_latex(c: Cell) -> str:
    if c.kind == "value":
        body = c.ours_latex()
        if c.mark == "best":
            s = rf"$\mathbf{{{body}}}$"
        elif c.mark == "second":
            s = rf"$\underline{{{body}}}$"
        else:
            s = f"${body}$"
        if c.marker:
            s += rf"\textsuperscript{{{c.marker}}}"
    elif c.kind == "na":
        s = rf"n/a\textsuperscript{{{c.marker}}}"
    else:
        s = "--"
    if c.paper_latex is not None:
        # ours on top, the paper's number below it (small), in a nested one-column tabular
        s = rf"\begin{{tabular}}[t]{{@{{}}c@{{}}}}{s}\\[-1pt]{{\scriptsize({c.paper_latex})}}\end{{tabular}}"
    return s


def _name_latex(rm: RowModel) -> str:
    return rm.name_latex + (rf"\textsuperscript{{{rm.marker}}}" if rm.marker else "")


def _prop_latex(v: bool | None) -> str:
    return "?" if v is None else (r"$\surd$" if v else r"$\times$")


def _seeds_text(seeds: list[int]) -> str:
    if not seeds or max(seeds) <= 1:
        return "one seed, no interval"
    lo, hi = min(seeds), max(seeds)
    n = str(hi) if lo == hi else f"{lo}–{hi}"
    return f"mean ± half-width of the 95% interval over {n} seeds"


def _scope_text(layout: Layout) -> str:
    return {
        "unsupervised": "best / second-best unsupervised method",
        "all": "best / second-best method",
        "group": "best / second-best variant within each ablation",
    }[layout.rank_scope]


def _caption_plain(model: TableModel) -> str:
    lay = model.layout
    return (f"{lay.caption} Each cell: ours ({_seeds_text(model.n_seeds)}), the paper's number below "
            f"it in parentheses. Bold / underlined: {_scope_text(lay)} by our numbers. "
            f"n/a: metric not computed (see note); --: no result in this profile.")


def _lines_plain(model: TableModel) -> list[str]:
    lines = list(model.notes) or [f"Profile {model.profile}."]
    if not model.has_ours:
        lines.append(f"Table {model.layout.table_id} is not run yet in profile {model.profile}: "
                     f"only the paper's numbers are shown.")
    if any(rm.extra for rm in model.rows):
        lines.append("Rows after the paper's are methods not in the paper (no published number).")
    return lines


def render_latex(table_id, ours: pd.DataFrame | None, reference: pd.DataFrame | None,
                 profile: str, notes: str | Sequence[str] | None = None) -> str:
    """One paper table as a booktabs ``table`` float (packages: booktabs, xcolor, graphicx)."""
    model = build_model(table_id, ours, reference, profile, notes)
    lay = model.layout
    per_group = lay.per_group_method
    lead_cols = 2 if per_group else (3 if lay.property_columns else 1)
    spec = "l" * (2 if per_group else 1) + ("cc" if lay.property_columns and not per_group else "")
    spec += "".join(" " + "c" * len(g.metrics) for g in lay.groups)

    out = [
        f"% Table {lay.table_id}, profile {model.profile}: generated by surfbench.report.tables -- do not edit.",
        r"\begin{table}[htbp]",
        r"\centering",
        rf"\caption{{Ours beside the paper's Table {lay.table_id} "
        rf"(profile \texttt{{{latex_escape(model.profile)}}}). "
        + latex_escape(_caption_plain(model)) + "}",
        rf"\label{{tab:surfbench-{latex_escape(model.profile)}-table{lay.table_id}}}",
        # shrink to the line width when wider, never enlarge
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
    ]
    # group header
    head, rules = [""] * (lead_cols - (2 if lay.property_columns and not per_group else 0)), []
    col = lead_cols + 1
    if lay.property_columns and not per_group:
        head.append(r"\multicolumn{2}{c}{Properties}")
        rules.append(r"\cmidrule(lr){2-3}")
    for g in lay.groups:
        n = len(g.metrics)
        head.append(rf"\multicolumn{{{n}}}{{c}}{{{g.title_latex or latex_escape(g.title)}}}")
        rules.append(rf"\cmidrule(lr){{{col}-{col + n - 1}}}")
        col += n
    out.append(" & ".join(head) + r" \\")
    out.append("".join(rules))
    sub = ["Ablation", "Variant"] if per_group else [latex_escape(lay.row_header)]
    if lay.property_columns and not per_group:
        sub += ["Unsupervised", "Generative"]
    for gi, mk in model.columns:
        m = METRICS[mk]
        sub.append(f"{latex_escape(m.label)} {m.arrow_latex}")
    out.append(" & ".join(sub) + r" \\")
    out.append(r"\midrule")

    prev_group = None
    for i, rm in enumerate(model.rows):
        if per_group:
            if prev_group is not None and rm.row.group != prev_group:
                out.append(r"\midrule")
            g_label = "" if rm.row.group == prev_group else (
                rm.row.group_latex or latex_escape(rm.row.group))
            prev_group = rm.row.group
            cells = [g_label, _name_latex(rm)]
        else:
            if rm.extra and (i == 0 or not model.rows[i - 1].extra):
                out.append(r"\midrule")
            cells = [_name_latex(rm)]
            if lay.property_columns:
                unsup = None if rm.supervised is None else not rm.supervised
                cells += [_prop_latex(unsup), _prop_latex(rm.generative)]
        cells += [_cell_latex(c) for c in rm.cells]
        out.append(" & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}}", r"\par\smallskip", r"{\footnotesize\raggedright"]
    for line in _lines_plain(model):
        out.append(latex_escape(line) + r"\par")
    for marker, text in model.footnotes:
        out.append(rf"\textsuperscript{{{marker}}}\,{latex_escape(text)}\par")
    out += ["}", r"\end{table}", ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Markdown


def _md_escape(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


def _cell_md(c: Cell) -> str:
    if c.kind == "value":
        body = c.ours_plain()
        s = f"**{body}**" if c.mark == "best" else (f"<u>{body}</u>" if c.mark == "second" else body)
        if c.marker:
            s += f"<sup>{c.marker}</sup>"
    elif c.kind == "na":
        s = f"n/a<sup>{c.marker}</sup>"
    else:
        s = "--"
    if c.paper is not None:
        s += f" ({c.paper})"
    return s


def _name_md(rm: RowModel) -> str:
    return _md_escape(rm.name) + (f"<sup>{rm.marker}</sup>" if rm.marker else "")


def render_markdown(table_id, ours: pd.DataFrame | None, reference: pd.DataFrame | None,
                    profile: str, notes: str | Sequence[str] | None = None) -> str:
    """One paper table as a Markdown section (heading, caption, table, notes)."""
    model = build_model(table_id, ours, reference, profile, notes)
    lay = model.layout
    per_group = lay.per_group_method
    header = ["Ablation", "Variant"] if per_group else [lay.row_header]
    if lay.property_columns and not per_group:
        header += ["Unsupervised", "Generative"]
    multi = len(lay.groups) > 1
    for gi, mk in model.columns:
        m = METRICS[mk]
        label = f"{m.label} {m.arrow}"
        header.append(f"{lay.groups[gi].short or lay.groups[gi].title} {label}" if multi else label)
    align = ["---"] * (len(header) - len(model.columns)) + ["---:"] * len(model.columns)
    out = [f"## Table {lay.table_id}", "", _md_escape(_caption_plain(model)), "",
           "| " + " | ".join(_md_escape(h) for h in header) + " |",
           "| " + " | ".join(align) + " |"]
    prev_group = None
    for rm in model.rows:
        if per_group:
            cells = ["" if rm.row.group == prev_group else _md_escape(rm.row.group), _name_md(rm)]
            prev_group = rm.row.group
        else:
            cells = [_name_md(rm)]
            if lay.property_columns:
                def p(v):
                    return "?" if v is None else ("✓" if v else "×")
                cells += [p(None if rm.supervised is None else not rm.supervised), p(rm.generative)]
        cells += [_cell_md(c) for c in rm.cells]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    for line in _lines_plain(model):
        out.append(_md_escape(line) + "  ")
    for marker, text in model.footnotes:
        out.append(f"<sup>{marker}</sup> {_md_escape(text)}  ")
    out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# report directory


def standalone_document(table_files: Iterable[str], profile: str) -> str:
    lines = [
        r"\documentclass[10pt]{article}",
        r"\usepackage[T1]{fontenc}",
        r"\usepackage{booktabs}",
        r"\usepackage{xcolor}",
        r"\usepackage{graphicx}",
        # A4 landscape without the geometry package (the wide tables read better)
        r"\setlength{\paperwidth}{297mm}\setlength{\paperheight}{210mm}",
        r"\ifdefined\pdfpagewidth\pdfpagewidth=\paperwidth\pdfpageheight=\paperheight\fi",
        r"\setlength{\textwidth}{257mm}\setlength{\oddsidemargin}{-5.4mm}\setlength{\evensidemargin}{-5.4mm}",
        r"\setlength{\textheight}{175mm}\setlength{\topmargin}{-20mm}",
        r"\begin{document}",
        rf"\section*{{surfbench: our numbers beside the paper's (profile \texttt{{{latex_escape(profile)}}})}}",
    ]
    for f in table_files:  # float numbers follow the paper's table numbers
        tid = "".join(ch for ch in Path(f).stem if ch.isdigit())
        if tid:
            lines.append(rf"\setcounter{{table}}{{{int(tid) - 1}}}")
        lines.append(rf"\input{{{Path(f).stem}}}")
    lines += [r"\end{document}", ""]
    return "\n".join(lines)


def compile_pdf(tex_dir: Path, main: str = "tables.tex", timeout: float = 180.0) -> Path | None:
    """Compile ``tex_dir/main`` with pdflatex in a temporary directory; copy the PDF back.

    Returns the PDF path, or ``None`` (after printing one line) when pdflatex is not on PATH.
    Raises ``RuntimeError`` with the tail of the log on a LaTeX error.
    """
    exe = shutil.which("pdflatex")
    if exe is None:
        print(f"pdflatex not found on PATH: skipping {Path(tex_dir) / Path(main).with_suffix('.pdf').name}")
        return None
    tex_dir = Path(tex_dir)
    with tempfile.TemporaryDirectory(prefix="surfbench-latex-") as tmp:
        for f in tex_dir.glob("*.tex"):
            shutil.copy2(f, tmp)
        cmd = [exe, "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", main]
        try:
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout,
                                  errors="replace")
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"pdflatex timed out after {timeout}s on {tex_dir / main}") from exc
        pdf = Path(tmp) / Path(main).with_suffix(".pdf").name
        if proc.returncode != 0 or not pdf.is_file():
            log = Path(tmp) / Path(main).with_suffix(".log").name
            text = log.read_text(errors="replace") if log.is_file() else proc.stdout
            tail = "\n".join(text.splitlines()[-40:])
            raise RuntimeError(f"pdflatex failed on {tex_dir / main} (exit {proc.returncode}); log tail:\n{tail}")
        dest = tex_dir / pdf.name
        write_bytes(dest, pdf.read_bytes(), fsync=True)
        return dest


def write_report(ours_df: pd.DataFrame | None, out_dir: str | Path, profile: str,
                 notes: str | Sequence[str] | None = None,
                 reference: pd.DataFrame | None = None, compile: bool = True) -> list[Path]:
    """Write ``out_dir/<profile>/`` : ``table<N>.tex`` for each table with results (Table 3
    always: the paper's numbers and a "not run yet" line when we have none), ``leaderboard.md``,
    ``tables.tex`` (standalone document \\input-ing the tables) and, where pdflatex is on PATH,
    ``tables.pdf``.  Stale ``table<N>.tex`` of tables without results are removed.  Returns
    the written paths."""
    if reference is None:
        reference = load_reference()
    ours = prepare_ours(ours_df)
    present = set(ours["table"])
    unknown = sorted(present - set(LAYOUTS))
    if unknown:
        print(f"surfbench report: no layout for table(s) {unknown}; their rows are ignored")
    target = Path(out_dir) / profile
    target.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    tex_files: list[str] = []
    md_parts = [f"# surfbench leaderboard: profile {profile}", ""]
    md_parts += [_md_escape(n) + "  " for n in _notes_list(notes)]
    md_parts += ["", "Each cell: ours, with the paper's published number in parentheses.", ""]
    for tid in LAYOUTS:
        path = target / f"table{tid}.tex"
        if tid not in present and tid != "3":
            if path.exists():
                path.unlink()
            continue
        write_text(path, render_latex(tid, ours, reference, profile, notes), fsync=True)
        written.append(path)
        tex_files.append(path.name)
        md_parts.append(render_markdown(tid, ours, reference, profile, notes))
    md = target / "leaderboard.md"
    write_text(md, "\n".join(md_parts), fsync=True)
    written.append(md)
    main = target / "tables.tex"
    write_text(main, standalone_document(tex_files, profile), fsync=True)
    written.append(main)
    if compile:
        pdf = compile_pdf(target, main.name)
        if pdf is not None:
            written.append(pdf)
    return written
