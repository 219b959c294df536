"""Learning curves (issue 15, item 1): training.curve, curve.csv, report/<profile>/curves/<dataset>.png.

* the curve changes nothing in training: bit-identical weights with it on and off;
* a curve value equals an independent evaluation of the checkpoint of that step on the same items with
  the same (curve) noise;
* a stopped and resumed run writes the curve of an uninterrupted one (times aside), without duplicates;
* the plot has one line per method in both panels (its axes' data, not pixels).
"""
import numpy as np
import pandas as pd
import pytest
import torch

from test_determinism import run_config, tiny_cfg, tiny_mnist  # noqa: F401  (fixture)

CURVE = {"every": 2, "n_items": 3}


@pytest.fixture(scope="module")
def teacher(tiny_mnist, tmp_path_factory):
    from surfbench.train import train

    d = tmp_path_factory.mktemp("curve_teacher")
    return train(run_config(tiny_cfg(), "mixit"), tiny_mnist, d / "model.pt", d / "ckpt", device="cpu", progress=False)


def _rc(method, steps=8, checkpoint_every=4, curve=None, dropout=0.0):
    cfg = tiny_cfg(steps=steps, checkpoint_every=checkpoint_every, curve=curve or {"every": 0})
    if dropout:
        # dropout draws from torch's global RNG in train mode: a curve that moved that state, or left a module
        # in eval mode, would change the weights
        for role in ("flow", "score"):
            cfg["domains"]["image"]["models"][role]["dropout"] = dropout
    return run_config(cfg, method), cfg


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["modules"]


def _equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].keys() == b[k].keys()
        for n in a[k]:
            assert torch.equal(a[k][n], b[k][n]), f"{k}.{n} differs"


@pytest.mark.parametrize("method", ["surf_self_remixing", "basis"])
def test_curve_on_and_off_give_bit_identical_weights(tiny_mnist, teacher, tmp_path, method):
    from surfbench.train import train

    t = teacher if method == "surf_self_remixing" else None
    off, _ = _rc(method, dropout=0.2)
    on, cfg = _rc(method, curve=CURVE, dropout=0.2)
    assert on["models"]["flow" if method != "basis" else "score"]["dropout"] == 0.2
    assert on["training"]["curve"]["every"] == 2 and off["training"]["curve"]["every"] == 0
    from surfbench.config import config_hash

    assert config_hash(on) == config_hash(off)  # not part of the hash: it changes nothing
    a = train(off, tiny_mnist, tmp_path / "off" / "model.pt", tmp_path / "off" / "ckpt", t, device="cpu",
              progress=False, evaluation=cfg["evaluation"])
    b = train(on, tiny_mnist, tmp_path / "on" / "model.pt", tmp_path / "on" / "ckpt", t, device="cpu",
              progress=False, evaluation=cfg["evaluation"])
    _equal(_weights(a), _weights(b))
    assert not (tmp_path / "off" / "curve.csv").exists()
    df = pd.read_csv(tmp_path / "on" / "curve.csv")
    assert df["step"].tolist() == [2, 4, 6, 8]
    assert (df["metric"] == "psnr").all() and (df["n_items"] == 3).all() and (df["method"] == method).all()
    assert np.isfinite(df["value"]).all()
    assert (np.diff(df["wall_time_s"]) > 0).all() and (np.diff(df["curve_time_s"]) > 0).all()


def test_curve_value_equals_an_independent_evaluation_of_the_checkpoint(tiny_mnist, teacher, tmp_path):
    """The value at step 4 (of 8) against the checkpoint written at step 4, evaluated here by hand."""
    from surfbench.data.store import load_split
    from surfbench.metrics.image import evaluate_images
    from surfbench.registry import registry
    from surfbench.seeding import ItemNoise, derive_seed
    from surfbench.train import load_trained, output_slots, train

    rc, cfg = _rc("surf_self_remixing", curve=CURVE)
    ckpt = tmp_path / "ckpt"
    train(rc, tiny_mnist, tmp_path / "model.pt", ckpt, teacher, device="cpu", progress=False,
          stop_after=4, evaluation=cfg["evaluation"])
    curve = pd.read_csv(tmp_path / "curve.csv")
    assert curve["step"].tolist() == [2, 4]

    trainset = load_split(tiny_mnist, "train")
    cls = registry().get("surf_self_remixing")
    torch.manual_seed(123)  # a different global state: the value must not depend on it
    m = cls(rc, trainset.shape, output_slots(rc, trainset.n_sources, cls.training_data), "cpu")
    m.set_teacher(load_trained(teacher, "cpu"))
    st = torch.load(ckpt / "last.pt", map_location="cpu", weights_only=False)
    assert st["step"] == 4
    for k, sd in st["modules"].items():
        m.modules_to_save()[k].load_state_dict(sd)
    m.eval_modules()

    ev = load_split(tiny_mnist, "eval").all()[:3]
    ids = [0, 1, 2]
    with torch.no_grad():
        est = m.separate_for_scoring(ev.sum(1), ItemNoise(derive_seed(0, "curve"), ids), ev, cfg["evaluation"])
    per_item, _, _ = evaluate_images(est, ev, 2, {"metrics": ["psnr"], "pairing": cfg["evaluation"]["image_pairing"]})
    assert curve.loc[curve["step"] == 4, "value"].item() == pytest.approx(float(np.mean(per_item["psnr"])), abs=1e-9)
    # and another noise (the evaluation's) gives another value: the curve really uses its own streams
    with torch.no_grad():
        est2 = m.separate_for_scoring(ev.sum(1), ItemNoise(derive_seed(0, "eval"), ids), ev, cfg["evaluation"])
    other = np.mean(evaluate_images(est2, ev, 2, {"metrics": ["psnr"]})[0]["psnr"])
    assert other != pytest.approx(curve.loc[curve["step"] == 4, "value"].item(), abs=1e-9)


