"""Separate your own mixtures with a trained run: ``surfbench separate``.

    surfbench separate --run results/<profile>/<dataset>/<method>/seed<k> INPUT... --out DIR [--device auto|cpu|cuda]

Inputs
  * image runs (mnist, cifar10): image files (PNG; any lossless format Pillow reads also works),
    grayscale for 1-channel models (MNIST), RGB for 3-channel models (CIFAR-10), of exactly the
    model's size (28×28, 32×32).  The image **is** the mixture: in surfbench an image mixture is
    the average of two images in [0, 1], i.e. the sum of the half-image sources, so the mixture
    tensor is the image scaled to [0, 1] (8-bit /255, 16-bit /65535).  A fully opaque alpha
    channel is dropped; palette images are expanded.
  * speech runs (libri2mix): WAV files, mono, at the run's sample rate (16 kHz), read with
    :func:`surfbench.audio_io.read_audio` (no silent resampling or downmixing: it is an error).
    Any length: the audio models are convolutional / STFT-based, so a clip longer (or shorter)
    than the training clips is separated as a whole, in one pass (memory grows with the length).

Separation uses the evaluation's sampler settings: the run config's ``sampler.euler_steps`` and
``training.sigma_z`` through ``method.separate(mixtures, ItemNoise(derive_seed(seed, "separate"), ids))``.
The noise id of an input is derived from its content (a hash of the file's bytes), so a file's
separation is reproducible and does not depend on the other inputs or their order.

Outputs (``k`` = 1..K, the source slots in the model's order)
  * images: ``<out>/<input stem>_s<k>.png`` holding ``K·x̂_k`` clipped to [0, 1] (the convention of
    the metrics, :func:`surfbench.metrics.image.to_images`), 8-bit, grayscale or RGB as the input;
    for a mixture-consistent method (sum of estimates = mixture) the average of the K images is the
    input, up to 1/255 quantisation and wherever no output pixel was clipped;
  * audio: ``<out>/<stem>_s<k>.wav``, float32 WAV at the run's sample rate (values beyond ±1 kept); a
    Table 3 run writes its 4 outputs, and a mixture may hold fewer sources: every output's level re. the
    mixture is recorded, and one below ``INACTIVE_BELOW_DB`` (-30 dB; label-free, our choice) is marked
    inactive in ``separation.json`` and said so on the command line;
  * ``<out>/separation.json``: the run, the model file's SHA-256, the method and config hash, the
    sampler settings, the device, and input → outputs.

Bad input (missing file, unreadable/corrupt image, wrong size, wrong channel count, non-WAV, wrong
sample rate, NaN samples, two inputs with the same stem) raises ``ValueError`` /
``FileNotFoundError`` before anything is written; the CLI prints the message and exits with 2.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_path, write_json
from .seeding import ItemNoise, derive_seed
from .weights import file_sha256

IMAGE_BATCH = 64


class SeparationInputError(ValueError):
    """A user input of ``surfbench separate`` is unusable; the message names the file and the fix."""


def _noise_id(path: Path) -> int:
    """A per-input noise stream id from the file's content (order- and batch-independent)."""
    return int(file_sha256(path)[:15], 16)


