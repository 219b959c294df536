"""FUSS (Free Universal Sound Separation, Wisdom et al. 2020) read from a local root, in its released layout.

FUSS is downloaded from Zenodo (record 3694384) as ``FUSS_ssdata.tar.gz`` (dry) and
``FUSS_ssdata_reverb.tar.gz`` (reverberant); each unpacks to one folder::

    <root>/<variant>/{train,validation,eval}_example_list.txt
    <root>/<variant>/<split>/exampleNNNNN.wav
    <root>/<variant>/<split>/exampleNNNNN_sources/background0_sound.wav
    <root>/<variant>/<split>/exampleNNNNN_sources/foreground{0,1,2}_sound.wav

with ``<variant>`` in :data:`VARIANTS` and ``<split>`` in :data:`SPLITS`.  Every line of a list
names, tab-separated and relative to the list's folder, the mixture and then its 1 to 4 sources
(one background, 0 to 3 foregrounds).  Every file is mono, 16 kHz, 10 s (160,000 samples).

**Variant, a named choice.**  The paper does not say which variant it evaluates on; FUSS's README
asks for results on the reverberant eval set, so the default is ``variant="ssdata_reverb"``
(:data:`DEFAULT_VARIANT`); ``"ssdata"`` (dry) is the other allowed value.

The list is parsed by :func:`surfbench.score_fuss.read_list` (the parser the FUSS metric uses), so
the loader and the scorer agree on what a line means.  Each file is read with
:func:`surfbench.audio_io.read_audio` (missing file, corrupt file, wrong rate, more than one
channel, NaN/Inf: an error naming the file) and must be exactly :data:`CLIP_SAMPLES` long (the
reference's reader silently pads/truncates to that length; here a different length is an error
naming the file).  A missing root, variant folder or list raises :class:`BadInputError` naming
what is missing and printing the expected layout.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..audio_io import BadInputError, read_audio
from ..score_fuss import FussItem, read_list

SAMPLE_RATE = 16000
CLIP_SECONDS = 10
CLIP_SAMPLES = SAMPLE_RATE * CLIP_SECONDS
#: The two released variants: dry (``FUSS_ssdata.tar.gz``) and reverberant (``FUSS_ssdata_reverb.tar.gz``).
VARIANTS = ("ssdata", "ssdata_reverb")
#: FUSS's README asks for results on the reverberant eval set; the paper does not say which it used.
DEFAULT_VARIANT = "ssdata_reverb"
SPLITS = ("train", "validation", "eval")
MAX_SOURCES = 4

LAYOUT = """<root>/<variant>/{train,validation,eval}_example_list.txt
<root>/<variant>/<split>/exampleNNNNN.wav
<root>/<variant>/<split>/exampleNNNNN_sources/background0_sound.wav
<root>/<variant>/<split>/exampleNNNNN_sources/foreground{0,1,2}_sound.wav   (0 to 3 of them)
with <variant> one of ssdata, ssdata_reverb; every file mono, 16 kHz, 10 s"""


def layout_hint(root, split: str = "eval", variant: str = DEFAULT_VARIANT) -> str:
    """The expected layout, for an error message; the lines for ``split`` and ``variant`` written out."""
    here = (f"{root}/{variant}/{split}_example_list.txt\n"
            f"{root}/{variant}/{split}/exampleNNNNN.wav, {root}/{variant}/{split}/exampleNNNNN_sources/*.wav")
    return (f"Expected the FUSS release layout under root {root}:\n{LAYOUT}\nhere:\n{here}\n"
            f"Download FUSS_ssdata_reverb.tar.gz (and/or FUSS_ssdata.tar.gz) from zenodo.org/record/3694384, "
            f"unpack it, and pass the folder that contains 'ssdata_reverb' (or 'ssdata') as the root.")


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")


def list_path(root, split: str, variant: str = DEFAULT_VARIANT) -> Path:
    """``<root>/<variant>/<split>_example_list.txt`` (not checked)."""
    return Path(root) / variant / f"{split}_example_list.txt"


def check_layout(root, split: str, variant: str = DEFAULT_VARIANT) -> Path:
    """The split's list file, after checking that root, variant folder and list exist (else BadInputError)."""
    _check_choice("FUSS variant", variant, VARIANTS)
    _check_choice("FUSS split", split, SPLITS)
    root = Path(root)
    if not root.is_dir():
        raise BadInputError(f"{root}: FUSS root does not exist. " + layout_hint(root, split, variant), root)
    vdir = root / variant
    if not vdir.is_dir():
        present = [v for v in VARIANTS if (root / v).is_dir()]
        if present:
            why = (f"the root holds {', '.join(present)} but not {variant}: download that variant or pass "
                   f"variant={present[0]!r}. ")
        elif (root / f"{split}_example_list.txt").is_file():
            why = f"the root looks like a variant folder itself: pass its parent {root.parent} as the root. "
        else:
            why = ""
        raise BadInputError(f"{vdir}: FUSS variant folder {variant!r} not found; " + why
                            + layout_hint(root, split, variant), vdir)
    lp = list_path(root, split, variant)
    if not lp.is_file():
        raise BadInputError(f"{lp}: FUSS example list for split {split!r} not found. "
                            + layout_hint(root, split, variant), lp)
    return lp


