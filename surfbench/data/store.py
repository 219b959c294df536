"""Prepared datasets on disk: fixed training mixtures and fixed evaluation files.

``prepare(cfg, dataset, out_dir)`` writes, once, from a seed:

* ``train.npz``  — the observed training mixtures (images: uint8 pool + pairs; audio: float32 sources);
* ``eval.npz``   — the fixed evaluation mixtures (Tables 1, 4, 9);
* ``eval_table2.npz`` — CIFAR-10 only: the larger Table 2 set;
* ``manifest.json`` — provenance, counts and the content hash of each file.

The content hash (of the arrays, not the zip container) goes into every result.

Table 3's training arrays (AudioSet ``mixtures [N, T]``: ~170 GB at paper scale; FUSS ``sources [N, 4, T]``:
~51 GB) are never held whole in memory, at any scale: :func:`write_raw_rows` writes them row by row to a raw
float32 file beside ``train.npz`` (``train_mixtures.f32`` / ``train_sources.f32``, C order, no header), and
``train.npz`` holds only its index (``raw_index``: file, key, dtype, shape, content hash).  :func:`load_split`
opens that file read-only with ``np.memmap``, so a batch reads only its rows.  The content hash is
:func:`array_hash` of ``{key: the whole array}``, as when the array itself was in ``train.npz``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ..atomic import atomic_path, write_json, write_npz
from ..audio_io import BadInputError
from ..seeding import derive_seed
from .recipes import basis_pairs

N_SOURCES = 2  # every dataset of Tables 1, 2, 4 and 9 has two-source mixtures
IMAGE_DATASETS = ("mnist", "cifar10")
AUDIO_DATASETS = ("libri2mix",)
TABLE3_DATASETS = ("audioset", "fuss")  # surfbench/data/table3.py


def array_hash(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(_hash_header(k, a.dtype, a.shape))
        h.update(a.tobytes())
    return h.hexdigest()


def _hash_header(key: str, dtype: np.dtype, shape: tuple) -> bytes:
    """What :func:`array_hash` puts before an array's bytes (also :func:`write_raw_rows`, which hashes a file)."""
    return f"{key}:{np.dtype(dtype).str}:{tuple(shape)}".encode()


def save_npz_atomic(path: Path, /, **arrays) -> str:
    """Write ``arrays`` as an ``.npz`` (:func:`surfbench.atomic.write_npz`); returns their :func:`array_hash`,
    or for a streamed array's index (``raw_index``) the content hash of the array it describes."""
    write_npz(path, **arrays)
    if RAW_INDEX in arrays:
        return parse_raw_index(arrays[RAW_INDEX])["content_hash"]
    return array_hash(arrays)


# ----------------------------------------------------------------------------- streamed training arrays
RAW_INDEX = "raw_index"  #: train.npz key of a streamed array's index (JSON bytes, as ``librimix_index``)
HASH_CHUNK = 1 << 20     #: bytes read at a time when hashing a written raw file


def write_raw_rows(path: Path, key: str, rows: Iterable[tuple[str, np.ndarray]]) -> dict:
    """Write the float32 rows of an array ``[N, *row]`` to the raw file ``path``, one at a time; returns its
    index (``file``: the name, ``key``, ``dtype``, ``shape``, ``content_hash``) for ``train.npz``.

    ``rows`` yields ``(what, row)``: ``what`` names the row's source file in errors.  N is counted as rows
    come.  Every row must have the first row's shape and be finite: NaN/Inf are refused here, naming the
    source file, so that the loader need not scan the whole array (``read_audio`` already refuses them in an
    audio file; this also catches any made on the way).  The file is written through
    :func:`surfbench.atomic.atomic_path`: an interrupted or failed write leaves no file under ``path``.
    ``content_hash`` is :func:`array_hash` of ``{key: the whole array}``; that hash puts the shape, N
    included, before the bytes, so it is computed by reading the finished file back in ``HASH_CHUNK``
    pieces before the rename (memory stays a few rows whatever N is).
    """
    path = Path(path)
    dtype = np.dtype(np.float32)
    row_shape, n = None, 0
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            for what, row in rows:
                row = np.ascontiguousarray(row, dtype=dtype)
                if row_shape is None:
                    row_shape = row.shape
                elif row.shape != row_shape:
                    raise ValueError(f"{what}: a row of shape {row.shape} for {path.name}, whose rows are {row_shape}")
                if not np.isfinite(row).all():
                    raise BadInputError(f"{what}: {int((~np.isfinite(row)).sum())} NaN/Inf value(s) in the data "
                                        f"made from this file; fix or leave out the file", what)
                f.write(row.data)
                n += 1
        if row_shape is None:
            raise ValueError(f"{path}: no rows to write")
        shape = (n, *row_shape)
        h = hashlib.sha256(_hash_header(key, dtype, shape))  # array_hash's header, then the bytes
        buf = memoryview(bytearray(HASH_CHUNK))
        with open(tmp, "rb") as f:
            while got := f.readinto(buf):
                h.update(buf[:got])
    return {"file": path.name, "key": key, "dtype": dtype.str, "shape": list(shape), "content_hash": h.hexdigest()}


