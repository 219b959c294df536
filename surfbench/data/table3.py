"""Table 3's prepared data: AudioSet mixtures (training, no sources), FUSS (eval; train for Supervised Flow)
and LibriSpeech + FUSS (eval), from the offline stand-in or from real roots.

* ``standin`` (``<data>/<profile>/standin/``): :func:`surfbench.data.fuss_standin.build_standin` with the
  profile's ``standin`` sizes, written once by its own data job and read by the two below in the real layouts.
* ``audioset`` (``<data>/<profile>/audioset/``): ``mixtures [N, T]`` only: the clips of
  :func:`surfbench.data.audioset.iter_audioset`, cut into ``clip_seconds`` pieces, written clip by clip to
  ``train_mixtures.f32`` (raw float32, never stacked in memory: ~170 GB for the paper's AudioSet), indexed by
  ``train.npz`` (:func:`surfbench.data.store.write_raw_rows`).  There are no sources in the files, so no
  unsupervised method can ever be handed one (:class:`surfbench.data.store.MixtureSet`).
* ``fuss`` (``<data>/<profile>/fuss/``): ``sources [N, 4, T]`` in ``train_sources.f32``, indexed by
  ``train.npz`` (the FUSS training examples cut into ``train_clip_seconds`` windows, padded to 4 slots with
  silent sources, as FUSS pads its references, written window by window; Supervised Flow's training set, a
  choice), ``eval_fuss.npz`` (``mixtures [N, T]``, ``references [N, 4, T]`` padded with zeros,
  ``n_references [N]``, ``names``) and ``eval_librispeech_fuss.npz``
  (:func:`surfbench.data.librispeech_fuss.build_librispeech_fuss`'s arrays: ``mixture``, ``speech``,
  ``background``, ``snr_db``).

The training sets' content hashes (``train_hash`` in the manifest, recorded by every run) are
:func:`surfbench.data.store.array_hash` of the whole arrays, as when ``train.npz`` held them.

Every manifest records where the data came from; for the stand-in, its pool name and hash and its
content hash (:func:`provenance`), which the evaluation copies into every Table 3 result.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..audio_io import BadInputError
from . import fuss as fuss_io
from .fuss_standin import FUSS_VARIANT, MANIFEST as STANDIN_MANIFEST

STANDIN_DIR = "standin"  #: the stand-in's folder beside the prepared datasets
EVAL_FUSS = "eval_fuss"
EVAL_LSFUSS = "eval_librispeech_fuss"
TABLE3_DATASETS = ("audioset", "fuss")


def standin_config(cfg: dict) -> dict:
    """The :func:`~surfbench.data.fuss_standin.build_standin` keywords of a profile's ``standin`` block."""
    s = cfg["standin"]
    return {"seed": s["seed"], "fuss_examples": {"train": s["fuss_train"], "validation": s["fuss_validation"],
                                                  "eval": s["fuss_eval"]},
            "fuss_clip_seconds": s["fuss_clip_seconds"],
            "audioset_clips": s["audioset_clips"], "librispeech_utterances": s["librispeech_utterances"],
            "librispeech_speakers": s["librispeech_speakers"]}


def build_standin_for(cfg: dict, out_dir) -> dict:
    from .fuss_standin import build_standin

    return build_standin(out_dir, **standin_config(cfg))


def uses_standin(cfg: dict) -> bool:
    return any(cfg["datasets"][d]["source"] == "standin" for d in TABLE3_DATASETS)


def read_standin_manifest(standin_dir) -> dict:
    path = Path(standin_dir) / STANDIN_MANIFEST
    if not path.is_file():
        raise BadInputError(f"{path}: the Table 3 stand-in's manifest is missing (the stand-in is not built, or its "
                            f"build was interrupted); run `snakemake data` (the standin job) first", path)
    return json.loads(path.read_text())


def provenance(man: dict, standin_dir) -> dict:
    """What a result records about the stand-in it was computed on."""
    return {"source": "standin", "root": str(standin_dir), "format": man["format"],
            "pool": man["pool"]["name"], "pool_hash": man["pool"]["hash"], "content_hash": man["content_hash"],
            "config": man["config"]}


def _standin_dir(out_dir: Path) -> Path:
    return Path(out_dir).parent / STANDIN_DIR


