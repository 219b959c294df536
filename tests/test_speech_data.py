"""Default speech set (eSpeak NG) and the Libri2Mix loader."""
import csv
import json
import os

import numpy as np
import pytest
import torch

from surfbench.audio_io import BadInputError, write_audio
from surfbench.data import librimix, speech

SR = 16000
SMALL = dict(n_train=6, n_test=3, clip_seconds=1.0, sample_rate=SR, n_speakers=20, seed=3)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("speech_a")
    return d, speech.build_speech_set(d, **SMALL)


def test_synthesis_is_deterministic_whatever_came_before():
    spk = {"voice": "en-us+m3", "pitch": 50, "range": 60, "rate": 170}
    a = speech.synthesise("Seven green boats sailed past the old mill.", spk, SR, seed=1)
    speech.synthesise("Something else entirely, said first.", {**spk, "voice": "en+whisper"}, SR, seed=2)
    b = speech.synthesise("Seven green boats sailed past the old mill.", spk, SR, seed=1)
    assert a.dtype == np.float32 and np.array_equal(a, b) and np.abs(a).max() > 0.05


def test_same_seed_gives_identical_arrays(built, tmp_path):
    d, man = built
    man2 = speech.build_speech_set(tmp_path, **SMALL)
    for split in speech.SPLITS:
        a = speech.load_speech_set(d, split)
        b = speech.load_speech_set(tmp_path, split)
        assert np.array_equal(a, b)
        assert man["splits"][split]["sha256"] == man2["splits"][split]["sha256"]
    other = speech.build_speech_set(tmp_path / "other", **{**SMALL, "seed": 4})
    assert other["splits"]["test"]["sha256"] != man["splits"]["test"]["sha256"]


def test_shapes_rate_and_mixture_is_sum(built):
    d, man = built
    assert man["config"]["sample_rate"] == SR and man["espeak_sample_rate"] == 22050
    src = speech.load_speech_set(d, "train", verify=True)
    assert src.shape == (6, 2, SR) and src.dtype == np.float32
    ds = speech.SpeechSetDataset(d, "test")
    assert len(ds) == 3
    mix, s = ds[1]
    assert s.shape == (2, SR) and torch.equal(mix, s.sum(0))
    assert float(mix.abs().max()) <= man["config"]["max_peak"] + 1e-6
    for item in man["splits"]["train"]["items"]:  # relative level within +-rel_gain_db
        g = [x["gain_db"] for x in item["sources"]]
        assert abs(g[0] - g[1]) <= man["config"]["rel_gain_db"] + 1e-3


def test_train_test_disjoint(built):
    _, man = built
    tr, te = man["splits"]["train"], man["splits"]["test"]
    assert not set(tr["speakers"]) & set(te["speakers"])
    assert not set(tr["sentence_indices"]) & set(te["sentence_indices"])
    used = {s: [(x["speaker"], x["sentence_index"]) for it in man["splits"][s]["items"] for x in it["sources"]]
            for s in speech.SPLITS}
    assert all(spk in tr["speakers"] and sent in tr["sentence_indices"] for spk, sent in used["train"])
    assert all(spk in te["speakers"] and sent in te["sentence_indices"] for spk, sent in used["test"])
    for it in tr["items"] + te["items"]:  # two different speakers saying two different sentences
        a, b = it["sources"]
        assert a["speaker"] != b["speaker"] and a["sentence_index"] != b["sentence_index"]


def test_sentence_list_is_fixed_and_distinct():
    s = speech.sentence_list()
    assert len(s) == speech.N_SENTENCES == len(set(s)) and s == speech.sentence_list()


def test_cache_reused_and_rebuilt_on_config_change(built, tmp_path):
    d, man = built
    f = d / "train_sources.npy"
    mtime = os.stat(f).st_mtime_ns
    again = speech.build_speech_set(d, **SMALL)
    assert os.stat(f).st_mtime_ns == mtime and again == json.loads((d / "manifest.json").read_text())
    paths = speech.export_wav_examples(d, "test", 1, wav_dir=tmp_path / "wav")
    assert sorted(p.name for p in paths) == ["test_0000_mix.wav", "test_0000_s1.wav", "test_0000_s2.wav"]


def test_missing_speech_set_error(tmp_path):
    with pytest.raises(BadInputError, match="manifest not found.*build_speech_set"):
        speech.load_speech_set(tmp_path, "train")


# ----------------------------------------------------------------------------- Libri2Mix

def _write_librimix(root, split="test", n=3, seed=0, relative=False):
    base = root / "Libri2Mix" / "wav16k" / "min"
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        mid = f"{1089 + i}-134686-000{i}_121-121726-00{i:02d}"
        t = 4000 + 800 * i
        s = (0.1 * rng.standard_normal((2, t))).astype(np.float32)
        paths = {}
        for sub, x in (("s1", s[0]), ("s2", s[1]), ("mix_clean", s.sum(0))):
            paths[sub] = write_audio(base / split / sub / f"{mid}.wav", x, SR)
        # the generator stores absolute paths of its own machine: simulate a moved root
        rows.append({"mixture_ID": mid, "mixture_path": f"/gone/{split}/mix_clean/{mid}.wav",
                     "source_1_path": f"/gone/{split}/s1/{mid}.wav", "source_2_path": f"/gone/{split}/s2/{mid}.wav",
                     "length": t})
    md = base / "metadata"
    md.mkdir(parents=True, exist_ok=True)
    with open(md / f"mixture_{split}_mix_clean.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(librimix.CSV_COLUMNS))
        w.writeheader()
        w.writerows(rows)
    return rows


def test_libri2mix_fixture_loads(tmp_path):
    rows = _write_librimix(tmp_path)
    ds = librimix.Libri2MixDataset(tmp_path, "test")
    assert len(ds) == 3
    for i, row in enumerate(rows):
        mix, src = ds[i]
        assert src.shape == (2, row["length"]) and mix.shape == (row["length"],)
        assert torch.allclose(mix, src.sum(0), atol=1e-6)
    seg = librimix.Libri2MixDataset(tmp_path, "test", segment_seconds=0.3)
    assert [tuple(seg[i][1].shape) for i in range(3)] == [(2, 4800)] * 3  # cut (4800 < 5600) or padded


def test_libri2mix_missing_root_names_layout(tmp_path):
    with pytest.raises(BadInputError) as ei:
        librimix.Libri2MixDataset(tmp_path / "nowhere", "test")
    msg = str(ei.value)
    assert "nowhere" in msg and "Libri2Mix/wav16k/min/metadata/mixture_<split>_mix_clean.csv" in msg
    (tmp_path / "Libri2Mix" / "wav16k" / "min").mkdir(parents=True)
    with pytest.raises(BadInputError, match=r"mixture_train-360_mix_clean\.csv.*not found"):
        librimix.Libri2MixDataset(tmp_path, librimix.TRAIN_SPLIT)


def test_libri2mix_missing_wav(tmp_path):
    rows = _write_librimix(tmp_path)
    victim = tmp_path / "Libri2Mix/wav16k/min/test/s2" / f"{rows[1]['mixture_ID']}.wav"
    victim.unlink()
    ds = librimix.Libri2MixDataset(tmp_path, "test")
    with pytest.raises(BadInputError, match=r"s2.*missing.*Expected the LibriMix layout"):
        ds[1]
