"""An offline stand-in for Table 3's data, written in the real on-disk formats the readers take.

Table 3 trains separators on AudioSet (real mixtures, no labels) and evaluates them on FUSS and on
LibriSpeech test-clean + FUSS backgrounds.  None of that can be downloaded by the tiny profile, so
:func:`build_standin` writes, from the sound pool of :mod:`surfbench.data.sound_pool` and a seed,
under one ``root``:

* **FUSS** (read by :mod:`surfbench.data.fuss`, variant ``ssdata``, the dry one)::

      <root>/ssdata/{train,validation,eval}_example_list.txt
      <root>/ssdata/<split>/exampleNNNNN.wav
      <root>/ssdata/<split>/exampleNNNNN_sources/background0_sound.wav, foreground{0,1,2}_sound.wav

  Every example has one background — a sustained recording looped to the clip's length (random
  start, 50-ms cross-fade at each seam) at ``background_level_db`` (RMS, dBFS, uniform) — and
  U{0..``max_foregrounds``} foregrounds: distinct event recordings, each at a random onset (a random
  window where longer than the clip) and at the background's level + U(``foreground_rel_db``) dB
  (FUSS-like: U(−5, 25) dB), a foreground's level being its RMS over its own span.  If the mixture's
  peak would exceed ``max_peak`` all sources are scaled down together (the relative levels stay).
  The sources are quantised to 16-bit PCM and the mixture is their exact sum (also 16-bit PCM).
  **Split by original recording**: the pool's groups (:attr:`~surfbench.data.sound_pool.Recording.group`)
  are split into train / validation / eval (``split_fractions``; stratified by source, category and
  whether the group holds a background), so no original recording is in two splits.
* **AudioSet-like** training clips, mixtures only (read by :mod:`surfbench.data.audioset`)::

      <root>/audioset/clipNNNNN.flac        (16 kHz mono 16-bit FLAC, ``audioset_clip_seconds`` long)

  drawn only from the *train* split's groups and the pool's eSpeak speech: ``speech`` scenes
  (sentences one after another over a background, sometimes an event), ``music`` scenes (looped
  SoundFont instrument phrases, a drum pattern sequenced from drum hits, sometimes a sustained chord
  and a voice) and ``environment`` scenes (a background and 1-4 events), in proportions
  ``audioset_scenes``.  No labels are written.
* **LibriSpeech test-clean-like** utterances (read by :mod:`surfbench.data.librispeech_fuss`)::

      <root>/LibriSpeech/test-clean/<speaker>/<chapter>/<speaker>-<chapter>-<NNNN>.flac
      <root>/LibriSpeech/test-clean/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt

  eSpeak NG sentences (two clauses, :func:`~surfbench.data.sound_pool.long_sentences`) spoken by
  ``librispeech_speakers`` voices of :data:`~surfbench.data.sound_pool.LIBRISPEECH_VOICE_VARIANTS`:
  voices and sentences disjoint from the Libri2Mix stand-in's (:mod:`surfbench.data.speech`) and from
  the AudioSet-like speech.  The transcripts are in LibriSpeech's form (upper case, no punctuation).

``<root>/manifest.json`` (written last: it marks a complete build) records the config, the pool
(name, hash, composition, licences, every recording), the split of every group, every example's
recipe, the counts, and ``content_hash``: a sha256 over every written file's path and bytes.  The
same config, seed and pool give the same bytes.

**Clip lengths.**  :class:`surfbench.data.fuss.FussDataset` and
:func:`surfbench.data.librispeech_fuss.build_librispeech_fuss` require every FUSS clip to be exactly
``clip_seconds`` long, FUSS's 10 s (``fuss.CLIP_SECONDS``) by default; a stand-in written with a shorter
``fuss_clip_seconds`` (paper-smoke: the Table 8 model cannot be evaluated on 10-s clips on a CPU) is read
with that length, which the Table 3 data step takes from this manifest.  The AudioSet reader takes any
``clip_seconds`` (it cuts or pads each file), so ``audioset_clip_seconds`` may be shorter.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import shutil
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path, write_json, write_text
from ..audio_io import BadInputError
from ..seeding import derive_seed
from . import fuss, sound_pool
from .speech import _rms_db

log = logging.getLogger(__name__)

FORMAT = "surfbench.fuss_standin/1"
SAMPLE_RATE = 16000
FUSS_VARIANT = "ssdata"  # dry: the stand-in has no reverberation (fuss.DEFAULT_VARIANT is ssdata_reverb)
SPLITS = fuss.SPLITS
AUDIOSET_FOLDER = "audioset"
LIBRISPEECH_SUBSET = "test-clean"
MANIFEST = "manifest.json"
#: What a build writes under its root (anything else there makes it refuse to write).
OWN_ENTRIES = (FUSS_VARIANT, AUDIOSET_FOLDER, "LibriSpeech", MANIFEST)
SCENES = ("speech", "music", "environment")
FADE_SECONDS = 0.05


def default_config(**overrides: Any) -> dict:
    """The build's parameters (tiny-profile sizes), each overridable by keyword."""
    cfg: dict = {
        "format": FORMAT,
        "seed": 0,
        "fuss_examples": {"train": 200, "validation": 20, "eval": 40},
        "fuss_clip_seconds": float(fuss.CLIP_SECONDS),
        "split_fractions": {"train": 0.7, "validation": 0.1, "eval": 0.2},
        "background_level_db": [-35.0, -25.0],
        "foreground_rel_db": [-5.0, 25.0],
        "max_foregrounds": 3,
        "max_peak": 0.9,
        "audioset_clips": 200,
        "audioset_clip_seconds": 10.0,
        "audioset_scenes": {"speech": 0.4, "music": 0.3, "environment": 0.3},
        "librispeech_utterances": 40,
        "librispeech_speakers": 8,
        "librispeech_level_db": [-30.0, -22.0],
        "pool_speech": 40,
    }
    for k, v in overrides.items():
        if k not in cfg:
            raise KeyError(f"FUSS stand-in: unknown config key {k!r} (known: {sorted(cfg)})")
        cfg[k] = [float(x) for x in v] if isinstance(v, tuple) else v
    if set(cfg["fuss_examples"]) != set(SPLITS) or set(cfg["split_fractions"]) != set(SPLITS):
        raise ValueError(f"FUSS stand-in: fuss_examples and split_fractions need the keys {SPLITS}")
    if set(cfg["audioset_scenes"]) != set(SCENES):
        raise ValueError(f"FUSS stand-in: audioset_scenes needs the keys {SCENES}")
    return cfg


