"""Real-data readers for the FUSS track: FUSS (release layout), AudioSet downloads, LibriSpeech + FUSS."""
import numpy as np
import pytest
import soundfile as sf

from surfbench.audio_io import BadInputError
from surfbench.data import audioset, fuss, librispeech_fuss as lsf
from surfbench.score_fuss import read_list

SR = 16000
T = fuss.CLIP_SAMPLES


def _tone(f, n, sr=SR, amp=0.3, phase=0.0):
    return (amp * np.sin(2 * np.pi * f * np.arange(n) / sr + phase)).astype(np.float32)


def _peak_hz(x, sr=SR):
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return np.fft.rfftfreq(x.size, 1 / sr)[np.argmax(spec)]


def write_fuss(root, variant="ssdata_reverb", split="eval", n_sources=(1, 2, 3, 4), sr=SR, n=T):
    """A FUSS release tree with one example per entry of ``n_sources`` (1 background + n-1 foregrounds)."""
    vdir = root / variant
    rng = np.random.default_rng(0)
    lines = []
    for e, k in enumerate(n_sources):
        name = f"example{e:05d}"
        rel_src = [f"{split}/{name}_sources/background0_sound.wav"]
        rel_src += [f"{split}/{name}_sources/foreground{j}_sound.wav" for j in range(k - 1)]
        srcs = [(0.1 * rng.standard_normal(n)).astype(np.float32)] + [_tone(300 * (j + 1), n, sr) for j in range(k - 1)]
        for rel, x in zip(rel_src, srcs):
            (vdir / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(vdir / rel, x, sr, subtype="FLOAT")
        sf.write(vdir / f"{split}/{name}.wav", np.sum(srcs, axis=0), sr, subtype="FLOAT")
        lines.append("\t".join([f"{split}/{name}.wav"] + rel_src))
    (vdir / f"{split}_example_list.txt").write_text("\n".join(lines) + "\n")
    return vdir


@pytest.fixture(scope="module")
def fuss_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuss")
    write_fuss(root)
    return root


# ----------------------------------------------------------------------------- FUSS
def test_fuss_reads_examples_with_1_to_4_sources(fuss_root):
    ds = fuss.FussDataset(fuss_root, "eval")  # default variant: ssdata_reverb
    assert ds.variant == "ssdata_reverb" == fuss.DEFAULT_VARIANT and len(ds) == 4
    seen = []
    for ex in ds:
        mix, refs, names = ex
        assert mix.dtype == np.float32 and mix.shape == (T,)
        assert refs.dtype == np.float32 and refs.shape == (len(names), T)
        assert names[0] == "background0_sound" and all(n.startswith("foreground") for n in names[1:])
        np.testing.assert_allclose(mix, refs.sum(0), atol=1e-5)
        seen.append(refs.shape[0])
    assert seen == [1, 2, 3, 4]
    assert [e.name for e in fuss.iter_fuss(fuss_root)] == [f"example{i:05d}" for i in range(4)]
    # the loader and the metric's scorer read the list the same way
    assert ds.items == read_list(fuss_root / "ssdata_reverb" / "eval_example_list.txt")


def test_fuss_missing_layout_names_what_is_missing(tmp_path, fuss_root):
    with pytest.raises(BadInputError, match="FUSS root does not exist") as e:
        fuss.FussDataset(tmp_path / "nowhere")
    assert "ssdata_reverb" in str(e.value) and "eval_example_list.txt" in str(e.value)  # the layout is printed
    with pytest.raises(BadInputError, match=r"variant folder 'ssdata' not found.*holds ssdata_reverb") as e:
        fuss.FussDataset(fuss_root, "eval", variant="ssdata")
    assert e.value.path == str(fuss_root / "ssdata")
    with pytest.raises(BadInputError, match="pass its parent"):
        fuss.FussDataset(fuss_root / "ssdata_reverb")
    with pytest.raises(BadInputError, match="example list for split 'train' not found") as e:
        fuss.FussDataset(fuss_root, "train")
    assert e.value.path.endswith("train_example_list.txt")
    with pytest.raises(ValueError, match="variant must be one of"):
        fuss.FussDataset(fuss_root, "eval", variant="reverb")


def test_fuss_list_line_with_missing_file_names_it(tmp_path):
    vdir = write_fuss(tmp_path, n_sources=(2, 3))
    gone = vdir / "eval/example00001_sources/foreground1_sound.wav"
    gone.unlink()
    ds = fuss.FussDataset(tmp_path)
    ds[0]
    with pytest.raises(BadInputError, match="does not exist") as e:
        ds[1]
    assert e.value.path == str(gone) and str(gone) in str(e.value)


@pytest.mark.parametrize("problem", ["rate", "nan", "length", "stereo"])
def test_fuss_bad_clip_names_the_file(tmp_path, problem):
    vdir = write_fuss(tmp_path, n_sources=(3,))
    bad = vdir / "eval/example00000_sources/foreground0_sound.wav"
    x = _tone(440, T)
    if problem == "rate":
        sf.write(bad, _tone(440, 441000, sr=44100), 44100)
    elif problem == "nan":
        x[1234] = np.nan
        sf.write(bad, x, SR, subtype="FLOAT")
    elif problem == "length":
        sf.write(bad, x[: T - SR], SR, subtype="FLOAT")
    else:
        sf.write(bad, np.stack([x, x], 1), SR, subtype="FLOAT")
    msg = {"rate": "sample rate is 44100 Hz but 16000", "nan": "NaN", "length": "FUSS clips are 160000 samples",
           "stereo": "2 channels"}[problem]
    with pytest.raises(BadInputError, match=msg) as e:
        fuss.FussDataset(tmp_path)[0]
    assert e.value.path == str(bad) and str(bad) in str(e.value)


# ----------------------------------------------------------------------------- AudioSet
@pytest.fixture(scope="module")
def audioset_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("audioset")
    (d / "a" / "b").mkdir(parents=True)
    x = _tone(1000, 441000, sr=44100, amp=0.5)  # 10 s, 1 kHz, 44.1 kHz, stereo (one channel silent)
    sf.write(d / "a" / "b" / "stereo44k.flac", np.stack([x, np.zeros_like(x)], 1), 44100)
    sf.write(d / "a" / "short.wav", _tone(500, 4 * SR), SR)  # 4 s, mono 16 kHz
    long = np.concatenate([_tone(250, 10 * 22050, sr=22050), _tone(700, 10 * 22050, sr=22050),
                           _tone(1500, 5 * 22050, sr=22050)])  # 25 s: 250 Hz, then 700 Hz, then 1.5 kHz
    sf.write(d / "long.ogg", long, 22050, format="OGG", subtype="VORBIS")
    (d / "a" / "corrupt.wav").write_bytes(b"RIFF\x00\x10\x00\x00WAVEjunk" + bytes(range(256)) * 8)
    (d / "labels.json").write_text("{}")  # not audio: ignored
    return d


def test_audioset_refuse_names_the_corrupt_file(audioset_dir):
    with pytest.raises(BadInputError, match="corrupt.wav") as e:
        audioset.load_audioset(audioset_dir)  # default on_bad_file: refuse
    assert e.value.path == str(audioset_dir / "a" / "corrupt.wav") and "on_bad_file='skip'" in str(e.value)


def test_audioset_skip_counts_and_names_bad_files_and_converts(audioset_dir):
    mix, man = audioset.load_audioset(audioset_dir, on_bad_file="skip")
    assert man["n_bad_files"] == 1 and [b["file"] for b in man["bad_files"]] == ["a/corrupt.wav"]
    assert "a/corrupt.wav" in man["bad_files"][0]["error"]
    assert man["n_ignored_files"] == 1 and man["ignored_files"] == ["labels.json"]
    assert man["clips"] == ["a/b/stereo44k.flac", "a/short.wav", "long.ogg"] and man["n_clips"] == 3
    assert mix.dtype == np.float32 and mix.shape == (3, 10 * SR)
    # stereo 44.1 kHz: averaged (half the amplitude of the one loud channel) and resampled to 16 kHz
    st = mix[0]
    assert _peak_hz(st) == pytest.approx(1000, abs=0.2)
    mid = st[SR:-SR]
    assert np.sqrt(np.mean(mid ** 2)) == pytest.approx(0.25 / np.sqrt(2), rel=1e-3)
    ref = _tone(1000, st.size, amp=0.25)
    assert np.max(np.abs(mid - ref[SR:-SR])) < 1e-3
    # short: zero-padded at the end (default short_clips="pad"); long: its first 10 s (default long_clips="first")
    assert np.abs(mix[1][: 4 * SR - 100]).max() > 0.2 and np.all(mix[1][4 * SR:] == 0)
    assert _peak_hz(mix[2]) == pytest.approx(250, abs=0.5) and np.abs(mix[2][-SR:]).max() > 0.2
    assert man["long_clips"] == "first" and man["short_clips"] == "pad" and man["on_bad_file"] == "skip"
    again, man2 = audioset.load_audioset(audioset_dir, on_bad_file="skip")
    assert man2["content_hash"] == man["content_hash"] and np.array_equal(again, mix)


def test_audioset_length_choices_and_list_file(audioset_dir, tmp_path):
    mix, man = audioset.load_audioset(audioset_dir, on_bad_file="skip", long_clips="split", short_clips="drop")
    # long.ogg (25 s) -> 2 full pieces, its 5-s remainder dropped as is short.wav
    assert man["clips"] == ["a/b/stereo44k.flac", "long.ogg", "long.ogg"]
    assert man["dropped_short"] == ["a/short.wav"] and man["n_dropped_short"] == 1 and mix.shape == (3, 10 * SR)
    assert [round(_peak_hz(x)) for x in mix[1:]] == [250, 700]
    lst = tmp_path / "clips.txt"
    lst.write_text(f"# my downloads\n{audioset_dir / 'a' / 'short.wav'}\n\n{audioset_dir / 'long.ogg'}\n")
    mix, man = audioset.load_audioset(lst, long_clips="center")  # long.ogg: 7.5-17.5 s, mostly 700 Hz
    assert mix.shape == (2, 10 * SR) and man["n_bad_files"] == 0 and round(_peak_hz(mix[1])) == 700
    (tmp_path / "rel.txt").write_text("missing.wav\n")
    with pytest.raises(BadInputError, match="does not exist") as e:
        audioset.load_audioset(tmp_path / "rel.txt")
    assert e.value.path == str(tmp_path / "missing.wav")
    with pytest.raises(BadInputError, match="AudioSet source does not exist"):
        audioset.load_audioset(tmp_path / "nope")
    with pytest.raises(ValueError, match="on_bad_file must be one of"):
        audioset.load_audioset(audioset_dir, on_bad_file="ignore")


def test_audioset_nan_file_is_a_bad_file(tmp_path):
    x = _tone(440, SR)
    x[10] = np.nan
    sf.write(tmp_path / "nan.wav", x, SR, subtype="FLOAT")
    sf.write(tmp_path / "ok.wav", _tone(440, SR), SR)
    with pytest.raises(BadInputError, match="NaN") as e:
        audioset.load_audioset(tmp_path)
    assert e.value.path == str(tmp_path / "nan.wav")
    mix, man = audioset.load_audioset(tmp_path, on_bad_file="skip")
    assert mix.shape == (1, 10 * SR) and man["bad_files"][0]["file"] == "nan.wav"


# ----------------------------------------------------------------------------- LibriSpeech + FUSS
@pytest.fixture(scope="module")
def libri_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("libri")
    rng = np.random.default_rng(1)
    for spk, chap, utt, sec in [(1089, 134686, 0, 3.5), (1089, 134686, 1, 12.0), (121, 121726, 0, 6.0),
                                (121, 127105, 3, 2.0), (2300, 131720, 7, 8.0)]:
        d = root / "LibriSpeech" / "test-clean" / str(spk) / str(chap)
        d.mkdir(parents=True, exist_ok=True)
        n = int(sec * SR)
        x = 0.2 * np.sin(2 * np.pi * 180 * np.arange(n) / SR) * (1 + 0.5 * rng.standard_normal(n))
        sf.write(d / f"{spk}-{chap}-{utt:04d}.flac", np.clip(x, -0.99, 0.99), SR, subtype="PCM_16")
        (d / f"{spk}-{chap}.trans.txt").write_text("SOME WORDS\n")
    return root


def _snr(s, b):
    s, b = s.astype(np.float64), b.astype(np.float64)
    return 10 * np.log10(np.sum(s * s) / np.sum(b * b))


@pytest.mark.parametrize("length,pairing", [("fuss", "random"), ("speech", "in_order")])
def test_librispeech_fuss_snr_peak_and_lengths(libri_root, fuss_root, length, pairing):
    es = lsf.build_librispeech_fuss(libri_root, fuss_root, seed=7, length=length, pairing=pairing)
    assert len(es) == 5 and es.manifest["fuss_variant"] == "ssdata_reverb"
    snrs = es.arrays["snr_db"]
    assert np.all((snrs >= -5) & (snrs <= 15)) and len(set(snrs.round(6))) == 5
    utt_len = {"1089-134686-0000": 3.5, "1089-134686-0001": 12.0, "121-121726-0000": 6.0,
               "121-127105-0003": 2.0, "2300-131720-0007": 8.0}
    for i in range(len(es)):
        mix, s, b = es[i]
        assert mix.dtype == s.dtype == b.dtype == np.float32
        expect = T if length == "fuss" else int(utt_len[es.manifest["utterances"][i]] * SR)
        assert mix.shape == s.shape == b.shape == (expect,)
        assert _snr(s, b) == pytest.approx(snrs[i], abs=1e-3)
        assert np.max(np.abs(mix)) == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_allclose(mix, s + b, atol=1e-6)
    if pairing == "in_order":
        assert es.manifest["utterances"] == sorted(utt_len)
        assert es.manifest["fuss_examples"] == [f"example{i % 4:05d}" for i in range(5)]
    else:  # each of the 4 backgrounds used once before any is reused
        assert sorted(es.manifest["fuss_examples"][:4]) == [f"example{i:05d}" for i in range(4)]
    if length == "fuss":  # the 12-s utterance is cropped, the short ones are zero-padded
        i2 = es.manifest["utterances"].index("121-127105-0003")
        assert np.all(es[i2][1][2 * SR:] == 0) and np.abs(es[i2][2][2 * SR:]).max() > 0


def test_librispeech_fuss_hash_follows_the_seed(libri_root, fuss_root, tmp_path):
    a = lsf.build_librispeech_fuss(libri_root, fuss_root, seed=3, n_mixtures=3)
    b = lsf.build_librispeech_fuss(libri_root, fuss_root, seed=3, n_mixtures=3)
    c = lsf.build_librispeech_fuss(libri_root, fuss_root, seed=4, n_mixtures=3)
    assert a.content_hash == b.content_hash and a.manifest == b.manifest
    assert c.content_hash != a.content_hash
    assert a.arrays["mixture"].shape == (3, T)
    man = a.save(tmp_path)
    from surfbench.data.store import array_hash
    with np.load(tmp_path / "librispeech_fuss.npz") as z:
        assert array_hash({k: z[k] for k in z.files}) == a.content_hash == man["content_hash"]


def test_librispeech_fuss_missing_inputs(tmp_path, libri_root, fuss_root):
    with pytest.raises(BadInputError, match="LibriSpeech subset 'test-clean' not found") as e:
        lsf.build_librispeech_fuss(tmp_path, fuss_root, seed=0)
    assert "<speaker>-<chapter>-<utterance>.flac" in str(e.value)
    with pytest.raises(BadInputError, match="FUSS variant folder 'ssdata' not found"):
        lsf.build_librispeech_fuss(libri_root, fuss_root, seed=0, fuss_variant="ssdata")
    with pytest.raises(ValueError, match="pairing must be one of"):
        lsf.build_librispeech_fuss(libri_root, fuss_root, seed=0, pairing="sorted")
    bad = tmp_path / "LibriSpeech" / "test-clean" / "19" / "198"
    bad.mkdir(parents=True)
    sf.write(bad / "20-198-0001.flac", _tone(200, SR), SR)  # speaker folder and file name disagree
    with pytest.raises(BadInputError, match="not where a LibriSpeech utterance belongs") as e:
        lsf.list_utterances(tmp_path)
    assert e.value.path == str(bad / "20-198-0001.flac")
