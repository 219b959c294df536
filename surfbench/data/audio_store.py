"""Prepared speech data (the Libri2Mix column of Table 4).

* ``source: espeak`` — the offline default: two-speaker eSpeak NG mixtures
  (:mod:`surfbench.data.speech`), cached under ``<out>/espeak/`` and stored as
  ``train.npz`` / ``eval.npz`` with ``sources [N, 2, T]`` float32.
* ``source: librimix`` — Libri2Mix (min, 16 kHz) read from ``datasets.libri2mix.root``:
  the training split (train-360) is streamed from disk, item by item, in
  ``clip_seconds`` windows placed as ``train_crop`` says (``train_index.json`` lists
  it); the evaluation mixtures (test, 3,000 in the paper) are read once into
  ``eval.npz``: whole utterances, as the paper scores them (``eval_clip_seconds:
  null``; stored ragged: ``sources_flat [K, ΣT]`` and ``offsets [N+1]``), or each cut
  to its first ``eval_clip_seconds``.

:func:`prepare_speech` returns the arrays of ``train.npz`` / ``eval.npz`` and the manifest
fields; :func:`surfbench.data.store.prepare` writes them (this module does not import
``store``, which imports this one).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..atomic import write_json

ESPEAK_SEED = 0  # the speech set is part of the dataset definition, not of a run seed


def prepare_speech(cfg: dict, dcfg: dict, out_dir: Path) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """``({"train.npz": arrays, "eval.npz": arrays}, manifest fields)`` of the speech set; writes only caches
    (``<out>/espeak/``, ``train_index.json``)."""
    out_dir = Path(out_dir)
    if dcfg["source"] == "espeak":
        from .speech import build_speech_set, load_speech_set

        cache = out_dir / "espeak"
        man = build_speech_set(cache, n_train=dcfg["n_train_mixtures"] or 400, n_test=dcfg["n_eval_mixtures"],
                               clip_seconds=dcfg["clip_seconds"] or 2.0, sample_rate=dcfg["sample_rate"], seed=ESPEAK_SEED)
        train = np.asarray(load_speech_set(cache, "train", mmap=False), dtype=np.float32)
        test = np.asarray(load_speech_set(cache, "test", mmap=False), dtype=np.float32)
        return {"train.npz": {"sources": train}, "eval.npz": {"sources": test}}, {
            "n_train_mixtures": len(train), "n_eval_mixtures": len(test), "shape": [train.shape[-1]],
            "info": {"source": "eSpeak NG synthesised two-speaker mixtures", "espeak_ng_version": man.get("espeak_ng_version"),
                     "n_train_speakers": len(man["splits"]["train"]["speakers"]),
                     "n_test_speakers": len(man["splits"]["test"]["speakers"])},
        }
    from .librimix import TEST_SPLIT, TRAIN_SPLIT, Libri2MixDataset, read_metadata

    if not dcfg["root"]:
        raise FileNotFoundError("datasets.libri2mix.root is not set: source 'librimix' needs a LibriMix root "
                                "containing Libri2Mix/wav16k/min/{train-360,test,metadata}")
    seg = dcfg["clip_seconds"]
    rows = read_metadata(dcfg["root"], TRAIN_SPLIT)
    if dcfg["n_train_mixtures"]:
        rows = rows[: dcfg["n_train_mixtures"]]
    index = {"root": str(Path(dcfg["root"]).resolve()), "split": TRAIN_SPLIT, "n": len(rows), "clip_seconds": seg,
             "sample_rate": dcfg["sample_rate"], "train_crop": dcfg["train_crop"]}
    write_json(out_dir / "train_index.json", index, indent=1, end="")
    test = Libri2MixDataset(dcfg["root"], TEST_SPLIT, segment_seconds=dcfg["eval_clip_seconds"])
    n = min(len(test), dcfg["n_eval_mixtures"])
    if dcfg["eval_clip_seconds"] is None:
        whole = [test.utterance(i)[1] for i in range(n)]
        lengths = np.array([x.shape[1] for x in whole], dtype=np.int64)
        arrays = {"sources_flat": np.concatenate(whole, axis=1).astype(np.float32),
                  "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)}
        seconds = {"eval_seconds": {"min": float(lengths.min()) / test.sample_rate,
                                  "mean": float(lengths.mean()) / test.sample_rate,
                                  "max": float(lengths.max()) / test.sample_rate, "total": float(lengths.sum()) / test.sample_rate}}
    else:
        arrays = {"sources": np.stack([test[i][1].numpy() for i in range(n)]).astype(np.float32)}
        seconds = {"eval_seconds": {"each": float(dcfg["eval_clip_seconds"])}}
    # the streamed training set still needs a train.npz marker for the rules: its content is the index
    files = {"train.npz": {"librimix_index": np.frombuffer(json.dumps(index).encode(), np.uint8)}, "eval.npz": arrays}
    return files, {"n_train_mixtures": len(rows), "n_eval_mixtures": n, "shape": [test.segment],
                   **seconds, "info": {"source": f"Libri2Mix min 16k from {dcfg['root']}"}}
