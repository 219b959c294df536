"""The trainer: a few CPU steps of real methods on a small prepared set; model files, resume,
EMA teachers, processes, and what each method is allowed to see."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import surfbench.train as train_mod
from surfbench.config import RunId, config_hash, load_config, resolve_run
from surfbench.data.recipes import basis_pairs
from surfbench.data.store import load_split, save_npz_atomic
from surfbench.registry import registry
from surfbench.seeding import ItemNoise, derive_seed
from surfbench.train import TrainingError, load_trained, make_batch, train

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES, SIDE = 64, 16   # 32 training mixtures of 16x16 grey images


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A prepared image set in the trainer's format (uint8 pool + disjoint pairs), smooth-ish images."""
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    imgs = []
    for _ in range(N_IMAGES):
        fx, fy, ph = rng.uniform(0.5, 3, 2).tolist() + [rng.uniform(0, 6.3)]
        im = 0.5 + 0.5 * np.sin(2 * np.pi * (fx * xx + fy * yy) + ph)
        imgs.append(np.rint(255 * im)[None])
    imgs = np.stack(imgs).astype(np.uint8)
    save_npz_atomic(d / "train.npz", images=imgs, pairs=basis_pairs(N_IMAGES, None, rng))
    return d


@pytest.fixture(scope="module")
def base_cfg() -> dict:
    return load_config(ROOT / "config" / "ci.yaml", overrides={
        "training": {"steps": 4, "batch_size": 4, "checkpoint_every": 2, "log_every": 1, "warmup_steps": 0},
        "method_overrides": {"mixit": {"steps": 2}},
    })


def run_cfg(base_cfg, method: str, seed: int = 0, **training) -> dict:
    rc = resolve_run(base_cfg, RunId("mnist", method, seed))
    rc["training"].update(training)
    return rc


def _train(rc, data_dir, root: Path, teacher=None, **kw):
    return train(rc, data_dir, root / "model.pt", root / "ckpt", teacher_path=teacher, device="cpu",
                 threads=1, progress=False, **kw)


@pytest.fixture(scope="module")
def mixit_teacher(tmp_path_factory, base_cfg, data_dir) -> Path:
    root = tmp_path_factory.mktemp("mixit")
    return _train(run_cfg(base_cfg, "mixit"), data_dir, root)


def _state(method) -> dict[str, dict[str, torch.Tensor]]:
    return {k: {n: t.detach().clone() for n, t in train_mod.unwrap(m).state_dict().items()}
            for k, m in method.modules_to_save().items()}


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].keys() == b[k].keys(), k
        for n in a[k]:
            assert torch.equal(a[k][n], b[k][n]), (k, n)


def _differs(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[n], b[n]) for n in a)


