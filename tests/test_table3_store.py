"""Table 3's training sets are streamed: written row by row to a raw float32 file (never stacked), opened
read-only with np.memmap, with the same content hash and rows as the in-memory arrays the data step used to
build (surfbench/data/store.py: write_raw_rows, load_split)."""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from surfbench.audio_io import BadInputError
from surfbench.data.audioset import load_audioset
from surfbench.data.store import MixtureSet, array_hash, load_split, prepare, write_raw_rows

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def _clip_folder(root, n_files=24, seed=0, seconds=(0.6, 2.5)):
    """WAV clips of random lengths (``long_clips: split`` cuts them into a number of 1-s pieces that is known
    only once read), plus an empty file (a bad file, skipped under ``on_bad_file: skip``)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        x = 0.1 * rng.standard_normal(int(rng.uniform(*seconds) * SR))
        sf.write(root / f"clip{i:03d}.wav", x.astype(np.float32), SR, subtype="FLOAT")
    (root / "clip005b.wav").write_bytes(b"")
    return root


def _audioset_cfg(root, **kw):
    d = {"source": "real", "root": str(root), "sample_rate": SR, "clip_seconds": 1.0, "long_clips": "split",
         "short_clips": "drop", "on_bad_file": "skip", "n_train_clips": None}
    d.update(kw)
    return {"datasets": {"audioset": d}}


def _old_mixtures(root, n_train_clips=None):
    """What the data step used to hold in memory: every clip stacked, then the pieces of the first n files."""
    mixtures, man = load_audioset(root, clip_seconds=1.0, long_clips="split", short_clips="drop", on_bad_file="skip")
    if n_train_clips:
        first = set(list(dict.fromkeys(man["clips"]))[:n_train_clips])
        mixtures = mixtures[[i for i, f in enumerate(man["clips"]) if f in first]]
    return mixtures


@pytest.mark.parametrize("n_train_clips", [None, 7])
def test_streamed_audioset_equals_the_stacked_array(tmp_path, n_train_clips):
    src = _clip_folder(tmp_path / "clips")
    man = prepare(_audioset_cfg(src, n_train_clips=n_train_clips), "audioset", tmp_path / "audioset")
    old = _old_mixtures(src, n_train_clips)
    assert man["info"]["reader"]["n_bad_files"] == 1 and man["n_train_mixtures"] == len(old) > 7
    assert man["train_hash"] == array_hash({"mixtures": old})  # results' hashes unchanged
    assert (tmp_path / "audioset" / "train_mixtures.f32").stat().st_size == old.nbytes
    ts = load_split(tmp_path / "audioset", "train")
    assert isinstance(ts, MixtureSet) and ts.content_hash == man["train_hash"]
    assert (len(ts), ts.shape, ts.n_sources) == (len(old), (SR,), 1)
    idx = [len(old) - 1, 0, 5, 5, 3]
    np.testing.assert_array_equal(ts.get_batch(idx).numpy(), old[idx][:, None])


def test_streamed_fuss_sources_equal_the_stacked_array(tmp_path):
    from surfbench.config import load_config
    from surfbench.data import fuss as fuss_io
    from surfbench.data import fuss_standin as fs
    from surfbench.data import sound_pool as sp
    from surfbench.data.table3 import _pieces
    from surfbench.metrics.fuss import pad_references

    fs.build_standin(tmp_path / "standin", pool=sp.load_pool(6), fuss_examples={"train": 3, "validation": 1, "eval": 2},
                     audioset_clips=1, librispeech_utterances=2, librispeech_speakers=1, pool_speech=6, seed=2)
    cfg = load_config(ROOT / "config" / "tiny.yaml")
    man = prepare(cfg, "fuss", tmp_path / "fuss")
    train = fuss_io.FussDataset(tmp_path / "standin", "train", fs.FUSS_VARIANT)
    old = np.stack([p for i in range(len(train)) for p in _pieces(pad_references(train[i].references), 2 * SR)])
    assert man["train_hash"] == array_hash({"sources": old.astype(np.float32)})
    ts = load_split(tmp_path / "fuss", "train")
    assert (len(ts), ts.n_sources, ts.shape, ts.content_hash) == (len(old), 4, (2 * SR,), man["train_hash"])
    np.testing.assert_array_equal(ts.get_batch([4, 0, len(old) - 1]).numpy(), old[[4, 0, len(old) - 1]])


def test_write_raw_rows_hash_is_array_hash(tmp_path):
    a = np.random.default_rng(1).standard_normal((11, 3, 50)).astype(np.float32)
    index = write_raw_rows(tmp_path / "x.f32", "sources", ((f"row{i}", r) for i, r in enumerate(a)))
    assert index["shape"] == [11, 3, 50] and index["content_hash"] == array_hash({"sources": a})
    np.testing.assert_array_equal(np.fromfile(tmp_path / "x.f32", np.float32).reshape(a.shape), a)


def test_preparing_holds_a_few_clips_not_all(tmp_path):
    """64 clips of 2 s (an 8.2 MB array): numpy's allocations, traced, peak at a small part of it."""
    src = _clip_folder(tmp_path / "clips", n_files=64, seconds=(2.0, 2.0))
    cfg = _audioset_cfg(src, clip_seconds=2.0)
    warm = _clip_folder(tmp_path / "warm", n_files=2)  # the modules the data step imports on first use, not traced
    prepare(_audioset_cfg(warm), "audioset", tmp_path / "warm_audioset")
    tracemalloc.start()
    try:
        man = prepare(cfg, "audioset", tmp_path / "audioset")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    whole = man["n_train_mixtures"] * 2 * SR * 4
    assert man["n_train_mixtures"] == 64
    print(f"traced peak {peak / 1e6:.2f} MB for a {whole / 1e6:.2f} MB array")
    assert peak < whole / 4, (peak, whole)


