"""Figure grids (issue 4, item 4): layout, pixel content, and a run given twice drawn once."""
import json

import numpy as np
from PIL import Image

from surfbench.report.figures import CELL_PAD, GROUP_GAP, figure_grid, group_x


def _run(root, name, display, est, src):
    d = root / name / "seed0"
    d.mkdir(parents=True)
    np.savez(d / "examples.npz", mixtures=src.sum(1), sources=src, estimates=est)
    (d / "metrics.json").write_text(json.dumps({"method_info": {"display_name": display}}))
    return d


def test_grid_layout_content_and_duplicates(tmp_path):
    rng = np.random.default_rng(0)
    n, k, h, w = 3, 2, 28, 28
    src = rng.uniform(0, 0.5, (n, k, 1, h, w)).astype(np.float32)
    avg = _run(tmp_path, "average", "Average", np.repeat(src.sum(1, keepdims=True) / k, k, axis=1), src)
    mixit = _run(tmp_path, "mixit", "Regression (Self-Remixing)", src[:, ::-1].copy(), src)
    out = figure_grid([mixit, avg, mixit], tmp_path / "fig.png")      # mixit twice, out of paper order
    im = np.asarray(Image.open(out).convert("L"))
    scale = 64 // 28                                                  # 2: cells are enlarged to ~64 px
    cw, ch = w * scale + CELL_PAD, h * scale + CELL_PAD
    spans = [1, k, k, k]                                              # mixture, truths, Average, MixIT (once)
    xs = group_x(spans, cw)
    assert im.shape[1] == sum(spans) * cw + (len(spans) - 1) * GROUP_GAP
    top = im.shape[0] - n * ch                                        # the headers' height
    assert 2 * 13 <= top <= 60                                        # the long name wraps onto 2 lines

    def cell(col, row):
        g = next(i for i in range(len(spans)) if col < sum(spans[: i + 1]))  # the column's group
        x = xs[g] + (col - sum(spans[:g])) * cw
        return im[top + row * ch: top + row * ch + h * scale: scale, x: x + w * scale: scale]

    # one header per group, over its own columns only: no ink in the gaps between groups, ink over each group
    header = im[:top]
    for g, x in enumerate(xs):
        assert (header[:, x: x + spans[g] * cw - CELL_PAD] < 128).any(), f"group {g} has no header"
        if g:
            assert (header[:, x - GROUP_GAP: x] == 255).all(), f"ink in the gap before group {g}"

    def u8(x):
        return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)

    for r in range(n):
        assert np.array_equal(cell(0, r), u8(src[r].sum(0)[0]))                 # the mixture (average image)
        assert np.array_equal(cell(1, r), u8(src[r, 0, 0] * k))                 # ground truth, full scale
        assert np.array_equal(cell(3, r), u8(src[r].sum(0)[0]))                 # Average comes first (paper order)
        assert np.array_equal(cell(5, r), u8(src[r, 1, 0] * k))                 # then MixIT's (swapped) slots
