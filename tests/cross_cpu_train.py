"""Train three short runs and print one hash of all their weights (used by test_cross_cpu.py).

    python tests/cross_cpu_train.py prepare DATA      # tiny MNIST + tiny eSpeak Libri2Mix under DATA
    python tests/cross_cpu_train.py train DATA OUT    # prints "weights <sha256>"
    python tests/cross_cpu_train.py plain DATA OUT    # the same with torch.sqrt and the foreach Adam step

The runs cover every kind of kernel the ci profile uses: a U-Net (convolutions, GroupNorm, attention)
trained with MixIT on MNIST; Conv-TasNet (1-D convolutions, cLN) trained with MixIT on speech; and
SURF (ReMixIT) with MB-TFLocoformer (STFT, attention, RMS norms, the flow's start noise) taught by it.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_determinism import ROOT, run_config, tiny_cfg  # noqa: E402

from surfbench.config import load_config  # noqa: E402

STEPS = 6


def configs() -> dict:
    speech = load_config(ROOT / "config" / "ci.yaml", overrides={
        "profile": "trusttest",
        "datasets": {"mnist": {"enabled": False}, "cifar10": {"enabled": False},
                     "libri2mix": {"source": "espeak", "n_train_mixtures": 16, "n_eval_mixtures": 2, "clip_seconds": 1.0}},
        "training": {"steps": STEPS, "batch_size": 4, "checkpoint_every": 100, "log_every": 100, "ema_alpha": 0.5},
        "method_overrides": {"mixit": {"steps": STEPS}}, "tables": ["4"]})
    return {"mnist": tiny_cfg(steps=STEPS, ema_alpha=0.5), "libri2mix": speech}


RUNS = (("mnist", "mixit", None), ("libri2mix", "mixit", None), ("libri2mix", "surf_remixit", "mixit"))


def prepare(data: Path) -> None:
    from surfbench.data.store import prepare as prepare_dataset

    for name, cfg in configs().items():
        prepare_dataset(cfg, name, data / name)


def use_plain_torch() -> None:
    """Undo the two code-side fixes (before any surfbench module imports them): ``torch.sqrt`` instead of
    ``surfbench.numerics.sqrt``, Adam's default foreach step instead of the fused one."""
    import surfbench.numerics

    assert "surfbench.flow" not in sys.modules, "patch before the modules that import sqrt load"
    surfbench.numerics.sqrt = torch.sqrt
    import surfbench.train

    surfbench.train.adam = lambda params, tcfg: torch.optim.Adam(params, lr=tcfg["lr"], betas=tuple(tcfg["adam_betas"]))


def train_all(data: Path, out: Path) -> str:
    from surfbench.train import train

    cfgs, h = configs(), hashlib.sha256()
    for dataset, method, teacher in RUNS:
        model = out / dataset / method / "model.pt"
        train(run_config(cfgs[dataset], method, dataset=dataset), data / dataset, model, model.parent / "ckpt",
              teacher_path=out / dataset / teacher / "model.pt" if teacher else None, device="cpu", progress=False)
        blob = torch.load(model, map_location="cpu", weights_only=False)
        for name in sorted(blob["modules"]):
            for key, t in sorted(blob["modules"][name].items()):
                h.update(key.encode())
                h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[1] == "prepare":
        prepare(Path(sys.argv[2]))
    else:
        if sys.argv[1] == "plain":
            use_plain_torch()
        print("weights", train_all(Path(sys.argv[2]), Path(sys.argv[3])))
