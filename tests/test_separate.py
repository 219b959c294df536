"""``surfbench separate``: trained runs applied to the user's own PNG / WAV mixtures."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from surfbench.cli import main as cli_main
from surfbench.config import RunId, load_config, resolve_run
from surfbench.data.store import save_npz_atomic
from surfbench.separate import separate_files
from surfbench.train import save_atomic, train

ROOT = Path(__file__).resolve().parents[1]


def _image_set(tmp: Path) -> Path:
    """A small prepared MNIST-shaped training set (random digits-like images), in the store's format."""
    rng = np.random.default_rng(0)
    images = (rng.random((16, 1, 28, 28)) ** 3 * 255).astype(np.uint8)
    pairs = np.stack([np.arange(0, 16, 2), np.arange(1, 16, 2)], 1).astype(np.int64)
    d = tmp / "data" / "mnist"
    save_npz_atomic(d / "train.npz", images=images, pairs=pairs)
    return d


def _train_run(tmp: Path, data: Path, method: str) -> Path:
    cfg = load_config(ROOT / "config" / "ci.yaml")
    run_cfg = resolve_run(cfg, RunId("mnist", method, 0))
    # sigma_z small: the flow's start point x0 = m/K + P⊥z is then near m/K
    run_cfg["training"].update(steps=2, batch_size=4, checkpoint_every=100, sigma_z=0.05)
    run_dir = tmp / "results" / "ci" / "mnist" / method / "seed0"
    train(run_cfg, data, run_dir / "model.pt", tmp / "ckpt" / method, device="cpu", progress=False)
    # A 2-step model's estimates are far from [0, 1/K] and most output pixels would be clipped. Shrink the
    # output layer so that K·x̂_k stays near the mixture: mixture consistency (Σ_k x̂_k = m) is structural
    # (the P⊥ projection), so it holds for any weights, and the test below checks it through the files.
    blob = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=False)
    for sd in blob["modules"].values():
        for k in sd:
            if ".conv_out." in k:
                sd[k] = sd[k] * 0.05
    save_atomic(blob, run_dir / "model.pt")
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sep")
    data = _image_set(tmp)
    return tmp, {m: _train_run(tmp, data, m) for m in ("mixit", "supervised_flow")}


def _mixture_png(path: Path, seed: int = 1) -> np.ndarray:
    """A mixture image = the average of two images (what surfbench calls a mixture), saved as a PNG."""
    rng = np.random.default_rng(seed)
    a, b = 0.2 + 0.6 * rng.random((2, 28, 28))   # mid-range pixels: few outputs clip
    mix = np.round((a + b) / 2 * 255).astype(np.uint8)
    Image.fromarray(mix, mode="L").save(path)
    return mix


@pytest.mark.parametrize("method", ["mixit", "supervised_flow"])
def test_outputs_average_to_the_mixture(runs, method, tmp_path):
    _, run_dirs = runs
    mix = _mixture_png(tmp_path / "mix.png")
    out = tmp_path / "out"
    written = separate_files(run_dirs[method], [tmp_path / "mix.png"], out, device="cpu")
    assert [p.name for p in written] == ["mix_s1.png", "mix_s2.png", "separation.json"]
    imgs = []
    for p in written[:2]:
        im = Image.open(p)
        assert im.mode == "L" and im.size == (28, 28)
        imgs.append(np.asarray(im, dtype=np.float64))
    imgs = np.stack(imgs)
    # K·x̂_k are written clipped to [0, 1]; where no slot was clipped, mean_k(K·x̂_k) = Σ x̂_k = mixture
    unclipped = ((imgs > 0) & (imgs < 255)).all(0)
    assert unclipped.mean() > 0.5, f"too few unclipped pixels to test ({unclipped.mean():.2f})"
    err = np.abs(imgs.mean(0) - mix)[unclipped]
    assert err.max() <= 1.0 + 1e-9, f"average of the outputs differs from the mixture by {err.max()} / 255"
    meta = json.loads((out / "separation.json").read_text())
    assert meta["method"] == method and meta["n_sources"] == 2
    assert meta["sampler"]["euler_steps"] == 5 and meta["sampler"]["sigma_z"] == 0.05
    assert len(meta["model_sha256"]) == 64
    assert meta["items"][0]["outputs"] == [str(p) for p in written[:2]]