# ----------------------------------------------------------------------------- images
def read_mixture_image(path: str | Path, shape: tuple[int, int, int]) -> torch.Tensor:
    """An image file as the mixture tensor ``[C, H, W]`` in [0, 1] for a model of data shape ``shape``."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    C, H, W = shape
    want = "grayscale (1 channel)" if C == 1 else "RGB (3 channels)"
    if not p.exists():
        raise FileNotFoundError(f"{p}: input image does not exist. Check the path; this run expects {want} "
                                f"PNG mixtures of {W}x{H} pixels.")
    if p.is_dir():
        raise SeparationInputError(f"{p}: is a directory, not an image. Pass the PNG files themselves "
                                   f"(e.g. {p}/*.png).")
    try:
        with Image.open(p) as im:
            im.load()
            img = im.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise SeparationInputError(f"{p}: not a readable image (corrupt, truncated or not an image file: {e}). "
                                   f"Re-export it as a {want} PNG of {W}x{H} pixels.") from e
    if img.size != (W, H):
        raise SeparationInputError(f"{p}: image is {img.size[0]}x{img.size[1]} pixels but this model separates "
                                   f"{W}x{H} images (dataset shape {C}x{H}x{W}). Resize or crop it to {W}x{H} "
                                   f"(the model cannot take other sizes).")
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("LA", "RGBA", "La", "RGBa"):
        alpha = np.asarray(img.getchannel("A"))
        if alpha.min() < 255:
            raise SeparationInputError(f"{p}: the image has a transparent alpha channel (mode {img.mode}); a mixture "
                                       f"has no transparency. Flatten it onto a background and save it without "
                                       f"alpha as a {want} PNG.")
        img = img.convert("L" if mode.startswith("L") else "RGB")
        mode = img.mode
    if mode == "1":
        img, mode = img.convert("L"), "L"
    scale = 255.0
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        scale, channels = 65535.0, 1
        arr = np.asarray(img, dtype=np.float64)[None]
    elif mode == "L":
        channels, arr = 1, np.asarray(img, dtype=np.float64)[None]
    elif mode == "RGB":
        channels, arr = 3, np.asarray(img, dtype=np.float64).transpose(2, 0, 1)
    else:
        raise SeparationInputError(f"{p}: unsupported image mode {mode!r}. Save it as a {want} PNG "
                                   f"(8 or 16 bits per channel).")
    if channels != C:
        fix = ("convert it to grayscale (e.g. PIL `Image.open(f).convert('L')`, or "
               "`magick in.png -colorspace Gray out.png`)" if C == 1 else
               "convert it to RGB (e.g. PIL `Image.open(f).convert('RGB')`)")
        raise SeparationInputError(f"{p}: image has {channels} channel(s) (mode {img.mode}) but this model separates "
                                   f"{want} images; {fix}.")
    x = arr / scale
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise SeparationInputError(f"{p}: pixel values outside [0, 1] after scaling by 1/{scale:.0f}; "
                                   f"save it as an ordinary 8-bit or 16-bit PNG.")
    return torch.from_numpy(x.astype(np.float32))


def _write_png(path: Path, img01: torch.Tensor) -> None:
    """``[C, H, W]`` in [0, 1] -> 8-bit PNG (L or RGB), atomically."""
    from PIL import Image

    a = (img01.clamp(0, 1).mul(255.0).round().to(torch.uint8).cpu().numpy())
    im = Image.fromarray(a[0], mode="L") if a.shape[0] == 1 else Image.fromarray(a.transpose(1, 2, 0), mode="RGB")
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


# ----------------------------------------------------------------------------- the command
def _model_path(run_dir: Path) -> Path:
    if run_dir.is_file() and run_dir.suffix == ".pt":
        return run_dir
    model = run_dir / "model.pt"
    if not run_dir.exists():
        raise FileNotFoundError(f"{run_dir}: run folder does not exist. Pass a trained run, e.g. "
                                f"results/<profile>/<dataset>/<method>/seed<k> (see `ls results/`).")
    if not model.exists():
        raise FileNotFoundError(f"{model}: this run has no trained model. Train it first (`snakemake train` or "
                                f"`make tables`), or pass another run folder that holds a model.pt.")
    return model


def _check_stems(inputs: list[Path]) -> None:
    seen: dict[str, Path] = {}
    for p in inputs:
        if p.stem in seen and seen[p.stem] != p:
            raise SeparationInputError(f"{p} and {seen[p.stem]} have the same name stem {p.stem!r}, so their outputs "
                                       f"({p.stem}_s1, ...) would overwrite each other; rename one of them or "
                                       f"separate them into different --out folders.")
        seen[p.stem] = p


def separate_files(run_dir: str | Path, inputs, out_dir: str | Path, device: str = "auto") -> list[Path]:
    """Separate the user's mixture files with a trained run; returns the paths written (outputs, then the JSON)."""
    from .train import load_trained, pick_device

    t0 = time.time()
    run_dir = Path(run_dir)
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise SeparationInputError("no input files given; pass one or more PNG (image runs) or WAV (speech runs) files")
    model_path = _model_path(run_dir)
    dev = pick_device(device)
    method = load_trained(model_path, dev)
    cfg = method.cfg
    domain = cfg.get("domain")
    K = method.n_sources
    _check_stems(inputs)
    ids = [_noise_id(p) if p.is_file() else 0 for p in inputs]

    # read and check every input before anything is written
    if domain == "image":
        if len(method.shape) != 3:
            raise SeparationInputError(f"{model_path}: image model with unexpected data shape {method.shape}")
        mixtures = [read_mixture_image(p, method.shape) for p in inputs]
    elif domain == "audio":
        from .audio_io import read_audio

        sr = int(cfg["data"].get("sample_rate", 16000))
        for p in inputs:
            if not p.exists():
                raise FileNotFoundError(f"{p}: input audio file does not exist. Check the path; this run expects "
                                        f"mono WAV mixtures at {sr} Hz.")
        mixtures = [torch.from_numpy(read_audio(p, sr)) for p in inputs]
    else:
        raise SeparationInputError(f"{model_path}: unknown domain {domain!r} in the run config")

    seed = int(cfg["seed"])
    noise_seed = derive_seed(seed, "separate")
    ests: list[torch.Tensor] = []
    # images: batches of equal-size items; audio: one file at a time (lengths differ)
    step = IMAGE_BATCH if domain == "image" else 1
    for s in range(0, len(mixtures), step):
        m = torch.stack(mixtures[s:s + step]).to(dev)
        noise = ItemNoise(noise_seed, ids[s:s + step], device=dev)
        with torch.no_grad():
            est = method.separate(m, noise).detach().float().cpu()
        if est.shape[:2] != (m.shape[0], K) or est.shape[2:] != m.shape[1:]:
            raise RuntimeError(f"{model_path}: method {method.name} returned shape {tuple(est.shape)} for mixtures "
                               f"{tuple(m.shape)}; expected [B, {K}, *d]")
        if not torch.isfinite(est).all():
            bad = [str(inputs[s + i]) for i in range(est.shape[0]) if not torch.isfinite(est[i]).all()]
            raise RuntimeError(f"{model_path}: the separation of {', '.join(bad)} contains NaN/Inf; the trained model "
                               f"is broken (retrain the run) or the input is extreme.")
        ests.extend(est)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    items = []
    from .report.figures import INACTIVE_BELOW_DB, level_db

    for p, est, nid, mix in zip(inputs, ests, ids, mixtures):
        outs = []
        for k in range(K):
            if domain == "image":
                q = out_dir / f"{p.stem}_s{k + 1}.png"
                _write_png(q, (est[k] * K).clamp(0.0, 1.0))   # K·x̂_k clipped: surfbench.metrics.image.to_images
            else:
                from .audio_io import write_audio

                q = write_audio(out_dir / f"{p.stem}_s{k + 1}.wav", est[k], sr)
            outs.append(q)
        written.extend(outs)
        item = {"input": str(p), "input_sha256": file_sha256(p), "noise_id": nid, "outputs": [str(q) for q in outs]}
        if domain == "audio":
            levels = [level_db(est[k].numpy(), mix.numpy()) for k in range(K)]
            item["outputs_level_db_re_mixture"] = [round(v, 2) if np.isfinite(v) else None for v in levels]
            item["outputs_active"] = [bool(v >= INACTIVE_BELOW_DB) for v in levels]
        items.append(item)

    from . import __version__
    from .config import config_hash

    blob = {
        "format": "surfbench-separation/1",
        "surfbench_version": __version__,
        "run": str(run_dir),
        "model": str(model_path),
        "model_sha256": file_sha256(model_path),
        "method": method.name,
        "profile": cfg.get("profile"), "dataset": cfg.get("dataset"), "domain": domain,
        "variant": cfg.get("variant", ""), "seed": seed, "config_hash": config_hash(cfg),
        "n_sources": K, "data_shape": list(method.shape),
        "sampler": {"euler_steps": cfg["sampler"]["euler_steps"], "sigma_z": cfg["training"].get("sigma_z"),
                    "noise": "ItemNoise(derive_seed(seed, 'separate'), noise_id); noise_id = int(sha256(input)[:15], 16)",
                    "evaluate_weights": cfg["training"].get("evaluate_weights")},
        "output_convention": ("PNG of K*x_k clipped to [0,1], 8-bit (surfbench.metrics.image.to_images)"
                              if domain == "image" else f"float32 WAV at {sr} Hz, the estimate x_k as is"),
        "inactive_rule": (f"audio: an output below {INACTIVE_BELOW_DB:g} dB re. the mixture's power is inactive "
                          f"(label-free; our choice)") if domain == "audio" else None,
        "device": str(dev),
        "runtime_s": round(time.time() - t0, 3),
        "items": items,
    }
    written.append(write_json(out_dir / "separation.json", blob, indent=2, default=str))
    return written
