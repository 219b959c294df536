"""``surfbench compare A B`` (issue 16, item 3): two small results stores with hand-made differences."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from surfbench.cli import main as cli
from surfbench.compare import compare_stores, parse_tolerances
from surfbench.results import summarize, write_run_results

INFO = {"mixit": {"display_name": "MixIT", "supervised": False, "generative": False, "citation": "x"},
        "average": {"display_name": "Average", "supervised": False, "generative": False, "citation": "x"}}


def _na(reason):
    return {"mean": None, "sem": None, "ci95": [None, None], "n": 0, "higher_is_better": False, "kind": "set",
            "available": False, "reason": reason, "spread": None}


def _run(res: Path, method: str, seed: int, psnr, ssim, fid=None, dataset="mnist", variant=""):
    d = res / "p" / dataset / (method + (f"@{variant}" if variant else "")) / f"seed{seed}"
    metrics = {"psnr": summarize(psnr, True, 100), "ssim": summarize(ssim, True, 100),
               "fid": _na("no weights") if fid is None else
               {"mean": fid, "sem": None, "ci95": [None, None], "n": len(psnr), "higher_is_better": False,
                "kind": "set", "available": True, "reason": "", "spread": None}}
    header = {"profile": "p", "dataset": dataset, "method": method, "variant": variant, "seed": seed,
              "protocol": "table1", "config_hash": "c", "dataset_hash": "d", "model_hash": f"m{method}{seed}",
              "n_items": len(psnr), "method_info": INFO[method]}
    write_run_results(d, header=header, items=pd.DataFrame({"psnr": psnr, "ssim": ssim}), metrics=metrics)


PSNR = np.array([10.0, 11.0, 12.0, 13.0])
SSIM = np.array([0.5, 0.6, 0.7, 0.8])


@pytest.fixture
def stores(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B" / "results"  # B is given as its working folder
    for res in (a, b):
        _run(res, "mixit", 0, PSNR, SSIM)
        _run(res, "mixit", 0, PSNR, SSIM, variant="alpha=0.9")
    _run(a, "average", 0, PSNR - 5, SSIM - 0.3, fid=40.0)                   # only in A
    _run(b, "mixit", 1, PSNR + 1.0, SSIM)                                    # B: a second seed moves PSNR by +0.5
    _run(a, "mixit", 0, PSNR, SSIM, fid=30.0, dataset="cifar10")            # FID a number in A ...
    _run(b, "mixit", 0, PSNR, SSIM, dataset="cifar10")                      # ... n/a in B
    return a, tmp_path / "B"


def _cell(res, **key):
    return next(c for c in res["cells"] if all(c[k] == v for k, v in key.items()))


def test_cells_values_differences_and_statuses(stores):
    a, b = stores
    res = compare_stores(a, b)
    assert res["profile"] == "p" and res["a"] == str(a) and res["b"] == str(b / "results")
    psnr = _cell(res, table="1", dataset="mnist", method="mixit", metric="psnr")
    assert psnr["a"]["mean"] == pytest.approx(11.5) and psnr["b"]["mean"] == pytest.approx(12.0)
    assert psnr["diff"] == pytest.approx(0.5) and psnr["b"]["n_seeds"] == 2 and psnr["status"] == "moved"
    assert psnr["ci_overlap"] is True and psnr["tol"] == 1e-3  # the golden tolerance of PSNR
    ssim = _cell(res, dataset="mnist", method="mixit", metric="ssim", variant="")
    assert ssim["diff"] == 0 and ssim["status"] == "ok"
    assert _cell(res, method="average", metric="psnr")["status"] == "only A"
    assert _cell(res, method="average", metric="psnr")["b"] is None
    assert _cell(res, dataset="cifar10", metric="fid")["status"] == "n/a B"
    assert _cell(res, dataset="mnist", method="mixit", metric="fid", variant="")["status"] == "ok"  # n/a on both
    t9 = _cell(res, table="9", method="mixit", variant="alpha=0.9", metric="psnr")
    assert t9["status"] == "ok"
    s = res["summary"]
    assert s["only A"] == 3 and s["moved"] == 1 and s["n/a B"] == 1 and res["exit_status"] == 1


def test_tolerances_per_metric_and_intervals(stores):
    a, b = stores
    res = compare_stores(a, b, tol=["psnr=0.6"])
    assert _cell(res, dataset="mnist", method="mixit", metric="psnr", variant="")["status"] == "ok"
    assert res["exit_status"] == 1  # the cells missing on one side still fail
    assert parse_tolerances(["0.1", "psnr=0.05", "si_sdr=1e-3"]) == (0.1, {"psnr": 0.05, "si_sdr": 1e-3})
    with pytest.raises(ValueError, match="expected a number or METRIC=NUMBER"):
        parse_tolerances(["psnr=big"])
    with pytest.raises(ValueError, match="finite number >= 0"):
        parse_tolerances(["-1"])


def test_disjoint_intervals_are_reported(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _run(a, "mixit", 0, PSNR, SSIM)
    _run(b, "mixit", 0, PSNR + 10, SSIM)
    res = compare_stores(a, b, tol=["100"])
    c = _cell(res, metric="psnr")
    assert c["ci_overlap"] is False and c["status"] == "ok" and res["exit_status"] == 0


def test_cli_table_json_and_exit_status(stores, tmp_path, capsys):
    a, b = stores
    out = tmp_path / "cmp.json"
    assert cli(["compare", str(a), str(b), "--json", str(out)]) == 1
    text = capsys.readouterr().out
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("table"))
    assert all(h in header for h in ("dataset", "method", "variant", "metric", "A", "B", "B-A", "tol",
                                     "95% CIs overlap", "status"))
    moved = next(line for line in lines if " psnr " in line and "moved" in line)
    assert "11.5" in moved and "12 " in moved and "+0.5" in moved and "(2 seeds)" in moved
    assert any("average" in line and "only A" in line and "--" in line for line in lines)
    assert ("compare: 12 cells: 7 ok, 1 moved beyond the tolerance, 3 only in A, 0 only in B, "
            "1 n/a on one side only -> exit 1") in text
    blob = json.loads(out.read_text())
    assert blob["exit_status"] == 1 and len(blob["cells"]) == 12
    # a store against itself: every cell ok
    assert cli(["compare", str(a), str(a)]) == 0
    # errors: exit 2 with the reason
    assert cli(["compare", str(a), str(tmp_path / "nowhere")]) == 2
    assert "no such results store" in capsys.readouterr().err
    assert cli(["compare", str(a), str(b), "--profile", "q"]) == 2
    assert "no results of profile 'q'" in capsys.readouterr().err


def test_only_changes(stores, capsys):
    a, b = stores
    assert cli(["compare", str(a), str(b), "--only-changes"]) == 1
    text = capsys.readouterr().out
    body = [line for line in text.splitlines()[3:] if line.startswith(("1 ", "9 "))]
    assert len(body) == 5 and all(" ok" not in line for line in body)
    assert "(7 cells within the tolerance not shown)" in text
