"""Evaluation protocols: an evaluation whose every requested metric lacks its weights separates nothing
and records each reason; one with a computable metric separates every mixture."""
import json

import pytest

import surfbench.evaluate as E
from test_determinism import run_config, tiny_cfg

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
