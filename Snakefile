# surfbench: one pipeline from data to the paper's tables, at every scale.
#
#   snakemake --cores 8 tables                                  # tiny profile (default, offline, CPU)
#   snakemake --cores 8 tables --configfile config/paper.yaml   # the paper's settings (GPUs)
#   snakemake --cores 2 tables --configfile config/paper-smoke.yaml   # the paper's models, a few steps (CPU)
#   snakemake --workflow-profile profiles/slurm tables --configfile config/paper.yaml   # on a SLURM cluster
#
# The config is validated against surfbench/schemas/config.schema.yaml before any job
# runs; the jobs come from surfbench.plan.  Targets: data, train, evaluate, tables, site, all.
import copy
from pathlib import Path

import yaml

from surfbench.config import deep_merge, expand_extends, validate

if not workflow.overwrite_configfiles:  # no --configfile: the tiny profile is the default
    config.update(deep_merge(yaml.safe_load(Path("config/tiny.yaml").read_text()), copy.deepcopy(config)))
if "extends" in config:  # e.g. paper-smoke.yaml extends paper.yaml: relative to the file that says it
    _says = [f for f in workflow.overwrite_configfiles if "extends" in (yaml.safe_load(Path(f).read_text()) or {})]
    _full = expand_extends(copy.deepcopy(config), _says[-1])
    config.clear()
    config.update(_full)
CFG = validate(copy.deepcopy(config), source=" + ".join(map(str, workflow.overwrite_configfiles or ["config/tiny.yaml"])))


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        rules.tables.input,
        rules.figures.input,
        rules.site.output,
