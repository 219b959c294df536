"""The offline Table 3 stand-in: the sound pool (OpenSFX catalogue, Minetest, SoundFont, eSpeak NG) and the FUSS,
AudioSet-like and LibriSpeech-like trees it writes, read back by the real-data readers."""
import io
import json
import struct
from collections import defaultdict

import numpy as np
import pytest
import soundfile as sf

from surfbench.audio_io import BadInputError
from surfbench.data import audioset, fuss, librispeech_fuss as lsf, sound_pool as sp, speech
from surfbench.data import fuss_standin as fs

SR = 16000
SMALL = dict(fuss_examples={"train": 8, "validation": 4, "eval": 6}, audioset_clips=8, audioset_clip_seconds=3.0,
             librispeech_utterances=4, librispeech_speakers=2, pool_speech=6, seed=5)
DEBIAN = sp.OPENSFX_CAT.is_file() and sp.MINETEST_GAME.is_dir()


# ----------------------------------------------------------------------------- the OpenTTD catalogue format
def _wav_bytes(x, sr=44100):
    buf = io.BytesIO()
    sf.write(buf, x, sr, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def _cat_bytes(entries):
    """A catalogue as catcodec writes it: TOC of (offset | 0x80000000, size); per entry: length byte + name\\0,
    the WAV, a separator byte, length byte + file name\\0."""
    toc_size = 8 * len(entries)
    body, toc = b"", b""
    for name, wav, filename in entries:
        offset = toc_size + len(body)
        toc += struct.pack("<II", offset | 0x80000000, len(wav))
        n = name.encode() + b"\0"
        f = filename.encode() + b"\0"
        body += bytes([len(n)]) + n + wav + b"\0" + bytes([len(f)]) + f
    return toc + body


TONE = (0.3 * np.sin(2 * np.pi * 440 * np.arange(4410) / 44100)).astype(np.float32)
NOISE = (0.1 * np.random.default_rng(0).standard_normal(8000)).astype(np.float32)
ENTRIES = [('"Beep". By Someone. License: Creative Commons Zero 1.0.', _wav_bytes(TONE), "src/wav/osfx_00.wav"),
           ('"Wind". Original "wind1.wav" by "Anton". Edited by X. License: Creative Commons Attribution 3.0 Unported.',
            _wav_bytes(NOISE, 22050), "src/wav/osfx_01.wav")]


def test_read_cat_parses_a_hand_built_catalogue(tmp_path):
    p = tmp_path / "test.cat"
    p.write_bytes(_cat_bytes(ENTRIES))
    got = sp.read_cat(p)
    assert [e.index for e in got] == [0, 1]
    assert [e.name for e in got] == [n for n, _, _ in ENTRIES]
    assert [e.filename for e in got] == ["src/wav/osfx_00.wav", "src/wav/osfx_01.wav"]
    x, sr = sf.read(io.BytesIO(got[1].wav), dtype="float32")
    assert sr == 22050 and np.allclose(x, NOISE, atol=1 / 32768)
    assert sp.opensfx_title(got[1].name) == "Wind" and sp.opensfx_originals(got[1].name) == ["wind1.wav"]
    assert sp.opensfx_originals(got[0].name) == []


@pytest.mark.parametrize("damage,msg", [
    ("truncated", r"truncated: entry 1's WAV data .* ends at byte \d+ but the file has \d+ bytes"),
    ("tiny", "too short for a table of contents"),
    ("toc", r"truncated: the table of contents needs 16 bytes"),
    ("flag", "without the named-entry flag"),
    ("riff", "no RIFF/WAVE header"),
])
def test_damaged_catalogue_names_the_file(tmp_path, damage, msg):
    blob = _cat_bytes(ENTRIES)
    if damage == "truncated":
        blob = blob[:-2000]  # cut inside the second WAV
    elif damage == "tiny":
        blob = blob[:5]
    elif damage == "toc":
        blob = blob[:12]
    elif damage == "flag":
        blob = struct.pack("<I", struct.unpack_from("<I", blob)[0] & 0x7FFFFFFF) + blob[4:]
    else:
        off = struct.unpack_from("<I", blob)[0] & 0x7FFFFFFF
        start = off + 1 + blob[off]
        blob = blob[:start] + b"JUNK" + blob[start + 4:]
    p = tmp_path / "opensfx.cat"
    p.write_bytes(blob)
    with pytest.raises(BadInputError, match=msg) as e:
        sp.read_cat(p)
    assert e.value.path == str(p) and str(p) in str(e.value) and "reinstall" in str(e.value)
    with pytest.raises(BadInputError, match="not found") as e:
        sp.read_cat(tmp_path / "missing.cat")
    assert "apt-get install openttd-opensfx" in str(e.value)


def test_opensfx_credit_lines_name_their_originals():
    o = sp.opensfx_originals
    assert o('"Toyland: Toy factory (1)". Original "ae_51_m.wav" by "Sedi", "vial-02.wav" by Jan Schupke aka '
             '"Vehicle" and "whoosh06.wav" by Richard aka "FreqMan". Edited by "Wuzzy". License: CC BY 3.0.') == [
        "ae_51_m.wav", "vial-02.wav", "whoosh06.wav"]
    assert o('"Toyland: Bubble slurped". "Cartoon - Slurp!.wav" by "Beviceps" and "raw_bubblingdrink5.ogg". '
             'Edited by "Wuzzy". License: CC BY 3.0 Unported.') == ["cartoon - slurp!.wav", "raw_bubblingdrink5.ogg"]
    assert o('"Sheep". Original "Corner of a sheep field in summer" by David R Barnes. Edited by "Wuzzy".') == [
        "corner of a sheep field in summer"]
    assert o('"Explosion". By Janis Lukss. License: Creative Commons Attribution 3.0 Unported.') == []
    assert sp.minetest_sound_name("x/default_dirt_footstep.2.ogg") == "default_dirt_footstep"
    assert sp.minetest_sound_name("x/fire_large.ogg") == "fire_large"


def test_dep5_licence_last_matching_paragraph_wins(tmp_path):
    p = tmp_path / "copyright"
    p.write_text("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
                 "Files: *\nCopyright: someone\nLicense: LGPL-2.1+\n\n"
                 "Files: *.ogg\n       *.png\nCopyright: x\nLicense: CC-BY-SA-3.0\nComment:\n a comment\n\n"
                 "Files: mtg/mods/doors/sounds/*\nCopyright: y\nLicense: CC-BY-3.0\n\n"
                 "Files: mtg/mods/doors/sounds/doors_glass_door_open.ogg\n       mtg/mods/tnt/sounds/*\n"
                 "Copyright: no-copyright\nLicense: CC0-1.0\n See /usr/share/common-licenses/CC0-1.0\n")
    lic = sp.dep5_licence
    assert lic(p, "mtg/mods/default/sounds/default_dig_choppy.1.ogg") == "CC-BY-SA-3.0"
    assert lic(p, "mtg/mods/doors/sounds/doors_door_open.ogg") == "CC-BY-3.0"
    assert lic(p, "mtg/mods/doors/sounds/doors_glass_door_open.ogg") == "CC0-1.0"
    assert lic(p, "mtg/mods/tnt/sounds/tnt_explode.ogg") == "CC0-1.0"
    assert lic(p, "src/main.cpp") == "LGPL-2.1+"
    assert lic(tmp_path / "nope", "x") is None


@pytest.mark.skipif(not sp.OPENSFX_CAT.is_file(), reason="openttd-opensfx is not installed")
def test_the_real_opensfx_catalogue():
    entries = sp.read_cat(sp.OPENSFX_CAT)
    assert len(entries) == 73 and entries[52].filename == "src/wav/osfx_52.wav"
    frames = [sf.info(io.BytesIO(e.wav)).frames for e in entries]
    assert sum(f > 0 for f in frames) == 71  # two "Unused/Nothing" entries are empty
    assert sp.opensfx_title(entries[52].name) == "Wind" and "Anton" in entries[52].name


# ----------------------------------------------------------------------------- voices and sentences
def test_speech_voices_and_sentences_are_disjoint_from_the_libri2mix_standin():
    import os

    import espeakng_loader

    libri2mix, libri, aset = set(speech.VARIANTS), set(sp.LIBRISPEECH_VOICE_VARIANTS), set(sp.AUDIOSET_VOICE_VARIANTS)
    assert not libri2mix & libri and not libri2mix & aset and not libri & aset
    installed = set(os.listdir(os.path.join(espeakng_loader.get_data_path(), "voices", "!v")))
    assert libri | aset <= installed
    l2m = set(speech.sentence_list(speech.N_SENTENCES))
    long_, short = set(sp.long_sentences()), set(sp.short_sentences())
    assert len(long_) >= 500 and len(short) >= 500
    assert not l2m & long_ and not l2m & short and not long_ & short
    # and for any size of the Libri2Mix stand-in's list: its sentences have four parts and end "<ending>."
    endings = tuple(f" {e}." for e in speech._ENDINGS)
    assert not any(s.endswith(endings) for s in long_ | short)


# ----------------------------------------------------------------------------- the pool and a small build
@pytest.fixture(scope="module")
def pool():
    return sp.load_pool(SMALL["pool_speech"])


@pytest.fixture(scope="module")
def built(tmp_path_factory, pool):
    root = tmp_path_factory.mktemp("standin")
    return root, fs.build_standin(root, pool=pool, **SMALL)


def test_pool_composition_groups_and_licences(pool):
    comp = pool.composition()
    assert comp["by_source"]["soundfont"] == len(sp.SF2_RENDERS) and comp["by_source"]["espeak"] == 6
    assert set(comp["by_kind"]) == {"background", "foreground"}
    for r in pool.recordings:
        assert r.licence and r.origin and r.group and len(r.sha256) == 64
        x = pool.audio[r.id]
        assert x.dtype == np.float32 and x.ndim == 1 and np.isfinite(x).all() and np.abs(x).max() > 0
    assert pool.by_id["soundfont/drum045-low-tom"].group == pool.by_id["soundfont/drum050-high-tom"].group  # one sample
    if DEBIAN:
        assert pool.name == "full" and comp["by_source"]["opensfx"] == 71 and comp["by_source"]["minetest"] == 108
        g = {r.id: r.group for r in pool.recordings}
        assert g["opensfx/osfx_52"] == g["opensfx/osfx_57"]  # Wind and Heavy wind: the same wind1.wav
        assert g["opensfx/osfx_25"] == g["opensfx/osfx_26"] == g["opensfx/osfx_60"] == g["opensfx/osfx_62"]
        assert g["minetest/fire_fire.1"] == g["minetest/fire_fire.3"]
        # identical files under two names are one recording
        assert g["minetest/default_cool_lava.1"] == g["minetest/fire_extinguish_flame.1"]
        assert pool.by_id["minetest/doors_door_open"].licence == "CC-BY-3.0"
        assert pool.by_id["minetest/tnt_explode"].licence == "CC0-1.0"
        assert pool.by_id["opensfx/osfx_52"].licence == "CC-BY-SA-3.0"
        assert pool.by_id["opensfx/osfx_52"].kind == "background"
        assert {s["id"] for s in pool.skipped} == {"opensfx/osfx_34", "opensfx/osfx_50"}


def test_split_is_by_original_recording(built, pool):
    root, man = built
    split_of = man["split_of_group"]
    group = {r.id: r.group for r in pool.recordings}
    used = defaultdict(set)
    for split, part in man["fuss"]["splits"].items():
        for ex in part["examples"]:
            for rid in [ex["background"]["id"]] + [f["id"] for f in ex["foregrounds"]]:
                assert split_of[group[rid]] == split
                used[split].add(group[rid])
    assert not used["train"] & used["validation"] and not used["train"] & used["eval"]
    assert not used["validation"] & used["eval"]
    # the split covers every non-speech group, and each split holds backgrounds and foregrounds
    assert set(split_of) == {r.group for r in pool.recordings if r.category != "speech"}
    for s in fs.SPLITS:
        groups = {g for g, x in split_of.items() if x == s}
        assert pool.select(kind="background", groups=groups) and pool.select(kind="foreground", groups=groups)
    # the AudioSet-like training clips use train groups and speech only
    for clip in man["audioset"]["clips"]:
        for rid in clip["recordings"]:
            assert rid.startswith("espeak/") or split_of[group[rid]] == "train"


def test_readers_read_the_standin(built):
    root, man = built
    for split, n in SMALL["fuss_examples"].items():
        ds = fuss.FussDataset(root, split, variant=fs.FUSS_VARIANT)
        assert len(ds) == n
        for ex in ds:
            assert ex.mixture.shape == (fuss.CLIP_SAMPLES,) and 1 <= ex.references.shape[0] <= 4
            assert ex.names[0] == "background0_sound"
            assert np.array_equal(ex.mixture, ex.references.sum(0))  # 16-bit sources, their exact sum
            assert np.abs(ex.mixture).max() <= SMALL.get("max_peak", 0.9) + 1e-4
    mix, aman = audioset.load_audioset(root / fs.AUDIOSET_FOLDER, clip_seconds=SMALL["audioset_clip_seconds"])
    assert mix.shape == (SMALL["audioset_clips"], 3 * SR) and aman["n_bad_files"] == 0 and aman["n_ignored_files"] == 0
    assert np.all(np.abs(mix).max(axis=1) > 0.01)
    es = lsf.build_librispeech_fuss(root, root, seed=1, fuss_variant=fs.FUSS_VARIANT)
    assert len(es) == SMALL["librispeech_utterances"] and es.arrays["mixture"].shape[1] == fuss.CLIP_SAMPLES
    ids = [u for u, _ in lsf.list_utterances(root)]
    assert ids == sorted(u["id"] for u in man["librispeech"]["utterances"])
    for uid, path in lsf.list_utterances(root):
        assert sf.info(str(path)).format == "FLAC" and sf.info(str(path)).samplerate == SR
        spk, chap, _ = uid.split("-")
        trans = (path.parent / f"{spk}-{chap}.trans.txt").read_text().splitlines()
        assert any(line.startswith(uid + " ") and line[len(uid) + 1:].isupper() for line in trans)
    voices = {v.split("/")[0].split("+")[1] for v in man["librispeech"]["speakers"].values()}
    assert voices <= set(sp.LIBRISPEECH_VOICE_VARIANTS)
    assert {u["text"] for u in man["librispeech"]["utterances"]} <= set(sp.long_sentences())


def test_foreground_levels_measured_from_the_files(built):
    root, man = built
    lo, hi = man["config"]["foreground_rel_db"]
    n_fg = 0
    for split in fs.SPLITS:
        for item, ex in zip(fuss.read_examples_list(root, split, fs.FUSS_VARIANT),
                            man["fuss"]["splits"][split]["examples"]):
            refs = fuss.read_example(item).references.astype(np.float64)
            bg_db = fs.level_db(refs[0])
            assert man["config"]["background_level_db"][0] - 25 < bg_db < man["config"]["background_level_db"][1] + 0.01
            for j, fg in enumerate(ex["foregrounds"]):
                track = refs[1 + j]
                span = track[fg["onset"]:fg["onset"] + fg["samples"]]
                assert not np.any(track[:fg["onset"]]) and not np.any(track[fg["onset"] + fg["samples"]:])
                rel = fs.level_db(span) - bg_db
                assert lo - 0.01 <= rel <= hi + 0.01 and rel == pytest.approx(fg["rel_db"], abs=0.01)
                n_fg += 1
    assert n_fg > 0


def test_same_bytes_twice_and_seed_matters(built, pool, tmp_path):
    root, man = built
    again = fs.build_standin(tmp_path / "again", **SMALL)  # loads its own pool: the pool is deterministic too
    assert again["pool"]["hash"] == man["pool"]["hash"] and again["content_hash"] == man["content_hash"]
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.name != fs.MANIFEST)
    assert files == sorted(p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*")
                           if p.is_file() and p.name != fs.MANIFEST)
    for rel in files:
        assert (root / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes(), rel
    other = fs.build_standin(tmp_path / "other", pool=pool, **{**SMALL, "seed": 6})
    assert other["content_hash"] != man["content_hash"]
    # an identical build is reused, not rewritten; a folder holding other files is refused
    mtime = (tmp_path / "again" / fs.MANIFEST).stat().st_mtime_ns
    assert fs.build_standin(tmp_path / "again", **SMALL)["content_hash"] == man["content_hash"]
    assert (tmp_path / "again" / fs.MANIFEST).stat().st_mtime_ns == mtime
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    with pytest.raises(BadInputError, match="holds other files"):
        fs.build_standin(tmp_path / "mine", **SMALL)


def test_fallback_pool_without_the_debian_packages(monkeypatch, tmp_path, pool):
    monkeypatch.setattr(sp, "OPENSFX_CAT", tmp_path / "none" / "opensfx.cat")
    monkeypatch.setattr(sp, "MINETEST_GAME", tmp_path / "none" / "minetest_game")
    man = fs.build_standin(tmp_path / "s", **SMALL)  # loads the pool: the smaller one, from the PyPI sources
    small = man["pool"]
    assert small["name"] == "pypi-only"
    assert not small["sources"]["opensfx"]["present"] and not small["sources"]["minetest"]["present"]
    assert "apt-get install openttd-opensfx" in small["sources"]["opensfx"]["note"]
    assert set(small["composition"]["by_source"]) == {"soundfont", "espeak"}
    assert man["licences"]["minetest"]["present"] is False
    if DEBIAN:
        assert small["hash"] != pool.hash and len(small["recordings"]) < len(pool.recordings)
    assert len(fuss.FussDataset(tmp_path / "s", "eval", variant=fs.FUSS_VARIANT)) == SMALL["fuss_examples"]["eval"]
    assert man["audioset"]["n_with_speech"] > 0 and man["audioset"]["n_with_music"] > 0
    saved = json.loads((tmp_path / "s" / fs.MANIFEST).read_text())
    assert saved["pool"]["hash"] == small["hash"] and saved["content_hash"] == man["content_hash"]


def test_loop_to_and_pcm16():
    rng = np.random.default_rng(0)
    x = np.sin(2 * np.pi * 3 * np.arange(1000) / 1000)
    y = fs.loop_to(x, 5000, rng)
    assert y.shape == (5000,) and np.max(np.abs(np.diff(y))) < 0.1  # no jump at the seams
    w = fs.loop_to(np.arange(100.0), 10, rng)
    assert np.array_equal(np.diff(w), np.ones(9))  # a longer recording: a plain window
    q = fs.to_pcm16(np.array([0.5, -0.25, 1 / 32768]))
    assert q.tolist() == [16384, -8192, 1]
    with pytest.raises(ValueError, match="clip"):
        fs.to_pcm16(np.array([1.0]))


def test_short_clip_standin_is_read_at_its_own_length(pool, tmp_path):
    """standin.fuss_clip_seconds (paper-smoke): the Table 3 data step reads the length from the stand-in's
    manifest; FUSS's own 10-s reader refuses such a clip, naming it."""
    from surfbench.config import load_config
    from surfbench.data.store import prepare
    from pathlib import Path

    root = tmp_path / "data"
    fs.build_standin(root / "standin", pool=pool, fuss_examples={"train": 2, "validation": 1, "eval": 2},
                     fuss_clip_seconds=0.25, audioset_clips=1, librispeech_utterances=2, librispeech_speakers=1,
                     pool_speech=6, seed=3)
    cfg = load_config(Path(__file__).resolve().parents[1] / "config" / "tiny.yaml")
    cfg["datasets"]["fuss"].update(n_eval_examples=None, n_librispeech_fuss=None, train_clip_seconds=0.25)
    m = prepare(cfg, "fuss", root / "fuss")
    n = int(0.25 * SR)
    with np.load(root / "fuss" / "eval_fuss.npz") as z:
        assert z["mixtures"].shape == (2, n) and z["references"].shape == (2, 4, n)
    with np.load(root / "fuss" / "eval_librispeech_fuss.npz") as z:
        assert z["mixture"].shape == (2, n)
    assert m["info"]["librispeech_fuss"]["fuss_clip_seconds"] == 0.25 and m["n_train_mixtures"] == 2
    with pytest.raises(BadInputError, match=r"example00000\.wav.*160000 samples"):
        fuss.FussDataset(root / "standin", "eval", fs.FUSS_VARIANT)[0]
