"""eSpeak NG speech synthesis through ctypes, bit-for-bit deterministic.

eSpeak NG comes from the PyPI wheel ``espeakng-loader`` (``libespeak-ng.so`` +
its voice data; no system install, no root).  Two facts about the library shape
this module:

* It is not thread-safe (global state everywhere), so calls are serialised.
* Its output depends on what it synthesised before in the same process: static
  state inside the wave generator (the pitch "flutter" phase, among others)
  carries over from one utterance to the next, so the same text, voice and
  parameters give different samples (and lengths differing by a few pitch
  periods) depending on call history; ``espeak_Terminate``/``espeak_Initialize``
  does not reset it.  Whisper/breathy voices also draw from libc ``rand()``.

So that a dataset depends only on its seed (not on synthesis order or on what
else ran in the process), every utterance is synthesised in a **fresh fork of a
small "zygote" process** that initialised eSpeak once and never synthesised;
libc ``srand`` is seeded per utterance in the child.  The zygote is this file
run as a script (standard library only, so it starts in ~0.1 s and forks in
about a millisecond); it is started on first use and stopped at exit.
Synthesis still happens on the calling machine and in series (one request at a
time, under :data:`_LOCK`).  Linux/POSIX only (``os.fork``).

Wire protocol (zygote stdin/stdout): one JSON request per line; each answer is a
frame ``<status:uint32 LE><nbytes:uint32 LE><payload>``, status 0 with int16 LE
samples, status 1 with a UTF-8 error message.  The first frame after start is a
JSON ``{"sample_rate": ..., "version": ...}``.
"""
from __future__ import annotations

import atexit
import ctypes
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading

AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_RATE, ESPEAK_VOLUME, ESPEAK_PITCH, ESPEAK_RANGE = 1, 2, 3, 4
POS_CHARACTER = 1
ESPEAK_CHARS_UTF8 = 1

_HDR = struct.Struct("<II")


# --------------------------------------------------------------------------- zygote side

def _load_library():
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
    if rate <= 0:
        raise RuntimeError(f"espeak_Initialize failed (returned {rate}); data path {espeakng_loader.get_data_path()}")
    version = lib.espeak_Info(None).decode()
    # Load the English dictionary and phoneme tables once, here, so that forked
    # children start with them in memory (loading a voice does not synthesise
    # and leaves no per-utterance state behind).
    lib.espeak_SetVoiceByName(b"en-us")
    return lib, rate, version


def _write_frame(fd: int, status: int, payload: bytes) -> None:
    _write_all(fd, _HDR.pack(status, len(payload)) + payload)


def _read_exact(f, n: int) -> bytes:
    buf = f.read(n)
    if buf is None or len(buf) != n:
        raise EOFError(f"expected {n} bytes, got {0 if buf is None else len(buf)}")
    return buf


def _synthesise_in_child(lib, req: dict) -> bytes:
    """Runs in a freshly forked child: synthesise one utterance, return int16 LE bytes."""
    libc = ctypes.CDLL(None)
    seed = int(req.get("seed", 0)) & 0xFFFFFFFF
    libc.srand(ctypes.c_uint(seed))
    if hasattr(lib, "espeak_ng_SetRandSeed"):
        lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
    chunks: list[bytes] = []
    cb_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def on_audio(wav, n, _events):
        if n > 0 and wav:
            chunks.append(ctypes.string_at(wav, 2 * n))
        return 0

    cb = cb_type(on_audio)
    lib.espeak_SetSynthCallback(cb)
    voice = str(req["voice"]).encode()
    r = lib.espeak_SetVoiceByName(voice)
    if r != 0:
        raise RuntimeError(f"espeak_SetVoiceByName({req['voice']!r}) failed with {r}")
    for key, pid in (("rate", ESPEAK_RATE), ("pitch", ESPEAK_PITCH), ("range", ESPEAK_RANGE)):
        if req.get(key) is not None:
            lib.espeak_SetParameter(pid, int(req[key]), 0)
    text = str(req["text"]).encode("utf-8") + b"\0"
    r = lib.espeak_Synth(text, len(text), 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None)
    if r != 0:
        raise RuntimeError(f"espeak_Synth failed with {r}")
    lib.espeak_Synchronize()
    data = b"".join(chunks)
    if sys.byteorder != "little":  # keep the wire format little-endian
        import array

        a = array.array("h", data)
        a.byteswap()
        data = a.tobytes()
    return data


