"""AudioSet clips as users hold them: a folder of downloads, or a list of files, made into 10-s mixtures.

AudioSet is distributed as YouTube IDs and times, so every user holds a different download: any
format, any sample rate, any channel count, some files broken.  This module turns such a
collection into unlabelled mixtures (no labels are read): float32, mono, 16 kHz, 10 s.

Input (``source``):

* a **folder**: every file below it (recursively) whose extension is in :data:`AUDIO_EXTENSIONS`,
  in sorted path order; other files (``.json``, ``.txt``, ...) are ignored and counted;
* a **list file** (any file that is not a folder): one path per line, relative to the list's folder
  unless absolute; blank lines and lines starting with ``#`` are ignored; every listed file is used,
  whatever its extension.

Conversion: channels are averaged (``mean`` over channels), then resampled with ``soxr``
(``quality="HQ"``) to :data:`SAMPLE_RATE` when the file's rate differs.  Named choices, with
their defaults:

* ``long_clips`` (clips longer than ``clip_seconds``): ``"first"`` (default: the first 10 s, as an
  AudioSet segment starts at its labelled start), ``"center"`` (the middle 10 s) or ``"split"``
  (consecutive 10-s pieces; a shorter remainder is handled by ``short_clips``);
* ``short_clips`` (shorter than ``clip_seconds``): ``"pad"`` (default: zero-padded at the end; many
  AudioSet segments are a little under 10 s) or ``"drop"`` (left out, counted and named in the
  manifest);
* ``on_bad_file``: ``"refuse"`` (default: raise :class:`BadInputError` naming the file) or
  ``"skip"`` (leave it out; the manifest counts and names it, with the reason).  A bad file is
  one :func:`surfbench.audio_io.read_audio` refuses (missing, empty, corrupt, truncated WAV,
  undecodable, NaN/Inf samples).

:func:`load_audioset` returns ``(mixtures [N, T] float32, manifest)``; the manifest records the
choices, the counts, the bad / dropped / ignored files (paths relative to a folder source), the
file of every clip and :func:`surfbench.data.store.array_hash` of the mixtures.
:func:`iter_audioset` yields clip by clip and fills a manifest as it goes: the data step
(:func:`surfbench.data.table3.prepare_audioset`) streams it to disk, never holding the collection.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

from ..audio_io import BadInputError, read_audio

SAMPLE_RATE = 16000
CLIP_SECONDS = 10.0
#: Extensions taken from a folder (case-insensitive); a list file may name any extension.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf")
LONG_CLIPS = ("first", "center", "split")
SHORT_CLIPS = ("pad", "drop")
ON_BAD_FILE = ("refuse", "skip")
RESAMPLE_QUALITY = "HQ"


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"AudioSet: {name} must be one of {tuple(allowed)}, got {value!r}")


def find_files(source) -> tuple[list[Path], list[Path], Path]:
    """``(audio files, ignored files, base)`` of a folder (recursive, sorted) or a list file.

    ``base`` is what manifest paths are relative to (the folder, or the list's folder).
    """
    src = Path(source)
    if not src.exists():
        raise BadInputError(f"{src}: AudioSet source does not exist. Pass a folder holding the downloaded clips "
                            f"(searched recursively for {', '.join(AUDIO_EXTENSIONS)}) or a text file listing "
                            f"them, one path per line (relative to the list's folder).", src)
    if src.is_dir():
        files, ignored = [], []
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for f in filenames:
                p = Path(dirpath) / f
                if f.startswith("."):
                    continue
                (files if p.suffix.lower() in AUDIO_EXTENSIONS else ignored).append(p)
        files.sort()
        ignored.sort()
        if not files:
            raise BadInputError(f"{src}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found in this folder or "
                                f"below it. Pass the folder the AudioSet clips were downloaded into.", src)
        return files, ignored, src
    base = src.parent
    files = []
    for raw in src.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        files.append(Path(os.path.join(str(base), line)))
    if not files:
        raise BadInputError(f"{src}: the AudioSet list names no files (one path per line expected).", src)
    return files, [], base


def _rel(p: Path, base: Path) -> str:
    try:
        return p.relative_to(base).as_posix()
    except ValueError:
        return str(p)


def read_any(path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Any file soundfile reads, as float32 mono ``[T]`` at ``sample_rate`` (channels averaged, soxr resampling).

    Raises :class:`BadInputError` naming the file when it cannot be used (see :func:`read_audio`).
    """
    p = Path(path)
    rate = None
    if p.is_file() and p.stat().st_size > 0:
        try:
            rate = sf.info(str(p)).samplerate
        except Exception as e:
            raise BadInputError(f"{p}: not a readable audio file (corrupt, truncated header, or not audio): {e}. "
                                f"Re-download it or leave it out.", p) from e
    x = read_audio(p, rate if rate else sample_rate, mono=False)  # the remaining checks, with their messages
    mono = x.mean(axis=0, dtype=np.float64)
    if rate != sample_rate:
        import soxr

        mono = soxr.resample(mono, rate, sample_rate, quality=RESAMPLE_QUALITY)
    return mono.astype(np.float32)


def cut(x: np.ndarray, n: int, long_clips: str = "first", short_clips: str = "pad") -> list[np.ndarray]:
    """The ``n``-sample clips made from ``x`` under the two length choices (an empty list: dropped)."""
    pieces: list[np.ndarray]
    if x.shape[0] <= n:
        pieces = [x]
    elif long_clips == "first":
        pieces = [x[:n]]
    elif long_clips == "center":
        start = (x.shape[0] - n) // 2
        pieces = [x[start:start + n]]
    else:  # split
        pieces = [x[i:i + n] for i in range(0, x.shape[0], n)]
    out = []
    for piece in pieces:
        if piece.shape[0] < n:
            if short_clips == "drop":
                continue
            piece = np.pad(piece, (0, n - piece.shape[0]))
        out.append(np.ascontiguousarray(piece, dtype=np.float32))
    return out


def new_manifest(source, *, sample_rate: int, clip_seconds: float, long_clips: str, short_clips: str,
                 on_bad_file: str) -> dict:
    return {"dataset": "audioset", "source": str(source), "sample_rate": sample_rate, "clip_seconds": clip_seconds,
            "long_clips": long_clips, "short_clips": short_clips, "on_bad_file": on_bad_file,
            "channels": "mean", "resampler": f"soxr {RESAMPLE_QUALITY}",
            "n_files": 0, "n_clips": 0, "clips": [],
            "n_bad_files": 0, "bad_files": [], "n_dropped_short": 0, "dropped_short": [],
            "n_ignored_files": 0, "ignored_files": []}


def iter_audioset(source, manifest: dict | None = None, *, sample_rate: int = SAMPLE_RATE,
                  clip_seconds: float = CLIP_SECONDS, long_clips: str = "first", short_clips: str = "pad",
                  on_bad_file: str = "refuse") -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(file, clip [T])`` (``file`` relative to a folder source); fill ``manifest`` (if given) on the way.

    See the module docstring for the choices.  ``manifest["clips"][k]`` is the file of the k-th clip.
    """
    _check_choice("long_clips", long_clips, LONG_CLIPS)
    _check_choice("short_clips", short_clips, SHORT_CLIPS)
    _check_choice("on_bad_file", on_bad_file, ON_BAD_FILE)
    n = int(round(clip_seconds * sample_rate))
    if n <= 0:
        raise ValueError(f"AudioSet: clip_seconds must be positive, got {clip_seconds}")
    files, ignored, base = find_files(source)
    m = manifest if manifest is not None else {}
    m.update(new_manifest(source, sample_rate=sample_rate, clip_seconds=clip_seconds, long_clips=long_clips,
                          short_clips=short_clips, on_bad_file=on_bad_file))
    m["n_ignored_files"] = len(ignored)
    m["ignored_files"] = [_rel(p, base) for p in ignored]
    m["n_files"] = len(files)
    for p in files:
        rel = _rel(p, base)
        try:
            x = read_any(p, sample_rate)
        except BadInputError as e:
            if on_bad_file == "refuse":
                raise BadInputError(f"{e} [AudioSet, on_bad_file='refuse': pass on_bad_file='skip' to leave broken "
                                    f"downloads out; they are then counted and named in the manifest]", p) from e
            m["bad_files"].append({"file": rel, "error": str(e)})
            m["n_bad_files"] = len(m["bad_files"])
            continue
        clips = cut(x, n, long_clips, short_clips)
        if not clips:
            m["dropped_short"].append(rel)
            m["n_dropped_short"] = len(m["dropped_short"])
            continue
        for c in clips:
            m["clips"].append(rel)
            m["n_clips"] = len(m["clips"])
            yield rel, c


def load_audioset(source, *, sample_rate: int = SAMPLE_RATE, clip_seconds: float = CLIP_SECONDS,
                  long_clips: str = "first", short_clips: str = "pad",
                  on_bad_file: str = "refuse") -> tuple[np.ndarray, dict]:
    """``(mixtures [N, T] float32, manifest)``; the manifest's ``content_hash`` is the array hash of
    ``{"mixtures": mixtures}`` (:func:`surfbench.data.store.array_hash`)."""
    from .store import array_hash

    manifest: dict = {}
    clips = [c for _, c in iter_audioset(source, manifest, sample_rate=sample_rate, clip_seconds=clip_seconds,
                                         long_clips=long_clips, short_clips=short_clips, on_bad_file=on_bad_file)]
    if not clips:
        raise BadInputError(f"{source}: no usable AudioSet clip ({manifest['n_bad_files']} bad file(s), "
                            f"{manifest['n_dropped_short']} dropped as short).", source)
    mixtures = np.stack(clips)
    manifest["content_hash"] = array_hash({"mixtures": mixtures})
    return mixtures, manifest
