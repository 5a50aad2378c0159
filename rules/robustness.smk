# Robustness and transfer (docs/robustness.md): the run's headline flat model, TDC, descriptor-only head and flat
# CNN on perturbed test stacks and on the first test materials rendered again with more mistilt or thicker, and on
# the first test materials rendered by other intensity models (renderings need generated data: with raw_dir set
# there is no generator, and rules robustness_synthesize and transfer are not in the DAG).
import json


rule robustness:
    input:
        summary="results/metrics/summary.json",  # names the headline flat model, chosen on dev
        models=get_run_models(),
        splits="results/data/splits.csv",
        run_classes="results/data/run_classes.json",
        raw=[RAW[stem] for stem in STEMS],
        rendered=get_rendered_files(),
    output:
        table="results/metrics/robustness.csv",
    log:
        "logs/robustness/robustness.log",
    benchmark:
        "benchmarks/robustness/robustness.tsv"
    conda:
        "../envs/cbedtdc.yaml"
    threads: 1  # numpy scoring and small CNN batches: beside rule transfer, not after it
    params:
        perturbations=json.dumps(config["robustness"]["perturbations"]),
        n_materials=config["robustness"]["n_materials"],
        rendered=get_robustness_rendered,  # --rendered PERTURBATION=STRENGTH=FILE ..., shell-quoted
        own_mistilt=config["synth"]["mistilt"],
        bootstrap=config["evaluate"]["bootstrap"],
        seed=config["seed"],
        batch=config["train"]["eval_batch_size"],
    shell:
        '"$CBEDTDC_PYTHON" workflow_scripts/robustness.py --summary {input.summary:q} --splits {input.splits:q}'
        " --run-classes {input.run_classes:q} --raw {input.raw:q} --out {output.table:q}"
        " --perturbations {params.perturbations:q} --n-materials {params.n_materials:q}"
        " {params.rendered} --own-mistilt {params.own_mistilt:q}"
        " --bootstrap {params.bootstrap:q} --seed {params.seed:q} --batch-size {params.batch:q} --threads {threads}"
        " 2> {log:q}"


rule robustness_plot:
    input:
        table="results/metrics/robustness.csv",
    output:
        png=report(
            "results/plots/robustness.png",
            caption="../report/robustness.rst",
            category="Robustness",
        ),
    log:
        "logs/robustness_plot/robustness_plot.log",
    benchmark:
        "benchmarks/robustness_plot/robustness_plot.tsv"
    conda:
        "../envs/cbedtdc.yaml"
    shell:
        '"$CBEDTDC_PYTHON" workflow_scripts/robustness_plot.py --table {input.table:q} --out {output.png:q}'
        " 2> {log:q}"


# The first robustness.rendered.n_materials test materials, all their samples, rendered again with one setting
# beyond the training's (more mistilt, or a thickness bin above 100-500 A): the generator command of rule
# synthesize with the run's settings but that one, so the materials are the run's own.
rule robustness_synthesize:
    output:
        raw="results/robustness/{perturbation}/{strength}/batch_test_0.h5",
    log:
        "logs/robustness_synthesize/{perturbation}/{strength}.log",
    benchmark:
        "benchmarks/robustness_synthesize/{perturbation}/{strength}.tsv"
    wildcard_constraints:
        perturbation="mistilt|thickness",
        strength=r"[0-9.eE+-]+",
    conda:
        "../envs/cbedtdc.yaml"
    resources:
        mem_mb=1000,  # as rule synthesize
        runtime=lambda wc, attempt: 30 * attempt,
        gpu=get_synth_gpus(),  # the run's mode: 1 in multislice on device auto/gpu, as rule synthesize
        gpu_launch="env",
    params:
        launch=get_synth_launch,
        n_file=get_rendering_materials,
        args=get_rendering_args,  # the run's generator flags, this rendering's --mistilt or --thickness
    shell:
        '{params.launch} "$CBEDTDC_PYTHON" workflow_scripts/synthesize.py --out {output.raw:q} --first-material 0'
        " --file-materials {params.n_file:q} {params.args} --no-progress 2> {log:q}"


# The first transfer.n_materials test materials, one sample (100 keV) each, rendered in another mode: the same
# generator command as rule synthesize with the run's settings, so the materials are the run's own.
rule transfer_synthesize:
    output:
        raw="results/transfer/{mode}/batch_test_{part}.h5",
    log:
        "logs/transfer_synthesize/{mode}/{part}.log",
    benchmark:
        "benchmarks/transfer_synthesize/{mode}/{part}.tsv"
    wildcard_constraints:
        mode="kinematic|bloch|multislice",
        part=r"\d+",
    conda:
        "../envs/cbedtdc.yaml"
    resources:
        mem_mb=1000,  # as rule synthesize
        runtime=lambda wc, attempt: 30 * attempt,
    params:
        first=lambda wc: TRANSFER_PLAN[int(wc.part)][0],
        n_file=lambda wc: TRANSFER_PLAN[int(wc.part)][1],
        args=get_transfer_args,  # the run's generator flags (its split sizes: the same class plan), another mode
    shell:
        '"$CBEDTDC_PYTHON" workflow_scripts/synthesize.py --out {output.raw:q} --first-material {params.first:q}'
        " --file-materials {params.n_file:q} {params.args} --no-progress 2> {log:q}"


rule transfer:
    input:
        summary="results/metrics/summary.json",
        models=get_run_models(),
        splits="results/data/splits.csv",
        run_classes="results/data/run_classes.json",
        raw=[RAW[stem] for stem in STEMS],
        rendered=[f for m in transfer_modes() for f in get_transfer_files(m)],
    output:
        table=report(
            "results/metrics/transfer.csv",
            caption="../report/transfer.rst",
            category="Robustness",
            labels={"table": "transfer across intensity models"},
        ),
    log:
        "logs/transfer/transfer.log",
    benchmark:
        "benchmarks/transfer/transfer.tsv"
    conda:
        "../envs/cbedtdc.yaml"
    threads: THREADS
    params:
        rendered=get_transfer_rendered,  # MODE=FILE pairs, shell-quoted
        own=config["synth"]["mode"],
        bootstrap=config["evaluate"]["bootstrap"],
        seed=config["seed"],
        batch=config["train"]["eval_batch_size"],
    shell:
        '"$CBEDTDC_PYTHON" workflow_scripts/transfer.py --summary {input.summary:q} --splits {input.splits:q}'
        " --run-classes {input.run_classes:q} --raw {input.raw:q} --rendered {params.rendered}"
        " --own-mode {params.own:q} --out {output.table:q} --bootstrap {params.bootstrap:q} --seed {params.seed:q}"
        " --batch-size {params.batch:q} --threads {threads} 2> {log:q}"
