"""The leaderboard site: ``report/<profile>/site/``, static, self-contained, opens from disk.

    surfbench site --config config/ci.yaml         (Snakemake: ``snakemake site``; part of ``all``)

Pages (plain HTML, one small inline CSS and one small inline script; no server, no network, no CDN):

* ``index.html`` -- every table of the paper in its layout.  The cells come from the same table model
  as the LaTeX / Markdown tables (:func:`surfbench.report.tables.build_model`: layouts, best /
  second-best marks, "n/a" reasons and footnotes), so the site never re-derives a layout.  Each cell:
  our value (bold / underlined: best / second best, as in the tables) with the paper's number in
  parentheses, and below it the 95% interval and the number of seeds; a click on a metric's header
  sorts the rows by it (best first, a second click reverses; a click on the row header restores the
  paper's order; Table 9 sorts within each ablation group).  A value links to its run's page.
* ``runs/<dataset>--<method[@variant]>--seed<k>.html`` -- one page per run: the method's metadata and
  citation (from the registry), commit, config / dataset / model hashes, runtime, number of items,
  every metric's summary, the per-item distribution of each metric (``items.csv``, a matplotlib
  image) and the resolved ``config.yaml``.
* ``figures.html`` -- the figure grids of ``report/<profile>/figures/`` (copied in).
* ``listen.html`` -- for the audio tables, a few fixed evaluation mixtures: the mixture, the
  references and every method's estimates as ``<audio>`` players (16-bit WAV files in ``audio/``)
  with a spectrogram each.  The audio is the evaluation's own ``examples.npz`` (the first
  ``evaluation.n_figure_examples`` evaluation mixtures, the estimates the evaluation scored, cut to
  the shortest of those mixtures): nothing is separated again when the site is built.
* ``leaderboard.json`` -- one row per (table, dataset, method, variant, metric) with our value, its
  interval, n, seeds, the paper's number and the provenance of every seed's run.

The site is built in a temporary folder beside ``site/`` and swapped in at the end, so a failed
build never leaves half a site.
"""
from __future__ import annotations

import html
import itertools
import json
import math
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ..config import method_dir
from ..plan import main_variant_labels
from ..results import load_metrics
from .build import profile_notes, table_rows
from .figures import PAPER_ORDER
from .layouts import LAYOUTS, METRICS
from .reference import load_reference
from .tables import KEY, TableModel, _lines_plain, _scope_text, build_model, prepare_ours

LEADERBOARD_FORMAT = 1
N_LISTEN = 3          # evaluation mixtures on the listening page (at most; fewer when fewer were saved)
PROTOCOL_OF_TABLE = {"2": "table2", "3": "table3", "4": "table4"}  # every other table: table1

