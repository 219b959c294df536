"""surfbench.weights: the known-weights table, status, install_from, fetch and the CLI.

No network: installs use files made here and a fake KNOWN_WEIGHTS entry;
fetch uses file:// URLs.
"""
from __future__ import annotations

import hashlib
import json

import pytest

from surfbench import weights
from surfbench.metrics.base import MetricUnavailable


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A fake published weight file, its sha256 and a KNOWN_WEIGHTS holding only it."""
    src = tmp_path / "published"
    src.mkdir()
    payload = b"published weights \x00\x01\x02" * 1000
    sha = hashlib.sha256(payload).hexdigest()
    name = f"fake-{sha[:8]}.pth"
    (src / name).write_bytes(payload)
    entry = weights.WeightFile(name="fake", filename=name, sha256=sha, url=(src / name).as_uri(), metrics=("lpips",), note="fake net, test")
    monkeypatch.setattr(weights, "KNOWN_WEIGHTS", {"fake": entry})
    return entry, src / name, payload


def test_known_table_agrees_with_the_libraries():
    import torch_fidelity.feature_extractor_inceptionv3 as tfi
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    k = weights.KNOWN_WEIGHTS
    assert tfi.URL_INCEPTION_V3.endswith("/" + k["inception"].filename)
    assert AlexNet_Weights.IMAGENET1K_V1.url.endswith("/" + k["alexnet"].filename)
    assert VGG16_Weights.IMAGENET1K_V1.url.endswith("/" + k["vgg16"].filename)
    for w in k.values():
        assert len(w.sha256) == 64 and int(w.sha256, 16) >= 0
        # the file names carry the first 8 hex digits of the sha256 (torch hub convention)
        assert w.filename.rsplit("-", 1)[1] == w.sha256[:8] + ".pth"
        assert w.url.endswith("/" + w.filename)
    assert set(k["inception"].metrics) == {"fid", "is", "kid"} and k["alexnet"].metrics == ("lpips",)


def test_cache_dir_follows_torch_home(cache):
    assert weights.cache_dir() == cache


def test_weights_path_missing_names_file(cache):
    with pytest.raises(MetricUnavailable) as e:
        weights.weights_path("inception")
    assert "weights-inception-2015-12-05-6726825d.pth" in e.value.reason
    assert "surfbench weights --from" in e.value.reason and str(cache) in e.value.reason
    with pytest.raises(KeyError, match="unknown weights"):
        weights.weights_path("resnet")


def test_install_from_good_file(cache, fake, tmp_path):
    entry, src, payload = fake
    assert weights.status()[0].present is False and weights.status()[0].sha_ok is None
    out = weights.install_from(src.parent)
    assert [o.status for o in out] == ["installed"] and out[0].ok
    assert (cache / entry.filename).read_bytes() == payload
    row = weights.status()[0]
    assert row.present and row.sha_ok and row.path == str(cache / entry.filename)
    assert weights.weights_path("fake", verify=True) == cache / entry.filename
    assert [o.status for o in weights.install_from(src.parent)] == ["present"]  # idempotent


def test_install_from_refuses_wrong_hash(cache, fake, tmp_path):
    entry, _, _ = fake
    bad_dir = tmp_path / "bad" / "nested"
    bad_dir.mkdir(parents=True)
    (bad_dir / entry.filename).write_bytes(b"tampered")
    out = weights.install_from(tmp_path / "bad")  # searched recursively
    assert [o.status for o in out] == ["refused"] and not out[0].ok
    assert entry.filename in out[0].message and entry.sha256 in out[0].message
    assert not (cache / entry.filename).exists()
    # a cached file with another hash: usable by default, refused with verify=True, flagged by status
    cache.mkdir(parents=True)
    (cache / entry.filename).write_bytes(b"custom")
    assert weights.weights_path("fake") == cache / entry.filename
    with pytest.raises(MetricUnavailable, match="published sha256"):
        weights.weights_path("fake", verify=True)
    assert weights.status()[0].sha_ok is False
    empty = tmp_path / "empty"
    empty.mkdir()
    assert [o.status for o in weights.install_from(empty)] == ["not-found"]


def test_fetch_checks_hash_and_reports_failures(cache, fake, monkeypatch):
    entry, src, payload = fake
    out = weights.fetch()
    assert [o.status for o in out] == ["downloaded"]
    assert (cache / entry.filename).read_bytes() == payload
    assert [o.status for o in weights.fetch()] == ["present"]
    (cache / entry.filename).unlink()
    for url, sha in ((src.as_uri(), "0" * 64), (src.parent.joinpath("missing.pth").as_uri(), entry.sha256)):
        monkeypatch.setitem(weights.KNOWN_WEIGHTS, "fake", weights.WeightFile("fake", entry.filename, sha, url, ("lpips",)))
        out = weights.fetch(["fake"])
        assert out[0].status == "failed" and "could not download" in out[0].message and "--from" in out[0].message
        assert not (cache / entry.filename).exists()


def test_cli(cache, fake, tmp_path, capsys):
    entry, src, _ = fake
    assert weights.main([]) == 0
    assert "MISSING" in capsys.readouterr().out
    assert weights.main(["--from", str(src.parent), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["weights"][0]["present"] and report["weights"][0]["sha_ok"]
    assert report["actions"][0]["status"] == "installed"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / entry.filename).write_bytes(b"tampered")
    assert weights.main(["--from", str(bad)]) == 1
    assert entry.filename in capsys.readouterr().err
    assert weights.main(["--from", str(tmp_path / "nope")]) == 2
    with pytest.raises(SystemExit):
        weights.main(["resnet"])
