# Features -> heads: penultimate activations of every flat model, flat heads re-trained on them, and the
# shared-backbone TDC (tdc.backbone: shared), whose levels are heads on one flat model's features.
# Changing a head or the routing reruns only these jobs and evaluate, never a backbone.


rule features:
    input:
        model="results/flat/{loss}/best.pt",
        split="results/shards/{split}.csv",
    output:
        features="results/features/flat/{loss}/{split}.h5",
    log:
        "logs/features/flat_{loss}_{split}.log",
    benchmark:
        "benchmarks/features/flat_{loss}_{split}.tsv"
    conda:
        "../envs/cbedtdc.yaml"
    threads: config["train"]["ranks"] * config["train"]["threads_per_rank"]
    params:
        shards=lambda wc, input: Path(input.split).parent,  # shard root
        batch=config["train"]["eval_batch_size"],
    shell:
        "{PYTHON} workflow_scripts/features.py --model {input.model:q} --shards {params.shards:q}"
        " --split {wildcards.split:q} --out {output.features:q} --batch-size {params.batch}"
        " --threads {threads} 2> {log:q}"


rule features_level:
    input:
        model="results/tdc/level_{level}/best.pt",
        split="results/shards/{split}.csv",
    output:
        features="results/features/level_{level}/{split}.h5",
    log:
        "logs/features/level_{level}_{split}.log",
    benchmark:
        "benchmarks/features/level_{level}_{split}.tsv"
    conda:
        "../envs/cbedtdc.yaml"
    threads: config["train"]["ranks"] * config["train"]["threads_per_rank"]
    params:
        shards=lambda wc, input: Path(input.split).parent,  # shard root
        batch=config["train"]["eval_batch_size"],
    shell:
        "{PYTHON} workflow_scripts/features.py --model {input.model:q} --shards {params.shards:q}"
        " --split {wildcards.split:q} --out {output.features:q} --batch-size {params.batch}"
        " --threads {threads} 2> {log:q}"


rule head:
    input:
        unpack(get_head_features),
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
    threads: config["train"]["ranks"] * config["train"]["threads_per_rank"]
    params:
        features=lambda wc, input: Path(input.train).parent,
        classes=" ".join(map(str, CLASSES)),
        spec=lambda wc: head_spec(HEADS[wc.head]),  # JSON of the head's options
        seed=config["seed"],
    shell:
        "{PYTHON} workflow_scripts/head.py --features {params.features:q} --out {output.head:q}"
        " --classes {params.classes:q} --spec {params.spec:q} --seed {params.seed:q} --threads {threads}"
        " 2> {log:q}"


rule tdc_heads:
    input:
        levels="results/tdc/levels.json",
        train=f"results/features/flat/{config['tdc']['shared_loss']}/train.h5",
        dev=f"results/features/flat/{config['tdc']['shared_loss']}/dev.h5",
    output:
        heads="results/tdc_shared/heads/heads.json",
    log:
        "logs/tdc_heads/tdc_heads.log",
    benchmark:
        "benchmarks/tdc_heads/tdc_heads.tsv"
    conda:
        "../envs/cbedtdc.yaml"
    threads: config["train"]["ranks"] * config["train"]["threads_per_rank"]
    params:
        features=lambda wc, input: Path(input.train).parent,
        out=lambda wc, output: Path(output.heads).parent,
        spec=head_spec(config["tdc"]["head"]),  # JSON of the level heads' options
        seed=config["seed"],
    shell:
        "{PYTHON} workflow_scripts/head.py --features {params.features:q} --levels {input.levels:q}"
        " --out {params.out:q} --spec {params.spec:q} --seed {params.seed:q} --threads {threads}"
        " 2> {log:q}"


rule tune_routing_shared:
    input:
        levels="results/tdc/levels.json",
        heads="results/tdc_shared/heads/heads.json",
        dev=f"results/features/flat/{config['tdc']['shared_loss']}/dev.h5",
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
        features=lambda wc, input: Path(input.dev).parent,
    shell:
        "{PYTHON} workflow_scripts/tune_routing_shared.py --levels {input.levels:q} --heads {params.heads:q}"
        " --features {params.features:q} --out {output.routing:q} --routing {params.routing:q} 2> {log:q}"


# Named partial target: the features of every trained backbone the config uses (each flat loss and, with
# tdc.backbone: own, each level), for heads fitted by hand. rule all extracts only those the heads need.
rule features_all:
    input:
        expand(
            "results/features/flat/{loss}/{split}.h5",
            loss=config["flat"]["losses"],
            split=SPLITS,
        ),
        []
        if is_shared()
        else expand(
            "results/features/level_{level}/{split}.h5", level=LEVELS, split=SPLITS
        ),
