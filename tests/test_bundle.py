"""Result bundles (issue 16, item 2): ``surfbench export`` / ``surfbench import``.

Real run folders: tiny MNIST (the trust tests' profile ``trusttest``: 64 training images, 12 evaluation
mixtures), MixIT trained 6 steps for seeds 0 and 1 and evaluated as the pipeline does (seconds).  A bundle of
them imports into an empty store byte for byte, appears in the tables with a footnote, adds a new seed
beside an existing one, and imports again as a no-op.  Each refusal is asserted with its message: a tampered
metric value (the tamperer even fixes the bundle's sha256), a bundle edited after export, another evaluation
set, data not prepared here, unknown / newer schema versions (version 1 still imports), an existing run with
other provenance, the same model as another seed, an unregistered method without metadata, and unsafe tar
members (``..``, absolute paths, links, sizes, unexpected names).

Table 3: a real run on the smallest Table 3 stand-in (MixIT, 2 steps on its AudioSet mixtures, scored on the fuss
dataset's sets) exports its ``table3/`` folder and imports byte for byte; refused: a tampered FUSS value in
fuss_examples.csv, a tampered LibriSpeech + FUSS item, another LibriSpeech + FUSS set, the fuss data missing here,
a table3 result outside ``table3/`` and another protocol's inside it.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from surfbench import bundle as B
from surfbench.atomic import write_json, write_yaml
from surfbench.cli import main as cli
from surfbench.config import config_hash
from surfbench.results import collect, load_metrics, summarize
from surfbench.seeding import derive_seed
from test_determinism import prepare_tiny_mnist, run_config, tiny_cfg

PROFILE = "trusttest"


def _run(root: Path, data: Path, cfg: dict, method: str, seed: int) -> Path:
    from surfbench.evaluate import evaluate
    from surfbench.train import train

    rc = run_config(cfg, method, seed=seed)
    d = root / PROFILE / "mnist" / method / f"seed{seed}"
    write_yaml(d / "config.yaml", rc)  # as the pipeline's run_config rule writes it
    rc = yaml.safe_load((d / "config.yaml").read_text())
    train(rc, data, d / "model.pt", root.parent / "ckpt" / method / str(seed), device="cpu", progress=False)
    evaluate(rc, dict(cfg["evaluation"]), d / "model.pt", data, "table1", d, device="cpu",
             cache_dir=root.parent / "cache", progress=False)
    return d


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A results store with real MixIT runs (seeds 0 and 1), its prepared data and one bundle per seed."""
    root = tmp_path_factory.mktemp("bundle")
    cfg = tiny_cfg()
    data_root = root / "data"
    data = prepare_tiny_mnist(data_root / PROFILE / "mnist", cfg)
    res = root / "results"
    runs = {s: _run(res, data, cfg, "mixit", s) for s in (0, 1)}
    bundles = {}
    for s, d in runs.items():
        bundles[s] = root / f"seed{s}.tar.gz"
        assert cli(["export", str(d), "-o", str(bundles[s]), "--label", f"lab {s}"]) == 0
    return {"root": root, "cfg": cfg, "data": data_root, "results": res, "runs": runs, "bundles": bundles}


