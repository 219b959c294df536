# Prepared datasets: fixed training mixtures and fixed evaluation files, made once from a seed.


def data_outputs(dataset):
    outs = [f"{DATA}/{dataset}/manifest.json", f"{DATA}/{dataset}/train.npz", f"{DATA}/{dataset}/eval.npz"]
    if dataset == "cifar10":
        outs.append(f"{DATA}/{dataset}/eval_table2.npz")
    return outs


rule prepare_data:
    output:
        manifest=f"{DATA}/{{dataset}}/manifest.json",
    log:
        f"{LOGS}/data/{{dataset}}.log",
    benchmark:
        f"{BENCH}/data/{{dataset}}.tsv"
    params:
        cfg=lambda wc: as_json_arg({"datasets": {wc.dataset: CFG["datasets"][wc.dataset]}}),
        out=lambda wc: f"{DATA}/{wc.dataset}",
    threads: 1
    shell:
        "{PY} -m surfbench.cli prepare --dataset {wildcards.dataset} --config-json {params.cfg} "
        "--out {params.out} > {log} 2>&1"


rule data:
    input:
        [f"{DATA}/{d}/manifest.json" for d in plan.datasets(CFG)],