def raw_index_array(index: dict) -> np.ndarray:
    """The index of :func:`write_raw_rows` as train.npz stores it (``{RAW_INDEX: raw_index_array(index)}``)."""
    return np.frombuffer(json.dumps(index, sort_keys=True).encode(), np.uint8)


def parse_raw_index(a: np.ndarray) -> dict:
    return json.loads(bytes(a).decode())


def _rng(*parts) -> np.random.Generator:
    return np.random.default_rng(derive_seed(*parts))


def prepare(cfg: dict, dataset: str, out_dir: str | Path) -> dict:
    """Build the prepared files of ``dataset`` under ``out_dir``; returns the manifest."""
    out_dir = Path(out_dir)
    dcfg = cfg["datasets"][dataset]
    manifest: dict = {"dataset": dataset, "n_sources": N_SOURCES, "config": dcfg}
    if dcfg.get("fixture"):
        from .fixtures import ensure_fixture

        ensure_fixture(dataset, dcfg)
    if dataset in IMAGE_DATASETS:
        from .images import load_image_pools

        train_pool, test_pool, info = load_image_pools(dataset, dcfg)
        train_pairs = basis_pairs(len(train_pool), None, _rng(dataset, "train-pairs"))
        manifest["train_hash"] = save_npz_atomic(out_dir / "train.npz", images=train_pool, pairs=train_pairs)
        eval_pairs = basis_pairs(len(test_pool), dcfg["n_eval_mixtures"], _rng(dataset, "eval-pairs"))
        eval_images = test_pool[eval_pairs]  # [N, K, C, H, W]
        manifest["eval_hash"] = save_npz_atomic(out_dir / "eval.npz", images=eval_images)
        manifest.update(info=info, n_train_images=len(train_pool), n_train_mixtures=len(train_pairs),
                        n_test_images=len(test_pool), n_eval_mixtures=len(eval_pairs), shape=list(train_pool.shape[1:]))
        if dataset == "cifar10":
            t2_pairs = basis_pairs(len(test_pool), dcfg["n_eval_mixtures_table2"], _rng(dataset, "eval-table2-pairs"))
            manifest["eval_table2_hash"] = save_npz_atomic(out_dir / "eval_table2.npz", images=test_pool[t2_pairs])
            manifest["n_eval_mixtures_table2"] = len(t2_pairs)
    elif dataset in AUDIO_DATASETS:
        from .audio_store import prepare_speech

        files, info = prepare_speech(cfg, dcfg, out_dir)
        for name, arrays in files.items():  # train.npz, then eval.npz
            manifest[f"{Path(name).stem}_hash"] = save_npz_atomic(out_dir / name, **arrays)
        manifest.update(info)
    elif dataset in TABLE3_DATASETS:
        from .table3 import prepare_audioset, prepare_fuss

        files, info = (prepare_audioset if dataset == "audioset" else prepare_fuss)(cfg, dcfg, out_dir)
        for name, arrays in files.items():
            manifest[f"{Path(name).stem}_hash"] = save_npz_atomic(out_dir / name, **arrays)
        manifest.update(info)
    else:
        raise ValueError(f"unknown dataset {dataset!r}")
    write_json(out_dir / "manifest.json", manifest, indent=2, sort_keys=True, default=str)  # last: marks a complete build
    return manifest


