# Paths, wildcard constraints and the small helpers every rule uses.
import json
import shlex
import sys

from surfbench import plan
from surfbench.config import RunId, config_hash, resolve_run
from surfbench.registry import registry
from surfbench.reproducible import env_prefix

PROFILE = CFG["profile"]
DATA = f"{CFG['paths']['data']}/{PROFILE}"
RES = f"{CFG['paths']['results']}/{PROFILE}"
WORK = f"{CFG['paths']['work']}/{PROFILE}"
REPORT = f"{CFG['paths']['report']}/{PROFILE}"
LOGS = f"logs/{PROFILE}"
BENCH = f"benchmarks/{PROFILE}"

wildcard_constraints:
    dataset="mnist|cifar10|libri2mix|audioset|fuss",
    method=r"[A-Za-z0-9_]+(@[A-Za-z0-9_.=]+)?",
    seed=r"\d+",


def run_of(wc) -> RunId:
    m, v = RunId.parse_method_dir(wc.method)
    return RunId(wc.dataset, m, int(wc.seed), v)


def resolved(wc) -> dict:
    return resolve_run(CFG, run_of(wc))


def priority_of(wc) -> int:
    return plan.run_priority(run_of(wc))


def run_dir(run: RunId) -> str:
    return f"{RES}/{run.dataset}/{run.method_dir}/seed{run.seed}"


def as_json_arg(obj) -> str:
    return shlex.quote(json.dumps(obj, sort_keys=True))


# torch.set_num_threads inside a job
TORCH_THREADS = CFG["torch_threads"] or CFG["threads_per_job"]
# the interpreter running Snakemake (the project's venv), so jobs never pick another python, in the
# environment of the profile's cpu_kernels (surfbench/reproducible.py) and the job's thread count
PY = env_prefix(CFG["cpu_kernels"], TORCH_THREADS) + shlex.quote(sys.executable)


def launcher(kind: str) -> str:
    """python -m, or torchrun when a training job has more than one GPU."""
    n = CFG["gpus_per_job"]
    if kind == "train" and n > 1:
        return f"{PY} -m torch.distributed.run --standalone --nproc-per-node {n} -m"
    return f"{PY} -m"