def read_examples_list(root, split: str = "eval", variant: str = DEFAULT_VARIANT) -> list[FussItem]:
    """The split's examples (:class:`surfbench.score_fuss.FussItem`: name, mixture, sources, line)."""
    return read_list(check_layout(root, split, variant))


def read_clip(path, what: str, sample_rate: int = SAMPLE_RATE, n_samples: int | None = CLIP_SAMPLES) -> np.ndarray:
    """One FUSS file as float32 ``[T]``: mono, ``sample_rate``, finite, and ``n_samples`` long (unless None)."""
    x = read_audio(path, sample_rate)
    if n_samples is not None and x.shape[0] != n_samples:
        raise BadInputError(f"{path}: {what} has {x.shape[0]} samples ({x.shape[0] / sample_rate:g} s) but FUSS "
                            f"clips are {n_samples} samples ({n_samples / sample_rate:g} s). The file is not a FUSS "
                            f"clip or was cut short; re-download or re-extract FUSS.", path)
    return x


def source_name(path) -> str:
    """``background0_sound``, ``foreground1_sound``, ...: the file name without its extension."""
    return Path(path).stem


@dataclass
class FussExample:
    """One FUSS example: ``mixture [T]`` and ``references [n, T]`` (float32, n = 1..4, background first)."""

    name: str  #: the mixture's name, e.g. ``example00000``
    mixture: np.ndarray
    references: np.ndarray
    names: tuple[str, ...]  #: one per reference, e.g. ``("background0_sound", "foreground0_sound")``
    item: FussItem

    def __iter__(self):  # ``mixture, references, names = example``
        return iter((self.mixture, self.references, self.names))


def read_example(item: FussItem, sample_rate: int = SAMPLE_RATE, n_samples: int | None = CLIP_SAMPLES) -> FussExample:
    """Read and check every file of one list line."""
    mix = read_clip(item.mixture, f"the mixture of example {item.name!r}", sample_rate, n_samples)
    refs = [read_clip(p, f"source {source_name(p)!r} of example {item.name!r}", sample_rate, mix.shape[0])
            for p in item.sources]
    return FussExample(name=item.name, mixture=mix, references=np.stack(refs),
                       names=tuple(source_name(p) for p in item.sources), item=item)


class FussDataset:
    """The examples of one FUSS split, read lazily: ``len(ds)``, ``ds[i]``, ``for ex in ds``.

    ``variant``: ``"ssdata_reverb"`` (default, see the module docstring) or ``"ssdata"``.
    ``clip_seconds``: the length every file must have, FUSS's 10 s unless a stand-in was written with shorter
    clips (``standin.fuss_clip_seconds``, for CPU smoke runs of the paper's models).
    The list and the layout are checked on construction; each file when its example is read.
    """

    def __init__(self, root, split: str = "eval", variant: str = DEFAULT_VARIANT, sample_rate: int = SAMPLE_RATE,
                 clip_seconds: float = CLIP_SECONDS):
        self.root = Path(root)
        self.split = split
        self.variant = variant
        self.sample_rate = int(sample_rate)
        self.clip_samples = int(round(clip_seconds * self.sample_rate))
        self.list_path = check_layout(root, split, variant)
        self.items = read_list(self.list_path)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> FussExample:
        return read_example(self.items[i], self.sample_rate, self.clip_samples)

    def __iter__(self) -> Iterator[FussExample]:
        for i in range(len(self)):
            yield self[i]


def iter_fuss(root, split: str = "eval", variant: str = DEFAULT_VARIANT) -> Iterator[FussExample]:
    """Yield the examples of a split in list order (see :class:`FussDataset`)."""
    yield from FussDataset(root, split, variant)
