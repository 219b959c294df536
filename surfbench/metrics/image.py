"""Image separation metrics (paper Section 5, Tables 1-2): PSNR, SSIM, LPIPS, FID, IS, KID.

All functions are batched: images are ``[N, C, H, W]`` (or ``[B, K, C, H, W]``,
flattened mixture-major to ``N = B*K``), values in ``[0, 1]``, ``C`` in {1, 3}.

Conventions (see shared/METHOD.md, "Metrics"):

* a separated image is ``K * x̂_k`` clipped to ``[0, 1]`` (:func:`to_images`);
* estimates are paired with references by the best permutation per mixture
  (:func:`align_best_permutation`, using :mod:`surfbench.pit`): the least total MSE, or
  the best mean PSNR as the BASIS reference code does (config ``evaluation.image_pairing``);
* PSNR / SSIM follow scikit-image (``data_range=1``; SSIM with an 11-tap
  Gaussian window, sigma 1.5, K1 0.01, K2 0.03, population covariances,
  averaged over the valid region and over channels);
* LPIPS is the ``lpips`` package (v0.1 linear layers, inputs in ``[-1, 1]``);
* FID / IS / KID are torch-fidelity's (Inception-v3 of the TF 2015-12-05
  graph, images handed over as uint8 RGB).

Network weights are never downloaded here: they come from the torch hub
cache or a given path (:mod:`surfbench.weights`), and their absence raises
:class:`~surfbench.metrics.base.MetricUnavailable` with the reason.
"""
from __future__ import annotations

import difflib
import hashlib
import re
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from surfbench.metrics.base import MetricInfo, MetricUnavailable, register_metric
from surfbench.pit import best_permutation, pairwise_mse, permute

PSNR = register_metric(MetricInfo("psnr", "PSNR", higher_is_better=True, kind="item", unit="dB"))
SSIM = register_metric(MetricInfo("ssim", "SSIM", higher_is_better=True, kind="item"))
LPIPS = register_metric(MetricInfo("lpips", "LPIPS", higher_is_better=False, kind="item"))
FID = register_metric(MetricInfo("fid", "FID", higher_is_better=False, kind="set"))
IS = register_metric(MetricInfo("is", "IS", higher_is_better=True, kind="set"))
KID = register_metric(MetricInfo("kid", "KID", higher_is_better=False, kind="set"))

IMAGE_ITEM_METRICS = ("psnr", "ssim", "lpips")
IMAGE_SET_METRICS = ("fid", "is", "kid")


# ----------------------------------------------------------------------------- shapes, pairing


def to_images(sources: torch.Tensor, n_sources: int) -> torch.Tensor:
    """Half-image sources ``[B, K, C, H, W]`` -> separated images in ``[0, 1]``.

    BASIS protocol (METHOD.md, "Shapes and conventions"): the observed mixture
    is the *average* of K images in [0, 1], so a source slot holds ``image/K``;
    the separated image is ``K * x`` **clipped to [0, 1]** (our stated choice:
    clip, not rescale, before every metric).
    """
    return (sources * n_sources).clamp(0.0, 1.0)


#: ``evaluation.image_pairing``: what the per-mixture pairing of estimates with references optimises
IMAGE_PAIRINGS = ("mse", "psnr")


def align_best_permutation(est: torch.Tensor, ref: torch.Tensor, pairing: str = "mse") -> torch.Tensor:
    """``est`` ``[B, K, *d]`` reordered so that ``est[b, i]`` is paired with ``ref[b, i]``.

    The pairing is the permutation of the K slots, per mixture (exhaustive for K <= 3,
    Hungarian above; :mod:`surfbench.pit`), with

    * ``"mse"``: the least total MSE ``Σ_i mse_i``;
    * ``"psnr"``: the best mean PSNR, i.e. the least ``Σ_i log10 mse_i`` -- the rule of the BASIS
      reference code (``permutations_psnr`` in ``glow/sep.py``, the PSNR loop of
      ``ncsn/runners/multiple_mnist_runner.py``: the permutation with the largest sum of PSNRs).

    The two differ when one pairing matches one image almost exactly and the other badly, and the
    other pairing matches both moderately (``tests/test_image_metrics.py``).
    """
    if est.shape != ref.shape or est.dim() < 3:
        raise ValueError(f"align_best_permutation: need equal [B, K, *d] shapes, got {tuple(est.shape)} and {tuple(ref.shape)}")
    if pairing not in IMAGE_PAIRINGS:
        raise ValueError(f"align_best_permutation: unknown pairing {pairing!r}; expected one of {IMAGE_PAIRINGS} "
                         f"(evaluation.image_pairing)")
    with torch.no_grad():
        # cost[b, i, j] = mse(ref_i, est_j), so perm[b, i] is the estimate slot for reference slot i.
        cost = pairwise_mse(ref, est)
        if pairing == "psnr":
            cost = cost.double().clamp_min(1e-30).log10()  # an exact match (PSNR = inf) stays finite and wins
        perm = best_permutation(cost)
    return permute(est, perm)


