"""Figure grids like the paper's Figures 2-6: mixture, ground truth, each method's separation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..data.store import _load_npz

CELL_PAD = 2
LABEL_H = 14


def _to_uint8(img: np.ndarray, scale: int) -> Image.Image:
    """``img``: ``[C, H, W]`` in [0, 1] -> PIL image enlarged ``scale`` times (nearest)."""
    a = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    a = a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)
    im = Image.fromarray(a)
    return im.resize((im.width * scale, im.height * scale), Image.NEAREST)


def figure_grid(runs: list[str | Path], out: str | Path, max_rows: int = 6) -> Path:
    """One row per evaluation mixture; columns: mixture, the K true images, then K separated images per method."""
    runs = [Path(r) for r in runs]
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
            cols.append(("mixture", ex["mixtures"]))  # the average image
            for j in range(k):
                cols.append((f"truth {j + 1}", ex["sources"][:, j] * k))
        for j in range(k):
            cols.append((f"{info.get('display_name', r.parent.name)} {j + 1}", ex["estimates"][:, j] * k))
    n = min(max_rows, ref["mixtures"].shape[0])
    h, w = ref["mixtures"].shape[-2:]
    scale = max(1, 64 // max(h, w))
    cw, ch = w * scale + CELL_PAD, h * scale + CELL_PAD
    label_rows = 2
    canvas = Image.new("RGB", (cw * len(cols), ch * n + LABEL_H * label_rows), "white")
    draw = ImageDraw.Draw(canvas)
    for ci, (label, imgs) in enumerate(cols):
        # two label lines, staggered so long method names stay readable
        draw.text((ci * cw + 1, (ci % label_rows) * LABEL_H), label[: 2 * cw // 6], fill="black")
        for ri in range(n):
            canvas.paste(_to_uint8(imgs[ri], scale).convert("RGB"), (ci * cw, LABEL_H * label_rows + ri * ch))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    canvas.save(tmp)
    tmp.replace(out)
    return out
