"""The pool of real and synthesised sounds that the offline Table 3 stand-in is made of.

Table 3 (AudioSet training, FUSS and LibriSpeech + FUSS evaluation) cannot be downloaded by the
tiny profile, so :mod:`surfbench.data.fuss_standin` writes a stand-in in the real on-disk formats
from the recordings collected here, every one resampled to 16 kHz mono float32 (``soxr``, quality
``"HQ"``, as :mod:`surfbench.data.audioset` resamples) with leading and trailing silence (below
−60 dB of its peak) trimmed:

* ``opensfx`` — Debian's ``openttd-opensfx``: OpenSFX's 73-entry sound catalogue ``opensfx.cat``
  (71 non-empty recordings, mostly edited Freesound/pdsounds recordings: vehicles, machines, animals,
  crowds, wind).  Format (OpenTTD's catcodec, read by :func:`read_cat`): a table of contents of
  uint32 LE pairs ``(offset | 0x80000000, size)``, 8 bytes per entry, the first offset being the
  table's size; at each offset: a length byte, the NUL-terminated description ("Title". Original
  "file" by "author". Edited by ... License: ...), a RIFF/WAVE file of ``size`` bytes, a separator
  byte, then a length byte and the NUL-terminated source file name (``src/wav/osfx_NN.wav``).
* ``minetest`` — Debian's ``minetest-data``: the 108 Ogg Vorbis clips of Minetest Game
  (``mods/*/sounds/*.ogg``: footsteps, doors, glass, fire, water, lava, ...).
* ``soundfont`` — the TimGM6mb General MIDI SoundFont that the PyPI wheel ``pretty_midi`` bundles,
  rendered with the PyPI ``tinysoundfont`` synthesiser at 44.1 kHz (then resampled): melodic phrases
  of solo instruments, sustained chords (organ, strings, choir, pad), drum-kit hits and the GM
  sound-effect programs (seashore, helicopter, applause, bird, telephone, gunshot, ...).  Everything
  rendered is fixed here (:data:`SF2_RENDERS`, notes from fixed seeds), so renders are deterministic.
* ``espeak`` — short English sentences spoken by eSpeak NG (:mod:`surfbench.data.espeak`, via
  :func:`surfbench.data.speech.synthesise`) with voices and sentences disjoint from the Libri2Mix
  stand-in's (:mod:`surfbench.data.speech`) and from the LibriSpeech stand-in's (see
  :data:`AUDIOSET_VOICE_VARIANTS`, :func:`short_sentences`, :data:`LIBRISPEECH_VOICE_VARIANTS`,
  :func:`long_sentences`).  Used for the AudioSet-like training mixtures only.

Every :class:`Recording` has a stable ``id``, its ``origin`` (package and file), a ``licence``
(read from the Debian copyright file of the package, a machine-readable DEP-5 file, by
:func:`dep5_licence`; for OpenSFX also the sound's own credit line), a ``kind`` (``background``:
a sustained sound that may be looped to the clip's length; ``foreground``: an event) and a
``category`` (``environment``, ``instrument``, ``drum``, ``speech``).  Its ``group`` names its
*original recording*: recordings that share one (OpenSFX sounds edited from the same Freesound file,
Minetest's numbered variants ``name.1/.2/.3``, SoundFont presets that play the same sample, files
with identical samples) get the same group, so a split by group keeps every original recording on
one side.

**Fallback.**  Where the Debian packages are not installed (no root, not Debian), their sources are
left out and the pool is the smaller one built from the PyPI sources alone (SoundFont renders and
eSpeak NG).  :attr:`SoundPool.name` says which (``full``, ``partial`` or ``pypi-only``) and
:attr:`SoundPool.hash` — a sha256 over every recording's id, kind, category, group and samples —
identifies the pool exactly; both go into the stand-in's manifest and so into every result made
from it.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import importlib.util
import io
import re
import struct
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..audio_io import BadInputError
from ..seeding import derive_seed
from .audioset import RESAMPLE_QUALITY

SAMPLE_RATE = 16000
SOURCES = ("opensfx", "minetest", "soundfont", "espeak")
KINDS = ("background", "foreground")
CATEGORIES = ("environment", "instrument", "drum", "speech")
#: Trailing / leading samples quieter than this (dB relative to the peak) are trimmed.
TRIM_DB = -60.0
#: Recordings shorter than this after trimming are left out (listed in the manifest's ``skipped``).
MIN_SECONDS = 0.05

# Where Debian puts the packages' files (tests monkeypatch these).
OPENSFX_PACKAGE = "openttd-opensfx"
OPENSFX_CAT = Path("/usr/share/games/openttd/baseset/opensfx/opensfx.cat")
MINETEST_PACKAGE = "minetest-data"
MINETEST_GAME = Path("/usr/share/games/minetest/games/minetest_game")
DOC_DIR = Path("/usr/share/doc")  # <DOC_DIR>/<package>/copyright (DEP-5) and changelog.Debian.gz

#: TimGM6mb's licence: pretty_midi (MIT) ships the file without stating one; Debian's
#: timgm6mb-soundfont package (the same SoundFont, from MuseScore 1.3) records this.
TIMGM6MB_LICENCE = "GPL-2"
TIMGM6MB_CREDIT = ("TimGM6mb.sf2, (c) 2004 Tim Brechbill, 2010 David Bolton; GPL-2 as recorded by Debian's "
                   "timgm6mb-soundfont copyright file (from MuseScore 1.3); shipped inside the MIT-licensed "
                   "pretty_midi wheel, which states no separate licence for it")
ESPEAK_LICENCE = "GPL-3.0-or-later"
ESPEAK_CREDIT = ("synthesised with eSpeak NG (GPL-3.0-or-later; PyPI espeakng-loader); sentences from "
                 "surfbench's word lists (MIT)")


@dataclass
class Recording:
    """One recording of the pool (its samples are in :attr:`SoundPool.audio`)."""

    id: str  #: stable, e.g. ``opensfx/osfx_52``, ``minetest/fire_fire.1``, ``soundfont/p122-seashore``
    source: str  #: one of :data:`SOURCES`
    kind: str  #: ``background`` (sustained, may be looped) or ``foreground`` (an event)
    category: str  #: one of :data:`CATEGORIES`
    title: str
    origin: str  #: package and file it comes from
    licence: str
    credit: str  #: authors / credit line as the source states it
    group: str = ""  #: its original recording (see the module docstring); set by :func:`assign_groups`
    seconds: float = 0.0
    sha256: str = ""  #: of its 16-kHz float32 samples


# ----------------------------------------------------------------------------- Debian metadata
def _dep5_paragraphs(text: str) -> list[dict[str, str]]:
    out = []
    for para in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in para.splitlines():
            if line[:1] in (" ", "\t"):
                if key is not None:
                    fields[key] += "\n" + line.strip()
                continue
            m = re.match(r"([A-Za-z-]+):\s*(.*)$", line)
            key = m.group(1).lower() if m else None
            if key is not None and key not in fields:
                fields[key] = m.group(2)
            elif key is not None:
                key = None  # a repeated field in a malformed paragraph: keep the first
        out.append(fields)
    return out


def _dep5_match(pattern: str, path: str) -> bool:
    """DEP-5 ``Files`` globs: ``*`` matches any characters including ``/``, ``?`` one character."""
    rx = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(rx, path) is not None


def dep5_licence(copyright_path, path: str) -> str | None:
    """The ``License`` of the last ``Files`` paragraph of a DEP-5 copyright file matching ``path`` (as DEP-5
    says: the last match wins), or None where the file is missing or no paragraph matches."""
    try:
        text = Path(copyright_path).read_text(errors="replace")
    except OSError:
        return None
    licence = None
    for fields in _dep5_paragraphs(text):
        if "files" in fields and fields.get("license", "").strip():
            if any(_dep5_match(p, path) for p in fields["files"].split()):
                licence = fields["license"].splitlines()[0].strip()
    return licence


def debian_version(package: str) -> str | None:
    """The installed version of a Debian package, from the first line of its ``changelog.Debian.gz``."""
    try:
        with gzip.open(DOC_DIR / package / "changelog.Debian.gz", "rt", errors="replace") as f:
            first = f.readline()
    except OSError:
        return None
    m = re.match(r"\S+ \(([^)]+)\)", first)
    return m.group(1) if m else None


# ----------------------------------------------------------------------------- OpenSFX's catalogue
CAT_NAMED = 0x80000000


@dataclass(frozen=True)
class CatEntry:
    """One entry of an OpenTTD sound catalogue (``.cat``)."""

    index: int
    name: str  #: the description: title, credits, licence
    filename: str  #: the file it was built from, e.g. ``src/wav/osfx_00.wav``
    wav: bytes  #: a complete RIFF/WAVE file


def read_cat(path) -> list[CatEntry]:
    """Every entry of an OpenTTD sound catalogue (format in the module docstring).

    Raises :class:`BadInputError` naming the file and the entry when it is missing, truncated or not
    a catalogue of named entries.
    """
    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"{p}: OpenTTD sound catalogue not found. Install it with `apt-get install "
                            f"{OPENSFX_PACKAGE}` (or leave it out: the pool then falls back to the PyPI sources).", p)
    data = p.read_bytes()
    size = len(data)

    def bad(msg: str):
        raise BadInputError(f"{p}: {msg}. The file is not an intact OpenTTD sound catalogue (opensfx.cat); "
                            f"reinstall it (`apt-get install --reinstall {OPENSFX_PACKAGE}`).", p)

    if size < 8:
        bad(f"only {size} bytes, too short for a table of contents (8 bytes per entry)")
    first = struct.unpack_from("<I", data, 0)[0] & ~CAT_NAMED
    if first == 0 or first % 8:
        bad(f"the first offset, {first}, is not a positive multiple of 8 (it is the table of contents' size)")
    if first > size:
        bad(f"truncated: the table of contents needs {first} bytes ({first // 8} entries) but the file has {size}")
    entries = []
    for i in range(first // 8):
        raw, n = struct.unpack_from("<II", data, 8 * i)
        if not raw & CAT_NAMED:
            bad(f"entry {i}: offset without the named-entry flag (bit 31); an old-format Transport Tycoon "
                f"sample.cat is not supported")
        pos = raw & ~CAT_NAMED

        def need(end: int, what: str) -> None:
            if end > size:
                bad(f"truncated: entry {i}'s {what} ends at byte {end} but the file has {size} bytes")

        need(pos + 1, "name length")
        name_len = data[pos]
        need(pos + 1 + name_len, "name")
        name = data[pos + 1:pos + 1 + name_len].split(b"\0")[0].decode("utf-8", "replace")
        pos += 1 + name_len
        need(pos + n, f"WAV data ({n} bytes, {name[:40]!r})")
        wav = data[pos:pos + n]
        if n < 12 or wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
            bad(f"entry {i} ({name[:40]!r}): no RIFF/WAVE header at byte {pos}")
        if struct.unpack_from("<I", wav, 4)[0] + 8 != n:
            bad(f"entry {i} ({name[:40]!r}): the RIFF size ({struct.unpack_from('<I', wav, 4)[0] + 8}) differs from "
                f"the table's ({n})")
        pos += n
        need(pos + 2, "file-name length")
        fn_len = data[pos + 1]
        need(pos + 2 + fn_len, "file name")
        filename = data[pos + 2:pos + 2 + fn_len].split(b"\0")[0].decode("utf-8", "replace")
        entries.append(CatEntry(index=i, name=name, filename=filename, wav=wav))
    return entries


def opensfx_title(name: str) -> str:
    m = re.match(r'\s*"([^"]*)"', name)
    return m.group(1) if m else name.split(".")[0]


def opensfx_originals(name: str) -> list[str]:
    """The original recordings an OpenSFX description credits (quoted titles not preceded by ``by``/``aka``),
    e.g. ``['crash.wav']``; empty for a sound recorded by the editor himself ("By Janis Lukss")."""
    m = re.match(r'\s*"[^"]*"\.?(.*)$', name, re.S)
    rest = m.group(1) if m else name
    cut = re.search(r"\b(Cut and edited|Edited|Mixed/edited|Mixed|License)\b", rest)
    credits = rest[:cut.start()] if cut else rest
    out = []
    for q in re.finditer(r'"([^"]+)"', credits):
        before = credits[:q.start()].rstrip().lower()
        if before.endswith(" by") or before.endswith(" aka") or before == "by":
            continue
        out.append(q.group(1).strip().lower())
    return out


#: OpenSFX sounds that are sustained (looped as backgrounds); every other sound is a foreground event.
OPENSFX_BACKGROUNDS = frozenset({
    "Mining machinery", "Electric sparking", "Helicopter", "Applause", "Jackhammer", "Sawmill", "Wind",
    "Heavy wind", "Lumber mill: Chainsaw", "Tropical: Monkeys", "Toyland: Plastic mine"})


def _opensfx(cat_path: Path, raw: list) -> dict:
    entries = read_cat(cat_path)
    copyright_path = DOC_DIR / OPENSFX_PACKAGE / "copyright"
    import soundfile as sf

    for e in entries:
        title = opensfx_title(e.name)
        licence = dep5_licence(copyright_path, e.filename) or "CC-BY-SA-3.0 (OpenSFX readme; no Debian copyright file)"
        rec = Recording(id=f"opensfx/{Path(e.filename).stem or e.index}", source="opensfx",
                        kind="background" if title in OPENSFX_BACKGROUNDS else "foreground", category="environment",
                        title=title, origin=f"{OPENSFX_PACKAGE}: {cat_path} entry {e.index} ({e.filename})",
                        licence=licence, credit=e.name)
        try:
            x, sr = sf.read(io.BytesIO(e.wav), dtype="float32", always_2d=True)
        except Exception as err:
            raise BadInputError(f"{cat_path}: entry {e.index} ({title!r}) is not a readable WAV: {err}. Reinstall "
                                f"{OPENSFX_PACKAGE}.", cat_path) from err
        keys = [f"opensfx-original:{o}" for o in opensfx_originals(e.name)] or [f"opensfx-own:{title.lower()}"]
        raw.append((rec, x.T, sr, keys))
    return {"present": True, "package": OPENSFX_PACKAGE, "version": debian_version(OPENSFX_PACKAGE),
            "file": str(cat_path), "file_sha256": hashlib.sha256(cat_path.read_bytes()).hexdigest(),
            "n_entries": len(entries), "licence": dep5_licence(copyright_path, "src/wav/x.wav"),
            "licence_note": "the collection is CC-BY-SA-3.0; each sound's credit line names its own licence "
                            "(CC-BY-3.0, CC-BY-SA-3.0 or CC0-1.0)",
            "copyright_file": str(copyright_path)}


# ----------------------------------------------------------------------------- Minetest Game's sounds
#: Minetest sounds (file name without the ``.N`` variant number) that are sustained: looped as backgrounds.
MINETEST_BACKGROUNDS = frozenset({
    "carts_cart_moving", "default_furnace_active", "env_sounds_lava", "env_sounds_water", "fire_fire",
    "fire_large", "fire_small", "tnt_gunpowder_burning"})


def minetest_sound_name(path) -> str:
    """``default_dirt_footstep.2.ogg`` -> ``default_dirt_footstep`` (variants of one sound share it)."""
    return re.sub(r"\.\d+$", "", Path(path).stem)


def _minetest(game: Path, raw: list) -> dict:
    import soundfile as sf

    files = sorted(game.glob("mods/*/sounds/*.ogg"))
    if not files:
        raise BadInputError(f"{game}: no mods/*/sounds/*.ogg below this folder; reinstall {MINETEST_PACKAGE}.", game)
    copyright_path = DOC_DIR / MINETEST_PACKAGE / "copyright"
    licences: Counter = Counter()
    digest = hashlib.sha256()
    for f in files:
        rel = f.relative_to(game).as_posix()
        # Debian's source package holds Minetest Game under mtg/ (see its copyright file's Files paths)
        licence = dep5_licence(copyright_path, f"mtg/{rel}") or "CC-BY-SA-3.0 (Minetest README; no Debian copyright file)"
        licences[licence] += 1
        blob = f.read_bytes()
        digest.update(rel.encode() + b"\0" + hashlib.sha256(blob).digest())
        name = minetest_sound_name(f)
        rec = Recording(id=f"minetest/{f.stem}", source="minetest",
                        kind="background" if name in MINETEST_BACKGROUNDS else "foreground", category="environment",
                        title=f.stem, origin=f"{MINETEST_PACKAGE}: {f}", licence=licence,
                        credit=f"Minetest Game contributors (see {copyright_path})")
        try:
            x, sr = sf.read(io.BytesIO(blob), dtype="float32", always_2d=True)
        except Exception as err:
            raise BadInputError(f"{f}: not a readable Ogg file: {err}. Reinstall {MINETEST_PACKAGE}.", f) from err
        raw.append((rec, x.T, sr, [f"minetest-sound:{f.parent.parent.name}/{name}"]))
    return {"present": True, "package": MINETEST_PACKAGE, "version": debian_version(MINETEST_PACKAGE),
            "folder": str(game), "n_files": len(files), "files_sha256": digest.hexdigest(),
            "licences": dict(sorted(licences.items())), "copyright_file": str(copyright_path)}


# ----------------------------------------------------------------------------- TimGM6mb SoundFont renders
@dataclass(frozen=True)
class Render:
    """One recording rendered from the SoundFont: ``notes`` are ``(on s, key, velocity, off s)``."""

    name: str
    title: str
    bank: int
    preset: int
    kind: str
    category: str
    notes: tuple
    seconds: float
    drums: bool = False
    keep: tuple | None = None  #: ``(start s, end s)`` kept (the steady part of a held sound), or all


def _phrase(preset: int, base: int) -> tuple[tuple, float]:
    """A short melody for ``preset`` around key ``base``: fixed notes (its own seed), 90-140 bpm."""
    rng = np.random.default_rng(derive_seed("sound_pool", "phrase", preset))
    scale = ((0, 2, 4, 5, 7, 9, 11, 12), (0, 2, 3, 5, 7, 8, 10, 12), (0, 2, 4, 7, 9, 12, 14, 16))[int(rng.integers(3))]
    beat = 60.0 / float(rng.integers(90, 141))
    t, notes = 0.0, []
    for _ in range(int(rng.integers(8, 13))):
        d = beat * float(rng.choice([0.5, 0.5, 1.0, 1.0, 1.5, 2.0]))
        notes.append((round(t, 4), base + scale[int(rng.integers(len(scale)))], int(rng.integers(70, 111)),
                      round(t + 0.9 * d, 4)))
        t += d
    return tuple(notes), round(t + 1.0, 4)


def _held(key: int, chord=(0,), seconds: float = 6.0, vel: int = 100) -> tuple:
    return tuple((0.0, key + c, vel, seconds - 0.3) for c in chord)


_PHRASES = ((0, "Acoustic grand piano", 60), (4, "Electric piano", 60), (6, "Harpsichord", 60),
            (9, "Glockenspiel", 72), (11, "Vibraphone", 60), (12, "Marimba", 60), (13, "Xylophone", 72),
            (14, "Tubular bells", 60), (21, "Accordion", 60), (22, "Harmonica", 60), (24, "Nylon guitar", 52),
            (26, "Jazz guitar", 52), (32, "Acoustic bass", 36), (36, "Slap bass", 36), (40, "Violin", 67),
            (42, "Cello", 48), (45, "Pizzicato strings", 60), (46, "Harp", 60), (56, "Trumpet", 60),
            (57, "Trombone", 48), (64, "Soprano sax", 67), (65, "Alto sax", 60), (66, "Tenor sax", 55),
            (68, "Oboe", 67), (71, "Clarinet", 60), (73, "Flute", 72), (77, "Shakuhachi", 67), (79, "Ocarina", 72),
            (80, "Square lead", 60), (105, "Banjo", 60), (107, "Koto", 60), (108, "Kalimba", 72), (111, "Shanai", 67),
            (114, "Steel drums", 60))
_PADS = ((19, "Church organ chord"), (48, "String ensemble chord"), (52, "Choir chord"), (89, "Warm pad chord"))
_FX_BACKGROUNDS = ((122, "Seashore"), (125, "Helicopter"), (126, "Applause"))
_FX_EVENTS = ((120, "Guitar fret noise", 60, 0.6), (121, "Breath noise", 60, 1.2), (123, "Bird tweet", 72, 1.6),
              (124, "Telephone ring", 60, 2.5), (127, "Gunshot", 60, 0.8), (55, "Orchestra hit", 60, 1.2))
_DRUMS = ((35, "Acoustic bass drum"), (38, "Acoustic snare"), (39, "Hand clap"), (40, "Electric snare"),
          (42, "Closed hi-hat"), (45, "Low tom"), (46, "Open hi-hat"), (49, "Crash cymbal"), (50, "High tom"),
          (51, "Ride cymbal"), (54, "Tambourine"), (56, "Cowbell"), (60, "High bongo"), (62, "Mute high conga"),
          (69, "Cabasa"), (75, "Claves"), (76, "High wood block"), (81, "Open triangle"))


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


def sf2_renders() -> list[Render]:
    """What the pool renders from TimGM6mb (fixed)."""
    out = []
    for preset, title, base in _PHRASES:
        notes, secs = _phrase(preset, base)
        out.append(Render(f"p{preset:03d}-{_slug(title)}", title, 0, preset, "foreground", "instrument", notes, secs))
    for preset, title in _PADS:
        out.append(Render(f"p{preset:03d}-{_slug(title)}", title, 0, preset, "background", "instrument",
                          _held(55, (0, 4, 7, 12)), 6.0, keep=(0.6, 5.6)))
    for preset, title in _FX_BACKGROUNDS:
        out.append(Render(f"p{preset:03d}-{_slug(title)}", title, 0, preset, "background", "environment",
                          _held(60), 6.0, keep=(0.6, 5.6)))
    for preset, title, key, secs in _FX_EVENTS:
        out.append(Render(f"p{preset:03d}-{_slug(title)}", title, 0, preset, "foreground", "environment",
                          ((0.0, key, 110, secs * 0.7),), secs))
    for key, title in _DRUMS:
        out.append(Render(f"drum{key:03d}-{_slug(title)}", title, 128, 0, "foreground", "drum",
                          ((0.0, key, 110, 0.2),), 2.0, drums=True))
    return out


#: Everything rendered from the SoundFont (see :func:`sf2_renders`).
SF2_RENDERS = tuple(sf2_renders())


def sf2_path() -> Path:
    """TimGM6mb.sf2 inside the installed ``pretty_midi`` package (found without importing it)."""
    spec = importlib.util.find_spec("pretty_midi")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("pretty_midi is not installed; it ships the TimGM6mb SoundFont the sound pool "
                                  "renders. Run `make setup` (or pip install pretty_midi).")
    p = Path(list(spec.submodule_search_locations)[0]) / "TimGM6mb.sf2"
    if not p.is_file():
        raise BadInputError(f"{p}: pretty_midi's bundled TimGM6mb.sf2 is missing; reinstall pretty_midi.", p)
    return p


class _SF2Index:
    """Which samples a SoundFont preset plays for a key and velocity (the RIFF ``pdta`` hydra, SF2 2.01)."""

    _GEN_KEYRANGE, _GEN_VELRANGE, _GEN_INSTRUMENT, _GEN_SAMPLE = 43, 44, 41, 53

    def __init__(self, blob: bytes, path: Path):
        pdta: dict[str, bytes] = {}
        if blob[:4] != b"RIFF" or blob[8:12] != b"sfbk":
            raise BadInputError(f"{path}: not a SoundFont 2 file (no RIFF sfbk header).", path)
        for cid, body in self._chunks(blob, 12, len(blob)):
            if cid == b"LIST" and body[:4] == b"pdta":
                pdta = {c.decode(): b for c, b in self._chunks(body, 4, len(body))}
        try:
            self.phdr = list(struct.iter_unpack("<20sHHHIII", pdta["phdr"]))
            self.pbag = list(struct.iter_unpack("<HH", pdta["pbag"]))
            self.pgen = list(struct.iter_unpack("<HH", pdta["pgen"]))
            self.inst = list(struct.iter_unpack("<20sH", pdta["inst"]))
            self.ibag = list(struct.iter_unpack("<HH", pdta["ibag"]))
            self.igen = list(struct.iter_unpack("<HH", pdta["igen"]))
        except (KeyError, struct.error) as e:
            raise BadInputError(f"{path}: SoundFont preset data (pdta) missing or damaged: {e}.", path) from e
        self.presets = {(h[2], h[1]): i for i, h in enumerate(self.phdr[:-1])}

    @staticmethod
    def _chunks(data: bytes, start: int, end: int):
        pos = start
        while pos + 8 <= end:
            cid, n = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
            yield cid, data[pos + 8:pos + 8 + n]
            pos += 8 + n + (n & 1)

    @staticmethod
    def _zones(i: int, hdrs, bags, gens, bag_field: int):
        for z in range(hdrs[i][bag_field], hdrs[i + 1][bag_field]):
            yield {op: amount for op, amount in gens[bags[z][0]:bags[z + 1][0]]}

    @classmethod
    def _covers(cls, zone: dict, key: int, vel: int) -> bool:
        for gen, v in ((cls._GEN_KEYRANGE, key), (cls._GEN_VELRANGE, vel)):
            if gen in zone and not (zone[gen] & 0xFF) <= v <= (zone[gen] >> 8):
                return False
        return True

    def samples(self, bank: int, preset: int, key: int, vel: int) -> set[int]:
        out: set[int] = set()
        for pz in self._zones(self.presets[(bank, preset)], self.phdr, self.pbag, self.pgen, 3):
            if self._GEN_INSTRUMENT in pz and self._covers(pz, key, vel):
                for iz in self._zones(pz[self._GEN_INSTRUMENT], self.inst, self.ibag, self.igen, 1):
                    if self._GEN_SAMPLE in iz and self._covers(iz, key, vel):
                        out.add(iz[self._GEN_SAMPLE])
        return out


def render_sf2(render: Render, sf2: bytes, sample_rate: int = 44100) -> np.ndarray:
    """``render`` as float32 ``[T]`` at ``sample_rate`` (tinysoundfont; the stereo output averaged)."""
    try:
        import tinysoundfont
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError("tinysoundfont is not installed; the sound pool renders the TimGM6mb SoundFont "
                                  "with it. Run `make setup` (it installs tinysoundfont with --no-deps).") from e
    synth = tinysoundfont.Synth(samplerate=sample_rate)
    sfid = synth.sfload(sf2)
    synth.program_select(0, sfid, render.bank, render.preset, is_drums=render.drums)
    events = sorted([(on, 1, k, v) for on, k, v, _ in render.notes] + [(off, 0, k, 0) for _, k, _, off in render.notes])
    pieces, done = [], 0
    for t, is_on, key, vel in events + [(render.seconds, -1, 0, 0)]:
        n = int(round(t * sample_rate)) - done
        if n > 0:
            pieces.append(np.frombuffer(synth.generate(n), dtype=np.float32).reshape(-1, 2).mean(axis=1))
            done += n
        if is_on == 1:
            synth.noteon(0, key, vel)
        elif is_on == 0:
            synth.noteoff(0, key)
    x = np.concatenate(pieces).astype(np.float32)
    if render.keep is not None:
        x = x[int(render.keep[0] * sample_rate):int(render.keep[1] * sample_rate)]
    return x


def _soundfont(raw: list) -> dict:
    path = sf2_path()
    blob = path.read_bytes()
    index = _SF2Index(blob, path)
    for r in SF2_RENDERS:
        used = set()
        for _, key, vel, _ in r.notes:
            used |= index.samples(r.bank, r.preset, key, vel)
        rec = Recording(id=f"soundfont/{r.name}", source="soundfont", kind=r.kind, category=r.category,
                        title=r.title, origin=f"pretty_midi: {path} (bank {r.bank}, preset {r.preset}"
                                              f"{', drum kit' if r.drums else ''}), rendered with tinysoundfont",
                        licence=TIMGM6MB_LICENCE, credit=TIMGM6MB_CREDIT)
        keys = [f"sf2-sample:{s}" for s in sorted(used)] or [f"sf2-preset:{r.bank}/{r.preset}"]
        raw.append((rec, render_sf2(r, blob)[None, :], 44100, keys))
    return {"present": True, "package": "pretty_midi (PyPI) + tinysoundfont (PyPI)",
            "version": f"pretty_midi {_dist_version('pretty_midi')}, tinysoundfont {_dist_version('tinysoundfont')}",
            "file": str(path), "file_sha256": hashlib.sha256(blob).hexdigest(), "n_renders": len(SF2_RENDERS),
            "licence": TIMGM6MB_LICENCE, "licence_note": TIMGM6MB_CREDIT}


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------- eSpeak NG speech
#: eSpeak NG voice variants of the AudioSet-like speech, of the LibriSpeech stand-in, and (speech.VARIANTS)
#: of the Libri2Mix stand-in: three disjoint sets, so no stand-in hears another one's voices.
AUDIOSET_VOICE_VARIANTS = ("AnxiousAndy", "Diogo", "Gene2", "Mario", "RicishayMax", "RicishayMax2", "announcer",
                           "iven2", "iven3", "iven4", "klatt4", "marcelo", "miguel", "mike2", "pablo", "pedro",
                           "sandro", "shelby", "steph2", "steph3")
LIBRISPEECH_VOICE_VARIANTS = ("Alicia", "Andrea", "Denis", "Gene", "Henrique", "Hugo", "Jacky", "Lee", "Marco",
                              "Michael", "Mike", "Nguyen", "Reed", "adam", "anika", "antonio", "boris", "edward2",
                              "gustave", "ian")


def make_voices(variants, n: int, seed, tag: str, pitch=(25, 75), pitch_range=(30, 90), rate=(140, 200)) -> list[dict]:
    """``n`` speakers (``speech.synthesise``'s dict: voice, pitch, range, rate), one variant each, drawn from
    ``seed``: a seeded choice of ``n`` of ``variants``, an accent of :data:`surfbench.data.speech.ACCENTS`."""
    from .speech import ACCENTS

    if not 1 <= n <= len(variants):
        raise ValueError(f"{tag}: n_speakers must be 1..{len(variants)} (one eSpeak variant each), got {n}")
    rng = np.random.default_rng(derive_seed("sound_pool", "voices", tag, seed))
    chosen = [variants[int(i)] for i in rng.permutation(len(variants))[:n]]
    return [{"voice": f"{ACCENTS[int(rng.integers(len(ACCENTS)))]}+{v}", "pitch": int(rng.integers(pitch[0], pitch[1] + 1)),
             "range": int(rng.integers(pitch_range[0], pitch_range[1] + 1)), "rate": int(rng.integers(rate[0], rate[1] + 1))}
            for v in chosen]


def _sentence_words():
    from .speech import _ENDINGS, _OBJECTS, _SUBJECTS, _VERBS

    return _SUBJECTS, _VERBS, _OBJECTS, _ENDINGS


def short_sentences() -> list[str]:
    """The AudioSet-like speech's sentences, ``Subject verb object.`` (three parts: never one of the Libri2Mix
    stand-in's four-part sentences, nor a LibriSpeech stand-in's two-clause one)."""
    s, v, o, _ = _sentence_words()
    return [f"{a[0].upper()}{a[1:]} {b} {c}." for a in s for b in v for c in o]


def long_sentences() -> list[str]:
    """The LibriSpeech stand-in's sentences: ``S V O E, and then S' V' O'.`` (two clauses), in a fixed order."""
    s, v, o, e = _sentence_words()
    rng = np.random.default_rng(derive_seed("sound_pool", "long_sentences"))
    out = []
    for _ in range(1000):
        a, b, c, d = (int(rng.integers(len(w))) for w in (s, v, o, e))
        a2, b2, c2 = (int(rng.integers(len(w))) for w in (s, v, o))
        out.append(f"{s[a][0].upper()}{s[a][1:]} {v[b]} {o[c]} {e[d]}, and then {s[a2]} {v[b2]} {o[c2]}.")
    return list(dict.fromkeys(out))


def _espeak(n: int, raw: list) -> dict:
    from .espeak import get_synth
    from .speech import speaker_id, synthesise

    voices = make_voices(AUDIOSET_VOICE_VARIANTS, len(AUDIOSET_VOICE_VARIANTS), 0, "audioset")
    sentences = short_sentences()
    rng = np.random.default_rng(derive_seed("sound_pool", "espeak", "sentences"))
    picks = rng.choice(len(sentences), size=n, replace=False) if n else []
    for i, j in enumerate(picks):
        spk = voices[i % len(voices)]
        text = sentences[int(j)]
        x = synthesise(text, spk, SAMPLE_RATE, seed=derive_seed("sound_pool", "espeak", i) & 0xFFFFFFFF)
        rec = Recording(id=f"espeak/as{i:03d}", source="espeak", kind="foreground", category="speech",
                        title=text, origin=f"espeakng-loader: eSpeak NG voice {speaker_id(spk)}",
                        licence=ESPEAK_LICENCE, credit=ESPEAK_CREDIT)
        raw.append((rec, x[None, :], SAMPLE_RATE, [f"espeak-voice:{spk['voice']}"]))
    synth = get_synth() if n else None
    return {"present": True, "package": "espeakng-loader (PyPI)",
            "version": f"espeakng-loader {_dist_version('espeakng-loader')}, eSpeak NG {synth.version if synth else '?'}",
            "n_utterances": int(n), "voices": [speaker_id(v) for v in voices], "licence": ESPEAK_LICENCE,
            "licence_note": ESPEAK_CREDIT}


# ----------------------------------------------------------------------------- the pool
def to_pool_audio(x: np.ndarray, rate: int) -> np.ndarray:
    """``[C, T]`` at ``rate`` -> float32 ``[T]`` at 16 kHz: channels averaged, soxr-resampled, silence trimmed."""
    mono = np.asarray(x, dtype=np.float64).mean(axis=0)
    if rate != SAMPLE_RATE:
        import soxr

        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality=RESAMPLE_QUALITY)
    peak = float(np.max(np.abs(mono))) if mono.size else 0.0
    if peak > 0:
        loud = np.flatnonzero(np.abs(mono) > peak * 10 ** (TRIM_DB / 20))
        mono = mono[loud[0]:loud[-1] + 1]
    return mono.astype(np.float32)


def assign_groups(recs: list[Recording], keys: list[list[str]]) -> None:
    """Set every recording's ``group``: recordings sharing any key (an original recording, a SoundFont sample,
    identical samples) share a group, named after its first recording id in sorted order."""
    parent = list(range(len(recs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, ks in enumerate(keys):
        for k in ks:
            if k in owner:
                a, b = find(i), find(owner[k])
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                owner[k] = i
    members: dict[int, list[str]] = {}
    for i, r in enumerate(recs):
        members.setdefault(find(i), []).append(r.id)
    for i, r in enumerate(recs):
        r.group = min(members[find(i)])


@dataclass
class SoundPool:
    """The recordings (:class:`Recording`) and their samples (float32, 16 kHz, mono) by id."""

    recordings: list[Recording]
    audio: dict
    sources: dict  #: per source: present or why not, package, version, files, licences
    skipped: list  #: recordings left out (empty or too short), with the reason

    def __post_init__(self):
        self.by_id = {r.id: r for r in self.recordings}

    @property
    def name(self) -> str:
        debian = [self.sources[s]["present"] for s in ("opensfx", "minetest")]
        return "full" if all(debian) else ("pypi-only" if not any(debian) else "partial")

    @property
    def hash(self) -> str:
        h = hashlib.sha256(f"sound_pool/1 {SAMPLE_RATE}\n".encode())
        for r in sorted(self.recordings, key=lambda r: r.id):
            h.update(f"{r.id}\t{r.kind}\t{r.category}\t{r.group}\t{r.sha256}\n".encode())
        return h.hexdigest()

    def select(self, *, kind=None, category=None, groups=None) -> list[Recording]:
        def ok(value, want):
            return want is None or (value in want if isinstance(want, (set, frozenset, tuple, list)) else value == want)

        return [r for r in self.recordings if ok(r.kind, kind) and ok(r.category, category)
                and (groups is None or r.group in groups)]

    def composition(self) -> dict:
        """Counts per source, kind and category, and of groups (original recordings)."""
        return {"by_source": dict(Counter(r.source for r in self.recordings)),
                "by_kind": dict(Counter(r.kind for r in self.recordings)),
                "by_category": dict(Counter(r.category for r in self.recordings)),
                "by_source_and_kind": {f"{s}/{k}": n for (s, k), n in
                                       sorted(Counter((r.source, r.kind) for r in self.recordings).items())},
                "n_recordings": len(self.recordings), "n_groups": len({r.group for r in self.recordings})}

    def manifest(self, with_recordings: bool = True) -> dict:
        m = {"name": self.name, "hash": self.hash, "sample_rate": SAMPLE_RATE, "composition": self.composition(),
             "sources": self.sources, "skipped": self.skipped}
        if with_recordings:
            m["recordings"] = [asdict(r) for r in self.recordings]
        return m


def load_pool(n_speech: int = 40, *, opensfx_cat=None, minetest_game=None) -> SoundPool:
    """Collect the pool (see the module docstring).  ``opensfx_cat`` / ``minetest_game`` default to where Debian
    installs them (:data:`OPENSFX_CAT`, :data:`MINETEST_GAME`); a missing one is left out and recorded."""
    cat = Path(opensfx_cat if opensfx_cat is not None else OPENSFX_CAT)
    game = Path(minetest_game if minetest_game is not None else MINETEST_GAME)
    raw: list = []
    sources: dict = {}
    for name, path, package, loader in (("opensfx", cat, OPENSFX_PACKAGE, lambda: _opensfx(cat, raw)),
                                        ("minetest", game, MINETEST_PACKAGE, lambda: _minetest(game, raw))):
        if path.exists():
            sources[name] = loader()
        else:
            sources[name] = {"present": False, "package": package, "missing": str(path),
                             "note": f"not installed (apt-get install {package}); left out of the pool"}
    sources["soundfont"] = _soundfont(raw)
    sources["espeak"] = _espeak(int(n_speech), raw)

    recs, keys, audio, skipped = [], [], {}, []
    for rec, x, rate, ks in raw:
        content = hashlib.sha256(np.ascontiguousarray(x, dtype=np.float32).tobytes()).hexdigest()
        y = to_pool_audio(x, rate)
        if y.shape[0] < MIN_SECONDS * SAMPLE_RATE or not np.any(y):
            skipped.append({"id": rec.id, "title": rec.title,
                            "reason": f"empty or shorter than {MIN_SECONDS} s after trimming silence"})
            continue
        if rec.id in audio:
            raise RuntimeError(f"sound pool: duplicate recording id {rec.id!r}")
        rec.seconds = round(y.shape[0] / SAMPLE_RATE, 4)
        rec.sha256 = hashlib.sha256(y.tobytes()).hexdigest()
        recs.append(rec)
        keys.append(ks + [f"content:{content}"])
        audio[rec.id] = y
    assign_groups(recs, keys)
    for s in SOURCES:
        if sources[s].get("present"):
            sources[s]["n_recordings"] = sum(r.source == s for r in recs)
    return SoundPool(recordings=recs, audio=audio, sources=sources, skipped=skipped)


def pool_inputs(n_speech: int = 40, code=()) -> dict:
    """A cheap fingerprint of what :func:`load_pool` would read (files' sha256, package versions, this module's
    source and that of ``code``, more modules), for deciding whether a built stand-in is current without
    loading the pool."""
    out: dict = {"n_speech": int(n_speech), "code": hashlib.sha256(
        b"".join(Path(f).read_bytes() for f in (__file__, *code))).hexdigest()}
    if OPENSFX_CAT.is_file():
        out["opensfx"] = hashlib.sha256(OPENSFX_CAT.read_bytes()).hexdigest()
    if MINETEST_GAME.is_dir():
        h = hashlib.sha256()
        for f in sorted(MINETEST_GAME.glob("mods/*/sounds/*.ogg")):
            h.update(f.relative_to(MINETEST_GAME).as_posix().encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
        out["minetest"] = h.hexdigest()
    for dist in ("pretty_midi", "tinysoundfont", "espeakng-loader", "soxr", "soundfile"):
        out[dist] = _dist_version(dist)
    return out