def test_stopped_and_resumed_run_writes_the_uninterrupted_curve(tiny_mnist, teacher, tmp_path):
    from surfbench.train import train

    rc, cfg = _rc("surf_self_remixing", steps=10, checkpoint_every=4, curve=CURVE)
    ref = tmp_path / "ref"
    train(rc, tiny_mnist, ref / "model.pt", ref / "ckpt", teacher, device="cpu", progress=False,
          evaluation=cfg["evaluation"])
    run = tmp_path / "run"
    # stopped at step 6: checkpoint at 4, curve rows 2, 4, 6 on disk (6 is lost with the process)
    assert train(rc, tiny_mnist, run / "model.pt", run / "ckpt", teacher, device="cpu", progress=False,
                 stop_after=6, evaluation=cfg["evaluation"]) is None
    assert pd.read_csv(run / "curve.csv")["step"].tolist() == [2, 4, 6]
    train(rc, tiny_mnist, run / "model.pt", run / "ckpt", teacher, device="cpu", progress=False,
          evaluation=cfg["evaluation"])
    a, b = pd.read_csv(ref / "curve.csv"), pd.read_csv(run / "curve.csv")
    assert b["step"].tolist() == [2, 4, 6, 8, 10] and not b["step"].duplicated().any()
    same = ["step", "metric", "value", "n_items", "method", "seed"]
    pd.testing.assert_frame_equal(a[same], b[same])
    assert (np.diff(b["wall_time_s"]) > 0).all()  # the resumed rows continue the checkpoint's training time
    _equal(_weights(ref / "model.pt"), _weights(run / "model.pt"))


def test_audio_curve_uses_si_sdr():
    from surfbench.curve import curve_settings

    assert curve_settings({"training": {"curve": {"every": 5}}}, "audio")["metric"] == "si_sdr"
    assert curve_settings({"training": {"curve": {"every": 5}}}, "image")["metric"] == "psnr"
    with pytest.raises(ValueError, match="does not suit"):
        curve_settings({"training": {"curve": {"every": 5, "metric": "psnr"}}}, "audio")


def test_plot_has_one_line_per_method_in_both_panels(tmp_path):
    from surfbench.report.curves import curves_figure, plot_curves

    runs = []
    for i, method in enumerate(["surf_remixit", "mixit", "supervised_flow"]):
        d = tmp_path / "mnist" / method / "seed0"
        d.mkdir(parents=True)
        steps = [100, 200, 300]
        pd.DataFrame({"step": steps, "wall_time_s": [1.0 * s * (i + 1) for s in steps], "curve_time_s": [0.1, 0.2, 0.3],
                      "metric": "psnr", "value": [10 + i, 11 + i, 12 + i], "n_items": 8, "method": method,
                      "variant": "", "seed": 0}).to_csv(d / "curve.csv", index=False)
        runs.append(d)
    nocurve = tmp_path / "mnist" / "average" / "seed0"
    nocurve.mkdir(parents=True)
    fig = curves_figure("mnist", runs + [nocurve])
    ax_step, ax_time = fig.axes[:2]
    assert len(ax_step.lines) == len(ax_time.lines) == 3
    by_label = {ln.get_label(): ln for ln in ax_step.lines}
    assert set(by_label) == {"surf_remixit", "mixit", "supervised_flow"}
    assert list(by_label["mixit"].get_xdata()) == [100, 200, 300]
    assert list(by_label["mixit"].get_ydata()) == [11, 12, 13]
    t = {ln.get_label(): ln for ln in ax_time.lines}
    assert list(t["surf_remixit"].get_xdata()) == [100.0, 200.0, 300.0]
    assert "PSNR" in ax_step.get_ylabel() and "step" in ax_step.get_xlabel() and "wall time" in ax_time.get_xlabel()
    assert any("average" in t.get_text() for t in fig.texts)
    out = plot_curves("mnist", runs + [nocurve], tmp_path / "curves" / "mnist.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