def serve() -> None:  # pragma: no cover - exercised through the client in a subprocess
    """Zygote main loop: initialise once, fork one child per request."""
    lib, rate, version = _load_library()
    out_fd = sys.stdout.fileno()
    _write_frame(out_fd, 0, json.dumps({"sample_rate": rate, "version": version}).encode())
    stdin = sys.stdin.buffer
    for line in stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
        except Exception as e:
            _write_frame(out_fd, 1, f"bad request: {e}".encode())
            continue
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(rfd)
                try:
                    _write_frame(wfd, 0, _synthesise_in_child(lib, req))
                except BaseException as e:  # report, never raise out of the child
                    _write_frame(wfd, 1, f"{type(e).__name__}: {e}".encode())
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(wfd)
        with os.fdopen(rfd, "rb") as f:
            reply = f.read()
        _, status = os.waitpid(pid, 0)
        if len(reply) < _HDR.size or _HDR.unpack(reply[:_HDR.size])[1] != len(reply) - _HDR.size:
            _write_frame(out_fd, 1, f"synthesis child died (wait status {status})".encode())
        else:
            _write_all(out_fd, reply)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# --------------------------------------------------------------------------- client side

class EspeakSynth:
    """Client of the zygote process.  Use :func:`get_synth` for the shared instance."""

    def __init__(self):
        # stderr goes to a file, not a pipe: eSpeak warnings must never fill a pipe and block the zygote.
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-u", os.path.abspath(__file__), "--serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
        )
        status, payload = self._read_frame()
        if status != 0:
            raise RuntimeError(f"eSpeak NG zygote failed to start: {payload.decode(errors='replace')}")
        info = json.loads(payload)
        self.owner_pid = os.getpid()  # a forked copy of this client must not share the zygote's pipes
        self.sample_rate = int(info["sample_rate"])
        self.version = str(info["version"])

    def _read_frame(self) -> tuple[int, bytes]:
        try:
            status, n = _HDR.unpack(_read_exact(self.proc.stdout, _HDR.size))
            return status, _read_exact(self.proc.stdout, n)
        except EOFError:
            err = b""
            try:
                self.proc.kill()
                self.proc.wait()
                self._stderr.seek(0)
                err = self._stderr.read() or b""
            except Exception:
                pass
            raise RuntimeError("eSpeak NG zygote process ended unexpectedly; its stderr:\n"
                               + err.decode(errors="replace")[-4000:]) from None

    def synth(self, text: str, voice: str, rate: int | None = None, pitch: int | None = None,
              pitch_range: int | None = None, seed: int = 0):
        """int16 samples (numpy array) at :attr:`sample_rate` for one utterance."""
        import numpy as np

        req = {"text": text, "voice": voice, "rate": rate, "pitch": pitch, "range": pitch_range, "seed": int(seed)}
        with _LOCK:
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
            status, payload = self._read_frame()
        if status != 0:
            raise RuntimeError(f"eSpeak NG synthesis failed for voice {voice!r}, text {text!r}: "
                               f"{payload.decode(errors='replace')}")
        return np.frombuffer(payload, dtype="<i2").astype(np.int16)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self._stderr):
            try:
                stream.close()
            except Exception:
                pass


#: Serialises all synthesis requests of this process (eSpeak is not thread-safe).
_LOCK = threading.RLock()
_SYNTH: EspeakSynth | None = None


def get_synth() -> EspeakSynth:
    """The process-wide synthesiser (zygote started on first call, stopped at exit)."""
    global _SYNTH
    with _LOCK:
        if _SYNTH is None or _SYNTH.owner_pid != os.getpid() or _SYNTH.proc.poll() is not None:
            _SYNTH = EspeakSynth()
            atexit.register(_SYNTH.close)
        return _SYNTH


if __name__ == "__main__" and "--serve" in sys.argv:
    serve()
