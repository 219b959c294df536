"""LibriSpeech + FUSS: speech in everyday background sound, the paper's speech-enhancement evaluation set.

Each mixture is a LibriSpeech ``test-clean`` utterance plus the background
(``background0_sound.wav``) of a FUSS eval example, the background scaled so that
``10·log10(‖speech‖² / ‖background‖²)`` equals an SNR drawn from U(−5, 15) dB, then the mixture
and both parts are scaled together so that the mixture's peak ``max|mixture|`` is 1 (the SNR is
unchanged by the common gain).  The set is built once, from a seed, as arrays:

* ``mixture``, ``speech``, ``background``: the *scaled* parts, ``mixture = speech + background``
  (up to float32 rounding), float32;
* ``snr_db``: the drawn SNR of every mixture (float64);
* ``offsets`` (only with ``length="speech"``): the arrays are then 1-D concatenations and item
  ``i`` is ``[offsets[i], offsets[i+1])``.

Its content hash (:func:`surfbench.data.store.array_hash` over these arrays) goes into every result.

Inputs, read from local roots:

* LibriSpeech as unpacked from ``test-clean.tar.gz`` (openslr.org/12):
  ``<root>/LibriSpeech/test-clean/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` (16 kHz mono
  FLAC; the ``.trans.txt`` files are not read).  ``<root>`` may also be the ``LibriSpeech`` folder.
* FUSS in its release layout (:mod:`surfbench.data.fuss`), split ``eval``, variant
  ``ssdata_reverb`` by default (``fuss_variant``).

Named choices (the paper does not state them), with their defaults:

* ``length``: ``"fuss"`` (default: every mixture is the FUSS clip's length, 10 s; the utterance is
  cropped to its first 10 s or zero-padded at the end) or ``"speech"`` (every mixture is the
  utterance's length; the background is cropped to it, or repeated end to end when the utterance
  is longer than 10 s);
* ``pairing``: ``"random"`` (default: the utterances are taken in a seeded random order — a
  seeded random subset when ``n_mixtures`` is smaller than test-clean — and the backgrounds are
  drawn as successive seeded random permutations of the FUSS eval examples, so each background is
  used equally often, ±1) or ``"in_order"`` (the i-th utterance in sorted order with the
  ``(i mod M)``-th FUSS eval example in list order);
* ``n_mixtures``: ``None`` (default: one mixture per test-clean utterance, 2,620) or a number
  (at most the number of utterances).

The SNRs come from their own seeded stream, so they do not depend on the pairing choice.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio_io import BadInputError, read_audio
from ..seeding import derive_seed
from . import fuss

SAMPLE_RATE = 16000
SUBSET = "test-clean"
SNR_RANGE_DB = (-5.0, 15.0)
LENGTHS = ("fuss", "speech")
PAIRINGS = ("random", "in_order")
PEAK = 1.0
UTTERANCE_RE = re.compile(r"^(\d+)-(\d+)-(\d+)\.flac$")

LAYOUT = """<root>/LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utterance>.flac
(e.g. <root>/LibriSpeech/test-clean/1089/134686/1089-134686-0000.flac; 16 kHz mono FLAC)"""


def _layout_hint(root, subset: str) -> str:
    return (f"Expected the LibriSpeech layout under root {root}:\n{LAYOUT.replace('<subset>', subset)}\n"
            f"Download {subset}.tar.gz from openslr.org/12, unpack it, and pass the folder that contains "
            f"'LibriSpeech' as the root.")


def subset_dir(root, subset: str = SUBSET) -> Path:
    """``<root>/LibriSpeech/<subset>``, or ``<root>/<subset>`` when ``root`` is the LibriSpeech folder."""
    root = Path(root)
    if not root.is_dir():
        raise BadInputError(f"{root}: LibriSpeech root does not exist. " + _layout_hint(root, subset), root)
    for d in (root / "LibriSpeech" / subset, root / subset):
        if d.is_dir():
            return d
    raise BadInputError(f"{root / 'LibriSpeech' / subset}: LibriSpeech subset {subset!r} not found. "
                        + _layout_hint(root, subset), root / "LibriSpeech" / subset)


def list_utterances(root, subset: str = SUBSET) -> list[tuple[str, Path]]:
    """``(utterance id, path)`` of every FLAC of the subset, sorted by id; a misplaced or misnamed FLAC raises."""
    base = subset_dir(root, subset)
    out = []
    for p in sorted(base.rglob("*.flac")):
        m = UTTERANCE_RE.match(p.name)
        rel = p.relative_to(base).parts
        if m is None or len(rel) != 3 or rel[0] != m.group(1) or rel[1] != m.group(2):
            raise BadInputError(f"{p}: not where a LibriSpeech utterance belongs (expected "
                                f"<speaker>/<chapter>/<speaker>-<chapter>-<utterance>.flac under {base}). "
                                + _layout_hint(root, subset), p)
        out.append((p.name[:-5], p))
    if not out:
        raise BadInputError(f"{base}: no FLAC utterances found. " + _layout_hint(root, subset), base)
    out.sort(key=lambda t: t[0])
    return out


def background_path(item) -> Path:
    """The background source of a FUSS example (its ``background*`` file)."""
    for p in item.sources:
        if fuss.source_name(p).startswith("background"):
            return p
    raise BadInputError(f"{item.mixture}: FUSS example {item.name!r} (list line {item.line}) has no background "
                        f"source (a ..._sources/background0_sound.wav); every FUSS example has one.", item.mixture)


def _fit(x: np.ndarray, n: int, repeat: bool) -> np.ndarray:
    """``x`` cropped to ``n`` samples, or extended to ``n``: repeated end to end (``repeat``) or zero-padded."""
    if x.shape[0] >= n:
        return x[:n]
    if repeat:
        return np.tile(x, -(-n // x.shape[0]))[:n]
    return np.pad(x, (0, n - x.shape[0]))


def mix_at_snr(speech: np.ndarray, background: np.ndarray, snr_db: float, peak: float = PEAK,
               speech_name: str = "speech", background_name: str = "background"):
    """``(mixture, speech, background)`` float64: background scaled to ``snr_db`` below the speech, then all three
    scaled so that ``max|mixture| = peak``."""
    s = np.asarray(speech, dtype=np.float64)
    b = np.asarray(background, dtype=np.float64)
    es, eb = float(np.sum(s * s)), float(np.sum(b * b))
    if es == 0.0:
        raise BadInputError(f"{speech_name}: the speech is silent over the mixture's span; no SNR can be set.",
                            speech_name)
    if eb == 0.0:
        raise BadInputError(f"{background_name}: the FUSS background is silent over the mixture's span; no SNR "
                            f"can be set.", background_name)
    b = b * np.sqrt(es / eb) * 10.0 ** (-snr_db / 20.0)
    mix = s + b
    g = peak / float(np.max(np.abs(mix)))
    return mix * g, s * g, b * g


@dataclass
class LibriSpeechFussSet:
    """The built evaluation set (see the module docstring)."""

    arrays: dict  #: mixture, speech, background, snr_db (and offsets with length="speech")
    content_hash: str
    manifest: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.arrays["snr_db"])

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(mixture [T], speech [T], background [T])`` of item ``i``."""
        a = self.arrays
        if "offsets" in a:
            lo, hi = int(a["offsets"][i]), int(a["offsets"][i + 1])
            return a["mixture"][lo:hi], a["speech"][lo:hi], a["background"][lo:hi]
        return a["mixture"][i], a["speech"][i], a["background"][i]

    def save(self, out_dir, name: str = "librispeech_fuss") -> dict:
        """Write ``<name>.npz`` and ``<name>.json`` (the manifest) into ``out_dir``, atomically; returns it."""
        from ..atomic import write_json
        from .store import save_npz_atomic

        out_dir = Path(out_dir)
        h = save_npz_atomic(out_dir / f"{name}.npz", **self.arrays)
        if h != self.content_hash:
            raise RuntimeError(f"{out_dir / name}.npz: arrays changed since the set was built (hash {h} != "
                               f"{self.content_hash})")
        write_json(out_dir / f"{name}.json", self.manifest, indent=2, sort_keys=True, default=str)
        return self.manifest


