# Features -> heads: feature sources (results/features/<folder>/<split>.h5, one rule for every source of
# cbedtdc.features.registry), flat heads re-trained on them, and the shared-backbone TDC (tdc.backbone: shared),
# whose levels are heads on the same sources.
# Changing a head, its feature set or the routing reruns only these jobs and evaluate, never a backbone.
# features.augment adds perturbed copies of the training stacks to a descriptor source's train file (rule features).

from cbedtdc.features.augment import augment_arg
from cbedtdc.features.registry import get_source


rule features:
    input:
        unpack(get_features_model),  # a backbone source's checkpoint (results/flat/{loss}/best.pt, ...), or none
        split="results/shards/{split}.csv",
    output:
        features="results/features/{folder}/{split}.h5",
    log:
        "logs/features/{folder}/{split}.log",
    benchmark:
        "benchmarks/features/{folder}/{split}.tsv"
    conda:
        "../envs/cbedtdc.yaml"
    threads: get_features_threads  # a torch source: THREADS; a numpy descriptor source: one core
    params:
        source=lambda wc: dag.features_job(wc.folder)["source"],  # the registered source writing this folder
        model=features_model_args,  # --model CHECKPOINT (shell-quoted), or nothing
        shards=lambda wc, input: Path(input.split).parent,  # shard root
        batch=config["train"]["eval_batch_size"],
        augment=lambda wc: augment_arg(  # perturbed training copies: a descriptor source's train split only
            config["features"]["augment"],
            get_source(dag.features_job(wc.folder)["source"]),
            wc.split,
        ),
        seed=config["seed"],
    shell:
        '"$CBEDTDC_PYTHON" workflow_scripts/features.py --source {params.source:q} {params.model}'
        " --shards {params.shards:q} --split {wildcards.split:q} --out {output.features:q}"
        " --batch-size {params.batch:q} --augment {params.augment:q} --seed {params.seed:q}"
        " --threads {threads} 2> {log:q}"


rule head:
    input:
        unpack(get_head_features),  # train and dev files of every feature source of the head
        run_classes="results/data/run_classes.json",  # the run's one class order
    output:
        head="results/heads/flat/{head}/head.{ext}",
        meta="results/heads/flat/{head}/head.{ext}.meta.json",
    log:
        "logs/head/{head}.{ext}.log",
    benchmark:
        "benchmarks/head/{head}.{ext}.tsv"
    wildcard_constraints:
        ext="pt|json",
    conda:
        "../envs/cbedtdc.yaml"
    threads: 1  # a linear head fits in seconds on one core: the heads run side by side
    params:
        features=lambda wc: dag.head_feature_dirs(HEADS[wc.head]),
        spec=lambda wc: dag.head_spec(HEADS[wc.head], config),  # JSON of the head's options
        seed=config["seed"],
    shell:
        '"$CBEDTDC_PYTHON" workflow_scripts/head.py --features {params.features:q} --out {output.head:q}'
        " --run-classes {input.run_classes:q} --spec {params.spec:q} --seed {params.seed:q} --threads {threads}"
        " 2> {log:q}"


rule tdc_heads:
    input:
        levels="results/tdc/levels.json",
        features=dag.feature_files(TDC_SOURCES, ("train", "dev")),
    output:
        heads="results/tdc_shared/heads/heads.json",
    log:
        "logs/tdc_heads/tdc_heads.log",
    benchmark:
        "benchmarks/tdc_heads/tdc_heads.tsv"
    conda:
        "../envs/cbedtdc.yaml"
    threads: 1  # a linear head fits in seconds on one core: the heads run side by side
    params:
        features=TDC_SOURCES,
        out=lambda wc, output: Path(output.heads).parent,
        spec=dag.head_spec(config["tdc"]["head"], config),  # JSON of the level heads' options
        seed=config["seed"],
    shell:
        '"$CBEDTDC_PYTHON" workflow_scripts/head.py --features {params.features:q} --levels {input.levels:q}'
        " --out {params.out:q} --spec {params.spec:q} --seed {params.seed:q} --threads {threads}"
        " 2> {log:q}"


rule tune_routing_shared:
    input:
        levels="results/tdc/levels.json",
        heads="results/tdc_shared/heads/heads.json",
        features=dag.feature_files(TDC_SOURCES, ("dev",)),
    output:
        routing="results/tdc_shared/routing.json",
    log:
        "logs/tune_routing_shared/tune_routing_shared.log",
    benchmark:
        "benchmarks/tune_routing_shared/tune_routing_shared.tsv"
    conda:
        "../envs/cbedtdc.yaml"
    params:
        routing=config["tdc"]["routing"],
        heads=lambda wc, input: Path(input.heads).parent,
        features=TDC_SOURCES,
    shell:
        '"$CBEDTDC_PYTHON" workflow_scripts/tune_routing_shared.py --levels {input.levels:q}'
        " --heads {params.heads:q} --features {params.features:q} --out {output.routing:q}"
        " --routing {params.routing:q} 2> {log:q}"


# Named partial target: the features of every trained backbone the config uses (each flat loss and, with
# tdc.backbone: own, each level), for heads fitted by hand. rule all extracts only those the heads need.
rule features_all:
    input:
        expand(
            "results/features/flat/{loss}/{split}.h5",
            loss=config["flat"]["losses"],
            split=SPLITS,
        ),
        (
            []
            if is_shared()
            else expand(
                "results/features/level_{level}/{split}.h5", level=LEVELS, split=SPLITS
            )
        ),
