"""Libri2Mix (Cosentino et al. 2020) read from a local LibriMix root, in its on-disk layout.

LibriMix cannot be downloaded ready-made: it is generated from LibriSpeech with
the scripts of github.com/JorisCos/LibriMix (``generate_librimix.sh``).  Its
generator writes, for the 16 kHz "min" version used by the paper::

    <root>/Libri2Mix/wav16k/min/
        metadata/mixture_<split>_mix_clean.csv
        <split>/mix_clean/<mixture_ID>.wav
        <split>/s1/<mixture_ID>.wav
        <split>/s2/<mixture_ID>.wav

with ``<split>`` in ``train-360``, ``train-100``, ``dev``, ``test`` (the
LibriSpeech subset name without ``-clean``).  The metadata CSV has the columns
``mixture_ID, mixture_path, source_1_path, source_2_path, length`` (newer
generator versions add ``original_mixture_ID``); its paths are absolute paths
on the machine that generated the data.  This loader takes a path from the CSV
when it exists and otherwise the file of the same name in the layout above
(``<split>/<mix_clean|s1|s2>/<basename>``), so a moved or copied root works.

The paper trains on ``train-360`` and evaluates on ``test`` (3,000 mixtures).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from surfbench.audio_io import BadInputError, read_audio

SAMPLE_RATE = 16000
TRAIN_SPLIT = "train-360"
TEST_SPLIT = "test"
SPLITS = ("train-360", "train-100", "dev", "test")
N_TEST_MIXTURES = 3000
CSV_COLUMNS = ("mixture_ID", "mixture_path", "source_1_path", "source_2_path", "length")

LAYOUT = """<root>/Libri2Mix/wav16k/min/metadata/mixture_<split>_mix_clean.csv
<root>/Libri2Mix/wav16k/min/<split>/mix_clean/<mixture_ID>.wav
<root>/Libri2Mix/wav16k/min/<split>/s1/<mixture_ID>.wav
<root>/Libri2Mix/wav16k/min/<split>/s2/<mixture_ID>.wav"""


def _layout_hint(root) -> str:
    return (f"Expected the LibriMix layout (16 kHz, 'min' mode, mix_clean) under root {root}:\n{LAYOUT}\n"
            f"Generate it with github.com/JorisCos/LibriMix (generate_librimix.sh) and pass the folder that "
            f"contains 'Libri2Mix' as the root.")


def libri2mix_dir(root) -> Path:
    return Path(root) / "Libri2Mix" / "wav16k" / "min"


def metadata_path(root, split: str) -> Path:
    return libri2mix_dir(root) / "metadata" / f"mixture_{split}_mix_clean.csv"


def read_metadata(root, split: str) -> list[dict]:
    """Rows of the split's metadata CSV with resolved paths ``mixture``, ``s1``, ``s2`` and ``length``."""
    if split not in SPLITS:
        raise ValueError(f"Libri2Mix: unknown split {split!r}; one of {SPLITS}")
    root = Path(root)
    if not root.is_dir():
        raise BadInputError(f"LibriMix root {root} does not exist. " + _layout_hint(root), root)
    base = libri2mix_dir(root)
    if not base.is_dir():
        raise BadInputError(f"{base}: Libri2Mix 16 kHz 'min' folder not found. " + _layout_hint(root), base)
    csv_path = metadata_path(root, split)
    if not csv_path.is_file():
        raise BadInputError(f"{csv_path}: Libri2Mix metadata for split {split!r} not found. " + _layout_hint(root),
                            csv_path)
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise BadInputError(f"{csv_path}: metadata lacks column(s) {missing}; expected {list(CSV_COLUMNS)}. "
                                f"The file is not a LibriMix mixture_*_mix_clean.csv or is damaged.", csv_path)
        rows = list(reader)
    if not rows:
        raise BadInputError(f"{csv_path}: metadata has no rows. Regenerate LibriMix.", csv_path)
    split_dir = base / split
    out = []
    for row in rows:
        entry = {"mixture_ID": row["mixture_ID"], "length": int(float(row["length"]))}
        for key, col, sub in (("mixture", "mixture_path", "mix_clean"), ("s1", "source_1_path", "s1"),
                              ("s2", "source_2_path", "s2")):
            p = Path(row[col])
            if not p.is_absolute():
                p = base / p
            if not p.exists():  # root moved since generation: use the layout
                p = split_dir / sub / Path(row[col].replace("\\", "/")).name
            entry[key] = p
        out.append(entry)
    return out


def window(mix: np.ndarray, sources: np.ndarray, start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Samples ``[start, start + length)`` of a mixture ``[T]`` and its sources ``[K, T]``, zero-padded at the end."""
    mix, sources = mix[start:start + length], sources[:, start:start + length]
    short = length - mix.shape[0]
    if short > 0:
        mix = np.pad(mix, (0, short))
        sources = np.pad(sources, ((0, 0), (0, short)))
    return mix, sources


class Libri2MixDataset(torch.utils.data.Dataset):
    """``(mixture [T], sources [2, T])`` float32 tensors of a Libri2Mix split.

    ``segment_seconds``: if given, each item is a window of that length (the
    first one, deterministic; a mixture shorter than it is zero-padded), else
    the whole utterance (lengths vary; batch with size 1 or pad).
    :meth:`utterance` gives the whole mixture, for windows placed elsewhere.
    """

    def __init__(self, root, split: str = TEST_SPLIT, segment_seconds: float | None = None,
                 sample_rate: int = SAMPLE_RATE):
        self.root = Path(root)
        self.split = split
        self.sample_rate = int(sample_rate)
        self.rows = read_metadata(root, split)
        self.segment = None if segment_seconds is None else int(round(segment_seconds * self.sample_rate))

    def __len__(self) -> int:
        return len(self.rows)

    def utterance(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The whole mixture ``[T]`` and its sources ``[2, T]`` of row ``i``, as float32 arrays."""
        row = self.rows[i]
        for key in ("mixture", "s1", "s2"):
            if not row[key].exists():
                raise BadInputError(f"{row[key]}: Libri2Mix file of mixture {row['mixture_ID']!r} ({key}) is "
                                    f"missing. " + _layout_hint(self.root), row[key])
        mix = read_audio(row["mixture"], self.sample_rate)
        srcs = [read_audio(row[k], self.sample_rate) for k in ("s1", "s2")]
        lengths = {mix.shape[0], *(s.shape[0] for s in srcs)}
        if len(lengths) != 1:
            raise BadInputError(f"{row['mixture']}: mixture and sources of {row['mixture_ID']!r} differ in length "
                                f"({mix.shape[0]}, {srcs[0].shape[0]}, {srcs[1].shape[0]}); the 'min' version "
                                f"has equal lengths. Regenerate this mixture.", row["mixture"])
        return mix, np.stack(srcs)

    def __getitem__(self, i: int):
        mix, x = self.utterance(i)
        if self.segment is not None:
            mix, x = window(mix, x, 0, self.segment)
        return torch.from_numpy(np.ascontiguousarray(mix)), torch.from_numpy(np.ascontiguousarray(x))
