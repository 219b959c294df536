"""Which jobs a profile needs: the (dataset, method, seed) runs of each paper table.

The Snakefile asks this module for its targets, so the rules stay declarative and the
same plan can be tested without Snakemake.
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import DOMAIN_OF_DATASET, RunId, parse_variant, resolve_run
from .registry import registry

TABLE_DATASETS = {"1": ("mnist", "cifar10"), "2": ("cifar10",), "3": ("audioset", "fuss"), "4": ("libri2mix",)}
TABLE_PROTOCOL = {"1": "table1", "2": "table2", "3": "table3", "4": "table4", "9": "table1"}
#: Table 3: the training set of each row.  The unsupervised rows train on AudioSet mixtures (the paper); the
#: supervised ones need sources, which AudioSet does not have: they train on FUSS (datasets.fuss,
#: supervised_train_split; our choice, footnoted).  Every row is evaluated on datasets.fuss's eval sets.
TABLE3_TRAIN = {False: "audioset", True: "fuss"}
TABLE3_EVAL_DATASET = "fuss"


@dataclass(frozen=True)
class EvalJob:
    run: RunId
    protocol: str
    table: str


def enabled_methods(cfg: dict) -> list[str]:
    reg = registry()
    names = cfg["methods"] if cfg["methods"] is not None else reg.names()
    return [n for n in names if n not in set(cfg["exclude_methods"])]


def methods_for(cfg: dict, table: str, dataset: str) -> list[str]:
    reg = registry()
    domain = DOMAIN_OF_DATASET[dataset]
    out = []
    for n in enabled_methods(cfg):
        cls = reg.get(n)
        if domain in cls.domains and (cls.tables is None or table in cls.tables):
            out.append(n)
    return out


def _beta_label(value: float) -> str:
    """``beta=0.5``, ``beta=1.0``: as Table 9 prints beta (always with a decimal point)."""
    return f"beta={float(value)!r}"


def ablation_variants(cfg: dict, method: str | None = None) -> list[str]:
    """Table 9 variants that differ from the main run (the main run stands for its own values).

    The main run's values are those of ``method``'s resolved run on the ablation dataset (domain and
    method overrides included); without ``method``, the global ``training`` block.
    """
    ab = cfg["ablations"]
    tr = cfg["training"] if method is None else \
        resolve_run(cfg, RunId(ab["dataset"], method, cfg["seeds"][0]))["training"]
    out = []
    out += [f"alpha={a:g}" for a in ab["alpha"] if a != tr["ema_alpha"]]
    out += [f"batch_size={b}" for b in ab["batch_size"] if b != tr["batch_size"]]
    out += [_beta_label(b) for b in ab["beta"]]
    for v in out:
        parse_variant(v)
    return out


def main_variant_labels(run_training: dict) -> list[str]:
    """The Table 9 rows the main run fills: its own alpha, its own batch size, and the linear beta schedule."""
    labels = [f"alpha={run_training['ema_alpha']:g}", f"batch_size={run_training['batch_size']}"]
    if run_training["beta_schedule"]["kind"] == "linear":
        labels.append("beta=schedule")
    else:
        labels.append(_beta_label(run_training["beta_schedule"]["value"]))
    return labels


def eval_jobs(cfg: dict) -> list[EvalJob]:
    jobs: list[EvalJob] = []
    for table in cfg["tables"]:
        if table == "9":
            ds = cfg["ablations"]["dataset"]
            if not cfg["datasets"][ds]["enabled"]:
                continue
            for m in cfg["ablations"]["methods"]:
                if m not in enabled_methods(cfg):
                    continue
                for seed in cfg["seeds"]:
                    jobs.append(EvalJob(RunId(ds, m, seed), "table1", "9"))
                    for v in ablation_variants(cfg, m):
                        jobs.append(EvalJob(RunId(ds, m, seed, v), "table1", "9"))
            continue
        if table == "3":
            if not all(cfg["datasets"][d]["enabled"] for d in TABLE_DATASETS["3"]):
                continue
            reg = registry()
            for m in methods_for(cfg, "3", "audioset"):
                ds = TABLE3_TRAIN[bool(reg.get(m).supervised)]
                for seed in cfg["seeds"]:
                    jobs.append(EvalJob(RunId(ds, m, seed), "table3", "3"))
            continue
        for ds in TABLE_DATASETS[table]:
            if not cfg["datasets"][ds]["enabled"]:
                continue
            for m in methods_for(cfg, table, ds):
                for seed in cfg["seeds"]:
                    jobs.append(EvalJob(RunId(ds, m, seed), TABLE_PROTOCOL[table], table))
    return jobs


def runs(cfg: dict) -> list[RunId]:
    """Every training run, teachers included, without duplicates."""
    seen: dict[RunId, None] = {}
    reg = registry()
    for job in eval_jobs(cfg):
        seen[job.run] = None
        teacher = reg.get(job.run.method).teacher
        if teacher:
            seen[RunId(job.run.dataset, teacher, job.run.seed)] = None
    return list(seen)


def run_priority(run: RunId) -> int:
    """Snakemake ``priority`` of a run's training and evaluation jobs: longest chains first.

    The method's ``schedule_priority``, plus one when the method is the teacher of another registered
    method (every remixing run waits for it). With equal priorities Snakemake's scheduler picks among
    ready jobs arbitrarily; in the tiny profile it once started the MNIST BASIS score model last, and its
    evaluation then ran alone for 146 s at the end of the run.
    """
    reg = registry()
    cls = reg.get(run.method)
    is_teacher = any(reg.get(n).teacher == run.method for n in reg.names())
    return int(cls.schedule_priority) + int(is_teacher)


def datasets(cfg: dict) -> list[str]:
    """Prepared datasets the profile needs: those of its runs, and Table 3's evaluation set."""
    out = {r.dataset for r in runs(cfg)}
    if any(j.protocol == "table3" for j in eval_jobs(cfg)):
        out.add(TABLE3_EVAL_DATASET)
    return sorted(out)
