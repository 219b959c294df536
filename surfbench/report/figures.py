"""Figure grids like the paper's Figures 2-6: mixture, ground truth, each method's separation.

Columns come in groups: the mixture (one column), the ground truth (K columns), then each method's K
separated images.  Every group has one header, centred over its columns and underlined by a rule
the width of the group (word-wrapped onto as many lines as it needs, never running on over the
next group), and groups are ``GROUP_GAP`` pixels apart, so a reader sees which columns are whose.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..atomic import atomic_path
from ..data.store import _load_npz

CELL_PAD = 2      # white pixels right of and below each image
GROUP_GAP = 10    # white pixels between two column groups (mixture | ground truth | method | method ...)
FONT_SIZE = 11
LINE_H = 13       # pixels per header line
HEADER_PAD = 5    # pixels under the header text: the group's rule and some air
#: columns in the paper's order (Figure 2); methods not listed follow, alphabetically
PAPER_ORDER = ["average", "supervised_regression", "supervised_flow", "basis", "mixit", "remixit", "self_remixing",
               "surf_remixit", "surf_self_remixing"]


def _order(run: Path) -> tuple:
    name = run.parent.name
    return (PAPER_ORDER.index(name) if name in PAPER_ORDER else len(PAPER_ORDER), name)


def _to_uint8(img: np.ndarray, scale: int) -> Image.Image:
    """``img``: ``[C, H, W]`` in [0, 1] -> PIL image enlarged ``scale`` times (nearest)."""
    a = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    a = a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)
    im = Image.fromarray(a)
    return im.resize((im.width * scale, im.height * scale), Image.NEAREST)


def _font() -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=FONT_SIZE)  # Pillow >= 10.1 with FreeType: a scalable font
    except TypeError:  # older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    box = draw.textbbox((0, 0), text, font=font)
    return box[2] - box[0]


def wrap_label(draw: ImageDraw.ImageDraw, label: str, width: int, font) -> list[str]:
    """``label`` broken at spaces into lines at most ``width`` pixels wide (a single word wider than that
    is cut to fit, ending in "…")."""
    lines: list[str] = []
    for word in label.split():
        if lines and _text_width(draw, lines[-1] + " " + word, font) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    out = []
    for line in lines:
        if _text_width(draw, line, font) > width:
            while len(line) > 1 and _text_width(draw, line + "…", font) > width:
                line = line[:-1]
            line += "…"
        out.append(line)
    return out or [""]


def group_x(spans: list[int], cw: int) -> list[int]:
    """Left pixel of each column group of ``spans`` columns (cells ``cw`` wide, ``GROUP_GAP`` between groups)."""
    xs, x = [], 0
    for s in spans:
        xs.append(x)
        x += s * cw + GROUP_GAP
    return xs


def figure_grid(runs: list[str | Path], out: str | Path, max_rows: int = 6) -> Path:
    """One row per evaluation mixture; column groups: mixture, the K true images, then K separated images per method."""
    runs = sorted(dict.fromkeys(Path(r) for r in runs), key=_order)  # a run given twice is one column group
    if not runs:
        raise ValueError("figure_grid: no runs given")
    groups: list[tuple[str, list[np.ndarray]]] = []  # (header, one image stack [N, C, H, W] per column)
    ref = None
    for r in runs:
        ex = _load_npz(r / "examples.npz")
        info = json.loads((r / "metrics.json").read_text()).get("method_info", {})
        k = ex["sources"].shape[1]
        if ref is None:
            ref = ex
            groups.append(("mixture", [ex["mixtures"]]))  # the average image
            groups.append(("ground truth", [ex["sources"][:, j] * k for j in range(k)]))
        groups.append((info.get("display_name", r.parent.name), [ex["estimates"][:, j] * k for j in range(k)]))
    n = min(max_rows, ref["mixtures"].shape[0])
    h, w = ref["mixtures"].shape[-2:]
    scale = max(1, 64 // max(h, w))
    cw, ch = w * scale + CELL_PAD, h * scale + CELL_PAD
    spans = [len(cols) for _, cols in groups]
    xs = group_x(spans, cw)
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    headers = [wrap_label(probe, label, s * cw - CELL_PAD, font) for (label, _), s in zip(groups, spans)]
    top = max(len(lines) for lines in headers) * LINE_H + HEADER_PAD
    canvas = Image.new("RGB", (xs[-1] + spans[-1] * cw, top + ch * n), "white")
    draw = ImageDraw.Draw(canvas)
    for (label, cols), x0, span, lines in zip(groups, xs, spans, headers):
        gw = span * cw - CELL_PAD  # the group's width without the last cell's padding
        y = top - HEADER_PAD - len(lines) * LINE_H  # lines sit on the rule
        for line in lines:
            draw.text((x0 + (gw - _text_width(draw, line, font)) // 2, y), line, fill="black", font=font)
            y += LINE_H
        draw.line([(x0, top - 3), (x0 + gw - 1, top - 3)], fill=(90, 90, 90), width=1)
        for ci, imgs in enumerate(cols):
            for ri in range(n):
                canvas.paste(_to_uint8(imgs[ri], scale).convert("RGB"), (x0 + ci * cw, top + ri * ch))
    out = Path(out)
    with atomic_path(out) as tmp:
        canvas.save(tmp, format="PNG")
    return out


# ----------------------------------------------------------------------------- Table 3: spectrograms
#: an output slot is drawn as inactive (and `surfbench separate` says so) below this level re. the mixture
#: (label-free; the FUSS metric's own rule, 20 dB under the quietest active reference, needs the references)
INACTIVE_BELOW_DB = -30.0


def level_db(x: np.ndarray, ref: np.ndarray) -> float:
    """Power of ``x`` relative to ``ref`` in dB (-inf for silence)."""
    p, q = float(np.mean(np.square(x, dtype=np.float64))), float(np.mean(np.square(ref, dtype=np.float64)))
    return float("-inf") if p == 0 else 10.0 * np.log10(p / max(q, 1e-20))


def _spectrogram(x: np.ndarray, n_fft: int = 512, hop: int = 256) -> np.ndarray:
    import torch

    s = torch.stft(torch.from_numpy(np.asarray(x, dtype=np.float32)), n_fft, hop, window=torch.hann_window(n_fft),
                   return_complex=True).abs()
    return 20 * np.log10(s.numpy() + 1e-6)


def spectrogram_grid(run_dirs, out, example: int = 0, sample_rate: int = 16000) -> Path:
    """Table 3's figure: log-magnitude spectrograms of one FUSS eval example: the mixture and its references (first
    row), then each method's 4 outputs (one row per run, paper order; an inactive output, below
    :data:`INACTIVE_BELOW_DB` re. the mixture, titled so).  ``run_dirs``: the runs' ``table3`` evaluation folders
    (holding ``examples.npz``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dirs = sorted((Path(r) for r in run_dirs), key=lambda d: _order(d.parent))
    blobs = [(d, _load_npz(d / "examples.npz")) for d in dirs if (d / "examples.npz").exists()]
    if not blobs:
        raise FileNotFoundError(f"no examples.npz in {', '.join(map(str, dirs))}; run the Table 3 evaluations first")
    first = blobs[0][1]
    mix, refs = first["mixtures"][example].astype(np.float32), first["sources"][example].astype(np.float32)
    k = refs.shape[0]
    fig, axes = plt.subplots(len(blobs) + 1, k + 1, figsize=(2.2 * (k + 1), 1.6 * (len(blobs) + 1)), squeeze=False)
    vmax = _spectrogram(mix).max()
    kw = dict(origin="lower", aspect="auto", cmap="magma", vmin=vmax - 80, vmax=vmax,
              extent=(0, mix.shape[-1] / sample_rate, 0, sample_rate / 2000))

    def show(ax, x, title):
        ax.imshow(_spectrogram(x), **kw)
        ax.set_title(title, fontsize=7)
        ax.tick_params(labelsize=5)

    show(axes[0, 0], mix, f"mixture ({first['names'][example]})")
    for j in range(k):
        silent = not np.any(refs[j])
        show(axes[0, j + 1], refs[j], f"reference {j + 1}" + (" (none)" if silent else ""))
    for i, (d, b) in enumerate(blobs, start=1):
        method = d.parent.parent.name
        axes[i, 0].axis("off")
        axes[i, 0].text(0.5, 0.5, f"{method}\n({d.parent.parent.parent.name})", ha="center", va="center", fontsize=8)
        for j in range(k):
            e = b["estimates"][example][j].astype(np.float32)
            lv = level_db(e, mix)
            show(axes[i, j + 1], e, f"output {j + 1}: {lv:.0f} dB" + (" (inactive)" if lv < INACTIVE_BELOW_DB else ""))
    fig.suptitle(f"Table 3: separations of a FUSS eval example (time in s, frequency in kHz; output levels re. the "
                 f"mixture, inactive below {INACTIVE_BELOW_DB:g} dB)", fontsize=8)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out