# ----------------------------------------------------------------------------- loading
@dataclass
class SourceSet:
    """Sources of a set of K-source mixtures, item by item, as float32 tensors ``[K, *d]``.

    Images are returned as half images (x = image / K, so the mixture is the average image).
    """

    domain: str
    n_sources: int
    shape: tuple
    content_hash: str
    _images: np.ndarray | None = None  # image pool [N, C, H, W] (train) ...
    _pairs: np.ndarray | None = None   # ... with pairs [M, K]; or eval images [M, K, C, H, W] with _pairs None
    _audio: np.ndarray | None = None   # [M, K, T]
    _offsets: np.ndarray | None = None  # whole utterances of different lengths: _audio is [K, ΣT], item i is
                                        # _audio[:, offsets[i]:offsets[i+1]]

    def __len__(self) -> int:
        if self._offsets is not None:
            return len(self._offsets) - 1
        if self._audio is not None:
            return len(self._audio)
        return len(self._pairs) if self._pairs is not None else len(self._images)

    @property
    def ragged(self) -> bool:
        """Items differ in length (whole utterances): use :meth:`items`, not :meth:`all`."""
        return self._offsets is not None

    def items(self) -> list[torch.Tensor]:
        """Every item ``[K, *d_i]``, each as long as it is."""
        if self._offsets is None:
            return list(self.all())
        return [self._item(i) for i in range(len(self))]

    def _item(self, i: int) -> torch.Tensor:
        o = self._offsets
        return torch.from_numpy(np.ascontiguousarray(self._audio[:, o[i]:o[i + 1]], dtype=np.float32))

    def get_batch(self, idx, generator: torch.Generator | None = None) -> torch.Tensor:
        """Items ``idx`` stacked, ``[len(idx), K, *d]``; ``generator`` places random training windows where a
        set has them (Libri2Mix, ``train_crop: random``), and is not drawn from otherwise."""
        idx = np.asarray(idx, dtype=np.int64)
        if self._offsets is not None:
            lengths = {int(self._offsets[i + 1] - self._offsets[i]) for i in idx}
            if len(lengths) > 1:
                raise ValueError(f"items {idx.tolist()} differ in length ({sorted(lengths)} samples): whole "
                                 f"utterances are separated one by one (SourceSet.items)")
            return torch.stack([self._item(i) for i in idx])
        if self._audio is not None:
            return torch.from_numpy(np.ascontiguousarray(self._audio[idx], dtype=np.float32))
        imgs = self._images[self._pairs[idx]] if self._pairs is not None else self._images[idx]
        return torch.from_numpy(imgs.astype(np.float32)) / (255.0 * self.n_sources)

    def all(self) -> torch.Tensor:
        if self.ragged:
            raise ValueError("SourceSet.all: the items differ in length (whole utterances); use SourceSet.items()")
        return self.get_batch(np.arange(len(self)))


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `snakemake data` (or `surfbench prepare`) first")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # zipfile.BadZipFile, ValueError, EOFError ...
        raise ValueError(f"{path} is corrupt or truncated ({type(e).__name__}: {e}); delete it and rerun `snakemake data`") from e


def load_split(data_dir: str | Path, split: str) -> SourceSet:
    """``split`` in {"train", "eval", "eval_table2"}."""
    data_dir = Path(data_dir)
    arrays = _load_npz(data_dir / f"{split}.npz")
    if RAW_INDEX in arrays:  # Table 3's training arrays, streamed from disk
        return _open_raw(data_dir / f"{split}.npz", parse_raw_index(arrays[RAW_INDEX]))
    h = array_hash(arrays)
    if "librimix_index" in arrays:
        return _librimix_train(arrays["librimix_index"], h)
    if "mixtures" in arrays and "sources" not in arrays:  # AudioSet prepared before the streamed layout
        mix = arrays["mixtures"]
        _check_finite(mix, data_dir / f"{split}.npz")
        return MixtureSet("audio", 1, tuple(mix.shape[1:]), h, _audio=mix[:, None])
    if "offsets" in arrays:
        flat, offsets = arrays["sources_flat"], arrays["offsets"]
        _check_finite(flat, data_dir / f"{split}.npz")
        if offsets[0] != 0 or offsets[-1] != flat.shape[1] or (np.diff(offsets) <= 0).any():
            raise ValueError(f"{data_dir / f'{split}.npz'}: offsets do not cut sources_flat into non-empty items; "
                             f"the prepared data is corrupt — delete it and rerun `snakemake data`")
        return SourceSet("audio", flat.shape[0], (None,), h, _audio=flat, _offsets=offsets)
    if "sources" in arrays:
        src = arrays["sources"]
        _check_finite(src, data_dir / f"{split}.npz")
        return SourceSet("audio", src.shape[1], tuple(src.shape[2:]), h, _audio=src)
    if split == "train":
        imgs, pairs = arrays["images"], arrays["pairs"]
        return SourceSet("image", pairs.shape[1], tuple(imgs.shape[1:]), h, _images=imgs, _pairs=pairs)
    imgs = arrays["images"]
    return SourceSet("image", imgs.shape[1], tuple(imgs.shape[2:]), h, _images=imgs)


