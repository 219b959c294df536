"""The plan (which runs each table needs) and the Snakemake workflow built on it."""
from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from surfbench import plan
from surfbench.config import RunId, load_config, parse_variant, resolve_run, validate
from surfbench.registry import registry
from surfbench.report.layouts import get_layout

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def paper():
    return load_config(ROOT / "config" / "paper.yaml")


def _methods_of(table: str, domain: str) -> set[str]:
    """Hand rule: a method is in a table when it supports the table's domain and does not exclude the table."""
    reg = registry()
    out = set()
    for n in reg.names():
        meta = reg.get(n).metadata()
        if domain in meta["domains"] and (meta["tables"] is None or table in meta["tables"]):
            out.add(n)
    return out


# ----------------------------------------------------------------------------- ablation variants
def test_ablation_variants_drop_the_values_of_the_main_run():
    cfg = validate({"training": {"ema_alpha": 0.99, "batch_size": 16},
                    "ablations": {"alpha": [0.0, 0.9, 0.99], "batch_size": [4, 16, 64], "beta": [0.1, 0.5]}})
    assert plan.ablation_variants(cfg) == ["alpha=0", "alpha=0.9", "batch_size=4", "batch_size=64", "beta=0.1", "beta=0.5"]
    for v in plan.ablation_variants(cfg):
        parse_variant(v)  # every label resolves


def test_ablation_variants_paper_profile(paper):
    v = plan.ablation_variants(paper)
    # 5 alphas - the main 0.999, 5 batch sizes - the main 256, 3 constant betas (the main run is the linear schedule)
    assert len(v) == 4 + 4 + 3 == 11
    assert len(set(v)) == len(v)
    assert "alpha=0.999" not in v and "batch_size=256" not in v
    assert {x for x in v if x.startswith("alpha=")} == {"alpha=0", "alpha=0.9", "alpha=0.99", "alpha=0.9999"}
    assert {x for x in v if x.startswith("batch_size=")} == {"batch_size=1", "batch_size=4", "batch_size=16", "batch_size=64"}


def test_main_variant_labels():
    tr = validate({"training": {"ema_alpha": 0.999, "batch_size": 256}})["training"]
    assert plan.main_variant_labels(tr) == ["alpha=0.999", "batch_size=256", "beta=schedule"]
    tr["beta_schedule"] = {"kind": "constant", "value": 0.5, "decay_fraction": 0.5}
    assert plan.main_variant_labels(tr)[2] == "beta=0.5"
    tr["ema_alpha"] = 0.0
    assert plan.main_variant_labels(tr)[0] == "alpha=0"


def _table9_labels(cfg: dict, method: str) -> list[str]:
    """The Table 9 rows a method's runs fill: its planned variants plus the labels of its main run."""
    ab = cfg["ablations"]
    variants = [j.run.variant for j in plan.eval_jobs(cfg)
                if j.table == "9" and j.run.method == method and j.run.variant and j.run.seed == cfg["seeds"][0]]
    main = resolve_run(cfg, RunId(ab["dataset"], method, cfg["seeds"][0]))["training"]
    return variants + plan.main_variant_labels(main)


@pytest.mark.parametrize("method", ["surf_self_remixing", "surf_remixit"])
def test_every_table9_label_of_the_paper_profile_is_a_row_of_table9(paper, method):
    """The labels the plan writes are the keys the report looks up (layouts and paper.csv): one run per row."""
    rows = {r.variant for r in get_layout("9").rows}
    labels = _table9_labels(paper, method)
    assert sorted(labels) == sorted(rows), (sorted(set(labels) - rows), sorted(rows - set(labels)))


def test_table9_variants_dedup_against_the_resolved_main_run():
    """A domain or method override of alpha or the batch size is the main run's value in Table 9."""
    cfg = validate({"training": {"batch_size": 32, "ema_alpha": 0.9},
                    "domains": {"image": {"training": {"batch_size": 16}}},
                    "method_overrides": {"surf_remixit": {"ema_alpha": 0.99}},
                    "ablations": {"dataset": "cifar10", "batch_size": [16, 32], "alpha": [0.9, 0.99], "beta": []}})
    labels = _table9_labels(cfg, "surf_remixit")
    assert sorted(labels) == ["alpha=0.9", "alpha=0.99", "batch_size=16", "batch_size=32", "beta=schedule"], labels


