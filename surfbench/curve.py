"""Learning curves: the evaluation's metric on a small fixed subset, measured while a run trains.

``training.curve: {every, n_items, metric}`` (schema).  Every ``every`` optimiser steps and at the last step,
the training job (rank 0) separates the first ``n_items`` mixtures of the dataset's fixed evaluation set
exactly as :mod:`surfbench.evaluate` does (:func:`surfbench.evaluate.separate_all`: the method's
``separate_for_scoring`` with the weights the evaluation uses, e.g. the EMA teacher, and the profile's
``evaluation`` settings), with its own per-item noise ``ItemNoise(derive_seed(seed, "curve"), ids)``, and
scores them with the evaluation's own metric function (PSNR of :func:`surfbench.metrics.image.evaluate_images`
for images, SI-SDR of :func:`surfbench.metrics.audio.evaluate_speech` for audio).  Rows go to ``curve.csv``
beside ``model.pt``.

Which items: the paper has no validation protocol and the prepared data have no validation split, so the
curve watches the first items of the evaluation set.  It is a view of training, never used to choose a model
or a step (training runs its fixed number of steps whatever the curve says).

It must not change training: the separation draws from its own generators, and :class:`CurveRecorder`
saves and restores torch's (CPU and CUDA), NumPy's and Python's global RNG states and every module's
train/eval mode around it (``tests/test_curves.py``: bit-identical weights with the curve on and off).
"""
from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .atomic import write_text
from .data.store import load_split

CURVE_FILE = "curve.csv"
COLUMNS = ["step", "wall_time_s", "curve_time_s", "metric", "value", "n_items", "method", "variant", "seed"]
#: ``metric: auto`` per domain
AUTO_METRIC = {"image": "psnr", "audio": "si_sdr"}


def curve_settings(run_cfg: dict, domain: str) -> dict:
    """``{every, n_items, metric}`` of a run (``metric: auto`` resolved for the domain)."""
    c = dict(run_cfg.get("training", {}).get("curve") or {})
    c.setdefault("every", 0)
    c.setdefault("n_items", 8)
    metric = c.get("metric", "auto")
    c["metric"] = AUTO_METRIC[domain] if metric in (None, "auto") else metric
    if c["metric"] not in ("psnr", "si_sdr") or (c["metric"] == "psnr") != (domain == "image"):
        raise ValueError(f"training.curve.metric = {metric!r} does not suit the {domain} domain "
                         f"(psnr for images, si_sdr for audio, or auto)")
    return c


def default_evaluation() -> dict:
    """The schema's default ``evaluation`` section (for a training run started without the profile's)."""
    from .config import validate

    return validate({}, check_methods=False)["evaluation"]


def curve_subset(data_dir: str | Path, n_items: int):
    """The first ``n_items`` evaluation items: ``(sources, mixtures, ids)`` as :func:`evaluate.evaluate` holds them."""
    evalset = load_split(data_dir, "eval")
    n = min(int(n_items), len(evalset))
    ids = list(range(n))
    if evalset.ragged:
        sources = [evalset._item(i) for i in ids]
        mixtures = [s.sum(0) for s in sources]
    else:
        sources = evalset.get_batch(ids)
        mixtures = sources.sum(1)
    return evalset, sources, mixtures


def score_subset(method, run_cfg: dict, evaluation: dict, evalset, sources, mixtures, metric: str, device) -> float:
    """Mean of ``metric`` over the subset, separated as the evaluation separates (noise tag ``curve``)."""
    from .evaluate import separate_all

    est = separate_all(method, mixtures, run_cfg["seed"], evaluation["batch_size"], device, progress=False,
                       references=sources, evaluation=evaluation, noise_tag="curve")
    if metric == "psnr":
        from .metrics.image import evaluate_images

        per_item, _, _ = evaluate_images(est, sources, evalset.n_sources,
                                         {"metrics": ["psnr"], "pairing": evaluation["image_pairing"], "device": "cpu"})
        values = per_item["psnr"]
    else:
        from .metrics.audio import evaluate_speech

        mix = [s.sum(0) for s in sources] if isinstance(sources, list) else sources.sum(1)
        values = evaluate_speech(est, sources, mix, run_cfg["data"]["sample_rate"], workers=1, metrics=["si_sdr"])["si_sdr"]
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values)
    return float(values[ok].mean()) if ok.any() else float("nan")


