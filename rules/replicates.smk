# Replicate seeds (replicates: N or a list of seeds): the same shards, levels and symmetry features; the flat
# backbone, its features, the heads, the shared-backbone TDC and the evaluation again per training seed, under
# results/replicates/seed_{rseed}/. Rule replicates gathers every seed's summary (results/metrics/replicates.*).
# Changing only `replicates` reruns no data stage and none of the run's own jobs.

REP = "results/replicates/seed_{rseed}"


use rule train_flat as train_flat_replicate with:
    output:
        model=f"{REP}/flat/{{loss}}/best.pt",
        last=f"{REP}/flat/{{loss}}/last.pt",
        metrics=f"{REP}/flat/{{loss}}/metrics.csv",
        info=f"{REP}/flat/{{loss}}/train.json",
    log:
        "logs/replicates/seed_{rseed}/train_flat/{loss}.log",
    benchmark:
        "benchmarks/replicates/seed_{rseed}/train_flat/{loss}.tsv"
    params:
        seed=lambda wc: int(wc.rseed),  # the training seed; the data keep config["seed"]


use rule features as features_replicate with:
    input:
        unpack(get_features_model),
        split="results/shards/{split}.csv",
    output:
        features=f"{REP}/features/{{folder}}/{{split}}.h5",
    log:
        "logs/replicates/seed_{rseed}/features/{folder}/{split}.log",
    benchmark:
        "benchmarks/replicates/seed_{rseed}/features/{folder}/{split}.tsv"


use rule head as head_replicate with:
    input:
        get_head_features,
        run_classes="results/data/run_classes.json",
    output:
        head=f"{REP}/heads/flat/{{head}}/head.{{ext}}",
        meta=f"{REP}/heads/flat/{{head}}/head.{{ext}}.meta.json",
    log:
        "logs/replicates/seed_{rseed}/head/{head}.{ext}.log",
    benchmark:
        "benchmarks/replicates/seed_{rseed}/head/{head}.{ext}.tsv"
    params:
        features=lambda wc: dag.head_feature_dirs(HEADS[wc.head], root=root_of(wc)),
        seed=lambda wc: int(wc.rseed),


use rule tdc_heads as tdc_heads_replicate with:
    input:
        levels="results/tdc/levels.json",
        features=lambda wc: dag.feature_files(
            dag.tdc_sources(config, root_of(wc)), ("train", "dev")
        ),
    output:
        heads=f"{REP}/tdc_shared/heads/heads.json",
    log:
        "logs/replicates/seed_{rseed}/tdc_heads/tdc_heads.log",
    benchmark:
        "benchmarks/replicates/seed_{rseed}/tdc_heads/tdc_heads.tsv"
    params:
        features=lambda wc: dag.tdc_sources(config, root_of(wc)),
        seed=lambda wc: int(wc.rseed),


use rule tune_routing_shared as tune_routing_shared_replicate with:
    input:
        levels="results/tdc/levels.json",
        heads=f"{REP}/tdc_shared/heads/heads.json",
        features=lambda wc: dag.feature_files(
            dag.tdc_sources(config, root_of(wc)), ("dev",)
        ),
    output:
        routing=f"{REP}/tdc_shared/routing.json",
    log:
        "logs/replicates/seed_{rseed}/tune_routing_shared/tune_routing_shared.log",
    benchmark:
        "benchmarks/replicates/seed_{rseed}/tune_routing_shared/tune_routing_shared.tsv"
    params:
        features=lambda wc: dag.tdc_sources(config, root_of(wc)),


use rule evaluate as evaluate_replicate with:
    input:
        flat=expand(
            f"{REP}/flat/{{loss}}/best.pt",
            loss=config["flat"]["losses"],
            allow_missing=True,
        ),
        levels="results/tdc/levels.json",
        scored=get_eval_inputs,
        train="results/shards/train.csv",
        dev="results/shards/dev.csv",
        test="results/shards/test.csv",
        run_classes="results/data/run_classes.json",
        info="results/shards/data_info.json",
    output:
        summary=f"{REP}/metrics/summary.json",
        by_mode=f"{REP}/metrics/summary_{dag.tdc_variant(config)}.json",
        per_class=f"{REP}/metrics/per_class.csv",
        levels=f"{REP}/metrics/levels.csv",
        confusion_flat=f"{REP}/metrics/confusion_flat.csv",
        confusion_tdc=f"{REP}/metrics/confusion_tdc.csv",
        predictions=f"{REP}/metrics/predictions.csv",
    log:
        "logs/replicates/seed_{rseed}/evaluate/evaluate.log",
    benchmark:
        "benchmarks/replicates/seed_{rseed}/evaluate/evaluate.tsv"
    params:
        heads=lambda wc: dag.heads_json(HEADS, root_of(wc)),
        shared=lambda wc: dag.shared_json(config, root_of(wc)),


rule replicates:
    input:
        run="results/metrics/summary.json",
        replicates=expand(
            "results/replicates/seed_{rseed}/metrics/summary.json", rseed=REPLICATES
        ),
    output:
        json="results/metrics/replicates.json",
        csv=report(
            "results/metrics/replicates.csv",
            caption="../report/replicates.rst",
            category="Evaluation",
            labels={"table": "replicate seeds"},
        ),
    log:
        "logs/replicates/replicates.log",
    benchmark:
        "benchmarks/replicates/replicates.tsv"
    conda:
        "../envs/cbedtdc.yaml"
    params:
        summaries=lambda wc, input: [f"{config['seed']}={input.run}"]
        + [f"{s}={p}" for s, p in zip(REPLICATES, input.replicates)],
    shell:
        '"$CBEDTDC_PYTHON" workflow_scripts/replicates.py --summary {params.summaries:q}'
        " --out {output.json:q} 2> {log:q}"
