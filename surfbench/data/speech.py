"""The offline default speech set: two-speaker mixtures of eSpeak NG sentences.

No speech corpus ships inside a package (shared/ENVIRONMENT.md), so the speech
track's default data set, used by the tiny/ci profiles and whenever no LibriMix
root is given, is synthesised here:

* **Sentences**: a fixed built-in list of :data:`N_SENTENCES` short English
  sentences, made combinatorially from the word lists below and drawn with a
  fixed generator (the list never depends on the run seed).
* **Speakers**: a speaker is an eSpeak NG voice ``<accent>+<variant>`` plus
  base pitch, pitch range and speaking rate (``espeak_SetParameter``).
  ``n_speakers`` distinct speakers are drawn from the run seed.
* **Splits**: speakers and sentences are each split by a seeded permutation
  into disjoint train and test pools (``test_fraction``), so test mixtures have
  unseen speakers saying unseen sentences (as LibriMix's test set has unseen
  LibriSpeech speakers).
* **Mixture** ``i`` of a split draws, from its own generator
  ``derive_seed(seed, "speech", split, i)``, two different speakers and two
  different sentences.  Each utterance is synthesised at 22,050 Hz, resampled
  to ``sample_rate`` with ``torchaudio.functional.resample``, and cut to
  ``clip_seconds``: a longer utterance contributes a random window, a shorter
  one is zero-padded at a random offset.  Each clip is scaled to an RMS of
  ``level_db`` dBFS, then the two get ``+g/2`` and ``-g/2`` dB with
  ``g ~ U(-rel_gain_db, rel_gain_db)``; if the mixture's peak would exceed
  ``max_peak`` both are scaled down together.  The mixture is the sum of the
  two sources (K = 2, paper Eq. 1).

Synthesis is deterministic (see :mod:`surfbench.data.espeak` for why every
utterance runs in a fresh fork of a helper process), so the same config and
seed give identical arrays on the same eSpeak NG build; ``manifest.json``
records the eSpeak NG version and a sha256 of every array.

On disk (``out_dir``): ``train_sources.npy`` and ``test_sources.npy``
(float32 ``[N, 2, T]``; mixtures are ``sources.sum(1)``) and ``manifest.json``
(config, per-mixture speakers, sentences, gains, offsets, sha256).  The set is
built only if missing or if the stored config differs from the requested one.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from surfbench.atomic import atomic_path, write_json
from surfbench.audio_io import BadInputError, write_audio
from surfbench.seeding import derive_seed

log = logging.getLogger(__name__)

FORMAT = "surfbench.speech_set/1"
SPLITS = ("train", "test")
ESPEAK_RATE_HZ = 22050

# ----------------------------------------------------------------------------- sentences

_SUBJECTS = ["the old man", "a young girl", "my brother", "the teacher", "our neighbour", "the farmer",
             "a tall soldier", "the doctor", "her sister", "the little boy", "a quiet student", "the captain"]
_VERBS = ["painted", "carried", "found", "opened", "cleaned", "repaired", "sold", "borrowed", "watched",
          "bought", "dropped", "followed"]
_OBJECTS = ["a red door", "the wooden boat", "an empty box", "the silver key", "a heavy bag", "the broken clock",
            "a green kite", "the small table", "a warm coat", "the blue bicycle", "an old map", "the yellow lamp"]
_ENDINGS = ["before dinner", "in the garden", "after the storm", "near the river", "at the market",
            "on a cold morning", "behind the house", "during the night", "by the station", "last summer",
            "without a word", "in the rain"]

#: Size of the built-in sentence list.
N_SENTENCES = 400


def sentence_list(n: int = N_SENTENCES) -> list[str]:
    """The built-in sentences (fixed: independent of any run seed)."""
    combos = list(itertools.product(_SUBJECTS, _VERBS, _OBJECTS, _ENDINGS))
    rng = np.random.default_rng(20240611)
    idx = rng.choice(len(combos), size=n, replace=False)
    out = []
    for i in sorted(int(j) for j in idx):
        s, v, o, e = combos[i]
        out.append(f"{s[0].upper()}{s[1:]} {v} {o} {e}.")
    return out


# ----------------------------------------------------------------------------- speakers

#: English accents of eSpeak NG (language voices).
ACCENTS = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd")
#: Voice variants (``voices/!v``) that sound like (synthetic) human speakers.
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "croak", "whisper",
            "whisperf", "klatt", "klatt2", "klatt3", "Alex", "Andy", "Annie", "belinda", "benjamin", "caleb",
            "david", "ed", "edward", "iven", "john", "linda", "max", "michel", "norbert", "paul", "quincy",
            "rob", "robert", "steph", "travis", "victor", "zac", "aunty", "grandma", "grandpa")


def make_speakers(n: int, seed: int, pitch=(25, 75), pitch_range=(30, 90), rate=(140, 200)) -> list[dict]:
    """``n`` distinct speakers ``{"voice", "pitch", "range", "rate"}`` drawn from ``seed``."""
    rng = np.random.default_rng(derive_seed(seed, "speech", "speakers"))
    seen: set = set()
    out: list[dict] = []
    while len(out) < n:
        spk = {
            "voice": f"{ACCENTS[rng.integers(len(ACCENTS))]}+{VARIANTS[rng.integers(len(VARIANTS))]}",
            "pitch": int(rng.integers(pitch[0], pitch[1] + 1)),
            "range": int(rng.integers(pitch_range[0], pitch_range[1] + 1)),
            "rate": int(rng.integers(rate[0], rate[1] + 1)),
        }
        key = (spk["voice"], spk["pitch"], spk["range"], spk["rate"])
        if key in seen:
            continue
        seen.add(key)
        out.append(spk)
    return out


def speaker_id(spk: dict) -> str:
    return f"{spk['voice']}/p{spk['pitch']}/r{spk['range']}/s{spk['rate']}"


def split_pools(n_items: int, test_fraction: float, seed: int, tag: str) -> dict[str, list[int]]:
    """Disjoint ``{"train": [...], "test": [...]}`` index pools (seeded permutation)."""
    rng = np.random.default_rng(derive_seed(seed, "speech", "split", tag))
    perm = rng.permutation(n_items)
    n_test = max(2, int(round(test_fraction * n_items)))
    if n_items - n_test < 2:
        raise ValueError(f"speech set: {n_items} {tag} cannot be split into train/test pools of >= 2 each")
    return {"test": sorted(int(i) for i in perm[:n_test]), "train": sorted(int(i) for i in perm[n_test:])}


# ----------------------------------------------------------------------------- synthesis

_RESAMPLE_CACHE: dict = {}


def synthesise(text: str, spk: dict, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """One utterance as float32 ``[T]`` in [-1, 1) at ``sample_rate``."""
    from surfbench.data.espeak import get_synth

    synth = get_synth()
    pcm = synth.synth(text, spk["voice"], rate=spk["rate"], pitch=spk["pitch"], pitch_range=spk["range"], seed=seed)
    if pcm.size == 0:
        raise RuntimeError(f"eSpeak NG produced no audio for {text!r} with {speaker_id(spk)}")
    x = torch.from_numpy(pcm.astype(np.float32) / 32768.0)
    if synth.sample_rate != sample_rate:
        key = (synth.sample_rate, int(sample_rate))
        if key not in _RESAMPLE_CACHE:  # torchaudio's windowed-sinc resampler; its kernel is built once
            import torchaudio.transforms as AT

            _RESAMPLE_CACHE[key] = AT.Resample(*key)
        with torch.no_grad():
            x = _RESAMPLE_CACHE[key](x)
    return x.numpy().astype(np.float32, copy=False)


def _fit(x: np.ndarray, length: int, rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
    """``(clip, start, pad_left)``: a random ``length`` window of ``x`` starting at ``start``
    (``pad_left = 0``), or all of ``x`` zero-padded with ``pad_left`` zeros before it (``start = 0``)."""
    if x.shape[0] >= length:
        off = int(rng.integers(0, x.shape[0] - length + 1))
        return x[off:off + length].copy(), off, 0
    pad = length - x.shape[0]
    left = int(rng.integers(0, pad + 1))
    out = np.zeros(length, np.float32)
    out[left:left + x.shape[0]] = x
    return out, 0, left


def _rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-20))


def default_config(**overrides) -> dict:
    cfg = {
        "format": FORMAT,
        "n_train": 400,
        "n_test": 40,
        "clip_seconds": 2.0,
        "sample_rate": 16000,
        "seed": 0,
        "n_speakers": 240,
        "test_fraction": 0.2,
        "n_sentences": N_SENTENCES,
        "level_db": -25.0,
        "rel_gain_db": 5.0,
        "max_peak": 0.9,
        "pitch": [25, 75],
        "pitch_range": [30, 90],
        "rate": [140, 200],
    }
    for k, v in overrides.items():
        if k not in cfg:
            raise KeyError(f"speech set: unknown config key {k!r} (known: {sorted(cfg)})")
        cfg[k] = list(v) if isinstance(v, tuple) else v
    return cfg


def _sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _generate_split(cfg: dict, split: str, n: int, speakers: list[dict], spk_pool: list[int],
                    sentences: list[str], sent_pool: list[int]) -> tuple[np.ndarray, list[dict]]:
    sr = int(cfg["sample_rate"])
    length = int(round(cfg["clip_seconds"] * sr))
    out = np.zeros((n, 2, length), np.float32)
    items: list[dict] = []
    cache: dict = {}
    for i in range(n):
        rng = np.random.default_rng(derive_seed(cfg["seed"], "speech", split, i))
        spk_idx = [spk_pool[j] for j in rng.choice(len(spk_pool), size=2, replace=False)]
        sent_idx = [sent_pool[j] for j in rng.choice(len(sent_pool), size=2, replace=False)]
        g = float(rng.uniform(-cfg["rel_gain_db"], cfg["rel_gain_db"]))
        target = [cfg["level_db"] + g / 2, cfg["level_db"] - g / 2]
        srcs, meta = [], []
        for k in range(2):
            key = (spk_idx[k], sent_idx[k])
            if key not in cache:
                cache[key] = synthesise(sentences[sent_idx[k]], speakers[spk_idx[k]], sr,
                                        seed=derive_seed(cfg["seed"], "espeak", *key) & 0xFFFFFFFF)
            clip, start, pad_left = _fit(cache[key], length, rng)
            level = _rms_db(clip)
            if level < -90:  # a window of pure silence: take the utterance's start instead
                clip, start, pad_left = cache[key][:length].copy(), 0, 0
                level = _rms_db(clip)
            clip = clip * np.float32(10 ** ((target[k] - level) / 20))
            srcs.append(clip)
            meta.append({"speaker": speaker_id(speakers[spk_idx[k]]), "speaker_index": spk_idx[k],
                         "sentence_index": sent_idx[k], "sentence": sentences[sent_idx[k]],
                         "utterance_samples": int(cache[key].shape[0]), "window_start": start,
                         "pad_left": pad_left})
        x = np.stack(srcs)
        peak = float(np.abs(x.sum(0)).max())
        scale = 1.0 if peak <= cfg["max_peak"] else cfg["max_peak"] / peak
        x = (x * np.float32(scale)).astype(np.float32)
        for k in range(2):
            meta[k]["gain_db"] = round(_rms_db(x[k]), 4)
        out[i] = x
        items.append({"index": i, "rel_gain_db": round(g, 4), "peak_scale": round(scale, 6), "sources": meta})
    return out, items


def build_speech_set(out_dir, n_train: int = 400, n_test: int = 40, clip_seconds: float = 2.0,
                     sample_rate: int = 16000, seed: int = 0, force: bool = False, export_wavs: int = 0,
                     **options: Any) -> dict:
    """Build (or reuse) the synthesised two-speaker speech set in ``out_dir``; return its manifest.

    ``options`` are further config keys (see :func:`default_config`):
    ``n_speakers``, ``test_fraction``, ``level_db``, ``rel_gain_db``, ``max_peak``,
    ``pitch``, ``pitch_range``, ``rate``.  ``export_wavs=n`` also writes the first
    ``n`` test mixtures as WAV files under ``out_dir/wav`` to listen to.
    """
    cfg = default_config(n_train=int(n_train), n_test=int(n_test), clip_seconds=float(clip_seconds),
                         sample_rate=int(sample_rate), seed=int(seed), **options)
    out = Path(out_dir)
    man_path = out / "manifest.json"
    if not force and man_path.exists():
        try:
            manifest = json.loads(man_path.read_text())
        except Exception:
            manifest = None
        if (manifest is not None and manifest.get("config") == cfg
                and all((out / manifest["splits"][s]["file"]).exists() for s in SPLITS)):
            if export_wavs:
                export_wav_examples(out, "test", export_wavs)
            return manifest
        log.info("speech set in %s is missing or was built with another config; rebuilding", out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sentences = sentence_list(cfg["n_sentences"])
    speakers = make_speakers(cfg["n_speakers"], cfg["seed"], cfg["pitch"], cfg["pitch_range"], cfg["rate"])
    spk_pools = split_pools(len(speakers), cfg["test_fraction"], cfg["seed"], "speakers")
    sent_pools = split_pools(len(sentences), cfg["test_fraction"], cfg["seed"], "sentences")
    from surfbench.data.espeak import get_synth

    synth = get_synth()
    manifest: dict = {"format": FORMAT, "config": cfg, "espeak_ng_version": synth.version,
                      "espeak_sample_rate": synth.sample_rate, "splits": {}}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # short resampling convolutions: extra threads only contend (20x slower seen)
    try:
        results = {split: _generate_split(cfg, split, n, speakers, spk_pools[split], sentences, sent_pools[split])
                   for split, n in (("train", cfg["n_train"]), ("test", cfg["n_test"]))}
    finally:
        torch.set_num_threads(threads)
    for split, (arr, items) in results.items():
        fname = f"{split}_sources.npy"
        with atomic_path(out / fname) as tmp, open(tmp, "wb") as fh:  # an open file: np.save adds no .npy
            np.save(fh, arr)
        manifest["splits"][split] = {
            "file": fname, "shape": list(arr.shape), "dtype": "float32", "sha256": _sha256(arr),
            "speakers": sorted({speaker_id(speakers[i]) for i in spk_pools[split]}),
            "sentence_indices": sent_pools[split], "items": items,
        }
    manifest["build_seconds"] = round(time.perf_counter() - t0, 3)
    write_json(man_path, manifest, indent=1, end="")  # written last: its presence marks a complete build
    if export_wavs:
        export_wav_examples(out, "test", export_wavs)
    return manifest


def load_speech_set(out_dir, split: str, mmap: bool = True, verify: bool = False) -> np.ndarray:
    """Sources ``[N, 2, T]`` float32 of a built split (memory-mapped by default)."""
    if split not in SPLITS:
        raise ValueError(f"speech set: split must be one of {SPLITS}, got {split!r}")
    out = Path(out_dir)
    man_path = out / "manifest.json"
    if not man_path.exists():
        raise BadInputError(f"{man_path}: speech set manifest not found. Build the set first with "
                            f"surfbench.data.speech.build_speech_set({str(out)!r}, ...).", man_path)
    manifest = json.loads(man_path.read_text())
    entry = manifest["splits"][split]
    path = out / entry["file"]
    if not path.exists():
        raise BadInputError(f"{path}: speech set file missing (manifest present). Rebuild with "
                            f"build_speech_set(..., force=True).", path)
    a = np.load(path, mmap_mode="r" if mmap else None)
    if list(a.shape) != entry["shape"]:
        raise BadInputError(f"{path}: shape {list(a.shape)} differs from the manifest's {entry['shape']}; "
                            f"rebuild with force=True.", path)
    if verify and _sha256(np.asarray(a)) != entry["sha256"]:
        raise BadInputError(f"{path}: content sha256 differs from the manifest; the file changed after the build. "
                            f"Rebuild with force=True.", path)
    return a


class SpeechSetDataset(torch.utils.data.Dataset):
    """``(mixture [T], sources [2, T])`` float32 tensors of a built speech set split."""

    def __init__(self, out_dir, split: str):
        self.sources = load_speech_set(out_dir, split)

    def __len__(self) -> int:
        return int(self.sources.shape[0])

    def __getitem__(self, i: int):
        s = torch.from_numpy(np.array(self.sources[i], dtype=np.float32))
        return s.sum(0), s


def export_wav_examples(out_dir, split: str = "test", n: int = 4, wav_dir=None) -> list[Path]:
    """Write the first ``n`` mixtures of ``split`` as ``<split>_<i>_{mix,s1,s2}.wav`` (float WAV)."""
    out = Path(out_dir)
    src = load_speech_set(out, split)
    sr = json.loads((out / "manifest.json").read_text())["config"]["sample_rate"]
    wd = Path(wav_dir) if wav_dir is not None else out / "wav"
    paths = []
    for i in range(min(n, src.shape[0])):
        s = np.asarray(src[i])
        for name, x in (("mix", s.sum(0)), ("s1", s[0]), ("s2", s[1])):
            paths.append(write_audio(wd / f"{split}_{i:04d}_{name}.wav", x, sr))
    return paths
