# Prepared datasets: fixed training mixtures and fixed evaluation files, made once from a seed.


def data_outputs(dataset):
    outs = [f"{DATA}/{dataset}/manifest.json", f"{DATA}/{dataset}/train.npz", f"{DATA}/{dataset}/eval.npz"]
    if dataset == "cifar10":
        outs.append(f"{DATA}/{dataset}/eval_table2.npz")
    return outs


def standin_input(wc):
    """Table 3's datasets read the offline stand-in (when their source is standin), built once by its own job."""
    if wc.dataset in ("audioset", "fuss") and CFG["datasets"][wc.dataset]["source"] == "standin":
        return [f"{DATA}/standin/manifest.json"]
    return []


# Table 3's offline stand-in (surfbench/data/fuss_standin.py) in the real layouts: FUSS ssdata, AudioSet-like
# clips, LibriSpeech test-clean-like utterances; the audioset and fuss data jobs read it as they read the real data
rule prepare_standin:
    output:
        f"{DATA}/standin/manifest.json",
    log:
        f"{LOGS}/data/standin.log",
    benchmark:
        f"{BENCH}/data/standin.tsv"
    params:
        cfg=as_json_arg({"standin": CFG["standin"]}),
        out=f"{DATA}/standin",
    threads: 1
    shell:
        "{PY} -m surfbench.data.table3 --config-json {params.cfg} --out {params.out} > {log} 2>&1"


rule prepare_data:
    input:
        standin_input,
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
