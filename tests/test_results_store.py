"""The results store: summaries of per-item values, atomic files, loading and seed aggregation."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import surfbench.results as results_mod
from surfbench.results import SCHEMA_VERSION, aggregate_seeds, collect, load_metrics, summarize, write_run_results


# ----------------------------------------------------------------------------- summarize
def test_summarize_mean_and_sem_by_hand():
    v = [1.0, 2.0, 3.0, 6.0]
    s = summarize(v, higher_is_better=True)
    # mean 3; deviations -2,-1,0,3 -> sum of squares 14, var 14/3; sem = sqrt(14/3)/2
    assert s["mean"] == pytest.approx(3.0)
    assert s["sem"] == pytest.approx(math.sqrt(14 / 3) / 2)
    assert s["n"] == 4 and s["higher_is_better"] is True and s["kind"] == "item" and s["available"] is True


def test_summarize_against_numpy_and_scipy():
    v = np.random.default_rng(0).normal(3.0, 2.0, 257)
    s = summarize(v, higher_is_better=False, n_boot=2000)
    assert s["mean"] == pytest.approx(v.mean(), rel=1e-12)
    assert s["sem"] == pytest.approx(stats.sem(v), rel=1e-12)
    lo, hi = s["ci95"]
    assert lo < s["mean"] < hi
    # the percentile bootstrap of a mean of 257 normal values is close to the normal interval
    assert (hi - lo) == pytest.approx(2 * 1.96 * stats.sem(v), rel=0.15)
    assert s["higher_is_better"] is False


def test_bootstrap_interval_shrinks_with_n():
    rng = np.random.default_rng(1)
    widths = []
    for n in (10, 100, 1000):
        s = summarize(rng.exponential(1.0, n), True, n_boot=1000)
        assert s["ci95"][0] <= s["mean"] <= s["ci95"][1]
        widths.append(s["ci95"][1] - s["ci95"][0])
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] > 5   # ~ sqrt(100) = 10


def test_bootstrap_is_reproducible_and_seeded():
    v = np.random.default_rng(2).normal(size=50)
    assert summarize(v, True, seed=3) == summarize(v, True, seed=3)
    assert summarize(v, True, seed=3)["ci95"] != summarize(v, True, seed=4)["ci95"]


def test_summarize_one_value_and_constant_values():
    s = summarize([2.5], True)
    assert s["mean"] == 2.5 and s["sem"] == 0.0 and s["ci95"] == [2.5, 2.5] and s["n"] == 1
    c = summarize([4.0] * 10, True)
    assert c["sem"] == 0.0 and c["ci95"] == [4.0, 4.0]


@pytest.mark.parametrize("bad", [[1.0, float("nan")], [float("inf"), 2.0], [1.0, -np.inf, np.nan]])
def test_summarize_refuses_non_finite_values(bad):
    n_bad = int((~np.isfinite(np.asarray(bad))).sum())
    with pytest.raises(ValueError, match=f"{n_bad} non-finite"):
        summarize(bad, True)


def test_summarize_refuses_no_values():
    with pytest.raises(ValueError, match="no values"):
        summarize([], True)


# ----------------------------------------------------------------------------- writing and reading
HEADER = {"profile": "unit", "dataset": "mnist", "method": "mixit", "variant": "", "seed": 0, "protocol": "table1",
          "config_hash": "abc", "dataset_hash": "def", "model_hash": "ghi", "n_items": 3, "runtime_s": 1.5,
          "method_info": {"display_name": "MixIT", "supervised": False, "generative": False, "citation": "x"}}


def _metrics(vals=(1.0, 2.0, 4.0)):
    return {"psnr": summarize(list(vals), True), "lpips": summarize([0.1, 0.2, 0.4], False)}


def test_write_run_results_writes_items_then_metrics_atomically(tmp_path, monkeypatch):
    order = []
    real = results_mod._atomic_write_text

    def spy(path, text):
        order.append(path.name)
        real(path, text)
        assert not list(path.parent.glob("*.tmp"))   # nothing half-written is left after each file

    monkeypatch.setattr(results_mod, "_atomic_write_text", spy)
    items = pd.DataFrame({"item": [0, 1, 2], "psnr": [1.0, 2.0, 4.0], "lpips": [0.1, 0.2, 0.4]})
    out = tmp_path / "run"
    path = write_run_results(out, header=HEADER, items=items, metrics=_metrics())
    assert order == ["items.csv", "metrics.json"]
    assert path == out / "metrics.json"
    assert sorted(p.name for p in out.iterdir()) == ["items.csv", "metrics.json"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "items.csv"), items)
    blob = json.loads(path.read_text())
    assert blob["schema_version"] == SCHEMA_VERSION == 2
    assert blob["git_commit"] and blob["surfbench_version"]
    for k, v in HEADER.items():
        assert blob[k] == v
    assert blob["metrics"]["psnr"]["mean"] == pytest.approx(7 / 3)


def test_a_failed_metrics_write_leaves_no_metrics_file(tmp_path):
    items = pd.DataFrame({"item": [0], "psnr": [1.0]})
    with pytest.raises(TypeError):
        write_run_results(tmp_path, header=HEADER, items=items, metrics={"psnr": {"mean": object()}})
    assert not (tmp_path / "metrics.json").exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_load_metrics_versions(tmp_path):
    p = tmp_path / "metrics.json"
    p.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(ValueError, match="newer than this surfbench"):
        load_metrics(p)
    p.write_text(json.dumps({"metrics": {}}))
    with pytest.raises(ValueError, match="no schema_version"):
        load_metrics(p)
    p.write_text('{"schema_version": 1, "metr')
    with pytest.raises(ValueError, match="not valid JSON") as e:
        load_metrics(p)
    assert str(p) in str(e.value)


def test_collect_reads_every_run(tmp_path):
    items = pd.DataFrame({"item": [0, 1, 2]})
    for seed, vals in ((0, (1.0, 2.0, 4.0)), (1, (2.0, 2.0, 2.0))):
        write_run_results(tmp_path / "unit" / "mnist" / "mixit" / f"seed{seed}", header={**HEADER, "seed": seed},
                          items=items, metrics=_metrics(vals))
    write_run_results(tmp_path / "other" / "mnist" / "mixit" / "seed0", header={**HEADER, "profile": "other"},
                      items=items, metrics=_metrics())
    df = collect(tmp_path, "unit")
    assert len(df) == 4   # 2 runs x 2 metrics; the other profile is not read
    psnr = df[df["metric"] == "psnr"].sort_values("seed")
    assert psnr["mean"].tolist() == pytest.approx([7 / 3, 2.0])
    assert set(df["display_name"]) == {"MixIT"} and set(df["variant"]) == {""}
    assert (df[df["metric"] == "lpips"]["higher_is_better"] == False).all()  # noqa: E712


# ----------------------------------------------------------------------------- seeds
def _frame(rows):
    base = {"protocol": "table1", "dataset": "mnist", "method": "mixit", "variant": "", "metric": "psnr",
            "ci_low": np.nan, "ci_high": np.nan, "spread": None, "higher_is_better": True, "available": True,
            "reason": "", "display_name": "MixIT", "supervised": False, "generative": False, "path": "x"}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_aggregate_three_seeds_t_interval_by_hand():
    df = _frame([{"seed": 0, "mean": 1.0}, {"seed": 1, "mean": 2.0}, {"seed": 2, "mean": 4.0}])
    out = aggregate_seeds(df)
    assert len(out) == 1
    r = out.iloc[0]
    # mean 7/3; sample sd sqrt(7/3); half-width t_{0.975, 2} * sd / sqrt(3)
    half = stats.t.ppf(0.975, 2) * math.sqrt(7 / 3) / math.sqrt(3)
    assert half == pytest.approx(3.7946, abs=1e-3)
    assert r["mean"] == pytest.approx(7 / 3)
    assert r["ci_low"] == pytest.approx(7 / 3 - half) and r["ci_high"] == pytest.approx(7 / 3 + half)
    assert r["n_seeds"] == 3 and bool(r["available"]) is True and bool(r["higher_is_better"]) is True


def test_aggregate_one_seed_keeps_its_bootstrap_interval():
    df = _frame([{"seed": 0, "mean": 5.0, "ci_low": 4.0, "ci_high": 6.5, "spread": 0.3}])
    r = aggregate_seeds(df).iloc[0]
    assert (r["mean"], r["ci_low"], r["ci_high"], r["spread"], r["n_seeds"]) == (5.0, 4.0, 6.5, 0.3, 1)


def test_aggregate_skips_unavailable_seeds_and_groups_by_key():
    df = _frame([
        {"seed": 0, "mean": 1.0}, {"seed": 1, "mean": 3.0},
        {"seed": 2, "mean": np.nan, "available": False, "reason": "model missing"},
        {"seed": 0, "mean": 10.0, "variant": "alpha=0.9"},
        {"seed": 0, "mean": np.nan, "metric": "fid", "available": False, "reason": "no weights"},
        {"seed": 1, "mean": np.nan, "metric": "fid", "available": False, "reason": "no weights"},
    ])
    out = aggregate_seeds(df).set_index(["variant", "metric"])
    main = out.loc[("", "psnr")]
    half = stats.t.ppf(0.975, 1) * np.std([1.0, 3.0], ddof=1) / math.sqrt(2)
    assert main["n_seeds"] == 2 and main["mean"] == pytest.approx(2.0)
    assert main["ci_high"] - main["mean"] == pytest.approx(half)
    assert out.loc[("alpha=0.9", "psnr")]["mean"] == 10.0
    fid = out.loc[("", "fid")]
    assert bool(fid["available"]) is False and math.isnan(fid["mean"]) and fid["reason"] == "no weights"
    assert fid["n_seeds"] == 0


def test_aggregate_of_nothing_is_empty():
    assert aggregate_seeds(pd.DataFrame()).empty