def test_truncated_or_missing_raw_file_is_refused(tmp_path):
    src = _clip_folder(tmp_path / "clips", n_files=4)
    prepare(_audioset_cfg(src), "audioset", tmp_path / "audioset")
    raw = tmp_path / "audioset" / "train_mixtures.f32"
    with open(raw, "r+b") as f:
        f.truncate(raw.stat().st_size - 4)
    with pytest.raises(ValueError, match=rf"{raw}.*bytes.*delete it.*snakemake data"):
        load_split(tmp_path / "audioset", "train")
    raw.unlink()
    with pytest.raises(ValueError, match=rf"{raw} is missing"):
        load_split(tmp_path / "audioset", "train")


def test_the_loaded_training_set_is_read_only(tmp_path):
    src = _clip_folder(tmp_path / "clips", n_files=4)
    prepare(_audioset_cfg(src), "audioset", tmp_path / "audioset")
    raw = tmp_path / "audioset" / "train_mixtures.f32"
    before = raw.read_bytes()
    ts = load_split(tmp_path / "audioset", "train")
    with pytest.raises(ValueError, match="read-only"):
        ts._audio[0, 0, :10] = 1.0  # the memmapped array the batches are read from
    batch = ts.get_batch([0])
    batch += 1.0  # a batch is the caller's own copy
    del ts
    assert raw.read_bytes() == before


def test_nan_is_refused_while_writing_and_leaves_no_file(tmp_path):
    rows = [("good.wav", np.zeros(8, np.float32)), ("bad.wav", np.array([0, np.nan] * 4, np.float32))]
    with pytest.raises(BadInputError, match=r"bad.wav: 4 NaN/Inf"):
        write_raw_rows(tmp_path / "x.f32", "mixtures", iter(rows))
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary
    with pytest.raises(ValueError, match="no rows"):
        write_raw_rows(tmp_path / "y.f32", "mixtures", iter([]))
    assert list(tmp_path.iterdir()) == []
