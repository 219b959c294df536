"""Results files carry a schema version; the loader reads every older version (historic fixtures)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from surfbench import results as R
from surfbench.golden import extract

FIX = Path(__file__).parent / "fixtures"
V1 = FIX / "results_v1"
V2 = FIX / "results_v2"


def test_there_is_a_fixture_for_every_schema_version():
    for v in range(1, R.SCHEMA_VERSION + 1):
        d = FIX / f"results_v{v}"
        assert d.is_dir() and list(d.glob("**/metrics.json")), (
            f"no historic fixtures for results schema {v}: add tests/fixtures/results_v{v}/ with files written by that version")


@pytest.mark.parametrize("path", sorted(str(p.relative_to(V1)) for p in V1.glob("**/metrics.json")))
def test_load_metrics_reads_v1(path):
    blob = R.load_metrics(V1 / path)
    assert blob["schema_version"] == 1
    for k in ("dataset", "method", "seed", "protocol", "config_hash", "dataset_hash", "model_hash", "metrics"):
        assert k in blob
    items = pd.read_csv(V1 / Path(path).parent / "items.csv")
    assert list(items.columns[:2]) == ["mixture", "slot"]
    for name, m in blob["metrics"].items():
        assert {"mean", "available", "higher_is_better", "kind"} <= set(m)
        if m["available"] and m["kind"] == "item":
            assert np.isclose(items[name].mean(), m["mean"], rtol=0, atol=1e-12)
            assert m["n"] == len(items)


def test_collect_reads_v1():
    df = R.collect(V1, "ci")
    assert set(df["protocol"]) == {"table1", "table2"}
    assert set(df["dataset"]) == {"mnist", "cifar10"}
    psnr = df[(df.dataset == "mnist") & (df.metric == "psnr")]
    assert len(psnr) == 1 and psnr["available"].item() and np.isfinite(psnr["mean"].item())
    agg = R.aggregate_seeds(df)
    assert len(agg) == len(df)  # one seed each


def test_golden_extract_reads_v1():
    out = extract(V1, "ci")
    assert set(out) == {"mnist/mixit", "cifar10/mixit/table2"}
    assert out["mnist/mixit"]["metrics"]["psnr"] is not None


def test_v1_loads_without_environments_and_v2_with_them():
    v1 = R.load_metrics(V1 / "ci/mnist/mixit/seed0/metrics.json")
    assert v1["environment"] is None and v1["training_environments"] is None
    v2 = R.load_metrics(V2 / "ci/mnist/mixit/seed0/metrics.json")
    assert v2["schema_version"] == 2
    env = v2["environment"]
    assert env["cpu_kernels"]["setting"] == "avx2" and env["cpu_kernels"]["variables"]["MKL_CBWR"] == "COMPATIBLE"
    assert env["libraries"]["torch"] and env["threads"]["torch"] == 1 and env["cpu"]["vendor"]
    assert len(v2["training_environments"]) == 1
    # one environment per seed; an unrecorded one (v1) counts as another
    df = pd.concat([R.collect(V2, "ci"), R.collect(V1, "ci").assign(seed=1)])
    psnr = R.aggregate_seeds(df[(df.dataset == "mnist") & (df.metric == "psnr")])
    assert psnr["n_seeds"].item() == 2 and psnr["n_environments"].item() == 2
    agg = R.aggregate_seeds(R.collect(V2, "ci"))
    assert agg[agg["available"]]["n_environments"].eq(1).all()


def test_current_writer_round_trip(tmp_path):
    items = pd.DataFrame({"mixture": [0, 0], "slot": [0, 1], "psnr": [10.0, 12.0]})
    metrics = {"psnr": R.summarize(items["psnr"], True, 10)}
    p = R.write_run_results(tmp_path, header={"dataset": "mnist", "method": "m", "seed": 0, "protocol": "table1"},
                            items=items, metrics=metrics)
    blob = R.load_metrics(p)
    assert blob["schema_version"] == R.SCHEMA_VERSION
    assert blob["metrics"]["psnr"]["mean"] == 11.0


def _copy_with(tmp_path, **changes):
    src = V1 / "ci/mnist/mixit/seed0"
    dst = tmp_path / "ci/mnist/mixit/seed0"
    shutil.copytree(src, dst)
    blob = json.loads((dst / "metrics.json").read_text())
    for k, v in changes.items():
        if v is None:
            blob.pop(k)
        else:
            blob[k] = v
    (dst / "metrics.json").write_text(json.dumps(blob))
    return dst / "metrics.json"


def test_newer_schema_is_refused_with_a_clear_message(tmp_path):
    p = _copy_with(tmp_path, schema_version=R.SCHEMA_VERSION + 1)
    with pytest.raises(ValueError) as e:
        R.load_metrics(p)
    msg = str(e.value)
    assert str(p) in msg and f"schema_version {R.SCHEMA_VERSION + 1}" in msg and "upgrade surfbench" in msg
    with pytest.raises(ValueError, match="newer"):
        R.collect(tmp_path, "ci")


def test_missing_schema_version_and_bad_json_are_refused(tmp_path):
    p = _copy_with(tmp_path, schema_version=None)
    with pytest.raises(ValueError, match="no schema_version"):
        R.load_metrics(p)
    p.write_text('{"schema_version": 1, "metr')
    with pytest.raises(ValueError, match="not valid JSON") as e:
        R.load_metrics(p)
    assert str(p) in str(e.value)
