"""Declarative layouts of the paper's Tables 1, 2, 3, 4 and 9.

A layout says which column groups (a dataset, optionally one method for Table 9), which metrics
(label, direction), which rows (method, variant, display name as printed in the paper) and how
the best/second-best marks are ranked.  :mod:`surfbench.report.tables` renders any layout; a
method that is not in the paper is appended after the paper's rows by the renderer.

Display names are the paper's per-table names (Table 1 says "Regression (ReMixIT)", Tables 3-4
say "ReMixIT").  ``supervised``/``generative`` here are only fallbacks: the renderer takes them
from the results DataFrame when it has them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    key: str                 # metric key in results and in paper.csv
    label: str               # header text (plain; escaped by the renderer)
    higher_is_better: bool   # arrow in the header; ranking fallback when results lack the column
    decimals: int            # decimals printed for our numbers

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    @property
    def arrow_latex(self) -> str:
        return r"$\uparrow$" if self.higher_is_better else r"$\downarrow$"


METRICS: dict[str, Metric] = {m.key: m for m in (
    Metric("psnr", "PSNR", True, 2),
    Metric("lpips", "LPIPS", False, 3),
    Metric("ssim", "SSIM", True, 3),
    Metric("fid", "FID", False, 2),
    Metric("is", "Inception Score", True, 2),
    Metric("si_sdr", "SI-SDR", True, 2),
    Metric("estoi", "ESTOI", True, 3),
    Metric("pesq", "PESQ", True, 2),
    Metric("dnsmos", "DNSMOS", True, 2),
    Metric("fuss_1s", "1S", True, 2),
    Metric("fuss_2si", "2Si", True, 2),
    Metric("fuss_3si", "3Si", True, 2),
    Metric("fuss_4si", "4Si", True, 2),
    Metric("under", "Under", False, 3),
    Metric("equal", "Equal", True, 3),
    Metric("over", "Over", False, 3),
)}


@dataclass(frozen=True)
class ColumnGroup:
    dataset: str
    title: str                       # group header, e.g. "MNIST (2 Source Mixtures)"
    metrics: tuple[str, ...]         # keys of METRICS
    method: str | None = None        # Table 9: the group is one method; rows are variants
    title_latex: str | None = None   # LaTeX for the title when it needs math (else escaped title)
    short: str | None = None         # short title for Markdown headers ("MNIST")


@dataclass(frozen=True)
class Row:
    method: str | None               # None when the column group fixes the method (Table 9)
    name: str                        # display name as printed in the paper (plain text)
    variant: str = ""
    group: str = ""                  # Table 9 ablation group (plain text)
    name_latex: str | None = None    # LaTeX when the name needs math (Table 9's "$\alpha=0.9$")
    group_latex: str | None = None
    supervised: bool | None = None   # fallbacks for the property columns / ranking
    generative: bool | None = None


@dataclass(frozen=True)
class Layout:
    table_id: str
    caption: str                     # the paper's caption, shortened
    groups: tuple[ColumnGroup, ...]
    rows: tuple[Row, ...]
    row_header: str = "Method"
    # ranking scope for bold/underline:
    #   "unsupervised": among rows whose method is not supervised (Tables 1, 3, 4)
    #   "all":          among all rows (Table 2)
    #   "group":        among the rows of each ablation group (Table 9)
    rank_scope: str = "unsupervised"
    property_columns: bool = False   # Table 1's "Unsupervised" / "Generative" columns
    extra_rows: bool = True          # append methods (Table 9: variants) that are not in the paper

    def __post_init__(self):
        for g in self.groups:
            for m in g.metrics:
                if m not in METRICS:
                    raise ValueError(f"table {self.table_id}: unknown metric {m!r}")
        if self.rank_scope not in ("unsupervised", "all", "group"):
            raise ValueError(f"table {self.table_id}: bad rank_scope {self.rank_scope!r}")

    @property
    def paper_methods(self) -> tuple[str, ...]:
        ms = [r.method for r in self.rows if r.method] + [g.method for g in self.groups if g.method]
        return tuple(dict.fromkeys(ms))

    @property
    def per_group_method(self) -> bool:
        return any(g.method for g in self.groups)


def _r(method, name, supervised, generative):
    return Row(method=method, name=name, supervised=supervised, generative=generative)


_IMAGE_METRICS_T1 = ("psnr", "lpips", "ssim", "fid")
_SPEECH = ("si_sdr", "estoi", "pesq", "dnsmos")
_FUSS = ("fuss_1s", "fuss_2si", "fuss_3si", "fuss_4si", "under", "equal", "over")

TABLE1 = Layout(
    table_id="1",
    caption="Comparison of methods on MNIST and CIFAR10, evaluated over 5,000 overlapping "
            "mixtures of images (10,000 separated images) formed from each test set.",
    groups=(
        ColumnGroup("mnist", "MNIST (2 Source Mixtures)", _IMAGE_METRICS_T1, short="MNIST"),
        ColumnGroup("cifar10", "CIFAR10 (2 Source Mixtures)", _IMAGE_METRICS_T1, short="CIFAR10"),
    ),
    rows=(
        _r("supervised_regression", "Supervised Regression", True, False),
        _r("supervised_flow", "Supervised Flow", True, True),
        _r("basis", "BASIS", True, True),
        _r("mixit", "MixIT", False, False),
        _r("remixit", "Regression (ReMixIT)", False, False),
        _r("self_remixing", "Regression (Self-Remixing)", False, False),
        _r("surf_remixit", "SURF (ReMixIT)", False, True),
        _r("surf_self_remixing", "SURF (Self-Remixing)", False, True),
    ),
    rank_scope="unsupervised",
    property_columns=True,
)

TABLE2 = Layout(
    table_id="2",
    caption="Inception Score / FID of 25,000 separations (50,000 separated images) of two "
            "overlapping mixtures of CIFAR-10 images.",
    groups=(ColumnGroup("cifar10", "CIFAR-10 (2 Source Mixtures)", ("is", "fid")),),
    rows=(
        _r("average", "Average", False, False),
        _r("basis", "BASIS", True, True),
        _r("mixit", "MixIT", False, False),
        _r("surf_remixit", "SURF (ReMixIT)", False, True),
        _r("surf_self_remixing", "SURF (Self-Remixing)", False, True),
    ),
    row_header="Algorithm",
    rank_scope="all",
)

_AUDIO_ROWS = (
    _r("supervised_flow", "Supervised Flow", True, True),
    _r("mixit", "MixIT", False, False),
    _r("remixit", "ReMixIT", False, False),
    _r("self_remixing", "Self-Remixing", False, False),
    _r("surf_remixit", "SURF (ReMixIT)", False, True),
    _r("surf_self_remixing", "SURF (Self-Remixing)", False, True),
)

TABLE3 = Layout(
    table_id="3",
    caption="Methods trained on AudioSet, evaluated on general multi-source separation (FUSS) "
            "and noisy speech (LibriSpeech + FUSS).",
    groups=(
        ColumnGroup("fuss", "FUSS (1 - 4 Source Mixtures)", _FUSS, short="FUSS"),
        ColumnGroup("librispeech_fuss", "LibriSpeech + FUSS (2 Source Mixtures)", _SPEECH, short="LibriSpeech+FUSS"),
    ),
    rows=_AUDIO_ROWS,
)

TABLE4 = Layout(
    table_id="4",
    caption="Methods on the Libri2Mix evaluation set.",
    groups=(ColumnGroup("libri2mix", "Libri2Mix (2 Source Mixtures)", _SPEECH),),
    rows=_AUDIO_ROWS,
)


def _ablation_rows() -> tuple[Row, ...]:
    rows: list[Row] = []
    for a in ("0", "0.9", "0.99", "0.999", "0.9999"):
        rows.append(Row(None, f"α={a}", f"alpha={a}", "EMA α", rf"$\alpha={a}$", r"EMA $\alpha$"))
    for b in ("1", "4", "16", "64", "256"):
        rows.append(Row(None, f"B={b}", f"batch_size={b}", "Batch Size B", rf"$B={b}$", r"Batch Size $B$"))
    for b in ("0.1", "0.5", "1.0"):
        rows.append(Row(None, f"β={b}", f"beta={b}", "Teacher β(t)", rf"$\beta={b}$", r"Teacher $\beta(t)$"))
    rows.append(Row(None, "Proposed Sched.", "beta=schedule", "Teacher β(t)", None, r"Teacher $\beta(t)$"))
    return tuple(rows)


TABLE9 = Layout(
    table_id="9",
    caption="Ablations of SURF on CIFAR-10: EMA decay (α), batch size (B) and the hybrid "
            "teacher β(t) schedule.",
    groups=(
        ColumnGroup("cifar10", "SURF (Self-Remixing)", ("psnr", "ssim", "lpips"), method="surf_self_remixing", short="SURF (SR)"),
        ColumnGroup("cifar10", "SURF (ReMixIT)", ("psnr", "ssim", "lpips"), method="surf_remixit", short="SURF (RM)"),
    ),
    rows=_ablation_rows(),
    row_header="Variant",
    rank_scope="group",
)

LAYOUTS: dict[str, Layout] = {l.table_id: l for l in (TABLE1, TABLE2, TABLE3, TABLE4, TABLE9)}


def get_layout(table_id: str | int) -> Layout:
    key = str(table_id)
    if key not in LAYOUTS:
        raise KeyError(f"no layout for table {table_id!r} (known: {', '.join(LAYOUTS)})")
    return LAYOUTS[key]
