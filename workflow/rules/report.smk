# Tables (LaTeX + Markdown leaderboard + PDF where pdflatex exists), figure grids and learning curves.

TABLE_FILES = [f"{REPORT}/table{t}.tex" for t in CFG["tables"]]
FIGURE_DATASETS = sorted({j.run.dataset for j in plan.eval_jobs(CFG) if j.protocol == "table1"})


rule tables:
    input:
        metrics=[eval_target(j) for j in plan.eval_jobs(CFG)],
        figures=lambda wc: rules.figures.input,
    output:
        tables=[report(t, category="Tables", caption="../report/table.rst") for t in TABLE_FILES],
        leaderboard=report(f"{REPORT}/leaderboard.md", category="Tables", caption="../report/leaderboard.rst"),
    log:
        f"{LOGS}/report/tables.log",
    benchmark:
        f"{BENCH}/report/tables.tsv"
    params:
        cfg=as_json_arg(CFG),
    shell:
        "{PY} -m surfbench.cli report --config-json {params.cfg} > {log} 2>&1"


def figure_inputs(wc):
    # a main run evaluated for Table 1 and again listed for Table 9 appears once
    return list(dict.fromkeys(f"{run_dir(j.run)}/metrics.json" for j in plan.eval_jobs(CFG)
                              if j.protocol == "table1" and j.run.dataset == wc.dataset and not j.run.variant))


rule figure:
    input:
        figure_inputs,
    output:
        report(f"{REPORT}/figures/{{dataset}}.png", caption="../report/figure.rst", category="Figures"),
    log:
        f"{LOGS}/report/figure_{{dataset}}.log",
    params:
        runs=lambda wc, input: " ".join(str(Path(p).parent) for p in input),
    shell:
        "{PY} -m surfbench.cli figure --dataset {wildcards.dataset} --runs {params.runs} --out {output} > {log} 2>&1"


# Learning curves (training.curve): every main run of a dataset (teachers included) in one plot. curve.csv is
# written by the training job beside model.pt but is not a declared output: a run trained without a curve
# (curve.every 0, a method with nothing to train, a model trained before curves existed) stays a complete,
# valid result and is named under the plot as "no curve" rather than retrained.
def curve_runs(dataset: str) -> list:
    return [r for r in plan.runs(CFG) if r.dataset == dataset and not r.variant]


CURVE_DATASETS = sorted({r.dataset for r in plan.runs(CFG) if not r.variant
                         and resolve_run(CFG, r)["training"]["curve"]["every"] > 0})


rule curves:
    input:
        lambda wc: [f"{run_dir(r)}/model.pt" for r in curve_runs(wc.dataset)],
    output:
        report(f"{REPORT}/curves/{{dataset}}.png", caption="../report/curves.rst", category="Figures"),
    log:
        f"{LOGS}/report/curves_{{dataset}}.log",
    params:
        runs=lambda wc, input: " ".join(str(Path(p).parent) for p in input),
    shell:
        "{PY} -m surfbench.cli curves --dataset {wildcards.dataset} --runs {params.runs} --out {output} > {log} 2>&1"


# Table 3: spectrograms of one FUSS eval example separated by every Table 3 run (examples.npz of its evaluation)
TABLE3_EVALS = [f"{run_dir(j.run)}/table3/metrics.json" for j in plan.eval_jobs(CFG) if j.protocol == "table3"]


rule figure_table3:
    input:
        TABLE3_EVALS,
    output:
        report(f"{REPORT}/figures/table3.png", caption="../report/figure.rst", category="Figures"),
    log:
        f"{LOGS}/report/figure_table3.log",
    params:
        runs=lambda wc, input: " ".join(str(Path(p).parent) for p in input),
    shell:
        "{PY} -m surfbench.cli figure --dataset table3 --runs {params.runs} --out {output} > {log} 2>&1"


rule figures:
    input:
        [f"{REPORT}/figures/{d}.png" for d in FIGURE_DATASETS if d != "libri2mix"],
        [f"{REPORT}/figures/table3.png"] if TABLE3_EVALS else [],
        [f"{REPORT}/curves/{d}.png" for d in CURVE_DATASETS],


# The static leaderboard site (surfbench/report/site.py): tables, a page per run, figures, a listening
# page for the audio tables and leaderboard.json; opens from disk (report/<profile>/site/index.html).
rule site:
    input:
        metrics=[eval_target(j) for j in plan.eval_jobs(CFG)],
        tables=rules.tables.output,
        figures=rules.figures.input,
    output:
        index=f"{REPORT}/site/index.html",
        leaderboard=f"{REPORT}/site/leaderboard.json",
    log:
        f"{LOGS}/report/site.log",
    benchmark:
        f"{BENCH}/report/site.tsv"
    params:
        cfg=as_json_arg(CFG),
    shell:
        "{PY} -m surfbench.cli site --config-json {params.cfg} > {log} 2>&1"