def _blob(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _count_steps(monkeypatch, cls):
    calls = []
    orig = cls.training_step

    def counted(self, batch, ctx):
        calls.append(ctx.step)
        return orig(self, batch, ctx)

    monkeypatch.setattr(cls, "training_step", counted)
    return calls


# ----------------------------------------------------------------------------- a short run and its model file
def test_short_run_writes_a_model_that_load_trained_rebuilds(tmp_path, base_cfg, data_dir):
    rc = run_cfg(base_cfg, "supervised_regression", steps=3)
    out = _train(rc, data_dir, tmp_path)
    assert out == tmp_path / "model.pt" and out.exists()
    blob = _blob(out)
    trainset = load_split(data_dir, "train")
    assert blob["format"] == train_mod.MODEL_FORMAT and blob["method"] == "supervised_regression"
    assert blob["config_hash"] == config_hash(rc) and blob["train_hash"] == trainset.content_hash
    assert blob["data_shape"] == [1, SIDE, SIDE] and blob["n_sources"] == 2 and blob["steps"] == 3
    assert [h[0] for h in blob["history"]] == [1, 2, 3] and {h[1] for h in blob["history"]} == {"train"}
    assert all(np.isfinite(h[2]) for h in blob["history"])
    assert set(blob["modules"]) == {"student"}

    # training moved the weights away from the (seeded) initial ones
    cls = registry().get("supervised_regression")
    torch.manual_seed(derive_seed(0, "init"))
    init = _state(cls(rc, (1, SIDE, SIDE), 2, "cpu"))
    assert _differs(init["student"], blob["modules"]["student"])

    m = load_trained(out)
    assert type(m).__name__ == "SupervisedRegression" and m.cfg == rc
    _assert_same(_state(m), blob["modules"])
    assert not m.student.training
    mixtures = trainset.get_batch([0, 1, 2]).sum(1)
    est = m.separate(mixtures, ItemNoise(0, [0, 1, 2]))
    assert est.shape == (3, 2, 1, SIDE, SIDE)
    torch.testing.assert_close(est.sum(1), mixtures, atol=1e-5, rtol=0)   # mixture consistent


def test_average_needs_no_training(tmp_path, base_cfg, data_dir):
    out = _train(run_cfg(base_cfg, "average"), data_dir, tmp_path)
    blob = _blob(out)
    assert blob["modules"] == {} and blob["history"] == []
    assert not (tmp_path / "ckpt" / "last.pt").exists()
    m = load_trained(out)
    mix = torch.rand(2, 1, SIDE, SIDE)
    torch.testing.assert_close(m.separate(mix, None), torch.stack([mix / 2, mix / 2], 1))


def test_load_trained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="snakemake train"):
        load_trained(tmp_path / "none.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(TrainingError) as e:
        load_trained(junk)
    assert str(junk) in str(e.value)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(TrainingError, match="not a surfbench-model/1 file"):
        load_trained(other)


# ----------------------------------------------------------------------------- resume
RESUME_CASES = {
    # method: (training overrides, stop_after)
    "supervised_flow": (dict(steps=6, checkpoint_every=2, warmup_steps=3), 4),
    "mixit": (dict(steps=4, checkpoint_every=2), 2),
    # stops inside the EMA phase: the EMA teacher, the phase and the RNG must all come back
    "surf_self_remixing": (dict(steps=4, checkpoint_every=1, frozen_teacher_fraction=0.5, ema_alpha=0.5), 3),
}


@pytest.mark.parametrize("method", sorted(RESUME_CASES))
def test_killed_run_resumes_to_the_same_weights(tmp_path, base_cfg, data_dir, mixit_teacher, monkeypatch, method):
    overrides, k = RESUME_CASES[method]
    rc = run_cfg(base_cfg, method, **overrides)
    teacher = mixit_teacher if registry().get(method).teacher else None
    full = _train(rc, data_dir, tmp_path / "full", teacher)

    part = tmp_path / "part"
    assert _train(rc, data_dir, part, teacher, stop_after=k) is None
    assert not (part / "model.pt").exists()
    ckpt = _blob(part / "ckpt" / "last.pt")
    assert ckpt["step"] == k and ckpt["config_hash"] == config_hash(rc) and len(ckpt["history"]) == k

    calls = _count_steps(monkeypatch, registry().get(method))
    resumed = _train(rc, data_dir, part, teacher)
    assert calls == list(range(k, overrides["steps"]))   # continued, not restarted
    a, b = _blob(full), _blob(resumed)
    _assert_same(a["modules"], b["modules"])
    assert a["history"] == b["history"]


def test_checkpoint_of_another_config_is_refused(tmp_path, base_cfg, data_dir):
    rc = run_cfg(base_cfg, "supervised_regression", steps=4, checkpoint_every=2)
    assert _train(rc, data_dir, tmp_path, stop_after=2) is None
    other = run_cfg(base_cfg, "supervised_regression", steps=4, checkpoint_every=2, lr=0.005)
    with pytest.raises(TrainingError) as e:
        _train(other, data_dir, tmp_path)
    assert str(tmp_path / "ckpt" / "last.pt") in str(e.value) and "another configuration" in str(e.value)
    # logging and checkpoint cadence are not part of the configuration: the run resumes
    same = run_cfg(base_cfg, "supervised_regression", steps=4, checkpoint_every=1, log_every=3)
    assert _train(same, data_dir, tmp_path) is not None
    full = _train(rc, data_dir, tmp_path / "full")
    _assert_same(_blob(full)["modules"], _blob(tmp_path / "model.pt")["modules"])


# ----------------------------------------------------------------------------- EMA teacher
def test_ema_alpha_zero_follows_the_student(tmp_path, base_cfg, data_dir, mixit_teacher):
    rc = run_cfg(base_cfg, "surf_self_remixing", steps=4, frozen_teacher_fraction=0.5, ema_alpha=0.0)
    mods = _blob(_train(rc, data_dir, tmp_path, mixit_teacher))["modules"]
    assert set(mods) == {"student", "ema"}
    _assert_same({"m": mods["ema"]}, {"m": mods["student"]})


def test_ema_alpha_one_stays_at_the_phase_start_copy(tmp_path, base_cfg, data_dir, mixit_teacher):
    rc = run_cfg(base_cfg, "surf_self_remixing", steps=4, frozen_teacher_fraction=0.5, ema_alpha=1.0,
                 checkpoint_every=4)
    assert _train(rc, data_dir, tmp_path, mixit_teacher, stop_after=2) is None   # end of the frozen phase
    at_start = _blob(tmp_path / "ckpt" / "last.pt")
    assert at_start["step"] == 2 and {h[1] for h in at_start["history"]} == {"frozen_teacher"}
    mods = _blob(_train(rc, data_dir, tmp_path, mixit_teacher))["modules"]
    _assert_same({"m": mods["ema"]}, {"m": at_start["modules"]["student"]})
    assert _differs(mods["ema"], mods["student"])                    # the student kept training
    assert _differs(at_start["modules"]["ema"], mods["ema"])          # the EMA was reset at the phase start


def test_ema_replays_the_formula(tmp_path, base_cfg, data_dir, mixit_teacher, monkeypatch):
    alpha = 0.6
    cls = registry().get("surf_self_remixing")
    start, students, phases = {}, [], []
    orig_start, orig_after = cls.on_phase_start, cls.after_step

    def on_phase_start(self, phase, ctx):
        orig_start(self, phase, ctx)
        if phase.name == "ema":
            start.update({n: p.detach().clone() for n, p in self.ema.named_parameters()})

    def after_step(self, ctx):
        phases.append(ctx.phase)
        if ctx.phase == "ema":
            students.append({n: p.detach().clone() for n, p in train_mod.unwrap(self.student).named_parameters()})
        orig_after(self, ctx)

    monkeypatch.setattr(cls, "on_phase_start", on_phase_start)
    monkeypatch.setattr(cls, "after_step", after_step)
    rc = run_cfg(base_cfg, "surf_self_remixing", steps=5, frozen_teacher_fraction=0.4, ema_alpha=alpha)
    mods = _blob(_train(rc, data_dir, tmp_path, mixit_teacher))["modules"]
    assert phases == ["frozen_teacher"] * 2 + ["ema"] * 3
    assert start and len(students) == 3
    for name, e in start.items():
        e = e.double()
        for s in students:
            e = alpha * e + (1 - alpha) * s[name].double()
        torch.testing.assert_close(mods["ema"][name].double(), e, rtol=1e-5, atol=1e-6)
    m = load_trained(tmp_path / "model.pt")
    assert m.training_cfg["evaluate_weights"] == "ema" and m.eval_model() is m.ema


# ----------------------------------------------------------------------------- processes
def test_batch_size_not_divisible_by_the_processes(tmp_path, base_cfg, data_dir, monkeypatch):
    monkeypatch.setattr(train_mod, "init_distributed", lambda device: (0, 2, torch.device("cpu")))
    with pytest.raises(TrainingError, match=r"training.batch_size=3 is not divisible by the 2 processes"):
        _train(run_cfg(base_cfg, "supervised_regression", batch_size=3), data_dir, tmp_path)


def test_batch_larger_than_the_training_set(tmp_path, base_cfg, data_dir):
    with pytest.raises(TrainingError, match="batch_size is too large"):
        _train(run_cfg(base_cfg, "supervised_regression", batch_size=64), data_dir, tmp_path)


@pytest.mark.slow
def test_two_process_cpu_run_with_torchrun(tmp_path, base_cfg, data_dir):
    rc = run_cfg(base_cfg, "supervised_regression", steps=3, checkpoint_every=3)
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(rc))
    out, ckpt = tmp_path / "model.pt", tmp_path / "ckpt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("SURFBENCH_BASELINES", None)
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "surfbench.train", "--run-config", str(cfg_path), "--data", str(data_dir), "--out", str(out),
         "--ckpt-dir", str(ckpt), "--device", "cpu", "--no-progress"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    wall = time.perf_counter() - t0
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    blob = _blob(out)
    assert [h[0] for h in blob["history"]] == [1, 2, 3]
    state = _blob(ckpt / "last.pt")
    assert state["step"] == 3 and len(state["stream"]) == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["gen"], state["rng"][1]["gen"])   # one training stream per rank
    # each rank drew its own half of the data: per-rank batch 2, 16 steps per epoch
    assert state["stream"][0] == state["stream"][1] == {"epoch": 0, "pos": 3}
    m = load_trained(out)
    mix = load_split(data_dir, "train").get_batch([0, 1]).sum(1)
    assert m.separate(mix, ItemNoise(0, [0, 1])).shape == (2, 2, 1, SIDE, SIDE)
    print(f"torchrun 2 processes: {wall:.1f} s")


