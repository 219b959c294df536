"""Reading and writing audio files, with errors that say what is wrong and what to do.

All audio in surfbench is mono float32 at a known sample rate (16 kHz for the
speech track).  :func:`read_audio` returns exactly that or raises
:class:`BadInputError` naming the file, the problem, and the fix; it never
silently resamples, downmixes or passes on NaN.  I/O goes through ``soundfile``
(``torchaudio.load``/``save`` need torchcodec since torchaudio 2.9, see
shared/ENVIRONMENT.md); resampling, only when asked for, goes through
``torchaudio.functional.resample``.

:func:`write_audio` writes atomically (:mod:`surfbench.atomic`: a temporary file in
the same folder, then ``os.replace``) so that a killed process never leaves a half-written WAV
under the final name.  Its default subtype is 32-bit float (``'FLOAT'``): the
float32 samples surfbench computes round-trip bit-exactly, with no
quantisation and no clipping; 16-bit PCM (``'PCM_16'``) is available for
listening copies and is lossy (quantised to 1/32768, values outside ±1 refused).
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf

from .atomic import atomic_path

PathLike = Union[str, os.PathLike]

#: Subtypes :func:`write_audio` accepts.  FLOAT is lossless for float32 data.
WRITE_SUBTYPES = ("FLOAT", "PCM_16")


class BadInputError(ValueError):
    """An input file (audio, dataset layout) is missing or unusable.

    The message always names the file, the problem, and what to do about it.
    ``path`` holds the offending path (or ``None``).
    """

    def __init__(self, message: str, path: PathLike | None = None):
        super().__init__(message)
        self.path = None if path is None else str(path)


def _wav_truncation(path: Path) -> str | None:
    """For a RIFF/WAVE file, a description of a truncated ``data`` chunk, else ``None``.

    libsndfile quietly reads what is there when a WAV is cut short (a copy that
    stopped half-way), so a truncated file would load as a shorter clip.  Here
    the chunk list is walked and the declared ``data`` size is compared with the
    bytes actually present.  Sizes 0 and 0xFFFFFFFF (streams written without a
    known length, RF64 placeholders) are treated as unknown, not as truncation.
    Non-RIFF files return ``None`` (libsndfile's own checks apply to them).
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            ck = f.read(8)
            if len(ck) < 8:
                return None
            cid, csize = ck[:4], struct.unpack("<I", ck[4:])[0]
            if cid == b"data":
                if csize in (0, 0xFFFFFFFF):
                    return None
                have = size - (pos + 8)
                if have < csize:
                    return (f"the WAV 'data' chunk declares {csize} bytes but only {have} are present "
                            f"(the file is truncated)")
                return None
            pos += 8 + csize + (csize & 1)
    return None


def read_audio(
    path: PathLike,
    expected_sr: int,
    mono: bool = True,
    resample: bool = False,
) -> np.ndarray:
    """Read an audio file as float32.

    Returns ``[T]`` when ``mono`` (the file must have one channel) or ``[C, T]``
    (channels first) otherwise.  When the file's sample rate differs from
    ``expected_sr`` this raises, unless ``resample=True``, in which case the
    signal is resampled with ``torchaudio.functional.resample`` (windowed-sinc,
    its defaults).

    Raises :class:`BadInputError` for: a missing path, an empty (0-byte or
    0-frame) file, a corrupt / truncated / non-audio file, a wrong sample rate,
    more than one channel where mono is expected, NaN or Inf samples.
    """
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"{p}: audio file does not exist. Check the path (and that the dataset was "
                            f"built or downloaded completely).", p)
    if p.is_dir():
        raise BadInputError(f"{p}: is a directory, not an audio file. Pass the path of a .wav/.flac file.", p)
    if p.stat().st_size == 0:
        raise BadInputError(f"{p}: empty file (0 bytes). The file was not written completely; "
                            f"delete it and regenerate or re-download it.", p)
    try:
        info = sf.info(str(p))
    except Exception as e:  # libsndfile's error for anything it cannot parse
        raise BadInputError(f"{p}: not a readable audio file (corrupt, truncated header, or not audio): {e}. "
                            f"Regenerate or re-download it.", p) from e
    trunc = _wav_truncation(p)
    if trunc is not None:
        raise BadInputError(f"{p}: {trunc}. Regenerate or re-download this file.", p)
    if info.frames == 0:
        raise BadInputError(f"{p}: empty audio (0 frames). Regenerate or re-download this file.", p)
    if mono and info.channels != 1:
        raise BadInputError(f"{p}: has {info.channels} channels but mono audio is expected. "
                            f"Convert it to mono (e.g. `sox in.wav -c 1 out.wav`) or pick one channel, "
                            f"or read it with mono=False.", p)
    if info.samplerate != expected_sr and not resample:
        raise BadInputError(f"{p}: sample rate is {info.samplerate} Hz but {expected_sr} Hz is expected. "
                            f"Resample the file (e.g. `sox in.wav -r {expected_sr} out.wav`) or read it with "
                            f"resample=True.", p)
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as e:
        raise BadInputError(f"{p}: audio data could not be decoded (corrupt or truncated): {e}. "
                            f"Regenerate or re-download it.", p) from e
    if data.shape[0] == 0:
        raise BadInputError(f"{p}: empty audio (0 frames could be read). Regenerate or re-download it.", p)
    x = np.ascontiguousarray(data.T)  # [C, T]
    if not np.isfinite(x).all():
        n_bad = int((~np.isfinite(x)).sum())
        raise BadInputError(f"{p}: contains {n_bad} NaN/Inf sample(s). The file is corrupt or was written "
                            f"from a diverged computation; regenerate it.", p)
    if sr != expected_sr:
        import torch
        import torchaudio.functional as AF

        x = AF.resample(torch.from_numpy(x), int(sr), int(expected_sr)).numpy().astype(np.float32, copy=False)
    return x[0] if mono else x


def write_audio(path: PathLike, x, sr: int, subtype: str = "FLOAT") -> Path:
    """Write ``x`` (``[T]`` or ``[C, T]``, numpy or torch) as a WAV file, atomically.

    ``subtype='FLOAT'`` (default) stores IEEE float32: lossless for float32
    signals, values outside ±1 kept.  ``subtype='PCM_16'`` stores 16-bit
    integers (lossy; refuses samples outside [-1, 1] instead of clipping them).
    NaN/Inf are refused.  Returns the final path.
    """
    if subtype not in WRITE_SUBTYPES:
        raise ValueError(f"write_audio: subtype must be one of {WRITE_SUBTYPES}, got {subtype!r}")
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 1:
        frames = a
    elif a.ndim == 2:
        frames = a.T  # soundfile wants [T, C]
    else:
        raise ValueError(f"write_audio({path}): expected [T] or [C, T], got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"write_audio({path}): refusing to write an empty signal")
    if not np.isfinite(a).all():
        raise ValueError(f"write_audio({path}): signal contains NaN/Inf")
    if subtype == "PCM_16" and np.abs(a).max() > 1.0:
        raise ValueError(f"write_audio({path}): peak {np.abs(a).max():.3f} exceeds 1.0, which 16-bit PCM would "
                         f"clip; scale the signal or use subtype='FLOAT'")
    p = Path(path)
    with atomic_path(p) as tmp:
        sf.write(tmp, frames, int(sr), subtype=subtype, format="WAV")
    return p