class _Isolated:
    """Saves and restores everything global a separation could touch: RNG states and train/eval modes."""

    def __init__(self, modules):
        self.modules = list(modules)

    def __enter__(self):
        self.rng = (torch.get_rng_state(), np.random.get_state(), random.getstate(),
                    torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
        self.modes = [(m, m.training) for root in self.modules for m in root.modules()]
        self.grad = torch.is_grad_enabled()
        return self

    def __exit__(self, *exc):
        torch.set_rng_state(self.rng[0])
        np.random.set_state(self.rng[1])
        random.setstate(self.rng[2])
        if self.rng[3] is not None:
            torch.cuda.set_rng_state_all(self.rng[3])
        for m, mode in self.modes:
            m.training = mode
        torch.set_grad_enabled(self.grad)
        return False


class CurveRecorder:
    """Measures curve points during training and writes ``curve.csv`` (rows survive resume via the checkpoint)."""

    def __init__(self, run_cfg: dict, data_dir: str | Path, out: str | Path, evaluation: dict | None, device,
                 domain: str):
        self.cfg = run_cfg
        self.settings = curve_settings(run_cfg, domain)
        self.every = int(self.settings["every"])
        self.path = Path(out)
        self.evaluation = evaluation if evaluation is not None else default_evaluation()
        self.device = device
        self.rows: list[dict] = []
        self.train_time = 0.0  # training wall time so far, curve evaluations excluded
        self.curve_time = 0.0  # time spent on curve evaluations so far
        self._subset = None
        self._data_dir = data_dir
        if self.enabled and not (Path(data_dir) / "eval.npz").exists():
            # a training set prepared without its evaluation set (some tests): training goes on, without a curve
            print(f"[surfbench.curve] {Path(data_dir) / 'eval.npz'} does not exist: no learning curve for this run "
                  f"(training.curve.every = {self.every})", file=sys.stderr, flush=True)
            self.every = 0

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def due(self, step: int, total: int) -> bool:
        return self.enabled and step > 0 and (step % self.every == 0 or step == total) \
            and not any(r["step"] == step for r in self.rows)

    def state(self) -> dict:
        return {"rows": [dict(r) for r in self.rows], "train_time_s": self.train_time, "curve_time_s": self.curve_time}

    def load(self, st: dict | None) -> None:
        if st:
            self.rows = [dict(r) for r in st["rows"]]
            self.train_time, self.curve_time = float(st["train_time_s"]), float(st["curve_time_s"])

    def record(self, method, step: int) -> float:
        t0 = time.time()
        if self._subset is None:
            self._subset = curve_subset(self._data_dir, self.settings["n_items"])
        evalset, sources, mixtures = self._subset
        saved = {k: getattr(method, k) for k in ("student",) if getattr(method, k, None) is not None}
        mods = list(method.modules_to_save().values())
        with _Isolated(mods):
            # the bare module under DDP: only rank 0 separates, a DDP forward would wait for the others
            for k, m in saved.items():
                setattr(method, k, m.module if isinstance(m, torch.nn.parallel.DistributedDataParallel) else m)
            try:
                method.eval_modules()
                value = score_subset(method, self.cfg, self.evaluation, evalset, sources, mixtures,
                                     self.settings["metric"], self.device)
            finally:
                for k, m in saved.items():
                    setattr(method, k, m)
        self.curve_time += time.time() - t0
        self.rows.append({"step": int(step), "wall_time_s": round(self.train_time, 3),
                          "curve_time_s": round(self.curve_time, 3), "metric": self.settings["metric"],
                          "value": value, "n_items": len(mixtures), "method": self.cfg["method"],
                          "variant": self.cfg.get("variant", "") or "", "seed": int(self.cfg["seed"])})
        self.write()
        return value

    def write(self) -> None:
        if self.enabled:
            write_text(self.path, pd.DataFrame(self.rows, columns=COLUMNS).to_csv(index=False))


def read_curve(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path)