# ----------------------------------------------------------------------------- eval jobs and runs
def test_eval_jobs_hand_count_tiny_subset():
    cfg = validate({"methods": ["mixit", "basis", "surf_remixit", "supervised_regression"], "seeds": [0, 1],
                    "ablations": {"methods": ["surf_remixit"], "alpha": [0.5], "batch_size": [], "beta": [0.1]}})
    jobs = plan.eval_jobs(cfg)
    by_table = Counter(j.table for j in jobs)
    # Table 1: 4 methods x 2 image datasets x 2 seeds; Table 2: mixit, basis, surf_remixit on cifar10 x 2 seeds;
    # Table 4: mixit, surf_remixit (basis and supervised_regression are image-only) x 2 seeds;
    # Table 9: surf_remixit x (main + alpha=0.5 + beta=0.1) x 2 seeds
    assert by_table == {"1": 16, "2": 6, "4": 4, "9": 6}
    assert {j.protocol for j in jobs if j.table == "2"} == {"table2"}
    assert {j.protocol for j in jobs if j.table == "9"} == {"table1"}
    runs = plan.runs(cfg)
    assert len(runs) == len(set(runs))
    # Table 1 (16) + libri2mix (4) + 2 Table 9 variants x 2 seeds (the main run is a Table 1 run); teachers are planned
    assert len(runs) == 16 + 4 + 4
    assert RunId("libri2mix", "mixit", 1) in runs
    assert RunId("cifar10", "surf_remixit", 1, "alpha=0.5") in runs
    assert plan.datasets(cfg) == ["cifar10", "libri2mix", "mnist"]


def test_teachers_are_planned_even_when_excluded():
    cfg = validate({"methods": ["surf_remixit"], "tables": ["1"]})
    runs = set(plan.runs(cfg))
    assert runs == {RunId(d, m, 0) for d in ("mnist", "cifar10") for m in ("surf_remixit", "mixit")}
    assert not any(j.run.method == "mixit" for j in plan.eval_jobs(cfg))


def test_disabled_datasets_and_excluded_methods_are_left_out():
    cfg = validate({"datasets": {"cifar10": {"enabled": False}}, "exclude_methods": ["basis"]})
    jobs = plan.eval_jobs(cfg)
    assert not any(j.run.dataset == "cifar10" for j in jobs)
    assert not any(j.table in ("2", "9") for j in jobs)   # both are on cifar10
    assert not any(j.run.method == "basis" for j in jobs)
    assert plan.datasets(cfg) == ["libri2mix", "mnist"]


def test_paper_plan_counts_by_hand(paper):
    reg = registry()
    t1 = _methods_of("1", "image")
    t2 = _methods_of("2", "image")
    t4 = _methods_of("4", "audio")
    t3 = _methods_of("3", "audio")
    # the paper's rows are all planned
    assert {r.method for r in get_layout("1").rows} <= t1
    assert {r.method for r in get_layout("2").rows} <= t2
    assert {r.method for r in get_layout("3").rows} <= t3
    assert {r.method for r in get_layout("4").rows} <= t4
    jobs = plan.eval_jobs(paper)
    by_table = Counter(j.table for j in jobs)
    n_variants = 2 * (4 + 4 + 3)   # 2 methods x (5 alphas + 5 batch sizes + 3 betas - the 2 main values)
    assert by_table == {"1": 2 * len(t1), "2": len(t2), "3": len(t3), "4": len(t4), "9": 2 + n_variants}
    teachers = {reg.get(m).teacher for m in t1 | t3 | t4} - {None}
    assert teachers == {"mixit"} and "mixit" in t1 and "mixit" in t3 and "mixit" in t4
    # Table 3: one run per row (the unsupervised ones on audioset, Supervised Flow on fuss), its own runs
    expected_runs = 2 * len(t1) + len(t3) + len(t4) + len(t2 - t1) + n_variants
    assert len(plan.runs(paper)) == expected_runs


# ----------------------------------------------------------------------------- snakemake dry run
def _dry_run(configfile: Path, workdir: Path) -> str:
    """``snakemake -n tables`` of the repository's Snakefile, with a clean working directory (so results
    someone already has under results/ do not change what is planned)."""
    exe = Path(sys.executable).with_name("snakemake")
    p = subprocess.run([str(exe), "-n", "--nolock", "tables", "-s", str(ROOT / "Snakefile"),
                        "--configfile", str(configfile), "--directory", str(workdir)],
                       cwd=ROOT, capture_output=True, text=True, timeout=240)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    return out


