"""Table 3 (universal sound separation): the plan, the data path (no sources for the unsupervised rows), the
table3 protocol's numbers against `surfbench score-fuss` and the speech metrics, the rendered table, bad input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from surfbench import plan
from surfbench.audio_io import BadInputError
from surfbench.config import RunId, load_config, resolve_run
from surfbench.data import fuss_standin as fs
from surfbench.data import sound_pool as sp
from surfbench.data.store import (RAW_INDEX, MixtureSet, load_split, parse_raw_index, prepare, raw_index_array,
                                  save_npz_atomic, write_raw_rows)
from surfbench.evaluate import (FUSS_METRICS, LSFUSS_PREFIX, fuss_metrics, score_fuss_estimates, speech_slot)
from surfbench.registry import registry
from surfbench.results import write_run_results
from surfbench.train import TrainingError, make_batch, train

ROOT = Path(__file__).resolve().parents[1]
TABLE3_ROWS = ["mixit", "remixit", "self_remixing", "supervised_flow", "surf_remixit", "surf_self_remixing"]


# ----------------------------------------------------------------------------- the plan
def test_plan_table3_jobs_tiny_and_paper():
    for profile in ("tiny", "paper"):
        cfg = load_config(ROOT / "config" / f"{profile}.yaml")
        jobs = [j for j in plan.eval_jobs(cfg) if j.table == "3"]
        by_method = {j.run.method: j for j in jobs}
        assert set(TABLE3_ROWS) <= set(by_method), profile
        assert all(j.protocol == "table3" for j in jobs)
        # unsupervised rows train on AudioSet mixtures, Supervised Flow on FUSS (our choice)
        for m in TABLE3_ROWS:
            assert by_method[m].run.dataset == ("fuss" if m == "supervised_flow" else "audioset")
        runs = plan.runs(cfg)
        assert RunId("audioset", "mixit", cfg["seeds"][0]) in runs  # the teacher of the remixing rows
        assert {"audioset", "fuss"} <= set(plan.datasets(cfg))
        for m in TABLE3_ROWS:  # 4 output slots for every separator
            assert resolve_run(cfg, by_method[m].run)["training"]["output_slots"] == 4


def test_plan_ci_profiles_have_no_table3():
    for profile in ("ci", "paper-smoke-ci"):
        cfg = load_config(ROOT / "config" / f"{profile}.yaml")
        assert not [j for j in plan.eval_jobs(cfg) if j.table == "3"]
        assert not {"audioset", "fuss"} & set(plan.datasets(cfg))


def test_paper_profile_builds_the_table8_model():
    cfg = load_config(ROOT / "config" / "paper.yaml")
    r = resolve_run(cfg, RunId("audioset", "surf_remixit", 0))
    assert r["models"]["flow"] == {"arch": "mb_tflocoformer", "preset": "audioset"}
    r4 = resolve_run(cfg, RunId("libri2mix", "surf_remixit", 0))
    assert r4["models"]["flow"] == {"arch": "mb_tflocoformer"}  # Table 7 for Table 4, unchanged


# ----------------------------------------------------------------------------- no sources for unsupervised rows
def _mixture_dir(tmp_path, n=8, t=800):
    """An AudioSet-like training set in the data step's layout: mixtures in a raw file indexed by train.npz."""
    d = tmp_path / "audioset"
    rng = np.random.default_rng(0)
    mixtures = (0.1 * rng.standard_normal((n, t))).astype(np.float32)
    index = write_raw_rows(d / "train_mixtures.f32", "mixtures", ((f"clip{i}", m) for i, m in enumerate(mixtures)))
    save_npz_atomic(d / "train.npz", **{RAW_INDEX: raw_index_array(index)})
    (d / "manifest.json").write_text("{}")
    return d


