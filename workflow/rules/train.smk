# One training job per (dataset, method[@ablation variant], seed).  Resumable checkpoints live
# in work/<profile>/ckpt/... (keyed by wildcards and config hash), outside the declared outputs,
# so a killed or failed job continues from its last checkpoint when rerun.


rule run_config:
    output:
        f"{RES}/{{dataset}}/{{method}}/seed{{seed}}/config.yaml",
    params:
        cfg=lambda wc: as_json_arg(resolved(wc)),
    log:
        f"{LOGS}/config/{{dataset}}/{{method}}/seed{{seed}}.log",
    # a shell job, not `run:`: a `run:` job is executed by a fresh Snakemake process that re-parses the
    # whole workflow (seconds per job, ~30 jobs in the ci profile)
    shell:
        "{PY} -c 'import json, sys; from surfbench.cli import write_yaml_atomic; "
        "write_yaml_atomic(sys.argv[1], json.loads(sys.argv[2]))' {output} {params.cfg} > {log} 2>&1"


# The learning curve (training.curve, surfbench/curve.py) separates as the evaluation does, so the training job
# gets the profile's `evaluation` section. Not a param: it never changes model.pt (the curve changes nothing in
# training; tests/test_curves.py), so a changed evaluation setting reruns the evaluations only, as before; the
# curve.csv of a run trained under other evaluation settings keeps them until that run is retrained.
CURVE_EVAL = "--eval-config-json " + as_json_arg(CFG["evaluation"])


def teacher_model(wc):
    run = run_of(wc)
    teacher = registry().get(run.method).teacher
    return [f"{run_dir(RunId(run.dataset, teacher, run.seed))}/model.pt"] if teacher else []


rule train_model:
    input:
        cfg=f"{RES}/{{dataset}}/{{method}}/seed{{seed}}/config.yaml",
        data=f"{DATA}/{{dataset}}/manifest.json",
        teacher=teacher_model,
    output:
        f"{RES}/{{dataset}}/{{method}}/seed{{seed}}/model.pt",
    log:
        f"{LOGS}/train/{{dataset}}/{{method}}/seed{{seed}}.log",
    benchmark:
        f"{BENCH}/train/{{dataset}}/{{method}}/seed{{seed}}.tsv"
    priority: priority_of
    threads: CFG["threads_per_job"]
    resources:
        gpu=CFG["gpus_per_job"],
    params:
        launcher=launcher("train"),
        ckpt=lambda wc: f"{WORK}/ckpt/{wc.dataset}/{wc.method}/seed{wc.seed}/{config_hash(resolved(wc))}",
        teacher=lambda wc, input: f"--teacher {input.teacher[0]}" if input.teacher else "",
        data=lambda wc: f"{DATA}/{wc.dataset}",
        device=CFG["device"],
    shell:
        "{params.launcher} surfbench.train --run-config {input.cfg} --data {params.data} --out {output} "
        "--ckpt-dir {params.ckpt} {params.teacher} --device {params.device} --threads {TORCH_THREADS} --no-progress "
        "{CURVE_EVAL} > {log} 2>&1"


rule train:
    input:
        [f"{run_dir(r)}/model.pt" for r in plan.runs(CFG)],