def _pieces(x: np.ndarray, n: int) -> list[np.ndarray]:
    """Consecutive windows of ``n`` samples along the last axis (a shorter remainder is left out)."""
    return [x[..., i:i + n] for i in range(0, x.shape[-1] - n + 1, n)]


def prepare_audioset(cfg: dict, dcfg: dict, out_dir: Path) -> tuple[dict, dict]:
    """Writes ``train_mixtures.f32``; returns ``({"train.npz": its index}, manifest fields)``."""
    from .audioset import iter_audioset
    from .store import RAW_INDEX, raw_index_array, write_raw_rows

    if dcfg["source"] == "standin":
        sdir = _standin_dir(out_dir)
        man = read_standin_manifest(sdir)
        source, prov = sdir / man["readers"]["audioset"]["source"], provenance(man, sdir)
    else:
        if not dcfg["root"]:
            raise BadInputError("datasets.audioset.root is not set: source 'real' needs a folder of AudioSet clips "
                                "(or a list file)", "datasets.audioset.root")
        source, prov = Path(dcfg["root"]), {"source": "real", "root": str(dcfg["root"])}
    aman: dict = {}
    base = source if source.is_dir() else source.parent  # what the reader's file names are relative to

    def clips():  # the pieces of the first n_train_clips files (in the reader's sorted order); every file is read
        files, last, n = 0, None, 0
        for f, clip in iter_audioset(source, aman, sample_rate=dcfg["sample_rate"], clip_seconds=dcfg["clip_seconds"],
                                     long_clips=dcfg["long_clips"], short_clips=dcfg["short_clips"],
                                     on_bad_file=dcfg["on_bad_file"]):
            files, last = files + (f != last), f
            if not dcfg["n_train_clips"] or files <= dcfg["n_train_clips"]:
                n += 1
                yield str(base / f), clip
        if not n:
            raise BadInputError(f"{source}: no usable AudioSet clip ({aman['n_bad_files']} bad file(s), "
                                f"{aman['n_dropped_short']} dropped as short).", source)

    index = write_raw_rows(Path(out_dir) / "train_mixtures.f32", "mixtures", clips())
    aman.pop("clips", None)
    return {"train.npz": {RAW_INDEX: raw_index_array(index)}}, {
        "n_sources": None, "n_train_mixtures": index["shape"][0], "shape": index["shape"][1:],
        "info": {"source": "AudioSet-like stand-in clips" if dcfg["source"] == "standin" else f"AudioSet clips from {dcfg['root']}",
                 "provenance": prov, "reader": aman}}


def _fuss_roots(dcfg: dict, out_dir: Path) -> tuple[Path, str, Path, float, dict]:
    """``(FUSS root, variant, LibriSpeech root, clip seconds, provenance)``; a stand-in's clip length is the one
    its manifest says it was written with (``standin.fuss_clip_seconds``), real FUSS's is 10 s."""
    if dcfg["source"] == "standin":
        sdir = _standin_dir(out_dir)
        man = read_standin_manifest(sdir)
        return sdir, FUSS_VARIANT, sdir, float(man["config"]["fuss_clip_seconds"]), provenance(man, sdir)
    missing = [k for k in ("root", "librispeech_root") if not dcfg[k]]
    if missing:
        raise BadInputError(f"datasets.fuss.{missing[0]} is not set: source 'real' needs the FUSS root (holding "
                            f"{dcfg['variant']}/) and the LibriSpeech root (holding LibriSpeech/test-clean/)",
                            f"datasets.fuss.{missing[0]}")
    return Path(dcfg["root"]), dcfg["variant"], Path(dcfg["librispeech_root"]), float(fuss_io.CLIP_SECONDS), {
        "source": "real", "root": str(dcfg["root"]), "variant": dcfg["variant"],
        "librispeech_root": str(dcfg["librispeech_root"])}


