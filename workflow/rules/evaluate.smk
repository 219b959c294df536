# One evaluation job per (dataset, method[@variant], seed) and protocol.  metrics.json is written
# last and atomically, so a killed evaluation never leaves a results file that looks complete.

PROTOCOL_DIR = {"table1": "", "table4": "", "table2": "table2/", "table3": "table3/"}


def eval_target(job) -> str:
    return f"{run_dir(job.run)}/{PROTOCOL_DIR[job.protocol]}metrics.json"




rule evaluate_run:
    input:
        cfg=f"{RES}/{{dataset}}/{{method}}/seed{{seed}}/config.yaml",
        model=f"{RES}/{{dataset}}/{{method}}/seed{{seed}}/model.pt",
        data=f"{DATA}/{{dataset}}/manifest.json",
    output:
        metrics=f"{RES}/{{dataset}}/{{method}}/seed{{seed}}/metrics.json",
        percsv=f"{RES}/{{dataset}}/{{method}}/seed{{seed}}/items.csv",
    log:
        f"{LOGS}/evaluate/{{dataset}}/{{method}}/seed{{seed}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{dataset}}/{{method}}/seed{{seed}}.tsv"
    priority: priority_of
    threads: CFG["threads_per_job"]
    params:
        eval_cfg=as_json_arg(CFG["evaluation"]),
        protocol=lambda wc: "table4" if wc.dataset == "libri2mix" else "table1",
        data=lambda wc: f"{DATA}/{wc.dataset}",
        out=lambda wc: f"{RES}/{wc.dataset}/{wc.method}/seed{wc.seed}",
        cache=f"{WORK}/cache",
        device=CFG["device"],
    shell:
        "{PY} -m surfbench.evaluate --run-config {input.cfg} --eval-config-json {params.eval_cfg} "
        "--model {input.model} --data {params.data} --protocol {params.protocol} --out-dir {params.out} "
        "--cache-dir {params.cache} --device {params.device} --threads {TORCH_THREADS} --no-progress > {log} 2>&1"


rule evaluate_table2:
    input:
        cfg=f"{RES}/{{dataset}}/{{method}}/seed{{seed}}/config.yaml",
        model=f"{RES}/{{dataset}}/{{method}}/seed{{seed}}/model.pt",
        data=f"{DATA}/{{dataset}}/manifest.json",
    output:
        metrics=f"{RES}/{{dataset}}/{{method}}/seed{{seed}}/table2/metrics.json",
        percsv=f"{RES}/{{dataset}}/{{method}}/seed{{seed}}/table2/items.csv",
    log:
        f"{LOGS}/evaluate_table2/{{dataset}}/{{method}}/seed{{seed}}.log",
    benchmark:
        f"{BENCH}/evaluate_table2/{{dataset}}/{{method}}/seed{{seed}}.tsv"
    priority: priority_of
    threads: CFG["threads_per_job"]
    params:
        eval_cfg=as_json_arg(CFG["evaluation"]),
        data=lambda wc: f"{DATA}/{wc.dataset}",
        out=lambda wc: f"{RES}/{wc.dataset}/{wc.method}/seed{wc.seed}/table2",
        cache=f"{WORK}/cache",
        device=CFG["device"],
    shell:
        "{PY} -m surfbench.evaluate --run-config {input.cfg} --eval-config-json {params.eval_cfg} "
        "--model {input.model} --data {params.data} --protocol table2 --out-dir {params.out} "
        "--cache-dir {params.cache} --device {params.device} --threads {TORCH_THREADS} --no-progress > {log} 2>&1"


# Table 3: every row (trained on audioset, or Supervised Flow on fuss) is scored on the fuss dataset's eval sets:
# FUSS eval (the FUSS metrics; per-example rows in fuss_examples.csv) and LibriSpeech + FUSS (speech metrics)
rule evaluate_table3:
    input:
        cfg=f"{RES}/{{dataset}}/{{method}}/seed{{seed}}/config.yaml",
        model=f"{RES}/{{dataset}}/{{method}}/seed{{seed}}/model.pt",
        data=f"{DATA}/{plan.TABLE3_EVAL_DATASET}/manifest.json",
    output:
        metrics=f"{RES}/{{dataset}}/{{method}}/seed{{seed}}/table3/metrics.json",
        percsv=f"{RES}/{{dataset}}/{{method}}/seed{{seed}}/table3/items.csv",
    log:
        f"{LOGS}/evaluate_table3/{{dataset}}/{{method}}/seed{{seed}}.log",
    benchmark:
        f"{BENCH}/evaluate_table3/{{dataset}}/{{method}}/seed{{seed}}.tsv"
    priority: priority_of
    threads: CFG["threads_per_job"]
    params:
        eval_cfg=as_json_arg(CFG["evaluation"]),
        data=f"{DATA}/{plan.TABLE3_EVAL_DATASET}",
        out=lambda wc: f"{RES}/{wc.dataset}/{wc.method}/seed{wc.seed}/table3",
        cache=f"{WORK}/cache",
        device=CFG["device"],
    shell:
        "{PY} -m surfbench.evaluate --run-config {input.cfg} --eval-config-json {params.eval_cfg} "
        "--model {input.model} --data {params.data} --protocol table3 --out-dir {params.out} "
        "--cache-dir {params.cache} --device {params.device} --threads {TORCH_THREADS} --no-progress > {log} 2>&1"


rule evaluate:
    input:
        [eval_target(j) for j in plan.eval_jobs(CFG)],