# ----------------------------------------------------------------------------- what a method sees
UNSUPERVISED = sorted(n for n in registry().names()
                      if not registry().get(n).supervised and registry().get(n).training_data != "none")
SUPERVISED = sorted(n for n in registry().names() if registry().get(n).supervised)


def _record_batches(monkeypatch, cls):
    seen = []
    orig = cls.training_step

    def spy(self, batch, ctx):
        seen.append({k: v.detach().clone() for k, v in batch.items()})
        return orig(self, batch, ctx)

    monkeypatch.setattr(cls, "training_step", spy)
    return seen


def _rows_in(rows: torch.Tensor, pool: torch.Tensor) -> bool:
    """Every row of ``rows`` equals some row of ``pool`` (exactly)."""
    d = (rows.flatten(1)[:, None] - pool.flatten(1)[None]).abs().amax(-1)
    return bool((d.min(1).values == 0).all())


@pytest.mark.parametrize("method", UNSUPERVISED)
def test_unsupervised_methods_never_see_sources(tmp_path, base_cfg, data_dir, mixit_teacher, monkeypatch, method):
    cls = registry().get(method)
    seen = _record_batches(monkeypatch, cls)
    rc = run_cfg(base_cfg, method, steps=2, frozen_teacher_fraction=0.5)
    _train(rc, data_dir, tmp_path, mixit_teacher if cls.teacher else None)
    assert len(seen) == 2
    src = load_split(data_dir, "train").all()     # [M, 2, 1, H, W]
    mixtures, firsts = src.sum(1), src[:, 0]
    for batch in seen:
        if cls.training_data == "mixtures_of_mixtures":
            assert set(batch) == {"mom_parts"}
            parts = batch["mom_parts"]
            assert parts.shape == (4, 2, 1, SIDE, SIDE)
            # each part is one observed mixture (or, for images, the lone source of a 1-source mixture)
            assert _rows_in(parts.flatten(0, 1), torch.cat([mixtures, firsts]))
        else:
            assert set(batch) == {"mixture"}
            assert batch["mixture"].shape == (4, 1, SIDE, SIDE)
            assert _rows_in(batch["mixture"], mixtures)