def test_flow_separation_is_reproducible(runs, tmp_path):
    _, run_dirs = runs
    _mixture_png(tmp_path / "a.png", seed=1)
    _mixture_png(tmp_path / "b.png", seed=2)
    o1 = separate_files(run_dirs["supervised_flow"], [tmp_path / "a.png"], tmp_path / "o1", device="cpu")
    o2 = separate_files(run_dirs["supervised_flow"], [tmp_path / "b.png", tmp_path / "a.png"], tmp_path / "o2", device="cpu")
    # the noise of an input depends on its content only, not on its position among the inputs
    assert np.array_equal(np.asarray(Image.open(o1[0])), np.asarray(Image.open(tmp_path / "o2" / "a_s1.png")))
    assert len(o2) == 5


def test_wrong_size_names_file_and_sizes(runs, tmp_path):
    _, run_dirs = runs
    p = tmp_path / "big.png"
    Image.fromarray(np.zeros((32, 30), np.uint8), mode="L").save(p)
    with pytest.raises(ValueError) as e:
        separate_files(run_dirs["mixit"], [p], tmp_path / "out", device="cpu")
    msg = str(e.value)
    assert str(p) in msg and "30x32" in msg and "28x28" in msg
    assert not (tmp_path / "out").exists()   # nothing written on bad input


def test_wrong_channels_and_corrupt_png(runs, tmp_path):
    _, run_dirs = runs
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((28, 28, 3), np.uint8), mode="RGB").save(rgb)
    with pytest.raises(ValueError, match=r"3 channel.*grayscale"):
        separate_files(run_dirs["mixit"], [rgb], tmp_path / "out", device="cpu")
    bad = tmp_path / "corrupt.png"
    _mixture_png(bad)
    bad.write_bytes(bad.read_bytes()[:40])   # truncated
    with pytest.raises(ValueError) as e:
        separate_files(run_dirs["mixit"], [bad], tmp_path / "out", device="cpu")
    assert str(bad) in str(e.value) and "not a readable image" in str(e.value)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        separate_files(run_dirs["mixit"], [tmp_path / "nope.png"], tmp_path / "out", device="cpu")


def test_cli_exit_code_2_on_bad_input(runs, tmp_path, capsys):
    _, run_dirs = runs
    good = tmp_path / "m.png"
    _mixture_png(good)
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    rc = cli_main(["separate", "--run", str(run_dirs["mixit"]), str(good), str(bad), "--out", str(tmp_path / "o"),
                   "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "surfbench separate: error:" in err and str(bad) in err
    rc = cli_main(["separate", "--run", str(tmp_path / "no_run"), str(good), "--out", str(tmp_path / "o")])
    assert rc == 2 and "no_run" in capsys.readouterr().err
    rc = cli_main(["separate", "--run", str(run_dirs["mixit"]), str(good), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert rc == 0 and (tmp_path / "o" / "m_s2.png").exists()


def test_audio_any_length(tmp_path):
    """A speech run separates a WAV longer than its training clips; a stereo / wrong-rate WAV is refused."""
    from surfbench.audio_io import read_audio, write_audio
    from surfbench.registry import registry
    from surfbench.train import MODEL_FORMAT, save_atomic

    cfg = load_config(ROOT / "config" / "ci.yaml")
    run_cfg = resolve_run(cfg, RunId("libri2mix", "mixit", 0))
    torch.manual_seed(0)
    method = registry().get("mixit")(run_cfg, (16000,), 2, "cpu")
    run_dir = tmp_path / "run"
    save_atomic({"format": MODEL_FORMAT, "method": "mixit", "run_config": run_cfg, "data_shape": [16000], "n_sources": 2,
                 "modules": {k: m.state_dict() for k, m in method.modules_to_save().items()}}, run_dir / "model.pt")
    x = (0.1 * np.random.default_rng(0).standard_normal(24000)).astype(np.float32)   # 1.5 s, training clips are 1 s
    write_audio(tmp_path / "long.wav", x, 16000)
    out = separate_files(run_dir, [tmp_path / "long.wav"], tmp_path / "o", device="cpu")
    assert [p.name for p in out] == ["long_s1.wav", "long_s2.wav", "separation.json"]
    s = np.stack([read_audio(p, 16000) for p in out[:2]])
    assert s.shape == (2, 24000)
    np.testing.assert_allclose(s.sum(0), x, atol=1e-5)   # MixIT's K-slot reduction is mixture-consistent
    write_audio(tmp_path / "st.wav", np.stack([x, x]), 16000)
    with pytest.raises(ValueError, match="st.wav.*channels"):
        separate_files(run_dir, [tmp_path / "st.wav"], tmp_path / "o2", device="cpu")
    write_audio(tmp_path / "sr.wav", x, 8000)
    with pytest.raises(ValueError, match="sr.wav.*8000 Hz"):
        separate_files(run_dir, [tmp_path / "sr.wav"], tmp_path / "o2", device="cpu")
