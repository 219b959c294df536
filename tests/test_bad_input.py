"""Bad input (issue item 5): each case gives a one-paragraph error naming the file, key or value and
what to do, a non-zero exit, and leaves nothing partial in the results folder.  One test per case,
through the real entry points (``surfbench`` CLI, ``python -m surfbench.evaluate``, ``load_config``,
``read_audio``, ``load_split``, ``prepare``)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from surfbench.audio_io import BadInputError, read_audio
from surfbench.cli import main as cli
from test_determinism import run_config, tiny_cfg, tiny_mnist  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]


def _one_paragraph(err: str) -> str:
    """The error text; asserts it is one paragraph (no traceback, no blank line)."""
    err = err.strip()
    assert err, "no error message"
    assert "Traceback" not in err, f"a traceback instead of a one-paragraph error:\n{err}"
    assert "\n\n" not in err
    return err


def _nothing_in(d: Path):
    left = [p for p in Path(d).rglob("*") if p.is_file()] if Path(d).exists() else []
    assert not left, f"partial results left behind: {left}"


@pytest.fixture(scope="module")
def trained(tiny_mnist, tmp_path_factory):
    """A trained tiny MNIST mixit run laid out as results/<profile>/mnist/mixit/seed0 (model.pt + config.yaml)."""
    from surfbench.train import train

    d = tmp_path_factory.mktemp("bad_input_run") / "mnist" / "mixit" / "seed0"
    rc = run_config(tiny_cfg(steps=2), "mixit")
    train(rc, tiny_mnist, d / "model.pt", d.parent / "ckpt", device="cpu", progress=False)
    (d / "config.yaml").write_text(yaml.safe_dump(rc))
    return d


def _evaluate(trained, data, out, run_cfg=None, capsys=None):
    """``python -m surfbench.evaluate`` in-process; returns (exit code, stderr)."""
    from surfbench import evaluate as E

    rc_path = trained / "config.yaml"
    if run_cfg is not None:
        rc_path = out.parent / "config_override.yaml"
        rc_path.parent.mkdir(parents=True, exist_ok=True)
        rc_path.write_text(yaml.safe_dump(run_cfg))
    argv = ["--run-config", str(rc_path), "--eval-config-json", json.dumps(tiny_cfg()["evaluation"]),
            "--model", str(trained / "model.pt"), "--data", str(data), "--protocol", "table1",
            "--out-dir", str(out), "--cache-dir", str(out.parent / "cache"), "--device", "cpu", "--no-progress"]
    try:
        code = E.main(argv)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def _data_copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.is_file():
            (dst / p.name).write_bytes(p.read_bytes())
    return dst


# ----------------------------------------------------------------------------- images
def _png(path, size=(28, 28)):
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, size[::-1], dtype=np.uint8), "L").save(path)
    return path


def _separate(trained, inp, out, capsys):
    code = cli(["separate", "--run", str(trained), str(inp), "--out", str(out), "--device", "cpu"])
    return code, capsys.readouterr().err


def test_corrupt_image_file(trained, tmp_path, capsys):
    bad = tmp_path / "mix.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    code, err = _separate(trained, bad, tmp_path / "out", capsys)
    err = _one_paragraph(err)
    assert code != 0 and str(bad) in err and "not a readable image" in err
    _nothing_in(tmp_path / "out")


def test_empty_image_file(trained, tmp_path, capsys):
    bad = tmp_path / "empty.png"
    bad.write_bytes(b"")
    code, err = _separate(trained, bad, tmp_path / "out", capsys)
    err = _one_paragraph(err)
    assert code != 0 and str(bad) in err
    _nothing_in(tmp_path / "out")


def test_truncated_image_file(trained, tmp_path, capsys):
    good = _png(tmp_path / "good.png")
    bad = tmp_path / "trunc.png"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    code, err = _separate(trained, bad, tmp_path / "out", capsys)
    err = _one_paragraph(err)
    assert code != 0 and str(bad) in err and "truncated" in err
    _nothing_in(tmp_path / "out")


def test_corrupt_prepared_image_set(trained, tiny_mnist, tmp_path, capsys):
    data = _data_copy(tiny_mnist, tmp_path / "data")
    (data / "eval.npz").write_bytes(b"PK\x03\x04" + os.urandom(300))
    code, err = _evaluate(trained, data, tmp_path / "res" / "run", capsys=capsys)
    err = _one_paragraph(err)
    assert code != 0 and str(data / "eval.npz") in err and "snakemake data" in err
    _nothing_in(tmp_path / "res")


def test_empty_prepared_image_set(trained, tiny_mnist, tmp_path, capsys):
    data = _data_copy(tiny_mnist, tmp_path / "data")
    (data / "eval.npz").write_bytes(b"")
    code, err = _evaluate(trained, data, tmp_path / "res" / "run", capsys=capsys)
    err = _one_paragraph(err)
    assert code != 0 and str(data / "eval.npz") in err
    _nothing_in(tmp_path / "res")


def test_truncated_prepared_image_set(trained, tiny_mnist, tmp_path, capsys):
    data = _data_copy(tiny_mnist, tmp_path / "data")
    blob = (data / "eval.npz").read_bytes()
    (data / "eval.npz").write_bytes(blob[: len(blob) // 2])
    code, err = _evaluate(trained, data, tmp_path / "res" / "run", capsys=capsys)
    err = _one_paragraph(err)
    assert code != 0 and str(data / "eval.npz") in err and "truncated" in err
    _nothing_in(tmp_path / "res")


# ----------------------------------------------------------------------------- audio
def _wav(path, x, sr=16000, subtype="FLOAT"):
    sf.write(str(path), np.asarray(x, dtype=np.float32), sr, subtype=subtype, format="WAV")
    return path


def test_corrupt_audio_file(tmp_path):
    bad = tmp_path / "mix.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk" + os.urandom(100))
    with pytest.raises(BadInputError) as e:
        read_audio(bad, 16000)
    msg = _one_paragraph(str(e.value))
    assert str(bad) in msg and "Regenerate" in msg


def test_empty_audio_file(tmp_path):
    bad = tmp_path / "empty.wav"
    bad.write_bytes(b"")
    with pytest.raises(BadInputError) as e:
        read_audio(bad, 16000)
    msg = _one_paragraph(str(e.value))
    assert str(bad) in msg and "empty" in msg


def test_truncated_audio_file(tmp_path):
    good = _wav(tmp_path / "good.wav", np.zeros(16000))
    bad = tmp_path / "trunc.wav"
    bad.write_bytes(good.read_bytes()[:30000])
    with pytest.raises(BadInputError) as e:
        read_audio(bad, 16000)
    msg = _one_paragraph(str(e.value))
    assert str(bad) in msg and "truncated" in msg


def test_wrong_sample_rate(tmp_path):
    p = _wav(tmp_path / "8k.wav", np.zeros(8000), sr=8000)
    with pytest.raises(BadInputError) as e:
        read_audio(p, 16000)
    msg = _one_paragraph(str(e.value))
    assert str(p) in msg and "8000 Hz" in msg and "16000 Hz" in msg and "Resample" in msg


def test_nan_or_inf_in_audio_file(tmp_path):
    x = np.zeros(1600, dtype=np.float32)
    x[10], x[20] = np.nan, np.inf
    p = _wav(tmp_path / "nan.wav", x)
    with pytest.raises(BadInputError) as e:
        read_audio(p, 16000)
    msg = _one_paragraph(str(e.value))
    assert str(p) in msg and "2 NaN/Inf" in msg


def test_nan_in_prepared_audio_set(tmp_path):
    from surfbench.data.store import load_split, save_npz_atomic

    src = np.zeros((3, 2, 800), dtype=np.float32)
    src[1, 0, 5] = np.nan
    save_npz_atomic(tmp_path / "eval.npz", sources=src)
    with pytest.raises(ValueError) as e:
        load_split(tmp_path, "eval")
    msg = _one_paragraph(str(e.value))
    assert str(tmp_path / "eval.npz") in msg and "NaN/Inf" in msg and "snakemake data" in msg


def test_nan_model_output_leaves_no_results(trained, tiny_mnist, tmp_path, capsys):
    """A diverged model (NaN weights) is refused at evaluation; nothing is written."""
    broken = tmp_path / "run"
    broken.mkdir()
    blob = torch.load(trained / "model.pt", weights_only=False)
    for sd in blob["modules"].values():
        for v in sd.values():
            if v.is_floating_point():
                v.fill_(float("nan"))
    torch.save(blob, broken / "model.pt")
    (broken / "config.yaml").write_text((trained / "config.yaml").read_text())
    code, err = _evaluate(broken, tiny_mnist, tmp_path / "res" / "run", capsys=capsys)
    err = _one_paragraph(err)
    assert code != 0 and "NaN/Inf" in err and "retrain" in err
    _nothing_in(tmp_path / "res")


# ----------------------------------------------------------------------------- datasets and config
def test_missing_dataset_root(tmp_path, capsys):
    missing = tmp_path / "no_such_mnist"
    cfg = json.dumps({"datasets": {"mnist": {"source": "torchvision", "root": str(missing)}}})
    code = cli(["prepare", "--dataset", "mnist", "--config-json", cfg, "--out", str(tmp_path / "data" / "mnist")])
    err = _one_paragraph(capsys.readouterr().err)
    assert code != 0 and str(missing) in err and "datasets.mnist.download" in err
    _nothing_in(tmp_path / "data")


def test_missing_librimix_root(tmp_path, capsys):
    missing = tmp_path / "no_such_librimix"
    cfg = json.dumps({"datasets": {"libri2mix": {"source": "librimix", "root": str(missing)}}})
    code = cli(["prepare", "--dataset", "libri2mix", "--config-json", cfg, "--out", str(tmp_path / "data" / "libri2mix")])
    err = _one_paragraph(capsys.readouterr().err)
    assert code != 0 and str(missing) in err
    _nothing_in(tmp_path / "data")


def test_config_typo(tmp_path, capsys):
    p = tmp_path / "mine.yaml"
    p.write_text("profile: mine\ntraining:\n  stepz: 10\n")
    code = cli(["validate", str(p)])
    err = _one_paragraph(capsys.readouterr().err)
    assert code != 0 and str(p) in err and "training.stepz" in err and "Did you mean 'steps'?" in err


def test_config_typo_through_load_config(tmp_path):
    from surfbench.config import ConfigError, load_config

    p = tmp_path / "mine.yaml"
    p.write_text("trainig:\n  steps: 10\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = _one_paragraph(str(e.value))
    assert str(p) in msg and "'trainig'" in msg and "Did you mean 'training'?" in msg


def test_unknown_method_in_config(tmp_path, capsys):
    p = tmp_path / "mine.yaml"
    p.write_text("methods: [mixit, surf_remixitt]\n")
    code = cli(["validate", str(p)])
    err = _one_paragraph(capsys.readouterr().err)
    assert code != 0 and "'surf_remixitt'" in err and "Did you mean 'surf_remixit'?" in err and "baselines/" in err


def test_unknown_method_in_run_config(trained, tiny_mnist, tmp_path, capsys):
    rc = yaml.safe_load((trained / "config.yaml").read_text())
    rc["method"] = "mixitt"
    code, err = _evaluate(trained, tiny_mnist, tmp_path / "res" / "run", run_cfg=rc, capsys=capsys)
    err = _one_paragraph(err)
    assert code != 0 and "'mixitt'" in err and "Did you mean 'mixit'?" in err
    _nothing_in(tmp_path / "res" / "run")


def test_slot_count_does_not_match_dataset(trained, tiny_mnist, tmp_path, capsys):
    """A 2-source model evaluated on a 3-source evaluation set."""
    from surfbench.data.store import save_npz_atomic

    data = _data_copy(tiny_mnist, tmp_path / "data")
    with np.load(tiny_mnist / "eval.npz") as z:
        imgs = z["images"]                                        # [N, 2, C, H, W]
    save_npz_atomic(data / "eval.npz", images=np.concatenate([imgs, imgs[:, :1]], axis=1))
    code, err = _evaluate(trained, data, tmp_path / "res" / "run", capsys=capsys)
    err = _one_paragraph(err)
    assert code != 0 and str(trained / "model.pt") in err and "2 sources" in err and "3-source" in err
    _nothing_in(tmp_path / "res")


def test_evaluate_process_exit_code_and_message(trained, tmp_path):
    """The real process: non-zero exit, the message as the last line, no results."""
    out = tmp_path / "res" / "run"
    cmd = [sys.executable, "-m", "surfbench.evaluate", "--run-config", str(trained / "config.yaml"),
           "--eval-config-json", json.dumps(tiny_cfg()["evaluation"]), "--model", str(trained / "model.pt"),
           "--data", str(tmp_path / "no_data"), "--protocol", "table1", "--out-dir", str(out), "--device", "cpu"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    err = _one_paragraph(p.stderr)
    assert p.returncode != 0 and str(tmp_path / "no_data" / "eval.npz") in err and "snakemake data" in err
    _nothing_in(tmp_path / "res")
