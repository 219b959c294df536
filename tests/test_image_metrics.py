"""Image metrics against independent references.

* PSNR / SSIM: scikit-image (the convention we follow) and torchmetrics.
* LPIPS: ``lpips.LPIPS`` built the package's own way (torchvision trunk), with
  a trunk made here (random weights saved under torchvision's file name).
* FID / IS / KID: ``torch_fidelity.calculate_metrics`` called directly with
  the same Inception weights file, made here (random init). To keep the tests
  fast on one CPU thread, Inception's input size is patched from 299 to 75 (its
  minimum) for *both* sides of each comparison; the code paths are unchanged.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim

from surfbench.metrics import image as im
from surfbench.metrics.base import METRICS, MetricUnavailable
from surfbench.pit import permute

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
ALEX_FILE = "alexnet-owt-7be5be79.pth"
VGG_FILE = "vgg16-397923af.pth"

# ----------------------------------------------------------------------------- helpers


def _sk_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """scikit-image SSIM with the paper-standard settings; x, y are C x H x W."""
    return sk_ssim(
        x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=0
    )


def _real_crops(size: int) -> torch.Tensor:
    """Real photographs: crops of astronaut / coffee (RGB) and camera (gray -> 3 equal channels)."""
    crops = []
    for name, corners in (("astronaut", [(40, 200), (250, 250), (400, 60)]), ("coffee", [(100, 100), (200, 380)]), ("camera", [(60, 240), (300, 120)])):
        img = getattr(skdata, name)()
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        for r, c in corners:
            crops.append(img[r : r + size, c : c + size].transpose(2, 0, 1))
    return torch.from_numpy(np.stack(crops)).double() / 255.0


def _noisy(x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g, dtype=x.dtype)).clamp(0, 1)


# ----------------------------------------------------------------------------- registry, shapes


def test_metrics_declared_once_with_direction():
    for name, up, kind in (("psnr", True, "item"), ("ssim", True, "item"), ("lpips", False, "item"), ("fid", False, "set"), ("is", True, "set"), ("kid", False, "set")):
        assert METRICS[name].higher_is_better is up and METRICS[name].kind == kind
    assert METRICS["psnr"].unit == "dB"


def test_to_images_scales_by_k_and_clips():
    x = torch.tensor([[[-0.1, 0.2, 0.45, 0.7]]]).view(1, 1, 1, 1, 4)
    out = im.to_images(x, 2)
    assert torch.allclose(out.flatten(), torch.tensor([0.0, 0.4, 0.9, 1.0]))


def test_align_best_permutation_undoes_a_swap():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(4, 2, 1, 8, 8, generator=g)
    swap = torch.tensor([[1, 0], [0, 1], [1, 0], [0, 1]])
    est = permute(ref, swap) + 0.01 * torch.randn(ref.shape, generator=g)
    aligned = im.align_best_permutation(est, ref)
    assert torch.allclose(aligned, permute(est, swap))  # a swap is its own inverse
    assert (aligned - ref).abs().max() < 0.05
    # K = 3 with a cyclic shift in one mixture; PSNR is high only after alignment.
    ref3 = torch.rand(2, 3, 1, 8, 8, generator=g)
    est3 = ref3.clone()
    est3[1] = ref3[1, [2, 0, 1]]
    assert torch.equal(im.align_best_permutation(est3, ref3), ref3)
    assert im.psnr(est3[1], ref3[1]).max() < 20


def test_mse_and_psnr_pairings_pick_different_permutations_by_hand():
    """One-pixel images: references 0.4, 0.6; estimates 0.41, 0.0.

    as given (0.41->0.4, 0.0->0.6): MSEs 1e-4, 0.36; total 0.3601; PSNRs 40, 4.437 dB, mean 22.218 dB
    swapped (0.0->0.4, 0.41->0.6): MSEs 0.16, 0.0361; total 0.1961; PSNRs 7.959, 14.425 dB, mean 11.192 dB
    The least total MSE swaps them; the best mean PSNR (the BASIS code's rule) keeps them.
    """
    ref = torch.tensor([0.4, 0.6]).view(1, 2, 1, 1, 1)
    est = torch.tensor([0.41, 0.0]).view(1, 2, 1, 1, 1)
    by_mse = im.align_best_permutation(est, ref, "mse")
    by_psnr = im.align_best_permutation(est, ref, "psnr")
    assert torch.equal(by_mse, est.flip(1)) and torch.equal(by_psnr, est)
    assert im.psnr(by_mse[0], ref[0]).mean().item() == pytest.approx(11.192, abs=1e-3)
    assert im.psnr(by_psnr[0], ref[0]).mean().item() == pytest.approx(22.218, abs=1e-3)
    # through the whole suite (half-image sources: the images are 2x the slots), per the option
    per_mse, _, _ = im.evaluate_images(est / 2, ref / 2, 2, {"metrics": ["psnr"], "pairing": "mse"})
    per_psnr, _, _ = im.evaluate_images(est / 2, ref / 2, 2, {"metrics": ["psnr"]} | {"pairing": "psnr"})
    assert per_mse["psnr"].mean() == pytest.approx(11.192, abs=1e-3)
    assert per_psnr["psnr"].mean() == pytest.approx(22.218, abs=1e-3)
    assert im.ImageEvalOptions().pairing == "mse"  # the schema's default (evaluation.image_pairing)
    with pytest.raises(ValueError, match="evaluation.image_pairing"):
        im.align_best_permutation(est, ref, "ssim")


# ----------------------------------------------------------------------------- PSNR, SSIM


@pytest.mark.parametrize("shape", [(6, 3, 32, 32), (6, 1, 28, 28), (2, 3, 48, 40)])
def test_psnr_ssim_match_skimage_on_random_images(shape):
    g = torch.Generator().manual_seed(1)
    ref = torch.rand(shape, generator=g, dtype=torch.float64)
    est = _noisy(ref, 0.1, seed=2)
    p, s = im.psnr(est, ref), im.ssim(est, ref)
    ref_p = [sk_psnr(ref[i].numpy(), est[i].numpy(), data_range=1.0) for i in range(shape[0])]
    ref_s = [_sk_ssim(ref[i].numpy(), est[i].numpy()) for i in range(shape[0])]
    np.testing.assert_allclose(p.numpy(), ref_p, rtol=0, atol=1e-6)  # dB
    np.testing.assert_allclose(s.numpy(), ref_s, rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", [28, 32, 64])
def test_psnr_ssim_match_skimage_on_real_photographs(size):
    ref = _real_crops(size)
    # clean-vs-noisy at two noise levels, plus a crop paired with another crop
    for est in (_noisy(ref, 0.03, seed=3), _noisy(ref, 0.2, seed=4), ref.roll(1, dims=0)):
        p, s = im.psnr(est, ref), im.ssim(est, ref)
        ref_p = [sk_psnr(ref[i].numpy(), est[i].numpy(), data_range=1.0) for i in range(len(ref))]
        ref_s = [_sk_ssim(ref[i].numpy(), est[i].numpy()) for i in range(len(ref))]
        np.testing.assert_allclose(p.numpy(), ref_p, rtol=0, atol=1e-6)  # dB
        np.testing.assert_allclose(s.numpy(), ref_s, rtol=0, atol=1e-6)
    assert torch.isinf(im.psnr(ref, ref)).all() and torch.allclose(im.ssim(ref, ref), torch.ones(len(ref), dtype=torch.float64))


def test_psnr_ssim_match_torchmetrics():
    from torchmetrics.functional.image import peak_signal_noise_ratio as tm_psnr
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    ref = _real_crops(32).float()
    est = _noisy(ref.double(), 0.1, seed=5).float()
    p = im.psnr(est, ref)
    np.testing.assert_allclose(p.numpy(), tm_psnr(est, ref, data_range=1.0, reduction="none", dim=(1, 2, 3)).numpy(), atol=1e-4)
    # torchmetrics averages the SSIM map over the whole (reflect-padded) image; scikit-image, and
    # we, over the region where the 11x11 window fits. Compare the map on that region.
    _, full = tm_ssim(est.double(), ref.double(), data_range=1.0, reduction="none", return_full_image=True)
    interior = full[..., 5:-5, 5:-5].mean(dim=(2, 3)).mean(dim=1)
    np.testing.assert_allclose(im.ssim(est, ref).numpy(), interior.numpy(), atol=1e-6)


# ----------------------------------------------------------------------------- LPIPS


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(home))
    im._LPIPS_CACHE.clear()
    yield home / "hub" / "checkpoints"
    im._LPIPS_CACHE.clear()


def _save_random_trunk(arch: str, ckpt_dir, seed: int = 0):
    """A randomly initialised torchvision trunk saved, as torchvision names it, under its expected file name.

    Only ``features`` (the trunk LPIPS uses) is built and saved: the classifiers
    would cost seconds to initialise and hundreds of MB on disk.
    """
    torch.manual_seed(seed)
    if arch == "alexnet":
        model = torchvision.models.alexnet(weights=None)
    else:  # VGG-16's trunk alone, with torchvision's own layer builder
        from types import SimpleNamespace

        from torchvision.models.vgg import cfgs, make_layers

        model = SimpleNamespace(features=make_layers(cfgs["D"]))
    sd = {f"features.{k}": v for k, v in model.features.state_dict().items()}
    torch.save(sd, ckpt_dir / (ALEX_FILE if arch == "alexnet" else VGG_FILE))
    return model


@pytest.mark.parametrize("net,arch,size", [("alex", "alexnet", 32), ("vgg", "vgg16", 16)])
def test_lpips_equals_lpips_package(torch_home, monkeypatch, net, arch, size):
    import lpips

    trunk = _save_random_trunk(arch, torch_home)
    g = torch.Generator().manual_seed(6)
    ref = torch.rand(5, 3, size, size, generator=g)
    est = (ref + 0.2 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    ours = im.lpips_distance(est, ref, net=net)

    # Reference: the lpips package builds its trunk from torchvision itself; hand it our model.
    monkeypatch.setattr(lpips.pretrained_networks.tv, arch, lambda *a, **k: trunk)
    direct = lpips.LPIPS(net=net, verbose=False).eval()
    with torch.no_grad():
        expected = direct(est * 2 - 1, ref * 2 - 1).flatten().double()
    np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-5, atol=1e-7)
    assert (ours > 0).all() and ours.std() > 0  # not degenerate
    assert im.lpips_distance(ref, ref, net=net).abs().max() < 1e-6
    # grayscale is repeated to RGB; resize upsamples both sides first
    gray_ref, gray_est = ref[:, :1], est[:, :1]
    with torch.no_grad():
        np.testing.assert_allclose(
            im.lpips_distance(gray_est, gray_ref, net=net).numpy(),
            direct(gray_est.repeat(1, 3, 1, 1) * 2 - 1, gray_ref.repeat(1, 3, 1, 1) * 2 - 1).flatten().numpy(),
            rtol=1e-5,
            atol=1e-7,
        )
    up = torch.nn.functional.interpolate
    with torch.no_grad():
        np.testing.assert_allclose(
            im.lpips_distance(est, ref, net=net, resize=40).numpy(),
            direct(up(est, size=(40, 40), mode="bilinear") * 2 - 1, up(ref, size=(40, 40), mode="bilinear") * 2 - 1).flatten().numpy(),
            rtol=1e-5,
            atol=1e-7,
        )


def test_lpips_missing_weights_and_small_images(torch_home):
    x = torch.rand(2, 1, 32, 32)
    with pytest.raises(MetricUnavailable) as e:
        im.lpips_distance(x, x, net="alex")
    assert ALEX_FILE in e.value.reason and "surfbench weights" in e.value.reason
    with pytest.raises(MetricUnavailable) as e:
        im.lpips_distance(x, x, net="vgg")
    assert VGG_FILE in e.value.reason
    with pytest.raises(MetricUnavailable) as e:
        im.lpips_distance(x, x, weights_path=torch_home / "nope.pth")
    assert "nope.pth" in e.value.reason
    _save_random_trunk("alexnet", torch_home)
    small = torch.rand(2, 1, 28, 28)
    with pytest.raises(MetricUnavailable) as e:  # AlexNet cannot take 28x28 ...
        im.lpips_distance(small, small, net="alex")
    assert "lpips_resize" in e.value.reason
    assert im.lpips_distance(small, small, net="alex", resize=32).shape == (2,)  # ... upsampled it can


# ----------------------------------------------------------------------------- FID / IS / KID


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """torch-fidelity's Inception-v3, randomly initialised (He-normal convs), saved as a state_dict."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3 as FE

    d = tmp_path_factory.mktemp("inception")
    empty = d / "empty.pth"
    torch.save({}, empty)
    torch.manual_seed(0)
    mp = pytest.MonkeyPatch()
    mp.setattr(FE, "load_state_dict", lambda self, sd, strict=True: None)  # skip loading, keep random init
    model = FE("inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(empty))
    mp.undo()
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path = d / INCEPTION_FILE
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture
def small_inception(monkeypatch):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3 as FE

    monkeypatch.setattr(FE, "INPUT_IMAGE_SIZE", 75)


def _image_sets(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    ref = torch.rand(n, 3, 32, 32, generator=g)
    est = (ref.roll(1, dims=0) * 0.7 + 0.3 * torch.rand(ref.shape, generator=g)).clamp(0, 1)
    return est, ref


def test_fid_is_kid_equal_torch_fidelity(inception_file, small_inception, tmp_path, monkeypatch):
    import torch_fidelity

    est, ref = _image_sets(24, seed=7)
    cache = tmp_path / "fid_cache"
    ours = im.fid_and_is(est, ref, cache_dir=cache, set_id="unit/test set", weights_path=inception_file, kid=True)
    direct = torch_fidelity.calculate_metrics(
        input1=im.UInt8ImageDataset(im.to_uint8_rgb(est)),
        input2=im.UInt8ImageDataset(im.to_uint8_rgb(ref)),
        cuda=False,
        isc=True,
        fid=True,
        kid=True,
        kid_subset_size=24,
        feature_extractor_weights_path=str(inception_file),
        cache=False,
        verbose=False,
        save_cpu_ram=True,
    )
    assert ours["fid"] == pytest.approx(direct["frechet_inception_distance"], rel=1e-6)
    assert ours["isc_mean"] == pytest.approx(direct["inception_score_mean"], rel=1e-6)
    assert ours["isc_std"] == pytest.approx(direct["inception_score_std"], rel=1e-6)
    assert ours["kid_mean"] == pytest.approx(direct["kernel_inception_distance_mean"], rel=1e-6)
    assert ours["kid_std"] == pytest.approx(direct["kernel_inception_distance_std"], rel=1e-6)
    assert ours["fid"] > 0 and ours["isc_mean"] > 1
    # the reference features were cached under a name carrying the set id ...
    cached = sorted(p.name for p in cache.iterdir())
    assert cached and all(n.startswith("unit_test_set-24x32x32-") for n in cached)
    # ... and are reused: a second call extracts features of the estimates only (KID alone, to skip FID's sqrtm)
    import torch_fidelity.utils as tfu

    extracted = []
    real_extract = tfu.get_featuresdict_from_dataset
    monkeypatch.setattr(tfu, "get_featuresdict_from_dataset", lambda inp, *a, **k: extracted.append(len(inp)) or real_extract(inp, *a, **k))
    again = im.fid_and_is(est, ref, cache_dir=cache, set_id="unit/test set", weights_path=inception_file, kid=True, fid=False, isc=False)
    assert again["kid_mean"] == pytest.approx(ours["kid_mean"], rel=1e-6)
    assert extracted == [len(est)]
    assert sorted(p.name for p in cache.iterdir()) == cached


def test_uint8_conversion_matches_save_image_quantisation():
    x = torch.tensor([0.0, 0.001, 0.5, 0.998, 1.0, 1.2, -0.1]).view(1, 1, 1, 7)
    u = im.to_uint8_rgb(x)
    assert u.shape == (1, 3, 1, 7) and u.dtype == torch.uint8
    assert u[0, 0, 0].tolist() == [0, 0, 128, 254, 255, 255, 0]


def test_fid_missing_weights(torch_home):
    x = torch.rand(4, 3, 32, 32)
    with pytest.raises(MetricUnavailable) as e:
        im.fid_and_is(x, x, cache_dir=None, set_id=None)
    assert INCEPTION_FILE in e.value.reason and "surfbench weights" in e.value.reason


# ----------------------------------------------------------------------------- the whole suite


def test_evaluate_images_records_unavailable(torch_home):
    g = torch.Generator().manual_seed(8)
    ref = torch.rand(3, 2, 1, 28, 28, generator=g) / 2
    est = ref.flip(1)  # swapped slots: alignment makes them perfect
    per_item, set_level, unavailable = im.evaluate_images(est, ref, 2, {"metrics": ["psnr", "ssim", "lpips", "fid", "is"]})
    assert set(per_item) == {"psnr", "ssim"} and per_item["psnr"].shape == (6,)
    assert np.isinf(per_item["psnr"]).all() and np.allclose(per_item["ssim"], 1)
    assert set(unavailable) == {"lpips", "fid", "is"}
    assert ALEX_FILE in unavailable["lpips"] and INCEPTION_FILE in unavailable["fid"]
    assert isinstance(set_level["fid"], MetricUnavailable) and isinstance(set_level["is"], MetricUnavailable)
    with pytest.raises(ValueError, match="did you mean psnr"):
        im.evaluate_images(est, ref, 2, {"metrics": ["psrn"]})


def test_evaluate_images_end_to_end(torch_home, inception_file, small_inception):
    import shutil

    shutil.copy(inception_file, torch_home / INCEPTION_FILE)
    _save_random_trunk("alexnet", torch_home)
    g = torch.Generator().manual_seed(9)
    ref = torch.rand(10, 2, 3, 32, 32, generator=g) / 2  # half images
    est = (ref + 0.05 * torch.randn(ref.shape, generator=g)).flip(1)
    est[0] = est[0].flip(0)  # mixture 0 in the reference order already
    per_item, set_level, unavailable = im.evaluate_images(est, ref, 2, {"metrics": ("psnr", "ssim", "lpips", "fid", "is", "kid")})
    assert unavailable == {}
    assert {k: v.shape for k, v in per_item.items()} == {"psnr": (20,), "ssim": (20,), "lpips": (20,)}
    # mixture-major items, each paired with its reference slot
    est_img = im.to_images(est, 2)
    ref_img = im.to_images(ref, 2)
    aligned = est_img.flip(1)
    aligned[0] = est_img[0]
    np.testing.assert_allclose(per_item["psnr"], im.psnr(aligned.flatten(0, 1), ref_img.flatten(0, 1)).numpy())
    np.testing.assert_allclose(per_item["ssim"], im.ssim(aligned.flatten(0, 1), ref_img.flatten(0, 1)).numpy())
    assert per_item["psnr"].min() > 15
    # IS and KID on the same images, in the same order (FID is compared in the test above; skip its sqrtm)
    direct = im.fid_and_is(aligned.flatten(0, 1), ref_img.flatten(0, 1), kid=True, fid=False)
    assert np.isfinite(set_level["fid"]) and set_level["fid"] > 0
    assert set_level["is"] == pytest.approx(direct["isc_mean"], rel=1e-6)
    assert set_level["kid"] == pytest.approx(direct["kid_mean"], rel=1e-6)
    assert set(set_level) == {"fid", "is", "is_std", "kid", "kid_std"}