def test_mixture_only_set_never_hands_out_sources(tmp_path):
    d = _mixture_dir(tmp_path)
    with np.load(d / "train.npz") as z:
        assert set(z.files) == {RAW_INDEX} and parse_raw_index(z[RAW_INDEX])["key"] == "mixtures"
    ts = load_split(d, "train")
    assert isinstance(ts, MixtureSet) and ts.mixtures_only and ts.n_sources == 1
    x = ts.get_batch([0, 1, 2, 3])
    gen = torch.Generator().manual_seed(0)
    mixit_cfg = {"single_source_prob": 0.5}
    for name in registry().names():
        cls = registry().get(name)
        if cls.supervised or "audio" not in cls.domains:
            continue
        if cls.training_data in ("mixtures", "mixtures_of_mixtures"):
            batch = make_batch(cls.training_data, x, "audio", mixit_cfg, gen, "cpu", slots=4, mixtures_only=True)
            assert "sources" not in batch, name
            if "mixture" in batch:
                assert torch.equal(batch["mixture"], x[:, 0])
            else:  # MoM parts are the observed mixtures themselves (audio: no single-source inputs)
                assert torch.equal(batch["mom_parts"].reshape(4, -1), x[:, 0])
    for kind in ("sources", "single_sources"):
        with pytest.raises(TrainingError, match="mixtures only"):
            make_batch(kind, x, "audio", mixit_cfg, gen, "cpu", slots=4, mixtures_only=True)


def _tiny_run(method, dataset="audioset", steps=2):
    cfg = load_config(ROOT / "config" / "tiny.yaml")
    r = resolve_run(cfg, RunId(dataset, method, 0))
    r["training"].update(steps=steps, batch_size=2, checkpoint_every=steps)
    r["models"]["mixit"] = {"arch": "convtasnet"}
    return r


def test_training_on_audioset_sees_mixtures_only(tmp_path, monkeypatch):
    d = _mixture_dir(tmp_path)
    seen = []
    cls = registry().get("mixit")
    orig = cls.training_step

    def spy(self, batch, ctx):
        seen.append(sorted(batch))
        return orig(self, batch, ctx)

    monkeypatch.setattr(cls, "training_step", spy)
    train(_tiny_run("mixit"), d, tmp_path / "mixit" / "model.pt", tmp_path / "ckpt", device="cpu", progress=False)
    assert seen and all(keys == ["mom_parts"] for keys in seen)


def test_supervised_method_on_audioset_is_refused(tmp_path):
    d = _mixture_dir(tmp_path)
    with pytest.raises(TrainingError, match="holds mixtures only"):
        train(_tiny_run("supervised_flow"), d, tmp_path / "sf" / "model.pt", tmp_path / "ckpt", device="cpu",
              progress=False)
    r = _tiny_run("mixit")
    r["training"]["output_slots"] = None
    with pytest.raises(TrainingError, match="output_slots"):
        train(r, d, tmp_path / "m" / "model.pt", tmp_path / "ckpt2", device="cpu", progress=False)


# ----------------------------------------------------------------------------- the protocol's values
def _fuss_case(rng, t=4000):
    """Three hand-made examples: 1, 2 and 3 references; estimates = references + noise (one slot left silent
    in the second, an extra noisy slot in the third)."""
    names, refs, nrefs, ests = [], [], [], []
    for i, n in enumerate((1, 2, 3)):
        r = np.zeros((4, t), np.float32)
        r[:n] = rng.standard_normal((n, t)).astype(np.float32) * (0.1 + 0.1 * np.arange(n)[:, None])
        e = r + 0.03 * rng.standard_normal((4, t)).astype(np.float32)
        e = e[rng.permutation(4)]
        if i == 1:
            e[np.argmin(np.abs(e).sum(1))] = 0.0  # a silent slot
        names.append(f"example{i:05d}")
        refs.append(r)
        nrefs.append(n)
        ests.append(e)
    return names, np.stack(refs), np.array(nrefs), np.stack(ests)


