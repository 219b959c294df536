"""surfbench.audio_io: round trips and one clear error per kind of bad input."""
import numpy as np
import pytest
import soundfile as sf

from surfbench.audio_io import BadInputError, read_audio, write_audio

SR = 16000


@pytest.fixture
def clip():
    rng = np.random.default_rng(0)
    return (0.3 * rng.standard_normal(SR)).astype(np.float32)


def test_float_roundtrip_is_lossless(tmp_path, clip):
    p = write_audio(tmp_path / "a.wav", clip * 3, SR)  # FLOAT keeps values beyond +-1 too
    assert sf.info(str(p)).subtype == "FLOAT"
    y = read_audio(p, SR)
    assert y.dtype == np.float32 and np.array_equal(y, clip * 3)
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temp file


def test_pcm16_roundtrip_quantises(tmp_path, clip):
    x = np.clip(clip, -1, 1)
    y = read_audio(write_audio(tmp_path / "a.wav", x, SR, subtype="PCM_16"), SR)
    assert np.abs(y - x).max() <= 1 / 32768 + 1e-7
    with pytest.raises(ValueError, match="exceeds 1.0"):
        write_audio(tmp_path / "b.wav", x * 5, SR, subtype="PCM_16")


def test_write_refuses_nan(tmp_path, clip):
    clip[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_audio(tmp_path / "a.wav", clip, SR)
    assert not (tmp_path / "a.wav").exists()


def test_resample_only_when_asked(tmp_path, clip):
    p = write_audio(tmp_path / "a.wav", clip, 22050)
    with pytest.raises(BadInputError, match=r"a\.wav.*22050 Hz but 16000 Hz.*resample=True"):
        read_audio(p, SR)
    y = read_audio(p, SR, resample=True)
    assert y.shape == (int(round(len(clip) * SR / 22050)),) and y.dtype == np.float32


def _expect(path, match, **kw):
    with pytest.raises(BadInputError, match=match) as ei:
        read_audio(path, SR, **kw)
    assert str(path) in str(ei.value) and ei.value.path == str(path)
    return str(ei.value)


def test_missing_file(tmp_path):
    _expect(tmp_path / "nope.wav", "does not exist")


def test_empty_file_zero_bytes(tmp_path):
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    _expect(p, r"empty file \(0 bytes\)")


def test_zero_frame_wav(tmp_path):
    p = tmp_path / "zero.wav"
    sf.write(str(p), np.zeros(0, np.float32), SR, subtype="FLOAT")
    _expect(p, r"empty audio \(0 frames\)")


def test_not_audio(tmp_path):
    p = tmp_path / "text.wav"
    p.write_text("this is not a wav file at all\n" * 10)
    _expect(p, "not a readable audio file")


def test_truncated_wav(tmp_path, clip):
    p = write_audio(tmp_path / "full.wav", clip, SR)
    data = p.read_bytes()
    t = tmp_path / "trunc.wav"
    t.write_bytes(data[: len(data) // 2])
    _expect(t, "truncated")
    h = tmp_path / "header_only.wav"
    h.write_bytes(data[:30])  # cut inside the header: libsndfile refuses it
    _expect(h, "not a readable audio file")


def test_wrong_sample_rate(tmp_path, clip):
    p = write_audio(tmp_path / "sr8k.wav", clip, 8000)
    msg = _expect(p, "sample rate is 8000 Hz")
    assert "resample" in msg


def test_stereo_where_mono_expected(tmp_path, clip):
    p = write_audio(tmp_path / "stereo.wav", np.stack([clip, -clip]), SR)
    _expect(p, "has 2 channels but mono")
    y = read_audio(p, SR, mono=False)
    assert y.shape == (2, SR) and np.array_equal(y[1], -clip)


def test_nan_samples(tmp_path, clip):
    clip[[5, 50]] = [np.nan, np.inf]
    p = tmp_path / "nan.wav"
    sf.write(str(p), clip, SR, subtype="FLOAT")
    _expect(p, r"2 NaN/Inf sample")