def _pairs(n_utts: int, n_bg: int, n: int, pairing: str, seed) -> tuple[np.ndarray, np.ndarray]:
    if pairing == "in_order":
        utt = np.arange(n)
        return utt, utt % n_bg
    rng = np.random.default_rng(derive_seed("librispeech_fuss", seed, "pairing"))
    utt = rng.permutation(n_utts)[:n]
    bg = np.concatenate([rng.permutation(n_bg) for _ in range(-(-n // n_bg))])[:n]
    return utt, bg


def build_librispeech_fuss(librispeech_root, fuss_root, seed, *, n_mixtures: int | None = None,
                           length: str = "fuss", pairing: str = "random",
                           fuss_variant: str = fuss.DEFAULT_VARIANT, fuss_split: str = "eval",
                           subset: str = SUBSET, snr_range_db: tuple[float, float] = SNR_RANGE_DB,
                           sample_rate: int = SAMPLE_RATE, clip_seconds: float = fuss.CLIP_SECONDS) -> LibriSpeechFussSet:
    """Build the set from ``seed`` (see the module docstring for the choices).

    ``clip_seconds``: the FUSS clips' length (10 s; shorter only for a stand-in written so)."""
    from .store import array_hash

    if length not in LENGTHS:
        raise ValueError(f"LibriSpeech+FUSS: length must be one of {LENGTHS}, got {length!r}")
    if pairing not in PAIRINGS:
        raise ValueError(f"LibriSpeech+FUSS: pairing must be one of {PAIRINGS}, got {pairing!r}")
    lo_db, hi_db = (float(v) for v in snr_range_db)
    if not lo_db <= hi_db:
        raise ValueError(f"LibriSpeech+FUSS: snr_range_db must be (low, high) with low <= high, got {snr_range_db}")
    utts = list_utterances(librispeech_root, subset)
    items = fuss.read_examples_list(fuss_root, fuss_split, fuss_variant)
    n = len(utts) if n_mixtures is None else int(n_mixtures)
    if not 1 <= n <= len(utts):
        raise ValueError(f"LibriSpeech+FUSS: n_mixtures must be 1..{len(utts)} (utterances in {subset}), got {n}")
    utt_idx, bg_idx = _pairs(len(utts), len(items), n, pairing, seed)
    snr_rng = np.random.default_rng(derive_seed("librispeech_fuss", seed, "snr"))
    snrs = snr_rng.uniform(lo_db, hi_db, size=n)

    clip = int(round(sample_rate * clip_seconds))
    bg_cache: dict[int, np.ndarray] = {}
    mixes, speeches, bgs, lengths = [], [], [], []
    for k in range(n):
        uid, upath = utts[int(utt_idx[k])]
        j = int(bg_idx[k])
        if j not in bg_cache:
            bp = background_path(items[j])
            bg_cache[j] = fuss.read_clip(bp, f"the background of FUSS example {items[j].name!r}", sample_rate, clip)
        s = read_audio(upath, sample_rate)
        t = clip if length == "fuss" else s.shape[0]
        m, s_, b_ = mix_at_snr(_fit(s, t, repeat=False), _fit(bg_cache[j], t, repeat=True), float(snrs[k]),
                               speech_name=str(upath), background_name=str(background_path(items[j])))
        mixes.append(m.astype(np.float32))
        speeches.append(s_.astype(np.float32))
        bgs.append(b_.astype(np.float32))
        lengths.append(t)
    if length == "fuss":
        arrays = {"mixture": np.stack(mixes), "speech": np.stack(speeches), "background": np.stack(bgs)}
    else:
        arrays = {"mixture": np.concatenate(mixes), "speech": np.concatenate(speeches),
                  "background": np.concatenate(bgs),
                  "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)}
    arrays["snr_db"] = snrs.astype(np.float64)
    h = array_hash(arrays)
    manifest = {"dataset": "librispeech_fuss", "seed": seed, "n_mixtures": n, "length": length, "pairing": pairing,
                "snr_range_db": [lo_db, hi_db], "peak": PEAK, "sample_rate": sample_rate,
                "librispeech_root": str(librispeech_root), "librispeech_subset": subset,
                "fuss_root": str(fuss_root), "fuss_variant": fuss_variant, "fuss_split": fuss_split,
                "fuss_clip_seconds": clip / sample_rate,
                "utterances": [utts[int(i)][0] for i in utt_idx],
                "fuss_examples": [items[int(j)].name for j in bg_idx],
                "content_hash": h}
    return LibriSpeechFussSet(arrays=arrays, content_hash=h, manifest=manifest)