class MixtureSet(SourceSet):
    """A training set of observed mixtures only (AudioSet): ``get_batch`` gives ``[B, 1, *d]``, each item one
    mixture in a single slot, so ``sum(1)`` is the mixture, as for a source set.  It holds no sources: the
    trainer hands it only to methods whose ``training_data`` is ``mixtures`` or ``mixtures_of_mixtures``
    (:func:`surfbench.train.make_batch` refuses the others)."""

    mixtures_only = True


def _check_finite(a: np.ndarray, path: Path) -> None:
    if not np.isfinite(a).all():
        bad = int((~np.isfinite(a)).sum())
        raise ValueError(f"{path}: {bad} NaN/Inf values in the sources; the prepared data is corrupt — delete it and rerun `snakemake data`")


def _open_raw(npz: Path, index: dict) -> SourceSet:
    """The set of a streamed array (:func:`write_raw_rows`): a read-only ``np.memmap`` of its raw file, checked
    against the index's size; ``content_hash`` comes from the index (no re-hashing), and NaN/Inf were refused
    when the file was written, so the array is not scanned here."""
    path = npz.parent / index["file"]
    shape, dtype = tuple(index["shape"]), np.dtype(index["dtype"])
    expected = int(np.prod(shape)) * dtype.itemsize
    size = path.stat().st_size if path.is_file() else None
    if size != expected:
        found = "is missing" if size is None else f"holds {size} bytes"
        raise ValueError(f"{path} {found}, but {npz.name} indexes {index['key']} {list(shape)} {dtype} = {expected} "
                         f"bytes there (truncated, or left by another data step): delete it with the rest of "
                         f"{npz.parent} and rerun `snakemake data`")
    a = np.memmap(path, dtype=dtype, mode="r", shape=shape)
    if index["key"] == "mixtures":  # AudioSet: mixtures only
        return MixtureSet("audio", 1, shape[1:], index["content_hash"], _audio=a[:, None])
    return SourceSet("audio", shape[1], shape[2:], index["content_hash"], _audio=a)


class _LibriTrainSet(SourceSet):
    """Libri2Mix training mixtures streamed from disk (too large for memory at paper scale)."""

    def __init__(self, dataset, content_hash: str, crop: str):
        super().__init__("audio", 2, (dataset.segment,), content_hash)
        self._ds = dataset
        self._crop = crop

    def __len__(self) -> int:
        return len(self._ds)

    def get_batch(self, idx, generator: torch.Generator | None = None) -> torch.Tensor:
        from .librimix import window

        if self._crop == "first":
            return torch.stack([self._ds[int(i)][1] for i in idx]).float()
        if generator is None:
            raise ValueError("Libri2Mix train_crop 'random' draws its windows from the training generator; none given")
        out = []
        for i in idx:
            mix, x = self._ds.utterance(int(i))
            room = max(0, mix.shape[0] - self._ds.segment)  # uniform start in [0, T - segment]
            start = int(torch.randint(room + 1, (1,), generator=generator))
            out.append(torch.from_numpy(np.ascontiguousarray(window(mix, x, start, self._ds.segment)[1])))
        return torch.stack(out).float()


def _librimix_train(index_bytes: np.ndarray, content_hash: str) -> SourceSet:
    from .librimix import Libri2MixDataset

    index = json.loads(bytes(index_bytes).decode())
    ds = Libri2MixDataset(index["root"], index["split"], segment_seconds=index["clip_seconds"],
                          sample_rate=index["sample_rate"])
    if index["n"] < len(ds):
        ds.rows = ds.rows[: index["n"]]
    return _LibriTrainSet(ds, content_hash, index.get("train_crop", "first"))  # indexes before the key: first