def _job_stats(out: str) -> dict[str, int]:
    table = out.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def _jobs_of(out: str, rule: str) -> list[tuple[RunId, str]]:
    """Each job of ``rule`` in a dry run's output: its run (from the wildcards) and its printed block."""
    jobs = []
    for block in re.split(r"\n(?=\[|rule |localrule )", out):
        if not re.search(rf"^(local)?rule {rule}:", block.strip(), re.M):
            continue
        m = re.search(r"wildcards: dataset=(\w+), method=(\S+), seed=(\d+)", block)
        assert m, block
        method, variant = RunId.parse_method_dir(m.group(2))
        jobs.append((RunId(m.group(1), method, int(m.group(3)), variant), block))
    return jobs


def _wildcards_of(out: str, rule: str) -> list[RunId]:
    return [run for run, _ in _jobs_of(out, rule)]


def _priorities_of(out: str, rule: str) -> dict[RunId, int]:
    """The ``priority:`` Snakemake prints for each job of ``rule`` (it prints none for 0)."""
    prio = {}
    for run, block in _jobs_of(out, rule):
        p = re.search(r"^\s+priority: (\d+)$", block, re.M)
        prio[run] = int(p.group(1)) if p else 0
    return prio


def test_run_priority_longest_chains_first():
    # by hand: BASIS declares 2 (score model, then a long Langevin chain per mixture); MixIT is the teacher
    # of ReMixIT, Self-Remixing and both SURF variants (+1); every other method 0
    expected = {"basis": 2, "mixit": 1}
    for m in registry().names():
        assert plan.run_priority(RunId("cifar10", m, 0)) == expected.get(m, 0), m
    assert plan.run_priority(RunId("cifar10", "surf_self_remixing", 0, "alpha=0")) == 0


def _curve_datasets(out: str) -> list[str]:
    import re

    return re.findall(r"output: report/[^/\s]+/curves/(\w+)\.png", out)


def test_snakemake_dry_run_of_the_paper_profile(paper, tmp_path):
    out = _dry_run(ROOT / "config" / "paper.yaml", tmp_path)
    stats = _job_stats(out)
    runs = plan.runs(paper)
    t1, t2, t4 = _methods_of("1", "image"), _methods_of("2", "image"), _methods_of("4", "audio")
    t3 = _methods_of("3", "audio")
    by_hand = 2 * len(t1) + len(t3) + len(t4) + len(t2 - t1) + 2 * (4 + 4 + 3)
    assert stats["train_model"] == len(runs) == by_hand
    assert stats["run_config"] == len(runs)
    assert stats["prepare_data"] == 5  # mnist, cifar10, libri2mix, audioset, fuss (real data: no stand-in job)
    assert "prepare_standin" not in stats
    assert stats["evaluate_table2"] == len(t2)
    assert stats["evaluate_table3"] == len(t3)
    assert stats["tables"] == 1
    # learning curves (training.curve.every 5000 in the paper profile): one plot per dataset, built by `tables`
    assert stats["curves"] == 3 and sorted(_curve_datasets(out)) == ["cifar10", "libri2mix", "mnist"]
    # the same runs, one by one
    listed = _wildcards_of(out, "train_model")
    assert Counter(listed) == Counter(runs)
    # Table 9's variants of both SURF methods are trained on CIFAR-10
    variants = {(r.method, r.variant) for r in listed if r.variant}
    assert variants == {(m, v) for m in ("surf_self_remixing", "surf_remixit") for v in plan.ablation_variants(paper)}
    assert all(r.dataset == "cifar10" for r in listed if r.variant)
    # Table 4 runs on libri2mix
    assert {r.method for r in listed if r.dataset == "libri2mix"} == t4
    # the jobs carry their run's priority: BASIS's training and evaluations first, then the MixIT teachers
    for rule in ("train_model", "evaluate_run", "evaluate_table2"):
        prio = _priorities_of(out, rule)
        assert prio and all(p == {"basis": 2, "mixit": 1}.get(r.method, 0) for r, p in prio.items()), (rule, prio)
    assert _priorities_of(out, "train_model")[RunId("cifar10", "basis", paper["seeds"][0])] == 2
