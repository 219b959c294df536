"""Figure grids like the paper's Figures 2-6: mixture, ground truth, each method's separation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..atomic import atomic_path
from ..data.store import _load_npz

CELL_PAD = 2
LABEL_H = 14
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


def figure_grid(runs: list[str | Path], out: str | Path, max_rows: int = 6) -> Path:
    """One row per evaluation mixture; columns: mixture, the K true images, then K separated images per method."""
    runs = sorted(dict.fromkeys(Path(r) for r in runs), key=_order)  # a run given twice is one column group
    if not runs:
        raise ValueError("figure_grid: no runs given")
    cols = []  # (label, images [N, C, H, W])
    ref = None
    for r in runs:
        ex = _load_npz(r / "examples.npz")
        info = json.loads((r / "metrics.json").read_text()).get("method_info", {})
        k = ex["sources"].shape[1]
        if ref is None:
            ref = ex
            cols.append(("mixture", ex["mixtures"], 1))  # the average image
            for j in range(k):
                cols.append(("ground truth" if j == 0 else "", ex["sources"][:, j] * k, k))
        for j in range(k):
            cols.append((info.get("display_name", r.parent.name) if j == 0 else "", ex["estimates"][:, j] * k, k))
    n = min(max_rows, ref["mixtures"].shape[0])
    h, w = ref["mixtures"].shape[-2:]
    scale = max(1, 64 // max(h, w))
    cw, ch = w * scale + CELL_PAD, h * scale + CELL_PAD
    label_rows = 2
    canvas = Image.new("RGB", (cw * len(cols), ch * n + LABEL_H * label_rows), "white")
    draw = ImageDraw.Draw(canvas)
    group = 0
    for ci, (label, imgs, span) in enumerate(cols):
        if label:  # one label per method over its K columns; on two staggered lines a label may run on
            # over the next method's columns (the default font is ~6 px per character)
            draw.text((ci * cw + 1, (group % label_rows) * LABEL_H), label[: label_rows * span * cw // 6 - 1], fill="black")
            group += 1
        for ri in range(n):
            canvas.paste(_to_uint8(imgs[ri], scale).convert("RGB"), (ci * cw, LABEL_H * label_rows + ri * ch))
    out = Path(out)
    with atomic_path(out) as tmp:
        canvas.save(tmp, format="PNG")
    return out
