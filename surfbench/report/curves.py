"""Learning curves of one dataset: every method's ``curve.csv`` (:mod:`surfbench.curve`) on one figure.

Two panels: the curve metric against the training step, and against training wall time (curve
evaluations excluded).  One line per run (method, variant, seed); a run trained without a curve
(``training.curve.every: 0``, or a method with nothing to train) is named under the plot.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..atomic import atomic_path
from ..curve import CURVE_FILE
from .figures import PAPER_ORDER

METRIC_LABEL = {"psnr": "PSNR (dB)", "si_sdr": "SI-SDR (dB)"}


def _label(run: Path, df: pd.DataFrame) -> str:
    method = str(df["method"].iloc[0])
    variant = df["variant"].iloc[0] if "variant" in df and isinstance(df["variant"].iloc[0], str) else ""
    label = method + (f"@{variant}" if variant else "")
    return label


def _order(run: Path) -> tuple:
    name = run.parent.name
    return (PAPER_ORDER.index(name) if name in PAPER_ORDER else len(PAPER_ORDER), name, run.name)


def curves_figure(dataset: str, runs: list[str | Path]):
    """The matplotlib figure (not saved): ``fig.axes[0]`` metric vs step, ``fig.axes[1]`` metric vs wall time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_step, ax_time) = plt.subplots(1, 2, figsize=(11, 4.2))
    missing, metric = [], None
    multi_seed = len({Path(r).name for r in runs}) > 1
    for run in sorted((Path(r) for r in runs), key=_order):
        f = run / CURVE_FILE
        if not f.exists():
            missing.append(run.parent.name)
            continue
        df = pd.read_csv(f, keep_default_na=False, na_values=[""]).sort_values("step")
        if df.empty:
            missing.append(run.parent.name)
            continue
        metric = metric or str(df["metric"].iloc[0])
        label = _label(run, df) + (f" ({run.name})" if multi_seed else "")
        ax_step.plot(df["step"], df["value"], marker="o", ms=3, label=label)
        ax_time.plot(df["wall_time_s"], df["value"], marker="o", ms=3, label=label)
    ylabel = METRIC_LABEL.get(metric, metric or "metric")
    n = None
    for ax, xl in ((ax_step, "training step"), (ax_time, "training wall time (s, curve evaluation excluded)")):
        ax.set_xlabel(xl)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    if ax_step.lines:
        ax_step.legend(fontsize=7, loc="best")
    fig.suptitle(f"{dataset}: learning curves" + (f" ({ylabel} on the first evaluation mixtures)" if metric else ""))
    if missing:
        fig.text(0.01, 0.01, "no curve: " + ", ".join(sorted(set(missing))), fontsize=7)
    fig.tight_layout(rect=(0, 0.04 if missing else 0, 1, 0.95))
    return fig


def plot_curves(dataset: str, runs: list[str | Path], out: str | Path) -> Path:
    import matplotlib.pyplot as plt

    fig = curves_figure(dataset, runs)
    out = Path(out)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out