def _as_batch(x: torch.Tensor, name: str) -> torch.Tensor:
    """``[N, C, H, W]`` view of ``x`` (``[B, K, C, H, W]`` is flattened mixture-major)."""
    if x.dim() == 5:
        x = x.flatten(0, 1)
    if x.dim() != 4:
        raise ValueError(f"{name}: expected images [N, C, H, W] or [B, K, C, H, W], got shape {tuple(x.shape)}")
    return x


def _pair(est: torch.Tensor, ref: torch.Tensor, fn: str) -> tuple[torch.Tensor, torch.Tensor]:
    e, r = _as_batch(est, fn), _as_batch(ref, fn)
    if e.shape != r.shape:
        raise ValueError(f"{fn}: shapes differ: est {tuple(e.shape)} vs ref {tuple(r.shape)}")
    return e, r


# ----------------------------------------------------------------------------- PSNR, SSIM


def psnr(est: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB, ``[N]`` float64: ``10 log10(data_range^2 / MSE)``, MSE over C, H, W.

    Identical images give ``inf`` (as scikit-image).
    """
    e, r = _pair(est, ref, "psnr")
    mse = (e.double() - r.double()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _valid_filter_matrix(n: int, g: torch.Tensor) -> torch.Tensor:
    """``[n - k + 1, n]`` matrix ``M`` with ``(M @ v)[i] = sum_j g[j] v[i + j]`` (a 'valid' 1-D correlation)."""
    k = g.numel()
    rows = torch.arange(n - k + 1, device=g.device)[:, None]
    m = torch.zeros(n - k + 1, n, dtype=g.dtype, device=g.device)
    m[rows, rows + torch.arange(k, device=g.device)[None, :]] = g
    return m


def ssim(
    est: torch.Tensor,
    ref: torch.Tensor,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    batch_size: int = 64,
) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004), ``[N]`` float64.

    Same definition as ``skimage.metrics.structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=1)``: local statistics under a
    normalised 11x11 Gaussian window (separable), SSIM map kept where the window
    fits inside the image (scikit-image crops ``(win_size-1)//2`` pixels from each
    border), mean over that region, then mean over channels.
    """
    e, r = _pair(est, ref, "ssim")
    n, c, h, w = e.shape
    if h < win_size or w < win_size:
        raise ValueError(f"ssim: images {h}x{w} are smaller than the {win_size}x{win_size} window")
    g = _gaussian_window(win_size, sigma, torch.float64, e.device)
    # The separable Gaussian filter, 'valid' region only, as two small matrix products
    # (faster than conv2d in float64 on the CPU): filt = Mh @ img @ Mw^T.
    mh, mwt = _valid_filter_matrix(h, g), _valid_filter_matrix(w, g).T
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    out = []
    for s in range(0, n, batch_size):
        x = e[s : s + batch_size].double()
        y = r[s : s + batch_size].double()
        # Five maps filtered at once: x, y, x^2, y^2, xy -> [m, 5, c, h, w].
        stack = torch.stack([x, y, x * x, y * y, x * y], dim=1)
        filt = mh @ stack @ mwt  # [m, 5, c, h - win + 1, w - win + 1]
        mu_x, mu_y, xx, yy, xy = filt.unbind(1)
        var_x = xx - mu_x * mu_x
        var_y = yy - mu_y * mu_y
        cov = xy - mu_x * mu_y
        smap = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
        out.append(smap.mean(dim=(2, 3)).mean(dim=1))
    return torch.cat(out)


# ----------------------------------------------------------------------------- LPIPS

#: LPIPS trunk -> (surfbench.weights name, smallest image side the trunk accepts)
_LPIPS_TRUNKS = {"alex": ("alexnet", 31), "vgg": ("vgg16", 16)}
_LPIPS_ALIASES = {"alex": "alex", "alexnet": "alex", "vgg": "vgg", "vgg16": "vgg"}
_LPIPS_CACHE: dict[tuple, torch.nn.Module] = {}


def _lpips_net_name(net: str) -> str:
    try:
        return _LPIPS_ALIASES[net]
    except KeyError:
        raise ValueError(f"lpips: net must be one of {sorted(_LPIPS_ALIASES)}, got {net!r}") from None


def _lpips_weights_file(net: str, weights_path: str | Path | None) -> Path:
    from surfbench import weights

    if weights_path is None:
        return weights.weights_path(_LPIPS_TRUNKS[net][0])  # raises MetricUnavailable when absent
    p = Path(weights_path)
    if not p.is_file():
        raise MetricUnavailable(f"LPIPS-{net} backbone weights {p} not found", metric="lpips")
    return p


def lpips_model(net: str = "alex", weights_path: str | Path | None = None, device: str | torch.device = "cpu") -> torch.nn.Module:
    """``lpips.LPIPS`` (v0.1 linear layers shipped with the package) with its trunk loaded from a local file.

    The trunk (torchvision AlexNet / VGG-16 ImageNet weights) is read from
    ``weights_path`` or the torch hub cache; nothing is downloaded. Built once
    per (net, device, weight file).
    """
    import lpips

    net = _lpips_net_name(net)
    path = _lpips_weights_file(net, weights_path)
    st = path.stat()
    device = torch.device(device)
    key = (net, str(device), str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _LPIPS_CACHE:
        return _LPIPS_CACHE[key]
    with warnings.catch_warnings():
        # lpips passes torchvision's deprecated `pretrained=False`; pnet_rand=True means no download.
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(pretrained=True, net=net, pnet_rand=True, verbose=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    # torchvision names the trunk layers `features.<i>.<param>`; lpips regroups the same
    # layers into slices, `slice<s>.<i>.<param>`, keeping the index <i>.
    trunk = {}
    for k in model.net.state_dict():
        _, idx, pname = k.split(".", 2)
        src = f"features.{idx}.{pname}"
        if src not in state:
            raise ValueError(f"lpips: {path} has no tensor {src!r}; is it a torchvision {_LPIPS_TRUNKS[net][0]} state_dict?")
        trunk[k] = state[src]
    model.net.load_state_dict(trunk, strict=True)
    model = model.eval().requires_grad_(False).to(device)
    _LPIPS_CACHE[key] = model
    return model


def lpips_distance(
    est: torch.Tensor,
    ref: torch.Tensor,
    net: str = "alex",
    weights_path: str | Path | None = None,
    device: str | torch.device | None = None,
    resize: int | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Per-image LPIPS distance, ``[N]`` float64 (on CPU).

    Images in ``[0, 1]`` are scaled to ``[-1, 1]``; grayscale is repeated to 3
    channels. ``resize`` (config key ``lpips_resize``; default ``None`` = native
    size) upsamples both images bilinearly to ``resize x resize`` first: the
    AlexNet trunk needs sides of at least 31 px (VGG: 16), so 28x28 MNIST needs
    it; a too-small image raises :class:`MetricUnavailable` saying so.
    """
    e, r = _pair(est, ref, "lpips")
    net = _lpips_net_name(net)
    device = torch.device(device) if device is not None else e.device
    if e.shape[1] not in (1, 3):
        raise ValueError(f"lpips: images must have 1 or 3 channels, got {e.shape[1]}")
    model = lpips_model(net, weights_path, device)  # first: missing weights is the main reason to report
    side = min(e.shape[-2:]) if resize is None else resize
    min_side = _LPIPS_TRUNKS[net][1]
    if side < min_side:
        raise MetricUnavailable(
            f"LPIPS-{net} needs images of at least {min_side}x{min_side} px, got {tuple(e.shape[-2:])}; "
            f"set the option lpips_resize (e.g. 32 or 64) to upsample before LPIPS",
            metric="lpips",
        )
    out = []
    with torch.no_grad():
        for s in range(0, e.shape[0], batch_size):
            x = e[s : s + batch_size].to(device, torch.float32)
            y = r[s : s + batch_size].to(device, torch.float32)
            if x.shape[1] == 1:
                x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
            if resize is not None:
                x = F.interpolate(x, size=(resize, resize), mode="bilinear", align_corners=False)
                y = F.interpolate(y, size=(resize, resize), mode="bilinear", align_corners=False)
            out.append(model(2 * x - 1, 2 * y - 1).flatten().to("cpu", torch.float64))
    return torch.cat(out)


# ----------------------------------------------------------------------------- FID, IS, KID


def to_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` uint8 on CPU from images in ``[0, 1]`` (grayscale repeated to RGB).

    Quantised as ``torchvision.utils.save_image`` does (``x*255 + 0.5``,
    truncated), so metrics on tensors equal metrics on PNGs written by it.
    """
    x = _as_batch(images, "to_uint8_rgb").detach().to("cpu", torch.float32)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[1] != 3:
        raise ValueError(f"to_uint8_rgb: images must have 1 or 3 channels, got {x.shape[1]}")
    return x.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).contiguous()


class UInt8ImageDataset(torch.utils.data.Dataset):
    """A fixed set of uint8 ``3xHxW`` images, the input form torch-fidelity takes."""

    def __init__(self, images_u8: torch.Tensor):
        if images_u8.dtype != torch.uint8 or images_u8.dim() != 4 or images_u8.shape[1] != 3:
            raise ValueError(f"UInt8ImageDataset: need uint8 [N, 3, H, W], got {images_u8.dtype} {tuple(images_u8.shape)}")
        self.images = images_u8

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def _inception_weights_file(weights_path: str | Path | None) -> Path:
    from surfbench import weights

    if weights_path is None:
        return weights.weights_path("inception")  # raises MetricUnavailable when absent
    p = Path(weights_path)
    if not p.is_file():
        raise MetricUnavailable(f"Inception weights {p} not found", metric="fid,is,kid")
    return p


def _reference_cache_name(set_id: str, ref_u8: torch.Tensor, weights_file: Path) -> str:
    """Cache key for the reference set's Inception features.

    torch-fidelity keys its cache only by this name, so the name carries the
    set id, a hash of the reference pixels and the weight file's hash: a stale
    entry can never be reused for other images or other weights.
    """
    from surfbench.weights import file_sha256

    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", str(set_id)).strip("_") or "set"
    content = hashlib.sha256(ref_u8.numpy().tobytes()).hexdigest()[:12]
    n, _, h, w = ref_u8.shape
    return f"{safe}-{n}x{h}x{w}-{content}-w{file_sha256(weights_file)[:8]}"


def fid_and_is(
    est_images: torch.Tensor,
    ref_images: torch.Tensor,
    cache_dir: str | Path | None = None,
    set_id: str | None = None,
    weights_path: str | Path | None = None,
    kid: bool = False,
    *,
    fid: bool = True,
    isc: bool = True,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    isc_splits: int = 10,
    kid_subset_size: int = 1000,
) -> dict[str, float]:
    """FID, Inception Score (and optionally KID) with torch-fidelity.

    FID (and KID) compare the distribution of the separated images
    ``est_images`` with the ground-truth images of the *same evaluation set*
    ``ref_images`` (all separated images vs all reference images, no pairing).
    IS is computed on the separated images alone (10 splits).

    Images ``[N, C, H, W]`` in ``[0, 1]`` go to torch-fidelity as uint8 RGB
    (:func:`to_uint8_rgb`); torch-fidelity resizes them to 299x299 itself.
    With ``cache_dir`` and ``set_id`` the reference features are cached under
    ``cache_dir`` and extracted once per set (the cache name also hashes the
    pixels and the weights, see :func:`_reference_cache_name`).

    Returns ``{"fid", "isc_mean", "isc_std"[, "kid_mean", "kid_std"]}`` (only the
    requested ones). Raises :class:`MetricUnavailable` when the Inception
    weights (``weights_path`` or the torch hub cache) are absent.
    """
    import torch_fidelity

    if not (fid or isc or kid):
        raise ValueError("fid_and_is: nothing requested")
    wfile = _inception_weights_file(weights_path)
    est_u8 = to_uint8_rgb(est_images)
    ref_u8 = to_uint8_rgb(ref_images)
    device = torch.device(device)
    kwargs: dict[str, Any] = dict(
        input1=UInt8ImageDataset(est_u8),
        isc=isc,
        fid=fid,
        kid=kid,
        cuda=device.type == "cuda",
        batch_size=batch_size,
        feature_extractor_weights_path=str(wfile),
        isc_splits=isc_splits,
        save_cpu_ram=True,  # no DataLoader worker processes
        verbose=False,
        cache=False,
    )
    if fid or kid:
        kwargs["input2"] = UInt8ImageDataset(ref_u8)
        if cache_dir is not None and set_id is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            kwargs.update(cache=True, cache_root=str(cache_dir), input2_cache_name=_reference_cache_name(set_id, ref_u8, wfile))
    if kid:
        kwargs["kid_subset_size"] = min(kid_subset_size, len(est_u8), len(ref_u8))
    if device.type == "cuda" and device.index is not None:
        with torch.cuda.device(device):
            res = torch_fidelity.calculate_metrics(**kwargs)
    else:
        res = torch_fidelity.calculate_metrics(**kwargs)
    out: dict[str, float] = {}
    if fid:
        out["fid"] = float(res["frechet_inception_distance"])
    if isc:
        out["isc_mean"] = float(res["inception_score_mean"])
        out["isc_std"] = float(res["inception_score_std"])
    if kid:
        out["kid_mean"] = float(res["kernel_inception_distance_mean"])
        out["kid_std"] = float(res["kernel_inception_distance_std"])
    return out


# ----------------------------------------------------------------------------- the whole suite


@dataclass
class ImageEvalOptions:
    """Options of :func:`evaluate_images` (each one a config key of the evaluation)."""

    metrics: tuple[str, ...] = ("psnr", "ssim", "lpips", "fid", "is")
    lpips_net: str = "alex"
    #: upsample to this side before LPIPS (None: native size; 28x28 needs it for AlexNet)
    lpips_resize: int | None = None
    lpips_weights: str | None = None  #: trunk file; None: torch hub cache
    inception_weights: str | None = None  #: None: torch hub cache
    device: str = "cpu"
    cache_dir: str | None = None  #: reference-feature cache for FID/KID
    set_id: str | None = None  #: names the evaluation set in that cache
    batch_size: int = 256  #: LPIPS chunk
    fid_batch_size: int = 64
    isc_splits: int = 10
    pairing: str = "mse"  #: ``evaluation.image_pairing`` (:func:`align_best_permutation`)

    @classmethod
    def from_any(cls, options: "ImageEvalOptions | Mapping[str, Any] | None") -> "ImageEvalOptions":
        if options is None:
            return cls()
        if isinstance(options, cls):
            return options
        known = {f.name for f in fields(cls)}
        unknown = set(options) - known
        if unknown:
            raise ValueError(f"unknown image evaluation option(s) {sorted(unknown)}; known: {sorted(known)}")
        opts = dict(options)
        if "metrics" in opts:
            opts["metrics"] = tuple(opts["metrics"])
        return cls(**opts)


def missing_weights(options: "ImageEvalOptions | Mapping[str, Any] | None" = None) -> dict[str, str]:
    """Requested metrics whose pretrained weights are absent, each with the reason.

    Checked before anything is separated, so an evaluation whose every metric
    is unavailable (Table 2 offline: FID and IS both need the Inception
    weights) can record the reasons without separating a single mixture.
    """
    opt = ImageEvalOptions.from_any(options)
    wanted = set(opt.metrics)
    out: dict[str, str] = {}
    if "lpips" in wanted:
        try:
            _lpips_weights_file(_lpips_net_name(opt.lpips_net), opt.lpips_weights)
        except MetricUnavailable as e:
            out["lpips"] = e.reason
    set_wanted = [m for m in IMAGE_SET_METRICS if m in wanted]
    if set_wanted:
        try:
            _inception_weights_file(opt.inception_weights)
        except MetricUnavailable as e:
            out.update({m: e.reason for m in set_wanted})
    return out


def evaluate_images(
    est_sources: torch.Tensor,
    ref_sources: torch.Tensor,
    n_sources: int,
    options: ImageEvalOptions | Mapping[str, Any] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float | MetricUnavailable], dict[str, str]]:
    """Run the image metric suite on separated half-image sources ``[B, K, C, H, W]``.

    Estimates are turned into images (:func:`to_images`), paired with the
    references by the best permutation per mixture (``options.pairing``; one pairing
    for every metric), then scored.

    Returns ``(per_item, set_level, unavailable)``:

    * ``per_item[name]``: ``np.ndarray`` of ``B*K`` values, one per separated
      image, mixture-major (item ``b*K + k`` is mixture ``b``, reference slot ``k``);
    * ``set_level[name]``: a float, or the :class:`MetricUnavailable` raised;
      ``"is_std"`` / ``"kid_std"`` accompany ``"is"`` / ``"kid"``;
    * ``unavailable[name]``: the reason, for every requested metric that could
      not be computed (missing weights, images too small for the LPIPS trunk).
    """
    opt = ImageEvalOptions.from_any(options)
    for name in opt.metrics:
        if name not in IMAGE_ITEM_METRICS + IMAGE_SET_METRICS:
            close = difflib.get_close_matches(name, IMAGE_ITEM_METRICS + IMAGE_SET_METRICS, n=2)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"evaluate_images: unknown image metric {name!r}{hint}")
    if est_sources.shape != ref_sources.shape or est_sources.dim() != 5:
        raise ValueError(
            f"evaluate_images: need est and ref of equal shape [B, K, C, H, W], got {tuple(est_sources.shape)} and {tuple(ref_sources.shape)}"
        )
    device = torch.device(opt.device)
    est = to_images(est_sources.detach().to(device), n_sources)
    ref = to_images(ref_sources.detach().to(device), n_sources)
    est = align_best_permutation(est, ref, opt.pairing)
    est_flat, ref_flat = est.flatten(0, 1), ref.flatten(0, 1)

    per_item: dict[str, np.ndarray] = {}
    set_level: dict[str, float | MetricUnavailable] = {}
    unavailable: dict[str, str] = {}
    wanted = set(opt.metrics)

    if "psnr" in wanted:
        per_item["psnr"] = psnr(est_flat, ref_flat).cpu().numpy()
    if "ssim" in wanted:
        per_item["ssim"] = ssim(est_flat, ref_flat).cpu().numpy()
    if "lpips" in wanted:
        try:
            per_item["lpips"] = (
                lpips_distance(
                    est_flat,
                    ref_flat,
                    net=opt.lpips_net,
                    weights_path=opt.lpips_weights,
                    device=device,
                    resize=opt.lpips_resize,
                    batch_size=opt.batch_size,
                )
                .cpu()
                .numpy()
            )
        except MetricUnavailable as e:
            unavailable["lpips"] = e.reason

    set_wanted = [m for m in IMAGE_SET_METRICS if m in wanted]
    if set_wanted:
        try:
            res = fid_and_is(
                est_flat,
                ref_flat,
                cache_dir=opt.cache_dir,
                set_id=opt.set_id,
                weights_path=opt.inception_weights,
                kid="kid" in wanted,
                fid="fid" in wanted,
                isc="is" in wanted,
                device=device,
                batch_size=opt.fid_batch_size,
                isc_splits=opt.isc_splits,
            )
        except MetricUnavailable as e:
            for m in set_wanted:
                set_level[m] = e
                unavailable[m] = e.reason
        else:
            if "fid" in res:
                set_level["fid"] = res["fid"]
            if "isc_mean" in res:
                set_level["is"], set_level["is_std"] = res["isc_mean"], res["isc_std"]
            if "kid_mean" in res:
                set_level["kid"], set_level["kid_std"] = res["kid_mean"], res["kid_std"]
    return per_item, set_level, unavailable
