# cbedtdc: CBED stacks -> uint8 shards -> flat baseline + Trickle-Down Classifier -> metrics and report.
# Data flows one way: raw -> manifest -> shards -> level k -> routed samples -> level k+1 -> evaluate -> report.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/synth.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/tdc.smk"
include: "rules/heads.smk"
include: "rules/evaluate.smk"
include: "rules/replicates.smk"
include: "rules/robustness.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
