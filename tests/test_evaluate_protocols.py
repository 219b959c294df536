"""Evaluation protocols: an evaluation whose every requested metric lacks its weights separates nothing
and records each reason; one with a computable metric separates every mixture."""
import json

import pytest

import surfbench.evaluate as E
from test_determinism import ROOT, run_config, tiny_cfg

#: the CIFAR-10 stand-in, small: Table 2 runs on it
CIFAR = {"enabled": True, "patches_per_photo": 16, "train_photos": ["astronaut", "rocket"], "test_photos": ["coffee"],
         "photo_short_side": 48, "split": "photos", "n_eval_mixtures": 3, "n_eval_mixtures_table2": 5}


@pytest.fixture(scope="module")
def cfg():
    c = tiny_cfg(steps=2)
    c["datasets"]["cifar10"].update(CIFAR)
    return c


@pytest.fixture(scope="module")
def data(cfg, tmp_path_factory):
    from surfbench.data.store import prepare

    out = tmp_path_factory.mktemp("protocol_data") / "cifar10"
    prepare(cfg, "cifar10", out)
    return out


@pytest.fixture(scope="module")
def trained(cfg, data, tmp_path_factory):
    from surfbench.train import train

    d = tmp_path_factory.mktemp("protocol_run")
    rc = run_config(cfg, "mixit", dataset="cifar10")
    train(rc, data, d / "model.pt", d / "ckpt", device="cpu", progress=False)
    return d, rc


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))


@pytest.fixture
def separations(monkeypatch):
    calls = []
    real = E.separate_all

    def counting(method, mixtures, *a, **k):
        calls.append(int(mixtures.shape[0]))
        return real(method, mixtures, *a, **k)

    monkeypatch.setattr(E, "separate_all", counting)
    return calls


def _eval(trained, data, out, protocol):
    d, rc = trained
    ecfg = dict(tiny_cfg()["evaluation"])
    ecfg["image_metrics"] = ["psnr", "ssim", "lpips", "fid", "is"]
    E.evaluate(rc, ecfg, d / "model.pt", data, protocol, out, device="cpu", cache_dir=out / "cache", progress=False)
    return json.loads((out / "metrics.json").read_text())


def test_table2_without_inception_weights_separates_nothing(trained, data, tmp_path, no_weights, separations):
    res = _eval(trained, data, tmp_path / "t2", "table2")
    assert separations == [], "Table 2 offline has no computable metric, yet mixtures were separated"
    assert {"fid", "is"} <= set(res["metrics"])
    for name in ("fid", "is"):
        m = res["metrics"][name]
        assert m["available"] is False and m["mean"] is None
        assert "inception" in m["reason"].lower() and "surfbench weights" in m["reason"]
    assert res["n_mixtures"] == CIFAR["n_eval_mixtures_table2"]


def test_table1_without_weights_still_scores_psnr(trained, data, tmp_path, no_weights, separations):
    res = _eval(trained, data, tmp_path / "t1", "table1")
    n = res["n_mixtures"]
    assert sum(separations) == n > 0
    assert res["metrics"]["psnr"]["available"] is True and res["metrics"]["psnr"]["n"] == 2 * n
    assert res["metrics"]["lpips"]["available"] is False and "surfbench weights" in res["metrics"]["lpips"]["reason"]