@pytest.mark.parametrize("method", SUPERVISED)
def test_supervised_methods_get_the_sources_they_declare(tmp_path, base_cfg, data_dir, monkeypatch, method):
    cls = registry().get(method)
    seen = _record_batches(monkeypatch, cls)
    _train(run_cfg(base_cfg, method, steps=1), data_dir, tmp_path)
    batch = seen[0]
    assert "sources" in batch and batch["sources"].shape == (4, 2, 1, SIDE, SIDE)
    if cls.training_data == "sources":
        assert set(batch) == {"sources", "mixture"}
        torch.testing.assert_close(batch["mixture"], batch["sources"].sum(1), rtol=0, atol=0)


def test_make_batch_by_kind():
    src = torch.rand(4, 2, 1, 3, 3)
    g = torch.Generator().manual_seed(0)
    mix = make_batch("mixtures", src, "image", {"single_source_prob": 0.5}, g, "cpu")
    assert set(mix) == {"mixture"} and torch.equal(mix["mixture"], src.sum(1))
    # audio mixtures of mixtures are always two 2-source mixtures (App. D.5), whatever the image setting
    audio = make_batch("mixtures_of_mixtures", src, "audio", {"single_source_prob": 1.0}, g, "cpu")
    assert torch.equal(audio["mom_parts"], src.sum(1).view(2, 2, 1, 3, 3))
    image = make_batch("mixtures_of_mixtures", src, "image", {"single_source_prob": 1.0}, g, "cpu")
    assert torch.equal(image["mom_parts"], src[:, 0].reshape(2, 2, 1, 3, 3))
    single = make_batch("single_sources", src, "image", {}, g, "cpu")
    assert set(single) == {"sources"}
    with pytest.raises(TrainingError, match="unknown training_data"):
        make_batch("labels", src, "image", {}, g, "cpu")


