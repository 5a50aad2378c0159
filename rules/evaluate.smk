# Evaluation on the test split: flat baselines vs the TDC, tables and figures for the report.


rule evaluate:
    input:
        flat=expand("results/flat/{loss}/best.pt", loss=config["flat"]["losses"]),
        levels="results/tdc/levels.json",
        scored=get_eval_inputs,  # heads, the cascade (level ResNets or shared heads) and their features
        train="results/shards/train.csv",
        dev="results/shards/dev.csv",
        test="results/shards/test.csv",
        run_classes="results/data/run_classes.json",  # the run's one class order
        info="results/shards/data_info.json",  # what the bootstrap resamples (materials, or samples)
    output:
        summary="results/metrics/summary.json",
        # the same summary under the reading's name: a rest and a hard run side by side
        by_mode=f"results/metrics/summary_{dag.tdc_variant(config)}.json",
        per_class=report(
            "results/metrics/per_class.csv",
            caption="../report/per_class.rst",
            category="Evaluation",
            labels={"table": "per-class recall"},
        ),
        levels=report(
            "results/metrics/levels.csv",
            caption="../report/levels.rst",
            category="Evaluation",
            labels={"table": "TDC levels"},
        ),
        confusion_flat="results/metrics/confusion_flat.csv",
        confusion_tdc="results/metrics/confusion_tdc.csv",
        predictions="results/metrics/predictions.csv",
    log:
        "logs/evaluate/evaluate.log",
    benchmark:
        "benchmarks/evaluate/evaluate.tsv"
    conda:
        "../envs/cbedtdc.yaml"
    threads: THREADS
    params:
        flat=lambda wc, input: [
            f"{loss}={path}"
            for loss, path in zip(config["flat"]["losses"], input.flat)
        ],
        tdc=lambda wc, input: Path(input.levels).parent,
        shards=lambda wc, input: Path(input.train).parent,  # shard root
        bootstrap=config["evaluate"]["bootstrap"],
        seed=config["seed"],
        # Friedel pairs are indistinguishable only in kinematic patterns
        friedel=dag.friedel_groups_arg(config, GENERATE),
        data=dag.data_kind(config, GENERATE, STEMS),
        batch=config["train"]["eval_batch_size"],
        heads=dag.heads_json(HEADS),  # JSON: file, backbone, feature sources of every flat head
        shared=dag.shared_json(config),  # JSON: the shared-backbone TDC, {} with own backbones
    shell:
        '"$CBEDTDC_PYTHON" workflow_scripts/evaluate.py --shards {params.shards:q} --flat {params.flat:q}'
        " --tdc {params.tdc:q} --summary {output.summary:q} --copy {output.by_mode:q}"
        " --run-classes {input.run_classes:q} --data-info {input.info:q} --bootstrap {params.bootstrap:q}"
        " --seed {params.seed:q} --friedel-groups {params.friedel:q} --data {params.data:q}"
        " --batch-size {params.batch:q} --threads {threads} --heads {params.heads:q} --shared {params.shared:q}"
        " 2> {log:q}"


rule plots:
    input:
        summary="results/metrics/summary.json",
        per_class="results/metrics/per_class.csv",
        levels="results/metrics/levels.csv",
        confusion_flat="results/metrics/confusion_flat.csv",
        confusion_tdc="results/metrics/confusion_tdc.csv",
    output:
        headline=report(
            "results/plots/headline.png",
            caption="../report/headline.rst",
            category="Results",
        ),
        recall=report(
            "results/plots/recall.png",
            caption="../report/recall.rst",
            category="Results",
        ),
        confusion=report(
            "results/plots/confusion.png",
            caption="../report/confusion.rst",
            category="Results",
        ),
        routing=report(
            "results/plots/routing.png",
            caption="../report/routing.rst",
            category="Results",
        ),
        hierarchy=report(
            "results/plots/hierarchy.png",
            caption="../report/hierarchy.rst",
            category="Results",
        ),
        calibration=report(
            "results/plots/calibration.png",
            caption="../report/calibration.rst",
            category="Results",
        ),
        selective=report(
            "results/plots/selective.png",
            caption="../report/selective.rst",
            category="Results",
        ),
        variants=report(
            "results/plots/variants.csv",  # also a table of the report's front page
            caption="../report/variants.rst",
            category="Results",
            labels={"table": "every variant"},
        ),
        table=report(
            "results/plots/headline.csv",  # also the first table of the report's front page
            caption="../report/headline_table.rst",
            category="Results",
            labels={"table": "headline numbers"},
        ),
    log:
        "logs/plots/plots.log",
    benchmark:
        "benchmarks/plots/plots.tsv"
    conda:
        "../envs/cbedtdc.yaml"
    params:
        metrics=lambda wc, input: Path(input.summary).parent,
        out=lambda wc, output: Path(output.headline).parent,
    shell:
        '"$CBEDTDC_PYTHON" workflow_scripts/plots.py --metrics {params.metrics:q} --out {params.out:q} 2> {log:q}'


rule run_config:
    output:
        config=report(
            "results/run_config.yaml",
            caption="../report/run_config.rst",
            category="Run",
        ),
    log:
        "logs/run_config/run_config.log",
    benchmark:
        "benchmarks/run_config/run_config.tsv"
    conda:
        "../envs/cbedtdc.yaml"
    params:
        config=run_config_json(),  # any change of the config rewrites it: it is always the last run's
    shell:
        '"$CBEDTDC_PYTHON" workflow_scripts/run_config.py --config {params.config:q} --out {output.config:q} 2> {log:q}'


# Target of `make report`: every file the report shows. Run with --allowed-rules run_config plots gallery
# report_files, so a missing figure or table is redrawn from the saved results and nothing is retrained.
rule report_files:
    input:
        get_report_files(),