# ----------------------------------------------------------------------------- page furniture
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{background:#20303f;color:#fff;padding:10px 24px}
header h1{font-size:18px;margin:0 0 4px 0}
nav a{color:#cfe3ff;margin-right:16px;text-decoration:none}
nav a:hover{text-decoration:underline}
main{padding:8px 24px 40px 24px;max-width:1500px}
h2{margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:3px}
.notes{color:#444;font-size:13px}
.notes li{margin:2px 0}
.tablewrap{overflow-x:auto}
table.lb{border-collapse:collapse;background:#fff;margin:6px 0;font-variant-numeric:tabular-nums}
table.lb th,table.lb td{border:1px solid #e1e1e1;padding:3px 7px;vertical-align:top}
table.lb thead th{background:#f0f3f6;text-align:center}
table.lb th.sortable{cursor:pointer;user-select:none;white-space:nowrap}
table.lb th.sortable:hover{background:#dfe8f2}
table.lb th[aria-sort=descending]::after{content:" \\25BC";font-size:10px}
table.lb th[aria-sort=ascending]::after{content:" \\25B2";font-size:10px}
table.lb td.num{text-align:right;white-space:nowrap}
table.lb td.name{white-space:nowrap}
table.lb tr.grouprow th{text-align:left;background:#f7f7f7;font-style:italic}
table.lb tbody.extra tr:first-child td{border-top:2px solid #999}
table.lb td.num a{color:#0b3d91;text-decoration:none}
table.lb td.num a:hover{background:#e8f0fb}
.best{font-weight:700}
.second{text-decoration:underline}
.paper{color:#777}
.sub{display:block;font-size:11px;color:#888}
.na{color:#a33}
.missing{color:#bbb}
.caption{font-size:13px;color:#333;max-width:1100px}
.fn{font-size:12px;color:#444;margin:2px 0}
code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre{background:#fff;border:1px solid #ddd;padding:8px;overflow:auto;max-height:520px}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:8px 0}
dl.meta dt{font-weight:600;color:#333}
dl.meta dd{margin:0;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
.figure img{max-width:100%;border:1px solid #ddd;background:#fff}
table.listen{border-collapse:collapse;background:#fff}
table.listen td,table.listen th{border:1px solid #e1e1e1;padding:4px;vertical-align:top;text-align:left}
table.listen img{display:block;width:240px;height:96px;image-rendering:auto}
table.listen audio{width:240px;height:32px}
""".strip()

#: sort the rows of a table's body groups by a column; numbers in data-v, empty = no value (always last)
SORT_JS = r"""
document.querySelectorAll('table.lb').forEach(function (t) {
  t.querySelectorAll('th.sortable').forEach(function (th) {
    th.addEventListener('click', function () {
      var col = parseInt(th.dataset.col, 10), hib = th.dataset.hib === '1', paper = th.dataset.col === 'order';
      var dir = th.getAttribute('aria-sort') === (hib ? 'descending' : 'ascending') ? (hib ? 'ascending' : 'descending')
                                                                                     : (hib ? 'descending' : 'ascending');
      if (paper) { dir = 'ascending'; }
      t.querySelectorAll('th.sortable').forEach(function (o) { o.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', dir);
      t.querySelectorAll('tbody').forEach(function (tb) {
        var rows = Array.prototype.slice.call(tb.querySelectorAll('tr.data'));
        rows.sort(function (a, b) {
          if (paper) { return a.dataset.order - b.dataset.order; }
          var x = a.children[col].dataset.v, y = b.children[col].dataset.v;
          var ex = x === undefined || x === '', ey = y === undefined || y === '';
          if (ex || ey) { return ex === ey ? a.dataset.order - b.dataset.order : (ex ? 1 : -1); }
          var d = parseFloat(x) - parseFloat(y);
          if (d === 0) { return a.dataset.order - b.dataset.order; }
          return dir === 'ascending' ? d : -d;
        });
        rows.forEach(function (r) { tb.appendChild(r); });
      });
    });
  });
});
""".strip()

PAGES = (("index.html", "Tables"), ("figures.html", "Figures"), ("listen.html", "Listen"), ("runs.html", "Runs"),
         ("leaderboard.json", "leaderboard.json"))


def esc(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _page(title: str, body: str, profile: str, depth: int = 0, script: bool = False) -> str:
    up = "../" * depth
    nav = "".join(f'<a href="{up}{href}">{esc(label)}</a>' for href, label in PAGES)
    js = f"<script>\n{SORT_JS}\n</script>\n" if script else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<link rel=\"icon\" href=\"data:,\">\n"
        f"<title>{esc(title)}</title>\n<style>\n{CSS}\n</style>\n</head>\n<body>\n"
        f"<header><h1>surfbench leaderboard &middot; profile <code>{esc(profile)}</code></h1><nav>{nav}</nav></header>\n"
        f"<main>\n{body}\n</main>\n{js}</body>\n</html>\n")


def _fmt(v, decimals: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{decimals}f}"
    return str(v)


def _jsonable(v):
    if v is None:
        return None
    if isinstance(v, (np.floating, float)):
        return float(v) if math.isfinite(float(v)) else None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    return v


# ----------------------------------------------------------------------------- the runs
@dataclass
class Run:
    """One ``metrics.json`` of the results store (a run's table1/table4 or table2 evaluation)."""
    path: Path
    blob: dict
    seed_dir: Path

    @property
    def dataset(self) -> str:
        return self.blob["dataset"]

    @property
    def method(self) -> str:
        return self.blob["method"]

    @property
    def variant(self) -> str:
        return self.blob.get("variant", "") or ""

    @property
    def seed(self) -> int:
        return int(self.blob["seed"])

    @property
    def protocol(self) -> str:
        return self.blob["protocol"]

    @property
    def method_dir(self) -> str:
        return method_dir(self.method, self.variant)

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.=@-]", "_", f"{self.dataset}--{self.method_dir}--seed{self.seed}")

    @property
    def page(self) -> str:
        return f"runs/{self.slug}.html"

    @property
    def imported_from(self) -> str:
        """``""`` for a run computed here, else where ``surfbench import`` brought it from."""
        from ..results import imported_info, imported_label

        return imported_label(imported_info(self.path))

    def config(self) -> dict:
        p = self.seed_dir / "config.yaml"
        return yaml.safe_load(p.read_text()) if p.is_file() else {}


def find_runs(results_root: Path, profile: str) -> list[Run]:
    runs = []
    for p in sorted((Path(results_root) / profile).glob("**/metrics.json")):
        blob = load_metrics(p)
        seed_dir = p.parent.parent if p.parent.name == "table2" else p.parent
        runs.append(Run(p, blob, seed_dir))
    return runs


def _method_order(name: str) -> tuple:
    return (PAPER_ORDER.index(name) if name in PAPER_ORDER else len(PAPER_ORDER), name)


class RunIndex:
    def __init__(self, runs: list[Run]):
        self.runs = runs
        self._cfg: dict[Path, dict] = {}

    def _training(self, run: Run) -> dict:
        if run.seed_dir not in self._cfg:
            self._cfg[run.seed_dir] = run.config()
        return self._cfg[run.seed_dir].get("training") or {}

    def for_key(self, table: str, dataset: str, method: str, variant: str) -> list[Run]:
        """The runs (one per seed) behind one table row: Table 9's main-run rows are the main run's
        own α / B / β labels (:func:`surfbench.plan.main_variant_labels`), as in the report."""
        protocol = PROTOCOL_OF_TABLE.get(table, "table1")
        # Table 3's column groups (fuss, librispeech_fuss) are evaluation sets of one table3 evaluation of a run
        # trained on audioset (or fuss): the run's dataset is not the column's
        same = [r for r in self.runs if r.protocol == protocol and (table == "3" or r.dataset == dataset)
                and r.method == method]
        hit = [r for r in same if r.variant == variant]
        if not hit and table == "9" and variant:
            hit = []
            for r in same:
                if r.variant:
                    continue
                try:
                    labels = main_variant_labels(self._training(r))
                except (KeyError, TypeError):
                    labels = []
                if variant in labels:
                    hit.append(r)
        return sorted(hit, key=lambda r: r.seed)


def _provenance(run: Run, results_root: Path) -> dict:
    b = run.blob
    try:
        rel = str(run.path.relative_to(results_root))
    except ValueError:
        rel = str(run.path)
    return {"seed": run.seed, "metrics_json": rel, "page": run.page, "git_commit": b.get("git_commit"),
            "surfbench_version": b.get("surfbench_version"), "config_hash": b.get("config_hash"),
            "dataset_hash": b.get("dataset_hash"), "model_hash": b.get("model_hash"),
            "runtime_s": b.get("runtime_s"), "n_items": b.get("n_items"), "imported_from": run.imported_from}


# ----------------------------------------------------------------------------- tables -> HTML
def _tick(v) -> str:
    return "?" if v is None else ("✓" if v else "×")


def _ours_index(ours: pd.DataFrame | None) -> dict:
    o = prepare_ours(ours)
    return {tuple(r[c] for c in KEY): r for r in o.to_dict("records")}


def render_table_html(model: TableModel, ours_idx: dict, index: RunIndex) -> str:
    lay = model.layout
    tid = lay.table_id
    per_group = lay.per_group_method
    props = lay.property_columns and not per_group
    lead = ["Variant"] if per_group else [lay.row_header]  # Table 9: each ablation is a group row above its variants
    n_lead = len(lead) + (2 if props else 0)
    # header row 1: lead headers (rowspan 2), group titles; row 2: metric headers
    h1 = []
    for i, label in enumerate(lead):
        sortable = i == len(lead) - 1
        attrs = ' class="sortable" data-col="order" title="the paper\'s row order"' if sortable else ""
        h1.append(f'<th rowspan="2"{attrs}>{esc(label)}</th>')
    if props:
        h1.append('<th colspan="2">Properties</th>')
    for g in lay.groups:
        h1.append(f'<th colspan="{len(g.metrics)}">{esc(g.title)}</th>')
    h2 = ['<th>Unsupervised</th>', '<th>Generative</th>'] if props else []
    for j, (gi, mk) in enumerate(model.columns):
        m = METRICS[mk]
        hib = model.rows[0].cells[j].higher_is_better if model.rows else m.higher_is_better
        h2.append(f'<th class="sortable" data-col="{n_lead + j}" data-hib="{1 if hib else 0}" '
                  f'title="sort by {esc(m.label)} (best first; click again to reverse)">{esc(m.label)} {m.arrow}</th>')
    out = [f'<div class="tablewrap"><table class="lb" id="table{tid}" data-table="{tid}">',
           "<thead><tr>" + "".join(h1) + "</tr><tr>" + "".join(h2) + "</tr></thead>"]

    def body_rows(rows, order0):
        lines = []
        for k, rm in enumerate(rows):
            tds = []
            name = esc(rm.name) + (f"<sup>{esc(rm.marker)}</sup>" if rm.marker else "")
            tds.append(f'<td class="name">{name}</td>')
            if props:
                tds.append(f'<td>{_tick(None if rm.supervised is None else not rm.supervised)}</td>')
                tds.append(f"<td>{_tick(rm.generative)}</td>")
            for (gi, mk), cell in zip(model.columns, rm.cells):
                g = lay.groups[gi]
                method = g.method or rm.row.method
                key = (tid, g.dataset, method, rm.row.variant, mk)
                rec = ours_idx.get(key)
                paper = f' <span class="paper">({esc(cell.paper)})</span>' if cell.paper is not None else ""
                if cell.kind == "value":
                    runs = index.for_key(tid, g.dataset, method, rm.row.variant)
                    body = esc(cell.ours_plain())
                    if runs:
                        body = f'<a href="{esc(runs[0].page)}">{body}</a>'
                    cls = {"best": "best", "second": "second"}.get(cell.mark, "")
                    text = f'<span class="{cls}">{body}</span>' if cls else body
                    if cell.marker:
                        text += f"<sup>{esc(cell.marker)}</sup>"
                    lo, hi = (rec["ci_low"], rec["ci_high"]) if rec else (math.nan, math.nan)
                    seeds = ", ".join(str(r.seed) for r in runs)
                    nseed = f" · {cell.n_seeds} seeds" if cell.n_seeds > 1 else ""
                    if math.isfinite(lo) and math.isfinite(hi):
                        kind = "t-interval over seeds" if cell.n_seeds > 1 else "bootstrap over items"
                        sub = f"[{lo:.{cell.decimals}f}, {hi:.{cell.decimals}f}]{nseed}"
                        tip = f"95% interval ({kind}) {lo:.4g} to {hi:.4g}"
                    else:
                        sub = f"set-level{nseed}"
                        tip = "a set-level metric: no per-item interval"
                    tip += f"; seeds {seeds or '?'}; n={rec['n_items'] if rec else '?'} items"
                    tds.append(f'<td class="num" data-v="{cell.mean!r}" title="{esc(tip)}">{text}{paper}'
                               f'<span class="sub">{esc(sub)}</span></td>')
                elif cell.kind == "na":
                    tds.append(f'<td class="num" data-v="" title="n/a: {esc(cell.reason)}"><span class="na">n/a'
                               f'<sup>{esc(cell.marker)}</sup></span>{paper}</td>')
                else:
                    tds.append(f'<td class="num" data-v="" title="no result in this profile">'
                               f'<span class="missing">--</span>{paper}</td>')
            lines.append(f'<tr class="data" data-order="{order0 + k}">' + "".join(tds) + "</tr>")
        return lines

    ncols = n_lead + len(model.columns)
    if per_group:
        groups: dict[str, list] = {}
        for rm in model.rows:
            groups.setdefault(rm.row.group, []).append(rm)
        order = 0
        for gname, rows in groups.items():
            out.append(f'<tbody data-group="{esc(gname)}"><tr class="grouprow"><th colspan="{ncols}">{esc(gname)}</th></tr>')
            out += body_rows(rows, order)
            out.append("</tbody>")
            order += len(rows)
    else:
        paper_rows = [rm for rm in model.rows if not rm.extra]
        extra = [rm for rm in model.rows if rm.extra]
        out.append("<tbody>")
        out += body_rows(paper_rows, 0)
        out.append("</tbody>")
        if extra:
            out.append('<tbody class="extra">')
            out += body_rows(extra, len(paper_rows))
            out.append("</tbody>")
    out.append("</table></div>")
    ns = model.n_seeds
    seeds = f" ({'mean over ' if max(ns) > 1 else ''}{ns[0] if len(ns) == 1 else f'{ns[0]}–{ns[-1]}'} " \
            f"seed{'s' if max(ns) > 1 else ''})" if ns else ""
    out.append(f'<p class="caption">{esc(lay.caption)} Each cell: ours{esc(seeds)}, the paper\'s number beside it '
               f"in parentheses, and below ours its 95% interval (one seed: the bootstrap interval over the evaluation "
               f"items; several: the t-interval over seeds). Bold / underlined: {esc(_scope_text(lay))} by our "
               f"numbers. n/a: metric not computed (see the note); --: no result in this profile. Click a metric's "
               f"header to sort.</p>")
    lines = [ln for ln in _lines_plain(model) if ln not in model.notes]  # the profile notes stand once, on top
    for ln in lines:
        out.append(f'<p class="fn">{esc(ln)}</p>')
    for marker, text in model.footnotes:
        out.append(f'<p class="fn" id="t{tid}-fn-{esc(marker)}"><sup>{esc(marker)}</sup> {esc(text)}</p>')
    return "\n".join(out)


# ----------------------------------------------------------------------------- leaderboard.json
def leaderboard_rows(models: dict[str, TableModel], ours_idx: dict, index: RunIndex, results_root: Path) -> list[dict]:
    rows = []
    for tid, model in models.items():
        lay = model.layout
        for rm in model.rows:
            for (gi, mk), cell in zip(model.columns, rm.cells):
                g = lay.groups[gi]
                method = g.method or rm.row.method
                key = (tid, g.dataset, method, rm.row.variant, mk)
                rec = ours_idx.get(key)
                if rec is None:
                    continue  # no result of ours for this cell (the paper's number alone is in paper.csv)
                runs = index.for_key(tid, g.dataset, method, rm.row.variant)
                value = rec["mean"] if rec["available"] and math.isfinite(rec["mean"]) else None
                lo, hi = rec["ci_low"], rec["ci_high"]
                rows.append({
                    "table": tid, "dataset": g.dataset, "method": method, "variant": rm.row.variant,
                    "metric": mk, "row_name": rm.name, "group": rm.row.group or None,
                    "value": _jsonable(value),
                    "interval95": [_jsonable(lo), _jsonable(hi)] if value is not None and math.isfinite(lo)
                    and math.isfinite(hi) else None,
                    "interval_kind": None if value is None or not math.isfinite(lo) else (
                        "t over seeds" if rec["n_seeds"] > 1 else "bootstrap over items"),
                    "higher_is_better": cell.higher_is_better, "mark": cell.mark or None,
                    "available": value is not None, "reason": (cell.reason if cell.kind == "na" else rec["reason"]) or None,
                    "n_items": int(rec["n_items"]), "n_missing": int(rec["n_missing"]), "n_seeds": int(rec["n_seeds"]),
                    "seeds": [r.seed for r in runs], "scoring_note": rec["scoring_note"] or None,
                    "paper": cell.paper,
                    "provenance": [_provenance(r, results_root) for r in runs],
                })
    return rows


# ----------------------------------------------------------------------------- run pages
def _distribution_png(items: pd.DataFrame, metrics: dict, out: Path) -> bool:
    """Per-item distribution of each metric of ``items.csv`` (box + points); False when there is none."""
    cols = [c for c in items.columns if c not in ("mixture", "slot") and pd.api.types.is_numeric_dtype(items[c])]
    cols = [c for c in cols if np.isfinite(items[c].to_numpy(dtype=float)).any()]
    if not cols:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cols), figsize=(2.3 * len(cols), 2.4), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, c in zip(axes[0], cols):
        v = items[c].to_numpy(dtype=float)
        ok = v[np.isfinite(v)]
        ax.boxplot(ok, widths=0.5, showfliers=False)
        ax.scatter(1 + rng.uniform(-0.18, 0.18, ok.size), ok, s=6, alpha=0.55, color="#1f77b4", zorder=3)
        label = METRICS[c].label if c in METRICS else c
        arrow = ""
        if c in metrics and "higher_is_better" in metrics[c]:
            arrow = " ↑" if metrics[c]["higher_is_better"] else " ↓"
        ax.set_title(f"{label}{arrow}", fontsize=9)
        ax.set_xticks([])
        ax.tick_params(labelsize=7)
        miss = int((~np.isfinite(v)).sum())
        ax.set_xlabel(f"n={ok.size}" + (f", {miss} NaN" if miss else ""), fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return True


def _metrics_table(blob: dict) -> str:
    rows = ['<table class="lb"><thead><tr><th>metric</th><th>mean</th><th>95% interval</th><th>sem</th><th>n</th>'
            '<th>kind</th><th>note</th></tr></thead><tbody>']
    for name, m in sorted(blob.get("metrics", {}).items()):
        label = METRICS[name].label if name in METRICS else name
        arrow = " ↑" if m.get("higher_is_better") else " ↓"
        if m.get("available", True) and m.get("mean") is not None:
            ci = m.get("ci95") or [None, None]
            ci_s = f"[{_fmt(ci[0], 4)}, {_fmt(ci[1], 4)}]" if ci[0] is not None else "–"
            spread = f" (± {m['spread']:.4g} across splits)" if m.get("spread") is not None else ""
            rows.append(f'<tr><td>{esc(label + arrow)}</td><td class="num">{_fmt(float(m["mean"]), 4)}{esc(spread)}</td>'
                        f'<td class="num">{esc(ci_s)}</td><td class="num">{_fmt(m.get("sem"), 4)}</td>'
                        f'<td class="num">{esc(m.get("n"))}</td><td>{esc(m.get("kind", ""))}</td>'
                        f'<td>{esc(m.get("reason", ""))}</td></tr>')
        else:
            rows.append(f'<tr><td>{esc(label + arrow)}</td><td class="num na">n/a</td><td></td><td></td><td></td>'
                        f'<td>{esc(m.get("kind", ""))}</td><td>{esc(m.get("reason", ""))}</td></tr>')
    rows.append("</tbody></table>")
    return "".join(rows)


def _relative(p: Path, base: Path) -> str:
    try:
        return str(Path(os.path.abspath(p)).relative_to(os.path.abspath(base)))
    except ValueError:
        return str(p)


def _benchmark_seconds(workdir: Path, profile: str, kind: str, run: Run) -> float | None:
    p = workdir / "benchmarks" / profile / kind / run.dataset / run.method_dir / f"seed{run.seed}.tsv"
    try:
        df = pd.read_csv(p, sep="\t")
        return float(df["s"].iloc[0])
    except Exception:
        return None


def render_run_page(group: list[Run], site: Path, profile: str, workdir: Path, registry_meta: dict,
                    siblings: list[Run]) -> str:
    """One page for one seed directory (its table1/table4 evaluation and, for CIFAR-10, its table2 one)."""
    main = group[0]
    b = main.blob
    meta = registry_meta.get(main.method) or b.get("method_info") or {}
    title = f"{meta.get('display_name', main.method)} · {main.dataset}" + (f" · {main.variant}" if main.variant else "") \
        + f" · seed {main.seed}"
    parts = [f"<h2>{esc(title)}</h2>"]
    flags = ("supervised" if meta.get("supervised") else "unsupervised") + (", generative" if meta.get("generative") else "")
    train_s = _benchmark_seconds(workdir, profile, "train", main)
    dl = [("method", f"{main.method}  ({meta.get('display_name', '')})"), ("properties", flags),
          ("citation", meta.get("citation") or "–"), ("training data", meta.get("training_data") or "–"),
          ("teacher", meta.get("teacher") or "–"), ("dataset", main.dataset), ("variant", main.variant or "main run"),
          ("seed", main.seed), ("computed", f"imported from {main.imported_from}" if main.imported_from else "here"),
          ("profile", b.get("profile")), ("git commit", b.get("git_commit")),
          ("surfbench version", b.get("surfbench_version")), ("config hash", b.get("config_hash")),
          ("dataset hash", b.get("dataset_hash")), ("model hash (sha256 of model.pt)", b.get("model_hash")),
          ("training wall time", f"{train_s:.1f} s (benchmarks/)" if train_s is not None else "not recorded here"),
          ("results folder", _relative(main.seed_dir, workdir))]
    parts.append('<dl class="meta">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in dl) + "</dl>")
    others = [s for s in siblings if s.seed_dir != main.seed_dir]
    if others:
        parts.append("<p>Other runs of this method on this dataset: " + ", ".join(
            f'<a href="../{esc(s.page)}">{esc(s.method_dir)} seed {s.seed}</a>' for s in others) + "</p>")
    for run in group:
        rb = run.blob
        parts.append(f"<h3>Evaluation: protocol {esc(run.protocol)}</h3>")
        env = rb.get("environment") or {}
        dl = [("items", f"{rb.get('n_items')} separated items from {rb.get('n_mixtures', '?')} mixtures"),
              ("evaluation runtime", f"{rb.get('runtime_s')} s"),
              ("device", env.get("device") if isinstance(env, dict) else None),
              ("scoring note", rb.get("scoring_note") or "–")]
        parts.append('<dl class="meta">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in dl) + "</dl>")
        parts.append(_metrics_table(rb))
        items_csv = run.path.parent / "items.csv"
        if items_csv.is_file():
            img = site / "runs" / f"{run.slug}-{run.protocol}-items.png"
            if _distribution_png(pd.read_csv(items_csv), rb.get("metrics", {}), img):
                parts.append(f'<p>Per-item distribution (<code>items.csv</code>: one point per separated item):</p>'
                             f'<p class="figure"><img src="{esc(img.name)}" alt="per-item distribution of each metric, '
                             f'protocol {esc(run.protocol)}"></p>')
            else:
                parts.append("<p>No per-item values (set-level metrics only).</p>")
    cfg_path = main.seed_dir / "config.yaml"
    cfg_text = cfg_path.read_text() if cfg_path.is_file() else "(config.yaml not found)"
    parts.append('<h3>Resolved config (<code>config.yaml</code>)</h3>')
    parts.append(f'<pre id="config">{esc(cfg_text)}</pre>')
    return _page(title, "\n".join(parts), profile, depth=1)


# ----------------------------------------------------------------------------- listening page
def _stft_db(x: np.ndarray, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """Log-magnitude STFT ``[freq, frames]`` in dB (Hann window)."""
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    win = np.hanning(n_fft)
    n = 1 + (x.size - n_fft) // hop
    frames = np.stack([x[i * hop: i * hop + n_fft] * win for i in range(n)], axis=1)
    mag = np.abs(np.fft.rfft(frames, axis=0))
    return 20 * np.log10(mag + 1e-8)


def _spectrogram_png(x: np.ndarray, ref_db: float, out: Path, size=(240, 96)) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import colormaps
    from PIL import Image

    s = _stft_db(x)
    s = np.clip((s - ref_db + 80.0) / 80.0, 0.0, 1.0)[::-1]  # 80 dB below the example's loudest bin .. its peak
    rgb = (colormaps["magma"](s)[..., :3] * 255).astype(np.uint8)
    Image.fromarray(rgb).resize(size, Image.BILINEAR).save(out)


def _align(est: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Estimates ``[K', T]`` reordered to the references ``[K, T]`` by least total MSE (K' >= K; K small)."""
    k = ref.shape[0]
    if est.shape[0] < k or k > 6:
        return est
    best, best_cost = None, math.inf
    for perm in itertools.permutations(range(est.shape[0]), k):
        cost = sum(float(np.mean((est[p] - ref[i]) ** 2)) for i, p in enumerate(perm))
        if cost < best_cost:
            best, best_cost = perm, cost
    return est[list(best)]


def build_listening(runs: list[Run], site: Path, n_listen: int = N_LISTEN) -> tuple[str, list[str]]:
    """The listening page's body and the WAV files it wrote (relative paths)."""
    from ..audio_io import write_audio
    from ..data.store import _load_npz

    by_ds: dict[str, list[Run]] = {}
    for r in runs:
        if r.variant or r.protocol == "table2":
            continue
        if not (r.seed_dir / "examples.npz").is_file():
            continue
        by_ds.setdefault(r.dataset, []).append(r)
    parts, wavs = [], []
    intro = ('<p>Fixed evaluation mixtures of the audio tables, separated by every method: the mixture, the references '
             "and each method's estimates. The audio is what the evaluation saved in each run's "
             "<code>examples.npz</code> (the first <code>evaluation.n_figure_examples</code> mixtures of the fixed "
             "evaluation set, the estimates that were scored, cut to the shortest of those mixtures); estimates are "
             "listed in the references' order (least-MSE permutation). One gain per example (all its clips alike, so "
             "loudness compares) keeps the 16-bit WAV files below full scale. Spectrograms: 512-point STFT, 80 dB range "
             "below the example's loudest bin.</p>")
    for ds in sorted(by_ds):
        cands = by_ds[ds]
        # the lowest seed of each method, in the paper's order
        first: dict[str, Run] = {}
        for r in sorted(cands, key=lambda r: (_method_order(r.method), r.seed)):
            first.setdefault(r.method, r)
        chosen = list(first.values())
        loaded = []
        for r in chosen:
            ex = _load_npz(r.seed_dir / "examples.npz")
            if np.asarray(ex["mixtures"]).ndim != 2:  # [N, T]: audio; images are [N, C, H, W]
                break
            loaded.append((r, ex))
        if not loaded:
            continue
        ref_run, ref = loaded[0]
        sr = int((ref_run.config().get("data") or {}).get("sample_rate", 16000))
        n = min(n_listen, ref["mixtures"].shape[0])
        skipped = [r for r, ex in loaded[1:] if ex["mixtures"].shape[0] < n or ex["mixtures"].shape[1] != ref["mixtures"].shape[1]
                   or not np.allclose(ex["mixtures"][:n], ref["mixtures"][:n], atol=1e-5)]
        methods = [(r, ex) for r, ex in loaded if r not in skipped]
        parts.append(f"<h2>{esc(ds)}</h2>")
        parts.append(f"<p>{len(methods)} methods, seed {ref_run.seed}; {n} mixtures of "
                     f"{ref['mixtures'].shape[1] / sr:.2f} s at {sr} Hz.</p>")
        if skipped:
            parts.append("<p class=\"fn\">Not shown (their saved examples are other mixtures): "
                         + ", ".join(esc(r.method_dir) for r in skipped) + "</p>")
        k = ref["sources"].shape[1]
        for i in range(n):
            mix = np.asarray(ref["mixtures"][i], dtype=np.float64)
            srcs = np.asarray(ref["sources"][i], dtype=np.float64)
            ests = [(r, _align(np.asarray(ex["estimates"][i], dtype=np.float64), srcs)) for r, ex in methods]
            peak = max([np.abs(mix).max(), np.abs(srcs).max()] + [np.abs(e).max() for _, e in ests])
            gain = 0.95 / peak if peak > 0.95 else 1.0
            ref_db = max(_stft_db(s).max() for s in [mix, *srcs, *(x for _, e in ests for x in e)])
            d = site / "audio" / ds / f"ex{i}"
            d.mkdir(parents=True, exist_ok=True)

            def clip(x, name, label):
                wav = d / f"{name}.wav"
                write_audio(wav, (x * gain).astype(np.float32), sr, subtype="PCM_16")
                _spectrogram_png(x, ref_db, d / f"{name}.png")
                rel = wav.relative_to(site).as_posix()
                wavs.append(rel)
                return (f'<td><img src="{esc(Path(rel).with_suffix(".png").as_posix())}" alt="spectrogram: {esc(label)}">'
                        f'<audio controls preload="metadata" src="{esc(rel)}"></audio></td>')

            rows = [f'<tr><th>Mixture</th>{clip(mix, "mixture", "mixture")}' + "<td></td>" * (k - 1) + "</tr>",
                    "<tr><th>References</th>" + "".join(clip(srcs[j], f"ref{j + 1}", f"reference {j + 1}")
                                                         for j in range(k)) + "</tr>"]
            for r, e in ests:
                name = (r.blob.get("method_info") or {}).get("display_name", r.method)
                cells = "".join(clip(e[j], f"{r.method}_s{j + 1}", f"{name} source {j + 1}") for j in range(min(k, e.shape[0])))
                rows.append(f'<tr><th><a href="{esc(r.page)}">{esc(name)}</a></th>{cells}</tr>')
            head = "<tr><th></th>" + "".join(f"<th>source {j + 1}</th>" for j in range(k)) + "</tr>"
            gain_s = f"gain {gain:.3f}" if gain != 1.0 else "no gain"
            parts.append(f"<h3>Example {i + 1} (evaluation mixture {i}; {gain_s})</h3>")
            parts.append(f'<div class="tablewrap"><table class="listen">{head}{"".join(rows)}</table></div>')
    if not parts:
        return ("<p>No audio examples: no audio run with <code>examples.npz</code> in this profile "
                "(audio tables not run, or <code>evaluation.n_figure_examples: 0</code>).</p>", [])
    return intro + "\n".join(parts), wavs


# ----------------------------------------------------------------------------- the whole site
def _swap_in(tmp: Path, site: Path) -> None:
    """Replace ``site`` with the finished ``tmp`` (two renames; the old one is removed afterwards)."""
    old = None
    if site.exists():
        old = site.with_name(f".{site.name}.old-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        os.replace(site, old)
    os.replace(tmp, site)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write(path: Path, text: str) -> None:
    from ..atomic import write_text

    write_text(path, text)


def build_site(cfg: dict, out: str | Path | None = None, workdir: str | Path = ".", n_listen: int = N_LISTEN) -> Path:
    """Build ``<paths.report>/<profile>/site/`` (or ``out``) from the results store; returns its path."""
    t0 = time.time()
    workdir = Path(workdir)
    profile = cfg["profile"]
    results_root = workdir / cfg["paths"]["results"]
    report_dir = workdir / cfg["paths"]["report"] / profile
    site = Path(out) if out is not None else report_dir / "site"
    site.parent.mkdir(parents=True, exist_ok=True)
    tmp = site.with_name(f".{site.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    tmp.mkdir()
    try:
        _build_into(cfg, tmp, results_root, report_dir, workdir, n_listen, t0)
        _swap_in(tmp, site)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return site


def _build_into(cfg: dict, site: Path, results_root: Path, report_dir: Path, workdir: Path, n_listen: int,
                t0: float) -> None:
    from ..registry import registry

    profile = cfg["profile"]
    notes = profile_notes(cfg)
    ours = table_rows(cfg, results_root)
    ours = ours if not ours.empty else None
    reference = load_reference()
    runs = find_runs(results_root, profile)
    index = RunIndex(runs)
    ours_idx = _ours_index(ours)
    present = set(prepare_ours(ours)["table"])
    # every table of the profile (with or without results yet) and Table 3 (the paper's numbers only)
    table_ids = [t for t in LAYOUTS if t in {str(x) for x in cfg["tables"]} | present | {"3"}]
    models = {t: build_model(t, ours, reference, profile, notes) for t in table_ids}

    # index.html
    body = ['<ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>",
            "<p>Each cell: our value (bold: best, underlined: second best, as in the paper's tables) with the paper's "
            "published number in parentheses; below it the 95% interval and the number of seeds. A value links to "
            "its run's page. Click a metric's header to sort the rows by it; click the row header for the paper's "
            "order. <a href=\"leaderboard.json\">leaderboard.json</a> has every number with its provenance.</p>",
            "<p>Tables: " + " · ".join(f'<a href="#t{t}">Table {t}</a>' for t in table_ids) + "</p>"]
    for t, model in models.items():
        body.append(f'<h2 id="t{t}">Table {t}</h2>')
        body.append(render_table_html(model, ours_idx, index))
    _write(site / "index.html", _page(f"surfbench leaderboard ({profile})", "\n".join(body), profile, script=True))

    # leaderboard.json
    rows = leaderboard_rows(models, ours_idx, index, results_root)
    blob = {"format": LEADERBOARD_FORMAT, "profile": profile, "generated_by": "surfbench site",
            "fields": {"value": "our mean (over seeds)", "interval95": "[low, high]: one seed: bootstrap over items; "
                       "several: t-interval over seeds", "paper": "the paper's number as printed (results/reference/paper.csv)"},
            "rows": rows}
    _write(site / "leaderboard.json", json.dumps(blob, indent=1, ensure_ascii=False, allow_nan=False) + "\n")

    # run pages
    reg = registry()
    meta = {}
    for r in runs:
        if r.method not in meta:
            try:
                meta[r.method] = reg.get(r.method).metadata()
            except ValueError:
                meta[r.method] = None
    by_dir: dict[Path, list[Run]] = {}
    for r in runs:
        by_dir.setdefault(r.seed_dir, []).append(r)
    for group in by_dir.values():
        group.sort(key=lambda r: r.protocol == "table2")  # table1/table4 first; a table2 evaluation shares the page
        main = group[0]
        siblings = [s for s in runs if s.dataset == main.dataset and s.method == main.method and s.path.parent == s.seed_dir]
        _write(site / main.page, render_run_page(group, site, profile, workdir, meta, siblings))
    lines = ['<h2>Runs</h2><table class="lb"><thead><tr><th>dataset</th><th>method</th><th>variant</th><th>seed</th>'
             "<th>protocols</th><th>items</th><th>evaluation runtime (s)</th><th>commit</th></tr></thead><tbody>"]
    for d, group in sorted(by_dir.items(), key=lambda kv: (kv[1][0].dataset, _method_order(kv[1][0].method),
                                                           kv[1][0].variant, kv[1][0].seed)):
        m = group[0]
        lines.append(f'<tr><td>{esc(m.dataset)}</td><td><a href="{esc(m.page)}">{esc(m.method)}</a></td>'
                     f"<td>{esc(m.variant)}</td><td>{m.seed}</td><td>{esc(', '.join(r.protocol for r in group))}</td>"
                     f'<td class="num">{esc(m.blob.get("n_items"))}</td><td class="num">{esc(m.blob.get("runtime_s"))}</td>'
                     f"<td><code>{esc(str(m.blob.get('git_commit', ''))[:12])}</code></td></tr>")
    lines.append("</tbody></table>")
    _write(site / "runs.html", _page("runs", "\n".join(lines), profile))

    # figures.html
    figs = sorted((report_dir / "figures").glob("*.png"))
    fbody = ["<h2>Figures</h2><p>Separations like the paper's Figures 2–6: one row per fixed evaluation mixture; "
             "the mixture, the ground truth, then each method's separated images under one header per method.</p>"]
    for f in figs:
        (site / "figures").mkdir(exist_ok=True)
        shutil.copy2(f, site / "figures" / f.name)
        fbody.append(f'<h3>{esc(f.stem)}</h3><p class="figure"><img src="figures/{esc(f.name)}" alt="separations on '
                     f'{esc(f.stem)}"></p>')
    if not figs:
        fbody.append(f"<p>No figures in {esc(report_dir / 'figures')} yet (<code>snakemake figures</code>).</p>")
    curves = sorted((report_dir / "curves").glob("*.png"))
    if curves:
        fbody.append("<h2>Learning curves</h2><p>The evaluation's PSNR (images) or SI-SDR (speech) of each method on the "
                     "first <code>training.curve.n_items</code> evaluation mixtures, measured during training every "
                     "<code>training.curve.every</code> steps: against the training step (left) and the training wall "
                     "time without the curve's own time (right).</p>")
        (site / "curves").mkdir(exist_ok=True)
    for f in curves:
        shutil.copy2(f, site / "curves" / f.name)
        fbody.append(f'<h3>{esc(f.stem)}</h3><p class="figure"><img src="curves/{esc(f.name)}" alt="learning curves on '
                     f'{esc(f.stem)}"></p>')
    _write(site / "figures.html", _page("figures", "\n".join(fbody), profile))

    # listen.html
    lbody, _wavs = build_listening(runs, site, n_listen)
    _write(site / "listen.html", _page("listen", "<h2>Listen</h2>" + lbody, profile))
    size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    print(f"surfbench site: {len(table_ids)} tables, {len(by_dir)} run pages, {len(rows)} leaderboard rows, "
          f"{len(_wavs)} audio clips, {size / 1e6:.1f} MB, {time.time() - t0:.1f} s")
