"""Golden regression of the ci profile (issue: numbers users can trust, item 1).

* fast: :func:`surfbench.golden.check` on constructed dicts reports a value outside its
  tolerance, a result without a golden file, a golden file without a result, a registered
  method without a golden file and a golden naming an unregistered method;
* slow: the whole ci pipeline (``snakemake tables``) runs in a temporary working directory
  and its metrics are checked against ``tests/golden/ci`` (wall time printed).

``SURFBENCH_GOLDEN_CONFIG`` may point at another profile file (default ``config/ci.yaml``);
``SURFBENCH_GOLDEN_KEEP=DIR`` runs in DIR and keeps it (for ``surfbench golden --update
--results DIR/results``).
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_determinism import tiny_mnist  # noqa: F401  (fixture)

from surfbench import golden as G

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_ROOT = ROOT / "tests" / "golden"


def _entry(method="mixit", dataset="mnist", variant="", protocol="table1", **metrics):
    return {"dataset": dataset, "method": method, "variant": variant, "protocol": protocol,
            "metrics": metrics, "reasons": {}, "provenance": {}}


def _golden(method="mixit", dataset="mnist", variant="", protocol="table1", **metrics):
    return {"format": G.GOLDEN_FORMAT, "dataset": dataset, "method": method, "variant": variant, "protocol": protocol,
            "metrics": {n: {"value": v, "atol": a} for n, (v, a) in metrics.items()}, "provenance": {}}


def test_check_passes_within_tolerance():
    res = {"mnist/mixit": _entry(psnr=10.03, ssim=0.501, lpips=None)}
    gold = {"mnist/mixit": _golden(psnr=(10.0, 0.05), ssim=(0.5, 0.002), lpips=(None, None))}
    assert G.check(res, gold, ["mixit"]) == []


def test_check_reports_value_outside_tolerance():
    res = {"mnist/mixit": _entry(psnr=10.06, ssim=0.5)}
    gold = {"mnist/mixit": _golden(psnr=(10.0, 0.05), ssim=(0.5, 0.002))}
    fails = G.check(res, gold, ["mixit"])
    assert len(fails) == 1 and "mnist/mixit" in fails[0] and "psnr" in fails[0] and "10.06" in fails[0]


def test_check_reports_nan_and_unavailable_metric():
    res = {"mnist/mixit": _entry(psnr=float("nan"), ssim=None)}
    gold = {"mnist/mixit": _golden(psnr=(10.0, 0.05), ssim=(0.5, 0.002))}
    fails = G.check(res, gold, ["mixit"])
    assert len(fails) == 2 and any("psnr" in f for f in fails) and any("ssim" in f and "unavailable" in f for f in fails)


def test_check_reports_result_without_golden():
    res = {"mnist/mixit": _entry(psnr=10.0), "mnist/mixit@alpha=0": _entry(variant="alpha=0", psnr=9.0)}
    gold = {"mnist/mixit": _golden(psnr=(10.0, 0.05))}
    fails = G.check(res, gold, ["mixit"])
    assert len(fails) == 1 and "mnist/mixit@alpha=0" in fails[0] and "without a golden file" in fails[0]


def test_check_reports_registered_method_without_golden():
    res = {"mnist/mixit": _entry(psnr=10.0)}
    gold = {"mnist/mixit": _golden(psnr=(10.0, 0.05))}
    fails = G.check(res, gold, ["mixit", "new_method"])
    assert len(fails) == 1 and "'new_method' is registered but has no golden file" in fails[0]


def test_check_reports_orphan_golden():
    res = {"mnist/mixit": _entry(psnr=10.0)}
    gold = {"mnist/mixit": _golden(psnr=(10.0, 0.05)), "mnist/gone": _golden(method="gone", psnr=(3.0, 0.05))}
    fails = G.check(res, gold, ["mixit"])
    assert any("mnist/gone" in f and "without a result" in f for f in fails)
    assert any("'gone'" in f and "not registered" in f for f in fails)


def test_check_reports_new_metric_and_missing_tolerance():
    res = {"mnist/mixit": _entry(psnr=10.0, ssim=0.5)}
    gold = {"mnist/mixit": _golden(psnr=(10.0, None))}
    fails = G.check(res, gold, ["mixit"])
    assert any("'ssim'" in f and "no golden value" in f for f in fails)
    assert any("'psnr'" in f and "tolerance" in f for f in fails)


def test_update_writes_explicit_tolerances_keeps_edited_ones_and_removes_orphans(tmp_path):
    res = {"mnist/mixit": _entry(psnr=10.0, lpips=None), "cifar10/mixit/table2": _entry(dataset="cifar10", protocol="table2", fid=None)}
    G.update(res, tmp_path)
    g = G.load_goldens(tmp_path)
    assert set(g) == set(res)
    assert g["mnist/mixit"]["metrics"]["psnr"] == {"value": 10.0, "atol": G.DEFAULT_ATOL["psnr"], "reason": ""}
    assert g["mnist/mixit"]["metrics"]["lpips"]["value"] is None
    assert G.check(res, g, ["mixit"]) == []
    # a hand-chosen tolerance survives an update; an orphan golden file is removed
    p = tmp_path / "mnist/mixit.json"
    blob = json.loads(p.read_text())
    blob["metrics"]["psnr"]["atol"] = 0.2
    p.write_text(json.dumps(blob))
    G.update({"mnist/mixit": _entry(psnr=10.1)}, tmp_path)
    g = G.load_goldens(tmp_path)
    assert set(g) == {"mnist/mixit"} and g["mnist/mixit"]["metrics"]["psnr"]["atol"] == 0.2
    assert not (tmp_path / "cifar10").exists()


def test_committed_golden_files_are_well_formed():
    gdir = GOLDEN_ROOT / "ci"
    goldens = G.load_goldens(gdir)
    assert goldens, "no golden files under tests/golden/ci; run the ci profile and `surfbench golden --update`"
    from surfbench.registry import registry

    names = registry().names()
    for key, g in goldens.items():
        assert g["method"] in names, key
        for name, m in g["metrics"].items():
            assert set(m) >= {"value", "atol"}, (key, name)
            if m["value"] is not None:
                assert isinstance(m["atol"], (int, float)) and m["atol"] > 0, (key, name)
    assert {g["method"] for g in goldens.values()} == set(names), "every registered method has a golden file"


# ----------------------------------------------------------------------------- the ci pipeline (slow)
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ci_profile_matches_golden_files(tmp_path):
    cfg = Path(os.environ.get("SURFBENCH_GOLDEN_CONFIG", ROOT / "config" / "ci.yaml")).resolve()
    workdir = Path(os.environ["SURFBENCH_GOLDEN_KEEP"]) if os.environ.get("SURFBENCH_GOLDEN_KEEP") else tmp_path
    workdir.mkdir(parents=True, exist_ok=True)
    snakemake = Path(sys.executable).with_name("snakemake")
    cmd = [str(snakemake), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", "tables", "--configfile", str(cfg)]  # --configfile takes several values: last
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    print(f"ci pipeline wall time: {wall:.0f} s")
    (workdir / "snakemake.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"ci pipeline failed (log: {workdir / 'snakemake.log'}):\n{proc.stderr[-4000:]}"
    if wall > 600:  # a budget, not a correctness property: a loaded machine must not fail the regression
        import warnings

        warnings.warn(f"the ci profile took {wall:.0f} s, over its 10-minute budget on a 2-core machine")
    results = G.extract(workdir / "results", "ci")
    from surfbench.registry import registry

    fails = G.check(results, G.load_goldens(GOLDEN_ROOT / "ci"), registry().names())
    assert not fails, "golden regression failed:\n" + "\n".join(fails)


# ----------------------------------------------------------------------------- short training regression (slow)
#: Methods of the short training regression (teachers first); tiny MNIST, 8 steps, EMA alpha 0.5 so
#: that the EMA phase visibly moves the evaluated weights.  Used by tests/test_fault_sensitivity.py.
TINY_METHODS = (("mixit", None), ("supervised_regression", None), ("self_remixing", "mixit"),
                ("surf_self_remixing", "mixit"), ("surf_remixit", "mixit"))
TINY_PROFILE = "trusttest"


def tiny_training_results(root: Path, data: Path) -> dict:
    from surfbench.evaluate import evaluate
    from surfbench.train import train
    from test_determinism import run_config, tiny_cfg

    cfg = tiny_cfg(steps=8, ema_alpha=0.5)
    res = root / "results" / TINY_PROFILE / "mnist"
    for method, teacher in TINY_METHODS:
        rc = run_config(cfg, method)
        d = res / method / "seed0"
        train(rc, data, d / "model.pt", root / "ckpt" / method, device="cpu", progress=False,
              teacher_path=res / teacher / "seed0" / "model.pt" if teacher else None)
        evaluate(rc, cfg["evaluation"], d / "model.pt", data, "table1", d, device="cpu", cache_dir=root / "cache",
                 progress=False)
    return G.extract(root / "results", TINY_PROFILE)


@pytest.mark.slow
def test_short_training_matches_golden_files(tiny_mnist, tmp_path):
    """Five methods trained 8 steps on tiny MNIST, against tests/golden/trusttest (SURFBENCH_GOLDEN_UPDATE=1 rewrites)."""
    results = tiny_training_results(tmp_path, tiny_mnist)
    gdir = GOLDEN_ROOT / TINY_PROFILE
    if os.environ.get("SURFBENCH_GOLDEN_UPDATE"):
        G.update(results, gdir)
    fails = G.check(results, G.load_goldens(gdir))
    assert not fails, "short training regression failed:\n" + "\n".join(fails)