def test_an_unscorable_item_is_recorded_counted_and_footnoted(tmp_path, monkeypatch):
    """One silent estimate (PESQ undefined) does not abort the speech evaluation: its PESQ is NaN in
    items.csv, counted and explained in metrics.json, and the table cell says it rests on fewer items."""
    import pandas as pd

    import surfbench.evaluate as EV
    from surfbench.config import RunId, load_config, resolve_run
    from surfbench.data.store import prepare
    from surfbench.registry import registry
    from surfbench.report.tables import render_markdown
    from surfbench.results import aggregate_seeds, collect
    from surfbench.train import MODEL_FORMAT, save_atomic

    cfg = load_config(ROOT / "config" / "ci.yaml", overrides={
        "datasets": {"mnist": {"enabled": False}, "cifar10": {"enabled": False},
                     "libri2mix": {"source": "espeak", "n_train_mixtures": 8, "n_eval_mixtures": 2, "clip_seconds": 1.0}},
        "evaluation": {"speech_metrics": ["si_sdr", "pesq"]}, "tables": ["4"]})
    data = tmp_path / "data" / "libri2mix"
    prepare(cfg, "libri2mix", data)
    rc = resolve_run(cfg, RunId("libri2mix", "mixit", 0))
    method = registry().get("mixit")(rc, (16000,), 2, "cpu")
    save_atomic({"format": MODEL_FORMAT, "method": "mixit", "run_config": rc, "data_shape": [16000], "n_sources": 2,
                 "modules": {k: m.state_dict() for k, m in method.modules_to_save().items()}}, tmp_path / "model.pt")
    real = EV.separate_all

    def one_silent(*a, **kw):
        est = real(*a, **kw)
        est[1, 0] = 0  # mixture 1, slot 0: all zeros
        return est

    monkeypatch.setattr(EV, "separate_all", one_silent)
    out = tmp_path / "results" / "ci" / "libri2mix" / "mixit" / "seed0"
    with pytest.warns(RuntimeWarning, match="PESQ failed for 1 item"):
        EV.evaluate(rc, cfg["evaluation"], tmp_path / "model.pt", data, "table4", out, device="cpu", progress=False)
    m = json.loads((out / "metrics.json").read_text())["metrics"]
    assert m["pesq"]["n"] == 3 and m["pesq"]["n_missing"] == 1 and m["si_sdr"]["n_missing"] == 0
    assert m["pesq"]["reason"].startswith("1 of 4 items could not be scored (NaN in items.csv): item ")
    assert "the estimate is all zeros" in m["pesq"]["reason"]
    items = pd.read_csv(out / "items.csv")
    assert items["pesq"].isna().sum() == 1 and items["si_sdr"].notna().all()
    agg = aggregate_seeds(collect(tmp_path / "results", "ci")).assign(table="4")
    pesq = agg[agg.metric == "pesq"].iloc[0]
    assert (pesq["n_items"], pesq["n_missing"]) == (3, 1)
    md = render_markdown("4", agg, None, "ci")
    assert "<sup>a</sup> computed on 3 of 4 items: 1 of 4 items could not be scored" in md
    assert md.count("<sup>a</sup>") == 2  # the PESQ cell and its note; SI-SDR has none


def test_the_image_pairing_setting_reaches_the_metrics_and_the_tables_notes(cfg, tmp_path):
    from surfbench.metrics.image import ImageEvalOptions
    from surfbench.report.build import profile_notes

    for pairing in ("mse", "psnr"):
        ecfg = {**cfg["evaluation"], "image_pairing": pairing}
        options = E._image_options("table1", ecfg, tmp_path, "set", "cpu")
        assert ImageEvalOptions.from_any(options).pairing == pairing
        note = profile_notes({**cfg, "evaluation": ecfg})[-1]
        assert ("best mean PSNR" in note) == (pairing == "psnr") and note.startswith("Image metrics pair")


def test_results_name_the_training_set(trained, data, tmp_path, no_weights):
    """metrics.json records the content hash of the set the model trained on (Table 3: AudioSet, which the
    evaluation sets do not identify), equal to the prepared data's manifest and to an independent re-hash."""
    import numpy as np

    from surfbench.data.store import array_hash

    res = _eval(trained, data, tmp_path / "t1h", "table1")
    manifest = json.loads((data / "manifest.json").read_text())
    with np.load(data / "train.npz") as z:
        rehash = array_hash({k: z[k] for k in z.files})
    assert res["train_hash"] == manifest["train_hash"] == rehash
    assert res["train_hash"] != res["dataset_hash"]