# ----------------------------------------------------------------------------- signal helpers
#: RMS level in dB re full scale 1.0 (the speech set's measure, shared).
level_db = _rms_db


def loop_to(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``x`` looped to ``n`` samples from a random start, each seam cross-faded over 50 ms (float64)."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] >= n:
        start = int(rng.integers(0, x.shape[0] - n + 1))
        return x[start:start + n].copy()
    fade = min(int(FADE_SECONDS * SAMPLE_RATE), x.shape[0] // 4)
    period = x.shape[0] - fade
    body = x[:period].copy()
    if fade:  # the body's head becomes the tail fading into it, so body repeated end to end has no jump
        ramp = (np.arange(fade) + 0.5) / fade
        body[:fade] = x[:fade] * ramp + x[period:] * (1 - ramp)
    start = int(rng.integers(0, period))
    return body[(start + np.arange(n)) % period]


def _window(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``n``-sample window of ``x`` (``x`` itself if not longer), preferring one that is not silent."""
    if x.shape[0] <= n:
        return np.asarray(x, dtype=np.float64)
    best = None
    for _ in range(4):
        start = int(rng.integers(0, x.shape[0] - n + 1))
        w = np.asarray(x[start:start + n], dtype=np.float64)
        if best is None or level_db(w) > level_db(best):
            best = w
        if level_db(w) > -50:
            return w
    return best


def _place(track: np.ndarray, x: np.ndarray, onset: int) -> None:
    end = min(track.shape[0], onset + x.shape[0])
    track[onset:end] += x[:end - onset]


def _gain_to(x: np.ndarray, target_db: float) -> np.ndarray:
    return x * 10 ** ((target_db - level_db(x)) / 20)


def to_pcm16(x: np.ndarray) -> np.ndarray:
    """float (full scale 1.0) -> int16, ``round(x * 32768)``: what soundfile reads back as ``int / 32768`` exactly."""
    q = np.rint(np.asarray(x, dtype=np.float64) * 32768.0)
    if np.abs(q).max(initial=0) > 32767:
        raise ValueError(f"to_pcm16: peak {np.abs(x).max():.4f} would clip 16-bit PCM")
    return q.astype(np.int16)


def write_pcm16(path: Path, q: np.ndarray, fmt: str = "WAV") -> Path:
    """Write int16 samples as 16-bit PCM (``WAV`` or ``FLAC``), 16 kHz mono, atomically."""
    import soundfile as sf

    with atomic_path(path) as tmp:
        sf.write(tmp, np.asarray(q, dtype=np.int16), SAMPLE_RATE, subtype="PCM_16", format=fmt)
    return Path(path)


# ----------------------------------------------------------------------------- split by original recording
def split_groups(pool: sound_pool.SoundPool, fractions: dict, seed) -> dict[str, str]:
    """``{group: split}`` for every non-speech group of the pool.

    Groups are stratified by (source, category, holds a background); within a stratum of ``n`` groups, in a
    seeded order, ``round(f * n)`` go to eval and to validation (at least one each once ``n >= 3``), the
    rest to train.
    """
    info: dict[str, dict] = {}
    for r in pool.recordings:
        if r.category == "speech":
            continue
        g = info.setdefault(r.group, {"source": r.source, "category": r.category, "background": False})
        g["background"] |= r.kind == "background"
    strata: dict[tuple, list[str]] = defaultdict(list)
    for g in sorted(info):
        i = info[g]
        strata[(i["source"], i["category"], i["background"])].append(g)
    out: dict[str, str] = {}
    for key in sorted(strata):
        gs = strata[key]
        n = len(gs)
        rng = np.random.default_rng(derive_seed(seed, "fuss_standin", "split", *key))
        order = [gs[int(i)] for i in rng.permutation(n)]
        n_eval, n_val = (int(round(fractions[s] * n)) for s in ("eval", "validation"))
        if n >= 3:
            n_eval, n_val = max(1, n_eval), max(1, n_val)
        n_eval = min(n_eval, n)
        n_val = min(n_val, n - n_eval)
        for j, g in enumerate(order):
            out[g] = "eval" if j < n_eval else ("validation" if j < n_eval + n_val else "train")
    return out


def _split_sets(pool: sound_pool.SoundPool, split_of: dict[str, str]) -> dict[str, dict[str, list]]:
    sets = {}
    for s in SPLITS:
        groups = {g for g, sp in split_of.items() if sp == s}
        sets[s] = {"background": pool.select(kind="background", groups=groups),
                   "foreground": pool.select(kind="foreground", groups=groups)}
        if not sets[s]["background"] or not sets[s]["foreground"]:
            raise ValueError(f"FUSS stand-in: split {s!r} got no background or no foreground recording "
                             f"(pool {pool.name!r}, {len(groups)} groups); change split_fractions")
    return sets


def _pick_by_group(recs: list, rng: np.random.Generator, exclude_groups=()) -> Any:
    """A recording drawn uniformly over groups, then within its group (so many variants of one sound do not
    dominate)."""
    groups = sorted({r.group for r in recs} - set(exclude_groups))
    g = groups[int(rng.integers(len(groups)))]
    members = [r for r in recs if r.group == g]
    return members[int(rng.integers(len(members)))]


# ----------------------------------------------------------------------------- FUSS
def fuss_example(pool, sets: dict, n: int, cfg: dict, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """``(sources int16 [1 + k, n], recipe)``: background first, then k foregrounds (see the module docstring)."""
    bg = _pick_by_group(sets["background"], rng)
    bg_db = float(rng.uniform(*cfg["background_level_db"]))
    srcs = [_gain_to(loop_to(pool.audio[bg.id], n, rng), bg_db)]
    k = int(rng.integers(0, cfg["max_foregrounds"] + 1))
    fg_recipe, used = [], {bg.group}
    for _ in range(k):
        if len({r.group for r in sets["foreground"]} - used) == 0:
            break
        r = _pick_by_group(sets["foreground"], rng, exclude_groups=used)
        used.add(r.group)
        seg = _window(pool.audio[r.id], n, rng)
        onset = int(rng.integers(0, n - seg.shape[0] + 1))
        rel = float(rng.uniform(*cfg["foreground_rel_db"]))
        track = np.zeros(n)
        _place(track, _gain_to(seg, bg_db + rel), onset)
        srcs.append(track)
        fg_recipe.append({"id": r.id, "onset": onset, "samples": int(seg.shape[0]), "rel_db": round(rel, 4)})
    x = np.stack(srcs)
    peak = float(np.abs(x.sum(0)).max())
    scale = min(1.0, cfg["max_peak"] / peak) if peak > 0 else 1.0
    q = to_pcm16(x * scale)
    return q, {"background": {"id": bg.id, "level_db": round(bg_db, 4)}, "foregrounds": fg_recipe,
               "peak_scale": round(scale, 6)}


def write_fuss(root: Path, pool, split_of: dict, cfg: dict) -> dict:
    n = int(round(cfg["fuss_clip_seconds"] * SAMPLE_RATE))
    sets = _split_sets(pool, split_of)
    vdir = root / FUSS_VARIANT
    out: dict = {"variant": FUSS_VARIANT, "clip_seconds": cfg["fuss_clip_seconds"], "splits": {}}
    for split in SPLITS:
        lines, recipes, counts = [], [], Counter()
        for i in range(int(cfg["fuss_examples"][split])):
            rng = np.random.default_rng(derive_seed(cfg["seed"], "fuss_standin", "fuss", split, i))
            q, recipe = fuss_example(pool, sets[split], n, cfg, rng)
            name = f"example{i:05d}"
            names = ["background0_sound"] + [f"foreground{j}_sound" for j in range(q.shape[0] - 1)]
            rel = [f"{split}/{name}_sources/{s}.wav" for s in names]
            for r, src in zip(rel, q):
                write_pcm16(vdir / r, src)
            write_pcm16(vdir / split / f"{name}.wav", to_pcm16(q.astype(np.int32).sum(0) / 32768.0))
            lines.append("\t".join([f"{split}/{name}.wav"] + rel))
            counts[q.shape[0]] += 1
            recipes.append({"name": name, **recipe})
        write_text(fuss.list_path(root, split, FUSS_VARIANT), "".join(line + "\n" for line in lines))
        out["splits"][split] = {
            "n_examples": len(lines), "n_sources": {str(k): counts[k] for k in sorted(counts)},
            "n_groups": sum(1 for s in split_of.values() if s == split),
            "n_background_recordings": len(sets[split]["background"]),
            "n_foreground_recordings": len(sets[split]["foreground"]), "examples": recipes}
    return out


# ----------------------------------------------------------------------------- AudioSet-like mixtures
def _speech_track(pool, speech: list, n: int, rng) -> tuple[np.ndarray, list[str]]:
    track, ids = np.zeros(n), []
    t = int(rng.uniform(0, 0.2) * n)
    while t < n and len(ids) < 4:
        r = speech[int(rng.integers(len(speech)))]
        x = pool.audio[r.id].astype(np.float64)
        _place(track, x, t)
        ids.append(r.id)
        t += x.shape[0] + int(rng.uniform(0.2, 1.0) * SAMPLE_RATE)
    return track, ids


def _drum_track(pool, drums: list, n: int, rng) -> tuple[np.ndarray, list[str]]:
    picks = [drums[int(i)] for i in rng.choice(len(drums), size=min(3, len(drums)), replace=False)]
    kick, snare, hat = (picks + picks)[:3]
    step = int(SAMPLE_RATE * 30.0 / float(rng.uniform(80, 140)))  # eighth notes
    track = np.zeros(n)
    for s, t in enumerate(range(0, n, step)):
        for r, on in ((kick, s % 4 == 0 or rng.random() < 0.1), (snare, s % 4 == 2), (hat, rng.random() < 0.8)):
            if on:
                _place(track, pool.audio[r.id] * 10 ** (float(rng.uniform(-4, 0)) / 20), t)
    return track, sorted({r.id for r in (kick, snare, hat)})


def audioset_clip(pool, train: dict, speech: list, n: int, cfg: dict, rng) -> tuple[np.ndarray, dict]:
    """``(mixture float64 [n], recipe)`` of one AudioSet-like clip (see the module docstring)."""
    p = np.array([cfg["audioset_scenes"][s] for s in SCENES], dtype=np.float64)
    scene = SCENES[int(rng.choice(len(SCENES), p=p / p.sum()))]
    level = float(rng.uniform(-30, -20))
    parts, ids = [], []

    def add(track, target_db, rec_ids):
        if np.any(track):
            parts.append(_gain_to(track, target_db))
            ids.extend(rec_ids)

    def background(target_db):
        r = _pick_by_group(train["env_background"], rng)
        add(loop_to(pool.audio[r.id], n, rng), target_db, [r.id])

    def event(target_db):
        r = _pick_by_group(train["env_foreground"], rng)
        seg = _window(pool.audio[r.id], n, rng)
        track = np.zeros(n)
        _place(track, seg, int(rng.integers(0, n - seg.shape[0] + 1)))
        add(track, target_db, [r.id])

    if scene == "speech":
        track, sids = _speech_track(pool, speech, n, rng)
        add(track, level, sids)
        background(level - float(rng.uniform(5, 20)))
        if rng.random() < 0.3:
            event(level - float(rng.uniform(0, 15)))
    elif scene == "music":
        for _ in range(int(rng.integers(1, 3))):
            r = _pick_by_group(train["phrase"], rng)
            add(loop_to(pool.audio[r.id], n, rng), level + float(rng.uniform(-3, 3)), [r.id])
        if rng.random() < 0.7:
            track, dids = _drum_track(pool, train["drum"], n, rng)
            add(track, level + float(rng.uniform(-6, 3)), dids)
        if rng.random() < 0.5 and train["pad"]:
            r = _pick_by_group(train["pad"], rng)
            add(loop_to(pool.audio[r.id], n, rng), level - float(rng.uniform(3, 12)), [r.id])
        if rng.random() < 0.25:
            track, sids = _speech_track(pool, speech, n, rng)
            add(track, level + float(rng.uniform(0, 10)), sids)
    else:
        bg_db = level - 10
        background(bg_db)
        for _ in range(int(rng.integers(1, 5))):
            event(bg_db + float(rng.uniform(*cfg["foreground_rel_db"])))
    mix = np.sum(parts, axis=0)
    peak = float(np.abs(mix).max())
    if peak > cfg["max_peak"]:
        mix *= cfg["max_peak"] / peak
    cats = {pool.by_id[i].category for i in ids}
    return mix, {"scene": scene, "recordings": ids, "speech": "speech" in cats,
                 "music": bool(cats & {"instrument", "drum"})}


def write_audioset(root: Path, pool, split_of: dict, cfg: dict) -> dict:
    n = int(round(cfg["audioset_clip_seconds"] * SAMPLE_RATE))
    groups = {g for g, s in split_of.items() if s == "train"}
    train = {"env_background": pool.select(kind="background", category="environment", groups=groups),
             "env_foreground": pool.select(kind="foreground", category="environment", groups=groups),
             "phrase": pool.select(kind="foreground", category="instrument", groups=groups),
             "pad": pool.select(kind="background", category="instrument", groups=groups),
             "drum": pool.select(category="drum", groups=groups)}
    speech = pool.select(category="speech")
    for k in ("env_background", "env_foreground", "phrase", "drum"):
        if not train[k]:
            raise ValueError(f"FUSS stand-in: the train split has no {k} recording for the AudioSet-like clips "
                             f"(pool {pool.name!r})")
    if not speech:
        raise ValueError("FUSS stand-in: the pool has no speech (pool_speech = 0); the AudioSet-like clips need it")
    clips = []
    for i in range(int(cfg["audioset_clips"])):
        rng = np.random.default_rng(derive_seed(cfg["seed"], "fuss_standin", "audioset", i))
        mix, recipe = audioset_clip(pool, train, speech, n, cfg, rng)
        name = f"clip{i:05d}.flac"
        write_pcm16(root / AUDIOSET_FOLDER / name, to_pcm16(mix), fmt="FLAC")
        clips.append({"file": name, **recipe})
    return {"folder": AUDIOSET_FOLDER, "clip_seconds": cfg["audioset_clip_seconds"], "n_clips": len(clips),
            "scenes": dict(Counter(c["scene"] for c in clips)),
            "n_with_speech": sum(c["speech"] for c in clips), "n_with_music": sum(c["music"] for c in clips),
            "clips": clips}


# ----------------------------------------------------------------------------- LibriSpeech test-clean-like
def transcript(text: str) -> str:
    """LibriSpeech's transcript form: upper case, apostrophes kept, other punctuation dropped."""
    return re.sub(r"\s+", " ", re.sub(r"[^A-Z' ]", " ", text.upper())).strip()


def write_librispeech(root: Path, cfg: dict) -> dict:
    from .speech import speaker_id, synthesise

    seed, n_utt, n_spk = cfg["seed"], int(cfg["librispeech_utterances"]), int(cfg["librispeech_speakers"])
    voices = sound_pool.make_voices(sound_pool.LIBRISPEECH_VOICE_VARIANTS, n_spk, seed, "librispeech")
    rng = np.random.default_rng(derive_seed(seed, "fuss_standin", "librispeech"))
    speakers = sorted(int(s) for s in rng.choice(np.arange(100, 10000), size=n_spk, replace=False))
    chapters = {s: sorted(int(c) for c in rng.choice(np.arange(10000, 300000), size=2, replace=False))
                for s in speakers}
    sentences = sound_pool.long_sentences()
    if n_utt > len(sentences):
        raise ValueError(f"FUSS stand-in: librispeech_utterances must be at most {len(sentences)}, got {n_utt}")
    order = rng.permutation(len(sentences))[:n_utt]
    base = root / "LibriSpeech" / LIBRISPEECH_SUBSET
    trans: dict[tuple, list[str]] = defaultdict(list)
    utts = []
    for u in range(n_utt):
        k = u % n_spk
        spk = speakers[k]
        chap = chapters[spk][(u // n_spk) % 2]
        uid = f"{spk}-{chap}-{len(trans[(spk, chap)]):04d}"
        text = sentences[int(order[u])]
        x = synthesise(text, voices[k], SAMPLE_RATE,
                       seed=derive_seed(seed, "fuss_standin", "librispeech", u) & 0xFFFFFFFF).astype(np.float64)
        x = _gain_to(x, float(rng.uniform(*cfg["librispeech_level_db"])))
        peak = float(np.abs(x).max())
        if peak > 0.99:
            x *= 0.99 / peak
        write_pcm16(base / str(spk) / str(chap) / f"{uid}.flac", to_pcm16(x), fmt="FLAC")
        trans[(spk, chap)].append(f"{uid} {transcript(text)}")
        utts.append({"id": uid, "speaker": speaker_id(voices[k]), "text": text, "samples": int(x.shape[0])})
    for (spk, chap), lines in sorted(trans.items()):
        write_text(base / str(spk) / str(chap) / f"{spk}-{chap}.trans.txt", "".join(line + "\n" for line in lines))
    return {"subset": LIBRISPEECH_SUBSET, "n_utterances": n_utt, "n_speakers": n_spk,
            "speakers": {str(s): speaker_id(v) for s, v in zip(speakers, voices)},
            "seconds": round(sum(u["samples"] for u in utts) / SAMPLE_RATE, 3), "utterances": utts}


# ----------------------------------------------------------------------------- the build
def content_hash(root) -> tuple[str, int, int]:
    """``(sha256 over every written file's relative path and bytes, number of files, bytes)``."""
    root = Path(root)
    h, n_files, n_bytes = hashlib.sha256(), 0, 0
    files = [p for d in OWN_ENTRIES[:-1] if (root / d).exists() for p in (root / d).rglob("*") if p.is_file()]
    for p in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        blob = p.read_bytes()
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + hashlib.sha256(blob).digest())
        n_files += 1
        n_bytes += len(blob)
    return h.hexdigest(), n_files, n_bytes


def _prepare_root(root: Path) -> None:
    """Remove a previous build's files; refuse a folder that holds anything else."""
    if root.exists():
        other = sorted(p.name for p in root.iterdir() if p.name not in OWN_ENTRIES and not p.name.startswith("."))
        if other:
            raise BadInputError(f"{root}: refusing to write the FUSS stand-in into a folder that holds other files "
                                f"({', '.join(other[:5])}{' ...' if len(other) > 5 else ''}); pass an empty or new "
                                f"folder.", root)
        (root / MANIFEST).unlink(missing_ok=True)  # first: an interrupted rebuild is never taken for complete
        for d in OWN_ENTRIES[:-1]:
            if (root / d).exists():
                shutil.rmtree(root / d)
    root.mkdir(parents=True, exist_ok=True)


def build_standin(root, *, pool: sound_pool.SoundPool | None = None, force: bool = False, **config: Any) -> dict:
    """Build (or reuse) the stand-in under ``root``; return its manifest (see the module docstring).

    ``config`` overrides :func:`default_config`.  An existing build is reused when its manifest has the
    same config and was made from the same pool inputs and code (:func:`surfbench.data.sound_pool.pool_inputs`;
    with ``pool`` given, the same pool hash), unless ``force``.
    """
    cfg = default_config(**config)
    root = Path(root)
    inputs = sound_pool.pool_inputs(cfg["pool_speech"], code=(__file__,))
    man_path = root / MANIFEST
    if not force and man_path.is_file():
        try:
            old = json.loads(man_path.read_text())
        except ValueError:
            old = None
        if (old is not None and old.get("config") == cfg
                and (old.get("pool", {}).get("hash") == pool.hash if pool is not None
                     else old.get("pool_inputs") == inputs)):
            return old
    t0 = time.perf_counter()
    given_pool = pool is not None  # then the pool's inputs are unknown here: such a build is never reused by inputs
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # eSpeak's short resampling convolutions: extra threads only contend
    try:
        if pool is None:
            pool = sound_pool.load_pool(cfg["pool_speech"])
        split_of = split_groups(pool, cfg["split_fractions"], cfg["seed"])
        _prepare_root(root)
        fuss_part = write_fuss(root, pool, split_of, cfg)
        audioset_part = write_audioset(root, pool, split_of, cfg)
        libri_part = write_librispeech(root, cfg)
    finally:
        torch.set_num_threads(threads)
    h, n_files, n_bytes = content_hash(root)
    licences = {s: {k: v for k, v in info.items() if k in ("package", "version", "licence", "licences",
                                                              "licence_note", "copyright_file", "present", "note")}
                for s, info in pool.sources.items()}
    manifest = {"format": FORMAT, "config": cfg, "content_hash": h, "n_files": n_files, "bytes": n_bytes,
                "pool": pool.manifest(), "pool_inputs": None if given_pool else inputs, "licences": licences,
                "split_of_group": dict(sorted(split_of.items())),
                "readers": {"fuss": {"root": ".", "variant": FUSS_VARIANT},
                            "audioset": {"source": AUDIOSET_FOLDER, "clip_seconds": cfg["audioset_clip_seconds"]},
                            "librispeech": {"root": ".", "subset": LIBRISPEECH_SUBSET}},
                "fuss": fuss_part, "audioset": audioset_part, "librispeech": libri_part,
                "build_seconds": round(time.perf_counter() - t0, 3)}
    write_json(man_path, manifest, indent=1)  # written last: its presence marks a complete build
    log.info("FUSS stand-in in %s: %d files, %.1f MB, pool %s (%s), %.1f s", root, n_files, n_bytes / 1e6,
             pool.name, pool.hash[:12], manifest["build_seconds"])
    return manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write the offline Table 3 stand-in (FUSS, AudioSet-like clips, "
                                             "LibriSpeech test-clean-like utterances) under ROOT.")
    ap.add_argument("root")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fuss", default="200,20,40", help="examples of train,validation,eval (default 200,20,40)")
    ap.add_argument("--fuss-clip-seconds", type=float, default=float(fuss.CLIP_SECONDS))
    ap.add_argument("--audioset", type=int, default=200, help="AudioSet-like clips (default 200)")
    ap.add_argument("--audioset-clip-seconds", type=float, default=10.0)
    ap.add_argument("--librispeech", type=int, default=40, help="LibriSpeech-like utterances (default 40)")
    ap.add_argument("--librispeech-speakers", type=int, default=8)
    ap.add_argument("--force", action="store_true", help="rebuild even if an identical build is there")
    a = ap.parse_args(argv)
    counts = [int(v) for v in a.fuss.split(",")]
    t0 = time.perf_counter()
    m = build_standin(a.root, force=a.force, seed=a.seed, fuss_examples=dict(zip(SPLITS, counts)),
                      fuss_clip_seconds=a.fuss_clip_seconds, audioset_clips=a.audioset,
                      audioset_clip_seconds=a.audioset_clip_seconds, librispeech_utterances=a.librispeech,
                      librispeech_speakers=a.librispeech_speakers)
    print(json.dumps({"root": a.root, "pool": m["pool"]["name"], "pool_hash": m["pool"]["hash"],
                      "composition": m["pool"]["composition"]["by_source"], "content_hash": m["content_hash"],
                      "files": m["n_files"], "megabytes": round(m["bytes"] / 1e6, 1),
                      "build_seconds": m["build_seconds"], "wall_seconds": round(time.perf_counter() - t0, 2)},
                     indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