def prepare_fuss(cfg: dict, dcfg: dict, out_dir: Path) -> tuple[dict, dict]:
    """Writes ``train_sources.f32``; returns ``({"train.npz": its index, "eval_fuss.npz",
    "eval_librispeech_fuss.npz"}, manifest fields)``."""
    from ..metrics.fuss import NUM_SLOTS, pad_references
    from .librispeech_fuss import build_librispeech_fuss
    from .store import RAW_INDEX, raw_index_array, write_raw_rows

    root, variant, ls_root, clip_s, prov = _fuss_roots(dcfg, out_dir)
    sr = dcfg["sample_rate"]
    # Supervised Flow's training set: FUSS train windows, padded to 4 slots
    train = fuss_io.FussDataset(root, dcfg["supervised_train_split"], variant, sr, clip_s)
    n_train = len(train) if dcfg["n_train_examples"] is None else min(len(train), dcfg["n_train_examples"])
    win = int(round(dcfg["train_clip_seconds"] * sr))
    windows = ((train.items[i].mixture, p) for i in range(n_train)
               for p in _pieces(pad_references(train[i].references, NUM_SLOTS), win))  # one example at a time
    index = write_raw_rows(Path(out_dir) / "train_sources.f32", "sources", windows)
    # FUSS eval
    ev = fuss_io.FussDataset(root, "eval", variant, sr, clip_s)
    n_eval = len(ev) if dcfg["n_eval_examples"] is None else min(len(ev), dcfg["n_eval_examples"])
    exs = [ev[i] for i in range(n_eval)]
    eval_fuss = {"mixtures": np.stack([e.mixture for e in exs]).astype(np.float32),
                 "references": np.stack([pad_references(e.references, NUM_SLOTS) for e in exs]).astype(np.float32),
                 "n_references": np.array([len(e.references) for e in exs], dtype=np.int64),
                 "names": np.array([e.name for e in exs])}
    # LibriSpeech + FUSS (its backgrounds from the same FUSS eval split)
    from .librispeech_fuss import list_utterances

    n_ls = dcfg["n_librispeech_fuss"]  # at most one mixture per utterance (as n_eval_examples, at most the set)
    n_ls = None if n_ls is None else min(n_ls, len(list_utterances(ls_root)))
    ls = build_librispeech_fuss(ls_root, root, seed=0, n_mixtures=n_ls,
                                length=dcfg["librispeech_fuss_length"], fuss_variant=variant, clip_seconds=clip_s)
    files = {"train.npz": {RAW_INDEX: raw_index_array(index)}, f"{EVAL_FUSS}.npz": eval_fuss,
             f"{EVAL_LSFUSS}.npz": ls.arrays}
    return files, {
        "n_sources": NUM_SLOTS, "n_train_mixtures": index["shape"][0], "n_train_examples": n_train,
        "shape": index["shape"][2:], "n_eval_fuss": n_eval, "n_eval_librispeech_fuss": len(ls),
        "info": {"source": "FUSS stand-in (ssdata layout) + LibriSpeech-like stand-in" if dcfg["source"] == "standin"
                 else f"FUSS {variant} from {dcfg['root']}, LibriSpeech test-clean from {dcfg['librispeech_root']}",
                 "provenance": prov, "librispeech_fuss": {k: v for k, v in ls.manifest.items()
                                                           if k not in ("utterances", "fuss_examples")}}}


def load_eval(data_dir) -> tuple[dict, dict, dict]:
    """``(eval_fuss arrays, eval_librispeech_fuss arrays, manifest)`` of a prepared ``fuss`` dataset."""
    from .store import _load_npz

    data_dir = Path(data_dir)
    man_path = data_dir / "manifest.json"
    if not man_path.is_file():
        raise FileNotFoundError(f"{man_path} is missing; run `snakemake data` first")
    return _load_npz(data_dir / f"{EVAL_FUSS}.npz"), _load_npz(data_dir / f"{EVAL_LSFUSS}.npz"), \
        json.loads(man_path.read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m surfbench.data.table3",
                                 description="Build Table 3's offline stand-in with a profile's standin sizes.")
    ap.add_argument("--config-json", required=True, help="{'standin': {...}} (validated profile section)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    from ..config import validate

    cfg = validate(json.loads(a.config_json), check_methods=False)
    man = build_standin_for(cfg, a.out)
    print(json.dumps({"root": a.out, "pool": man["pool"]["name"], "pool_hash": man["pool"]["hash"],
                      "content_hash": man["content_hash"], "files": man["n_files"],
                      "build_seconds": man["build_seconds"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