def test_random_crop_windows_are_uniform_contiguous_slices():
    """training.crop_seconds: each item's window is a contiguous slice of its own clip, same start for every
    source of the item, starts uniform over [0, T - L] (checked against the expected counts), repeatable."""
    T, L, B = 12, 5, 4000
    ramp = torch.arange(T, dtype=torch.float32)
    src = torch.stack([torch.stack([ramp + 100 * b, -ramp]) for b in range(B)])  # [B, 2, T]
    out = train_mod.random_crop(src, L, torch.Generator().manual_seed(1))
    assert out.shape == (B, 2, L)
    starts = out[:, 1, 0].neg().long()
    for b in (0, 1, B - 1):
        s = int(starts[b])
        assert torch.equal(out[b], src[b, :, s:s + L])
    counts = torch.bincount(starts, minlength=T - L + 1)
    assert len(counts) == T - L + 1 and counts.min() > 0
    expected = B / (T - L + 1)
    assert float(((counts - expected) ** 2 / expected).sum()) < 30  # chi-square, 7 d.o.f.: p ~ 1e-4
    again = train_mod.random_crop(src, L, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    assert train_mod.random_crop(src, T, torch.Generator()) is src  # as long as the clip: kept whole


def test_crop_seconds_is_refused_for_images(tmp_path, base_cfg, data_dir):
    with pytest.raises(TrainingError, match=r"training.crop_seconds=0.5 is for audio"):
        _train(run_cfg(base_cfg, "supervised_regression", crop_seconds=0.5), data_dir, tmp_path)


# ----------------------------------------------------------------------------- refusals
def test_teacher_method_without_a_teacher_is_refused(tmp_path, base_cfg, data_dir):
    with pytest.raises(TrainingError, match="needs the trained mixit model"):
        _train(run_cfg(base_cfg, "surf_remixit"), data_dir, tmp_path)


def test_method_outside_its_domain_is_refused(tmp_path, base_cfg):
    d = tmp_path / "audio"
    save_npz_atomic(d / "train.npz", sources=np.zeros((4, 2, 800), dtype=np.float32))
    rc = resolve_run(base_cfg, RunId("libri2mix", "basis", 0))
    with pytest.raises(TrainingError, match="does not support the audio domain"):
        _train(rc, d, tmp_path)


def test_non_finite_loss_stops_with_a_clear_error(tmp_path, base_cfg, data_dir, monkeypatch):
    cls = registry().get("supervised_regression")
    monkeypatch.setattr(cls, "training_step", lambda self, batch, ctx: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(TrainingError, match=r"loss is nan at step 0"):
        _train(run_cfg(base_cfg, "supervised_regression"), data_dir, tmp_path)


@pytest.mark.parametrize("method", ["surf_remixit", "self_remixing"])
def test_an_empty_ema_phase_evaluated_with_ema_weights_is_refused(base_cfg, method):
    """frozen_teacher_fraction 1 leaves the EMA teacher at its initial weights: refused before training,
    unless the student is what gets evaluated."""
    from surfbench.registry import registry

    cls = registry().get(method)
    for fraction in (1.0, 0.9):  # 0.9 of 4 steps rounds to 4: no EMA step either
        with pytest.raises(ValueError, match=r"frozen_teacher_fraction=.*never be updated.*evaluate_weights: student"):
            cls(run_cfg(base_cfg, method, frozen_teacher_fraction=fraction), (1, SIDE, SIDE), 2, "cpu")
    student = cls(run_cfg(base_cfg, method, frozen_teacher_fraction=1.0, evaluate_weights="student"), (1, SIDE, SIDE), 2, "cpu")
    assert [p.steps for p in student.phases()] == [4, 0]
    assert [p.steps for p in cls(run_cfg(base_cfg, method), (1, SIDE, SIDE), 2, "cpu").phases()] == [2, 2]