def _import(made, bundle, results, data=None, *extra) -> int:
    return cli(["import", str(bundle), "--results", str(results), "--data", str(data or made["data"]), *extra])


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def rewrite(src: Path, dst: Path, edit: dict | None = None, add: dict | None = None, fix_sha: bool = True,
            rename: dict | None = None) -> Path:
    """A copy of bundle ``src`` with members edited (``{name: fn(bytes) -> bytes}``), renamed, or added; with
    ``fix_sha`` the bundle.json is updated as a careful tamperer would."""
    edit, add, rename = edit or {}, add or {}, rename or {}
    members = {}
    with tarfile.open(src) as t:
        for m in t:
            members[m.name] = t.extractfile(m).read()
    for name, fn in edit.items():
        members[name] = fn(members[name])
    for old, new in rename.items():
        members[new] = members.pop(old)
    members.update(add)
    if fix_sha:
        man = json.loads(members[B.MANIFEST])
        man["files"] = {n: {"sha256": _sha(b), "size": len(b)} for n, b in members.items() if n != B.MANIFEST}
        members[B.MANIFEST] = json.dumps(man).encode()
    with tarfile.open(dst, "w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return dst


def _json_edit(fn):
    def go(b: bytes) -> bytes:
        blob = json.loads(b)
        fn(blob)
        return (json.dumps(blob, indent=2, sort_keys=True) + "\n").encode()
    return go


def _err(capsys) -> str:
    return capsys.readouterr().err


M0 = f"runs/{PROFILE}/mnist/mixit/seed0"


# ----------------------------------------------------------------------------- export
def test_export_packs_results_not_weights(made):
    with tarfile.open(made["bundles"][0]) as t:
        names = sorted(t.getnames())
    assert names == [B.MANIFEST, f"{M0}/config.yaml", f"{M0}/items.csv", f"{M0}/metrics.json"]
    man = json.loads(tarfile.open(made["bundles"][0]).extractfile(B.MANIFEST).read())
    assert man["format"] == B.BUNDLE_FORMAT and man["label"] == "lab 0" and man["with_weights"] is False
    assert man["runs"][0]["path"] == f"{PROFILE}/mnist/mixit/seed0"
    assert man["files"][f"{M0}/metrics.json"]["sha256"] == _sha((made["runs"][0] / "metrics.json").read_bytes())


def test_export_with_weights(made, tmp_path):
    out = tmp_path / "w.tar.gz"
    assert cli(["export", str(made["runs"][0]), "-o", str(out), "--with-weights"]) == 0
    assert f"{M0}/model.pt" in tarfile.open(out).getnames()
    res = tmp_path / "res"
    assert _import(made, out, res) == 0
    assert (res / PROFILE / "mnist/mixit/seed0/model.pt").read_bytes() == (made["runs"][0] / "model.pt").read_bytes()


def test_export_refuses_a_tampered_run(made, tmp_path, capsys):
    d = tmp_path / "run"
    shutil.copytree(made["runs"][0], d)
    blob = json.loads((d / "metrics.json").read_text())
    blob["metrics"]["psnr"]["mean"] += 1.0
    write_json(d / "metrics.json", blob)
    assert cli(["export", str(d), "-o", str(tmp_path / "x.tar.gz")]) == 2
    assert "metric 'psnr': the summary does not match its 24 per-item values" in _err(capsys)
    assert not (tmp_path / "x.tar.gz").exists()


# ----------------------------------------------------------------------------- import: accepted
def test_import_into_empty_store_is_byte_identical_and_marked(made, tmp_path, capsys):
    res = tmp_path / "res"
    assert _import(made, made["bundles"][0], res) == 0
    out = capsys.readouterr().out
    assert "imported 1 run(s)" in out and "checked: dataset_hash = eval_hash of" in out
    assert "summaries of psnr, ssim recomputed from items.csv" in out
    dst = res / PROFILE / "mnist/mixit/seed0"
    for f in ("metrics.json", "items.csv", "config.yaml"):
        assert (dst / f).read_bytes() == (made["runs"][0] / f).read_bytes()
    assert not (dst / "model.pt").exists()
    side = json.loads((dst / B.IMPORTED).read_text())
    assert side["label"] == "lab 0" and side["bundle"] == "seed0.tar.gz" and side["format"] == B.IMPORT_FORMAT
    df = collect(res, PROFILE)
    assert set(df["imported_from"]) == {f"lab 0 (bundle seed0.tar.gz, imported {side['imported_at'][:10]})"}
    # the tables say where the value came from
    from surfbench.report.build import table_rows
    from surfbench.report.tables import render_markdown

    md = render_markdown("1", table_rows(made["cfg"], res), None, PROFILE)
    row = next(line for line in md.splitlines() if line.startswith("| MixIT"))
    assert "<sup>" in row
    assert "imported from lab 0 (bundle seed0.tar.gz" in md and "not computed here" in md


def test_new_seed_is_added_and_same_bundle_again_is_a_no_op(made, tmp_path, capsys):
    res = tmp_path / "res"
    shutil.copytree(made["results"] / PROFILE / "mnist/mixit/seed0", res / PROFILE / "mnist/mixit/seed0")
    assert _import(made, made["bundles"][1], res) == 0
    before = (res / PROFILE / "mnist/mixit/seed1/metrics.json").stat().st_mtime_ns
    assert _import(made, made["bundles"][1], res) == 0
    assert "already present, identical" in capsys.readouterr().out
    assert (res / PROFILE / "mnist/mixit/seed1/metrics.json").stat().st_mtime_ns == before
    from surfbench.report.build import table_rows
    from surfbench.report.tables import render_markdown

    rows = table_rows(made["cfg"], res)
    psnr = rows[(rows["method"] == "mixit") & (rows["metric"] == "psnr")].iloc[0]
    assert psnr["n_seeds"] == 2 and psnr["n_imported"] == 1
    assert "1 of its 2 seeds imported from lab 1" in render_markdown("1", rows, None, PROFILE)


def test_schema_version_1_is_still_read(made, tmp_path):
    def v1(blob):
        blob["schema_version"] = 1
        blob.pop("environment"), blob.pop("training_environments")
    b = rewrite(made["bundles"][0], tmp_path / "v1.tar.gz", {f"{M0}/metrics.json": _json_edit(v1)})
    res = tmp_path / "res"
    assert _import(made, b, res) == 0
    assert load_metrics(res / PROFILE / "mnist/mixit/seed0/metrics.json")["environment"] is None


def test_import_into_another_profile(made, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(made["data"] / PROFILE, data / "other")
    res = tmp_path / "res"
    assert _import(made, made["bundles"][0], res, data, "--profile", "other") == 0
    assert (res / "other/mnist/mixit/seed0/metrics.json").is_file()


# ----------------------------------------------------------------------------- import: refused
def test_refuses_a_tampered_metric_value(made, tmp_path, capsys):
    def bump(blob):
        blob["metrics"]["psnr"]["mean"] = 99.0
    b = rewrite(made["bundles"][0], tmp_path / "t.tar.gz", {f"{M0}/metrics.json": _json_edit(bump)})
    res = tmp_path / "res"
    assert _import(made, b, res) == 2
    err = _err(capsys)
    want = load_metrics(made["runs"][0] / "metrics.json")["metrics"]["psnr"]["mean"]
    assert "import refused, nothing imported" in err
    assert (f"metric 'psnr': the summary does not match its 24 per-item values (mean 99.0 in metrics.json, "
            f"{want!r} from items.csv): tampered with or corrupt") in err
    assert not res.exists()


def test_refuses_a_tampered_interval_and_a_flipped_kind(made, tmp_path, capsys):
    def widen(blob):
        blob["metrics"]["ssim"]["ci95"][1] += 0.01
        blob["metrics"]["psnr"]["kind"] = "set"  # would escape the recomputation
    b = rewrite(made["bundles"][0], tmp_path / "t.tar.gz", {f"{M0}/metrics.json": _json_edit(widen)})
    assert _import(made, b, tmp_path / "res") == 2
    err = _err(capsys)
    assert "metric 'ssim': the summary does not match" in err and "ci95 high" in err
    assert "metric 'psnr': kind 'set', but psnr is an item-level metric" in err


def test_refuses_a_file_edited_after_export(made, tmp_path, capsys):
    b = rewrite(made["bundles"][0], tmp_path / "t.tar.gz", {f"{M0}/items.csv": lambda x: x.replace(b"1", b"2", 1)},
                fix_sha=False)
    assert _import(made, b, tmp_path / "res") == 2
    assert f"{M0}/items.csv does not match its sha256 in bundle.json (corrupt or edited after export)" in _err(capsys)


def test_refuses_another_evaluation_set(made, tmp_path, capsys):
    other = tiny_cfg()
    other["datasets"]["mnist"]["n_eval_mixtures"] = 10
    data = tmp_path / "data"
    prepare_tiny_mnist(data / PROFILE / "mnist", other)
    theirs = load_metrics(made["runs"][0] / "metrics.json")["dataset_hash"]
    ours = json.loads((data / PROFILE / "mnist/manifest.json").read_text())["eval_hash"]
    assert theirs != ours
    assert _import(made, made["bundles"][0], tmp_path / "res", data) == 2
    err = _err(capsys)
    assert (f"{PROFILE}/mnist/mixit/seed0/metrics.json: evaluated on another evaluation set: its dataset_hash is "
            f"{theirs}, but this benchmark's mnist evaluation set of profile {PROFILE} has eval_hash {ours}") in err
    assert "a result on another evaluation set is not comparable, refused" in err


def test_refuses_when_the_data_is_not_prepared_here(made, tmp_path, capsys):
    assert _import(made, made["bundles"][0], tmp_path / "res", tmp_path / "nodata") == 2
    err = _err(capsys)
    assert f"the mnist data of profile {PROFILE} is not prepared here" in err
    assert f"Run `snakemake data --configfile config/{PROFILE}.yaml`" in err


@pytest.mark.parametrize("version,message", [
    (3, "schema_version 3 is newer than this surfbench reads (1..2); upgrade surfbench to import it"),
    ("2", "unknown schema_version '2' (this surfbench reads 1..2)"),
    (0, "unknown schema_version 0 (this surfbench reads 1..2)"),
    (None, "unknown schema_version None (this surfbench reads 1..2)"),
])
def test_refuses_an_unknown_schema_version(made, tmp_path, capsys, version, message):
    def set_version(blob):
        blob["schema_version"] = version
    b = rewrite(made["bundles"][0], tmp_path / "s.tar.gz", {f"{M0}/metrics.json": _json_edit(set_version)})
    assert _import(made, b, tmp_path / "res") == 2
    assert f"{PROFILE}/mnist/mixit/seed0/metrics.json: {message}" in _err(capsys)


def test_refuses_an_existing_run_with_other_provenance(made, tmp_path, capsys):
    res = tmp_path / "res"
    shutil.copytree(made["results"] / PROFILE / "mnist/mixit/seed0", res / PROFILE / "mnist/mixit/seed0")
    here = load_metrics(res / PROFILE / "mnist/mixit/seed0/metrics.json")

    def other_model(blob):
        blob["model_hash"] = "f" * 64
    b = rewrite(made["bundles"][0], tmp_path / "p.tar.gz", {f"{M0}/metrics.json": _json_edit(other_model)})
    before = (res / PROFILE / "mnist/mixit/seed0/metrics.json").read_bytes()
    assert _import(made, b, res) == 2
    err = _err(capsys)
    assert (f"{res / PROFILE}/mnist/mixit/seed0/metrics.json already holds this run (table1) with different provenance "
            f"(model_hash {here['model_hash']} here, {'f' * 64} in the bundle); an existing result is never "
            f"overwritten: refused") in err
    assert (res / PROFILE / "mnist/mixit/seed0/metrics.json").read_bytes() == before
    # the same result evaluated again (another runtime): still not overwritten, and said so
    b = rewrite(made["bundles"][0], tmp_path / "q.tar.gz",
                {f"{M0}/metrics.json": _json_edit(lambda blob: blob.update(runtime_s=blob["runtime_s"] + 1))})
    assert _import(made, b, res) == 2
    assert "the same metric values, but another evaluation record (runtime, environment)" in _err(capsys)


def test_refuses_the_same_model_as_another_seed(made, tmp_path, capsys):
    """A careful forger relabels seed 0 as seed 1 (config, config_hash, bootstrap intervals all redone)."""
    res = tmp_path / "res"
    shutil.copytree(made["results"] / PROFILE / "mnist/mixit/seed0", res / PROFILE / "mnist/mixit/seed0")
    cfg = yaml.safe_load((made["runs"][0] / "config.yaml").read_text())
    cfg["seed"] = 1
    items = pd.read_csv(made["runs"][0] / "items.csv")

    def reseed(blob):
        blob["seed"], blob["config_hash"] = 1, config_hash(cfg)
        for n, m in blob["metrics"].items():
            s = summarize(items[n].to_numpy(), m["higher_is_better"], blob["evaluation"]["bootstrap_samples"],
                          seed=derive_seed(1, "bootstrap", n) % 2**32)
            m["ci95"] = s["ci95"]
    M1 = f"runs/{PROFILE}/mnist/mixit/seed1"
    b = rewrite(made["bundles"][0], tmp_path / "d.tar.gz",
                {f"{M0}/metrics.json": _json_edit(reseed), f"{M0}/config.yaml": lambda _: yaml.safe_dump(cfg).encode()},
                rename={f"{M0}/{f}": f"{M1}/{f}" for f in ("metrics.json", "items.csv", "config.yaml")})
    assert _import(made, b, res) == 2
    model = load_metrics(made["runs"][0] / "metrics.json")["model_hash"]
    assert (f"{PROFILE}/mnist/mixit/seed1: the same trained model (model_hash {model}) is already in the store as "
            f"{res / PROFILE}/mnist/mixit/seed0 (seed 0); one model counts once, refused") in _err(capsys)
    assert not (res / PROFILE / "mnist/mixit/seed1").exists()


def test_refuses_a_config_that_does_not_hash_to_config_hash(made, tmp_path, capsys):
    b = rewrite(made["bundles"][0], tmp_path / "c.tar.gz",
                {f"{M0}/config.yaml": lambda x: x.replace(b"steps: 6", b"steps: 60000")})
    assert _import(made, b, tmp_path / "res") == 2
    assert "config.yaml hashes to" in _err(capsys)


def test_method_must_be_registered_or_carry_metadata():
    blob = {"method": "my_new_method", "method_info": {"display_name": "Mine", "supervised": False}}
    with pytest.raises(B.BundleError, match=r"method 'my_new_method' is not registered here \(no baselines/my_new_method.py\) "
                                            r"and its method_info lacks generative, citation"):
        B.check_method(blob, "x")
    blob["method_info"].update(generative=True, citation="Me, 2026")
    assert "not registered here; its metadata came with it" in B.check_method(blob, "x")
    assert "registered here" in B.check_method({"method": "mixit"}, "x")


# ----------------------------------------------------------------------------- unsafe tar members
def _evil(made, tmp_path, member: tarfile.TarInfo, data: bytes = b"x") -> Path:
    out = tmp_path / "evil.tar.gz"
    with tarfile.open(made["bundles"][0]) as src, tarfile.open(out, "w:gz") as t:
        for m in src:
            t.addfile(m, src.extractfile(m))
        member.size = len(data) if member.isfile() else 0
        t.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return out


def _link(name, target, kind):
    m = tarfile.TarInfo(name)
    m.type, m.linkname = kind, target
    return m


@pytest.mark.parametrize("member,message", [
    (tarfile.TarInfo("../evil.txt"), "member '../evil.txt' has a '..' component (path traversal)"),
    (tarfile.TarInfo(f"{M0}/../../../../../evil.txt"), "has a '..' component (path traversal)"),
    (tarfile.TarInfo("/tmp/evil.txt"), "member '/tmp/evil.txt' has an absolute or non-portable path"),
    (_link(f"{M0}/examples.npz", "/etc/passwd", tarfile.SYMTYPE),
     f"member '{M0}/examples.npz' is a symbolic link (to '/etc/passwd'); bundles hold plain files only"),
    (_link(f"{M0}/model.pt", f"{M0}/config.yaml", tarfile.LNKTYPE), "is a hard link"),
    (tarfile.TarInfo(f"{M0}/run.sh"), f"unexpected member '{M0}/run.sh'"),
])
def test_refuses_unsafe_members(made, tmp_path, capsys, member, message):
    b = _evil(made, tmp_path, member)
    res = tmp_path / "res"
    assert _import(made, b, res) == 2
    err = _err(capsys)
    assert message in err and "refused, nothing imported" in err
    assert not res.exists() and not (tmp_path / "evil.txt").exists()


def test_refuses_oversized_members(made, tmp_path):
    with pytest.raises(B.BundleError, match=r"member 'runs/[^']*' is \d+ bytes, over the limit of 1000; refused"):
        B.import_bundle(made["bundles"][0], tmp_path / "res", made["data"], limits={"file": 1000})
    with pytest.raises(B.BundleError, match="the members add up to more than 5000 bytes; refused"):
        B.import_bundle(made["bundles"][0], tmp_path / "res", made["data"], limits={"total": 5000})
    with pytest.raises(B.BundleError, match="more than 2 members; refused"):
        B.import_bundle(made["bundles"][0], tmp_path / "res", made["data"], limits={"members": 2})
    assert not (tmp_path / "res").exists()


def test_refuses_what_is_not_a_bundle(made, tmp_path, capsys):
    (tmp_path / "x.tar.gz").write_bytes(b"not a tar")
    assert _import(made, tmp_path / "x.tar.gz", tmp_path / "res") == 2
    assert "not a (gzipped) tar file" in _err(capsys)
    b = rewrite(made["bundles"][0], tmp_path / "n.tar.gz", {B.MANIFEST: lambda x: b'{"format": "other/9"}'},
                fix_sha=False)
    assert _import(made, b, tmp_path / "res") == 2
    assert "bundle.json has format 'other/9', this surfbench reads surfbench-bundle/1" in _err(capsys)


def test_config_is_compared_with_the_profiles_own_run(made, tmp_path):
    """Not a refusal: the import says whether the run was configured as this profile would configure it."""
    same = B.import_bundle(made["bundles"][0], tmp_path / "a", made["data"], dry_run=True,
                           profile_configs=lambda p: made["cfg"])
    assert f"config.yaml = profile {PROFILE}'s configuration of this run (profile name aside)" in same[0].checks
    longer = tiny_cfg(batch_size=8)
    other = B.import_bundle(made["bundles"][0], tmp_path / "b", made["data"], profile_configs=lambda p: longer)
    assert other[0].notes == [f"config.yaml differs from profile {PROFILE}'s configuration of this run in 1 key(s): "
                              f"training.batch_size 8 here, 4 in the bundle"]
    side = json.loads((tmp_path / "b" / PROFILE / "mnist/mixit/seed0" / B.IMPORTED).read_text())
    assert side["notes"] == other[0].notes


def test_a_run_recomputed_here_is_no_longer_marked_imported(made, tmp_path):
    from surfbench.results import imported_info

    res = tmp_path / "res"
    assert _import(made, made["bundles"][0], res) == 0
    m = res / PROFILE / "mnist/mixit/seed0/metrics.json"
    assert imported_info(m)["label"] == "lab 0"
    shutil.copy(made["runs"][1] / "metrics.json", m)  # the pipeline evaluated this folder again
    assert imported_info(m) is None and set(collect(res, PROFILE)["imported_from"]) == {""}


# ----------------------------------------------------------------------------- Table 3 (table3/ of a run)
T3 = f"runs/{PROFILE}/audioset/mixit/seed0"


@pytest.fixture(scope="module")
def made3(tmp_path_factory):
    """A real Table 3 run: the smallest stand-in (3 FUSS eval examples, 2 LibriSpeech + FUSS mixtures), MixIT trained
    2 steps on its AudioSet mixtures and scored by the table3 protocol on the fuss dataset (about 10 s); its bundle."""
    from surfbench.config import RunId, load_config, resolve_run
    from surfbench.data import fuss_standin as fs, sound_pool as sp
    from surfbench.data.store import prepare
    from surfbench.evaluate import evaluate
    from surfbench.train import train

    root = tmp_path_factory.mktemp("bundle3")
    data = root / "data" / PROFILE
    fs.build_standin(data / "standin", pool=sp.load_pool(6), fuss_examples={"train": 2, "validation": 1, "eval": 3},
                     audioset_clips=2, librispeech_utterances=2, librispeech_speakers=1, pool_speech=6, seed=2)
    cfg = load_config(Path(__file__).resolve().parents[1] / "config" / "tiny.yaml", overrides={
        "profile": PROFILE, "evaluation": {"bootstrap_samples": 100, "speech_metrics": ["si_sdr", "estoi"],
                                           "n_figure_examples": 1}})
    prepare(cfg, "audioset", data / "audioset")
    prepare(cfg, "fuss", data / "fuss")
    rc = resolve_run(cfg, RunId("audioset", "mixit", 0))
    rc["training"].update(steps=2, batch_size=2, checkpoint_every=2)
    run = root / "results" / PROFILE / "audioset" / "mixit" / "seed0"
    write_yaml(run / "config.yaml", rc)  # as the pipeline's run_config rule writes it
    rc = yaml.safe_load((run / "config.yaml").read_text())
    train(rc, data / "audioset", run / "model.pt", root / "ckpt", device="cpu", progress=False)
    evaluate(rc, dict(cfg["evaluation"]), run / "model.pt", data / "fuss", "table3", run / "table3", device="cpu",
             progress=False)
    bundle = root / "t3.tar.gz"
    assert cli(["export", str(run), "-o", str(bundle), "--with-examples", "--label", "lab t3"]) == 0
    return {"root": root, "data": root / "data", "run": run, "bundle": bundle}


def _import3(made3, bundle, results, data=None) -> int:
    return cli(["import", str(bundle), "--results", str(results), "--data", str(data or made3["data"])])


def test_table3_run_round_trips(made3, tmp_path, capsys):
    files = ["metrics.json", "items.csv", "fuss_examples.csv", "fuss_summary.json", "examples.npz"]
    with tarfile.open(made3["bundle"]) as t:
        assert sorted(t.getnames()) == sorted([B.MANIFEST, f"{T3}/config.yaml"] + [f"{T3}/table3/{f}" for f in files])
        man = json.loads(t.extractfile(B.MANIFEST).read())
    assert man["runs"] == [{"path": f"{PROFILE}/audioset/mixit/seed0", "profile": PROFILE, "dataset": "audioset",
                            "method": "mixit", "variant": "", "seed": 0, "protocols": ["table3"]}]
    res = tmp_path / "res"
    assert _import3(made3, made3["bundle"], res) == 0
    out = capsys.readouterr().out
    fuss_man = made3["data"] / PROFILE / "fuss" / "manifest.json"
    assert (f"checked: dataset_hash = eval_fuss_hash, dataset_hashes.eval_fuss = eval_fuss_hash, "
            f"dataset_hashes.eval_librispeech_fuss = eval_librispeech_fuss_hash of {fuss_man}") in out
    assert "checked: table3: summaries of lsfuss_estoi, lsfuss_si_sdr recomputed from items.csv" in out
    assert ("checked: table3: FUSS metrics fuss_1s, fuss_2si, fuss_3si, fuss_4si, fuss_msi, under, equal, over and "
            "fuss_summary.json recomputed from fuss_examples.csv") in out
    dst = res / PROFILE / "audioset/mixit/seed0"
    assert (dst / "config.yaml").read_bytes() == (made3["run"] / "config.yaml").read_bytes()
    for f in files:
        assert (dst / "table3" / f).read_bytes() == (made3["run"] / "table3" / f).read_bytes(), f
    assert not (dst / "metrics.json").exists() and not (dst / "model.pt").exists()
    side = json.loads((dst / "table3" / B.IMPORTED).read_text())
    assert side["label"] == "lab t3" and side["not_checked"] == []
    rows = collect(res, PROFILE)
    assert set(rows["protocol"]) == {"table3"} and set(rows["imported_from"]) != {""}
    assert {"fuss_1s", "under", "lsfuss_si_sdr"} <= set(rows["metric"])
    assert _import3(made3, made3["bundle"], res) == 0  # the same bundle again: a no-op
    assert "already present, identical" in capsys.readouterr().out


def _edit_csv_row(text: bytes, pick, edit) -> bytes:
    """``text`` (a CSV) with ``edit(row)`` applied to the first data row for which ``pick(row)`` holds."""
    rows = list(csv.DictReader(io.StringIO(text.decode())))
    row = next(r for r in rows if pick(r))
    edit(row)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode()


def test_table3_refuses_a_tampered_fuss_value(made3, tmp_path, capsys):
    """A careful tamperer raises one active source's SI-SNR and SI-SNRi alike (so the row stays consistent)."""
    ex = pd.read_csv(made3["run"] / "table3" / "fuss_examples.csv")
    row = ex[(ex["separation"] != "skipped") & (ex["n_ref_active"] >= 2)].iloc[0]
    k = next(k for k in range(4) if row[f"ref_active_{k}"] and row[f"est_active_{k}"])
    group = f"fuss_{int(row['n_ref_active'])}si"

    def better(r):
        for c in (f"sisnr_{k}", f"sisnri_{k}"):
            r[c] = f"{float(r[c]) + 3.0:.6f}"
    b = rewrite(made3["bundle"], tmp_path / "f.tar.gz", {f"{T3}/table3/fuss_examples.csv": lambda x: _edit_csv_row(
        x, lambda r: r["example"] == row["example"], better)})
    res = tmp_path / "res"
    assert _import3(made3, b, res) == 2
    err = _err(capsys)
    assert "import refused, nothing imported" in err
    for key in (group, "fuss_msi"):
        assert f"metric '{key}': does not match fuss_examples.csv (mean " in err, key
    assert "fuss_summary.json does not match fuss_examples.csv" in err
    assert not res.exists()


def test_table3_refuses_a_tampered_librispeech_fuss_item(made3, tmp_path, capsys):
    def better(r):
        r["si_sdr"] = repr(float(r["si_sdr"]) + 1.0)
    b = rewrite(made3["bundle"], tmp_path / "l.tar.gz", {f"{T3}/table3/items.csv": lambda x: _edit_csv_row(
        x, lambda r: r["set"] == "librispeech_fuss", better)})
    assert _import3(made3, b, tmp_path / "res") == 2
    err = _err(capsys)
    assert (f"{PROFILE}/audioset/mixit/seed0/table3/metrics.json: metric 'lsfuss_si_sdr': the summary does not match "
            f"its 2 per-item values (mean ") in err
    assert "tampered with or corrupt" in err and not (tmp_path / "res").exists()


def test_table3_refuses_another_librispeech_fuss_set(made3, tmp_path, capsys):
    fuss_man = made3["data"] / PROFILE / "fuss" / "manifest.json"
    ours = json.loads(fuss_man.read_text())["eval_librispeech_fuss_hash"]

    def other(blob):
        blob["dataset_hashes"]["eval_librispeech_fuss"] = "0" * 64
    b = rewrite(made3["bundle"], tmp_path / "h.tar.gz", {f"{T3}/table3/metrics.json": _json_edit(other)})
    assert _import3(made3, b, tmp_path / "res") == 2
    err = _err(capsys)
    assert (f"{PROFILE}/audioset/mixit/seed0/table3/metrics.json: evaluated on another evaluation set: its "
            f"dataset_hashes.eval_librispeech_fuss is {'0' * 64}, but this benchmark's fuss LibriSpeech + FUSS evaluation "
            f"set of profile {PROFILE} has eval_librispeech_fuss_hash {ours} ({fuss_man}); a result on another "
            f"evaluation set is not comparable, refused") in err
    # the audioset data alone is not enough: Table 3 is scored on the fuss dataset's sets
    data = tmp_path / "data"
    shutil.copytree(made3["data"] / PROFILE / "audioset", data / PROFILE / "audioset")
    assert _import3(made3, made3["bundle"], tmp_path / "res", data) == 2
    err = _err(capsys)
    assert (f"the fuss data of profile {PROFILE} is not prepared here ({data / PROFILE / 'fuss' / 'manifest.json'} is "
            f"missing) (Table 3 results of every dataset are evaluated on the fuss dataset's evaluation sets). Run "
            f"`snakemake data --configfile config/{PROFILE}.yaml`") in err
    assert not (tmp_path / "res").exists()


def test_table3_results_only_in_table3(made, made3, tmp_path, capsys):
    # Table 3's metrics.json (and its files) moved to the run folder
    b = rewrite(made3["bundle"], tmp_path / "r.tar.gz",
                rename={f"{T3}/table3/{f}": f"{T3}/{f}" for f in ("metrics.json", "items.csv")})
    assert _import3(made3, b, tmp_path / "res") == 2
    assert (f"{PROFILE}/audioset/mixit/seed0/metrics.json: holds a table3 result, whose place is "
            f"{PROFILE}/audioset/mixit/seed0/table3/metrics.json; refused") in _err(capsys)
    # ... and a Table 1 result moved into table3/
    b = rewrite(made["bundles"][0], tmp_path / "s.tar.gz",
                rename={f"{M0}/{f}": f"{M0}/table3/{f}" for f in ("metrics.json", "items.csv")})
    assert _import(made, b, tmp_path / "res") == 2
    assert (f"{PROFILE}/mnist/mixit/seed0/table3/metrics.json: holds a table1 result, whose place is "
            f"{PROFILE}/mnist/mixit/seed0/metrics.json; refused") in _err(capsys)
    assert not (tmp_path / "res").exists()