def test_table3_fuss_values_equal_score_fuss(tmp_path):
    from surfbench.score_fuss import score_fuss

    names, refs, nrefs, ests = _fuss_case(np.random.default_rng(3))
    lines = []
    for name, r, n, e in zip(names, refs, nrefs, ests):
        src = [f"eval/{name}_sources/s{k}.wav" for k in range(n)]
        for k, p in enumerate(src):
            (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
            sf.write(tmp_path / p, r[k], 16000, subtype="FLOAT")
        mix = f"eval/{name}.wav"
        sf.write(tmp_path / mix, r[:n].sum(0), 16000, subtype="FLOAT")
        lines.append("\t".join([mix] + src))
        for k in range(4):
            (tmp_path / "est" / name).mkdir(parents=True, exist_ok=True)
            sf.write(tmp_path / "est" / name / f"est{k}.wav", e[k], 16000, subtype="FLOAT")
    (tmp_path / "eval_example_list.txt").write_text("\n".join(lines) + "\n")
    ref = score_fuss(tmp_path / "eval_example_list.txt", tmp_path / "est", tmp_path / "out", progress=False)

    acc, rows = score_fuss_estimates(names, refs, nrefs, ests)
    ours = fuss_metrics(acc, 200, 0)
    for key, (group, _) in FUSS_METRICS.items():
        if ref[group] is None:
            assert not ours[key]["available"], key
        else:
            assert ours[key]["mean"] == pytest.approx(ref[group], abs=1e-9), key
    assert ours["equal"]["mean"] + ours["under"]["mean"] + ours["over"]["mean"] == pytest.approx(1.0)
    # the per-example rows are score-fuss's own CSV rows
    csv = pd.read_csv(tmp_path / "out" / "fuss_examples.csv")
    assert list(csv["separation"]) == [r[3] for r in rows]
    assert list(csv["n_ref_active"]) == [r[1] for r in rows]


def test_speech_estimate_is_the_oracle_slot_and_metrics_match():
    from surfbench.metrics.audio import evaluate_speech

    rng = np.random.default_rng(1)
    t = 16000
    speech = torch.from_numpy(rng.standard_normal((2, t)).astype(np.float32) * 0.1)
    est = torch.from_numpy(rng.standard_normal((2, 4, t)).astype(np.float32) * 0.1)
    est[0, 2] = speech[0] + 0.01 * est[0, 2]
    est[1, 0] = speech[1] + 0.05 * est[1, 0]
    assert speech_slot(est, speech).tolist() == [2, 0]
    chosen = est[torch.arange(2), speech_slot(est, speech)]
    v = evaluate_speech(chosen[:, None], speech[:, None], speech, 16000, workers=1, metrics=["si_sdr"])["si_sdr"]
    assert v[0] > 35 and 20 < v[1] < 30  # 40 dB and 26 dB of added noise


# ----------------------------------------------------------------------------- the rendered table
def _write_result(root, dataset, method, supervised, values):
    from surfbench.evaluate import _item_summary

    out = root / "t3" / dataset / method / "seed0" / "table3"
    metrics = {}
    for k, v in values.items():
        higher = k not in ("under", "over")
        metrics[k] = _item_summary([v, v], higher, 100, 0, k, {})
    header = {"profile": "t3", "dataset": dataset, "method": method, "variant": "", "seed": 0, "protocol": "table3",
              "n_items": 2, "method_info": {"display_name": method, "supervised": supervised, "generative": False}}
    write_run_results(out, header=header, items=pd.DataFrame({"x": [0]}), metrics=metrics)


def test_table3_rendered_in_the_papers_layout(tmp_path):
    from surfbench.report.build import table_rows
    from surfbench.report.reference import load_reference
    from surfbench.report.tables import render_markdown

    vals = {"mixit": 5.0, "remixit": 7.0, "surf_remixit": 9.0}
    for m, v in vals.items():
        _write_result(tmp_path, "audioset", m, False, {"fuss_1s": v, "fuss_2si": v / 2, "under": 0.1 * v / 9,
                                                        "equal": 0.5, "over": 0.3, LSFUSS_PREFIX + "si_sdr": v + 1})
    _write_result(tmp_path, "fuss", "supervised_flow", True, {"fuss_1s": 20.0, "under": 0.0,
                                                              LSFUSS_PREFIX + "si_sdr": 30.0})
    cfg = load_config(ROOT / "config" / "tiny.yaml")
    cfg["profile"] = "t3"
    cfg["tables"] = ["3"]
    ours = table_rows(cfg, tmp_path)
    assert set(ours["dataset"]) == {"fuss", "librispeech_fuss"}
    assert set(ours[ours["dataset"] == "librispeech_fuss"]["metric"]) == {"si_sdr"}
    md = render_markdown("3", ours, load_reference(), "t3")
    lines = {ln.split("|")[1].strip(): ln for ln in md.splitlines() if ln.startswith("|")}
    # best unsupervised bold, second underlined; the supervised row (20.00) is not ranked
    assert "**9.00**" in lines["SURF (ReMixIT)"] and "<u>7.00</u>" in lines["ReMixIT"]
    assert "**20.00**" not in lines["Supervised Flow"] and "20.00" in lines["Supervised Flow"]
    assert "**10.00**" in lines["SURF (ReMixIT)"]  # LibriSpeech + FUSS SI-SDR
    assert "(38.79)" in lines["Supervised Flow"]  # the paper's number beside ours
    header = next(ln for ln in md.splitlines() if "1S" in ln)
    for label in ("1S", "2Si", "3Si", "4Si", "Under", "Equal", "Over", "SI-SDR", "ESTOI", "PESQ", "DNSMOS"):
        assert label in header
    # Under is lower-is-better: mixit's 0.056 is the best
    assert "**0.056**" in lines["MixIT"]


# ----------------------------------------------------------------------------- bad input
def test_missing_standin_manifest_is_named(tmp_path):
    cfg = load_config(ROOT / "config" / "tiny.yaml")
    with pytest.raises(BadInputError, match=r"standin/manifest.json"):
        prepare(cfg, "audioset", tmp_path / "audioset")


@pytest.fixture(scope="module")
def small_standin(tmp_path_factory):
    root = tmp_path_factory.mktemp("t3data")
    pool = sp.load_pool(6)
    fs.build_standin(root / "standin", pool=pool, fuss_examples={"train": 2, "validation": 1, "eval": 3},
                     audioset_clips=2, librispeech_utterances=2, librispeech_speakers=1, pool_speech=6, seed=2)
    return root


def test_prepare_reads_the_standin(small_standin, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(small_standin, root)
    cfg = load_config(ROOT / "config" / "tiny.yaml")
    m = prepare(cfg, "audioset", root / "audioset")
    assert m["n_train_mixtures"] == 10 and m["info"]["provenance"]["content_hash"]  # 2 clips x 5 pieces of 2 s
    m = prepare(cfg, "fuss", root / "fuss")
    assert m["n_eval_fuss"] == 3 and m["n_eval_librispeech_fuss"] == 2
    with np.load(root / "fuss" / "eval_fuss.npz") as z:
        assert z["references"].shape == (3, 4, 160000)


def test_missing_standin_file_is_named(small_standin, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(small_standin, root)
    first = (root / "standin" / "ssdata" / "eval_example_list.txt").read_text().split("\n")[0].split("\t")
    victim = root / "standin" / "ssdata" / first[-1]
    victim.unlink()
    cfg = load_config(ROOT / "config" / "tiny.yaml")
    with pytest.raises(BadInputError, match=victim.name):
        prepare(cfg, "fuss", root / "fuss")


# ----------------------------------------------------------------------------- surfbench separate, figures
def test_separate_a_table3_run_says_which_outputs_are_inactive(tmp_path, monkeypatch, capsys):
    from surfbench.cli import main as cli_main

    d = _mixture_dir(tmp_path, t=1600)
    run = tmp_path / "run"
    train(_tiny_run("average"), d, run / "model.pt", tmp_path / "ckpt", device="cpu", progress=False)
    cls = registry().get("average")
    orig = cls.separate

    def one_silent(self, mixtures, noise):
        est = orig(self, mixtures, noise)
        est[:, 3] = 0.0
        return est

    monkeypatch.setattr(cls, "separate", one_silent)
    wav = tmp_path / "mix.wav"
    sf.write(wav, np.random.default_rng(0).standard_normal(1600).astype(np.float32) * 0.1, 16000, subtype="FLOAT")
    assert cli_main(["separate", "--run", str(run), str(wav), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out").glob("*.wav")) == [f"mix_s{k}.wav" for k in range(1, 5)]
    assert "mix_s4.wav: inactive (silent" in out and "mix_s1.wav: inactive" not in out
    blob = json.loads((tmp_path / "out" / "separation.json").read_text())
    assert blob["items"][0]["outputs_active"] == [True, True, True, False]


def test_spectrogram_figure(tmp_path):
    from surfbench.report.figures import spectrogram_grid

    rng = np.random.default_rng(0)
    dirs = []
    for m in ("mixit", "surf_remixit"):
        d = tmp_path / "audioset" / m / "seed0" / "table3"
        src = rng.standard_normal((1, 4, 8000)).astype(np.float16) * 0.1
        src[:, 3] = 0
        save_npz_atomic(d / "examples.npz", mixtures=src.sum(1), sources=src, estimates=src,
                        names=np.array(["example00000"]))
        dirs.append(d)
    out = spectrogram_grid(dirs, tmp_path / "t3.png")
    assert out.stat().st_size > 10_000
