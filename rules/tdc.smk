# Trickle-Down Classifier: plan levels -> per level (job -> train -> collect missed) -> routing thresholds.
# Rest reading: level k's training set is fixed by the plan (levels train independently).
# Hard reading: level k+1 trains on level k's missed.csv (plan -> train 1 -> collect 1 -> train 2 -> ...).


rule plan_levels:
    input:
        train="results/shards/train.csv",
        checked="results/data/run_classes.json",  # the data hold every class of the run
    output:
        levels="results/tdc/levels.json",
    log:
        "logs/plan_levels/plan_levels.log",
    benchmark:
        "benchmarks/plan_levels/plan_levels.tsv"
    conda:
        "../envs/cbedtdc.yaml"
    params:
        classes=" ".join(map(str, CLASSES)),
        mode=config["tdc"]["mode"],
        how=config["tdc"]["levels"],
        sizes=" ".join(map(str, config["tdc"]["level_sizes"])),
        n_levels=config["tdc"]["n_levels"],
        max_ratio=config["tdc"]["max_ratio"],
        hard_outputs=config["tdc"]["hard_outputs"],
        epochs=config["train"]["epochs"],  # the flat baseline's epochs (or images, when > 0) fix the shared budget
        images=config["train"]["images"],
        budget_split=config["tdc"]["budget_split"],
    shell:
        '"$CBEDTDC_PYTHON" workflow_scripts/plan_levels.py --train {input.train:q} --classes {params.classes:q}'
        " --levels {output.levels:q} --mode {params.mode:q} --how {params.how:q}"
        " --level-sizes {params.sizes:q} --n-levels {params.n_levels} --max-ratio {params.max_ratio}"
        " --hard-outputs {params.hard_outputs:q}"
        " --epochs {params.epochs:q} --images {params.images:q} --budget-split {params.budget_split:q}"
        " 2> {log:q}"


rule level_job:
    input:
        levels="results/tdc/levels.json",
        train="results/shards/train.csv",
        dev="results/shards/dev.csv",
        missed=get_prev_missed,
        prev_runs=get_prev_runs,
    output:
        train_keys="results/tdc/level_{level}/job/train_keys.csv",
        dev_keys="results/tdc/level_{level}/job/dev_keys.csv",
        args="results/tdc/level_{level}/job/args.txt",
    log:
        "logs/level_job/{level}.log",
    benchmark:
        "benchmarks/level_job/{level}.tsv"
    conda:
        "../envs/cbedtdc.yaml"
    params:
        out_dir=lambda wc, output: str(Path(output.args).parent),
    shell:
        '"$CBEDTDC_PYTHON" workflow_scripts/level_job.py --levels {input.levels:q} --level {wildcards.level}'
        " --train {input.train:q} --dev {input.dev:q} --missed {input.missed:q}"
        " --prev-runs {input.prev_runs:q}"
        " --out-dir {params.out_dir:q} 2> {log:q}"


rule train_level:
    input:
        train="results/shards/train.csv",
        dev="results/shards/dev.csv",
        train_keys="results/tdc/level_{level}/job/train_keys.csv",
        dev_keys="results/tdc/level_{level}/job/dev_keys.csv",
        args="results/tdc/level_{level}/job/args.txt",
    output:
        model="results/tdc/level_{level}/best.pt",
        last="results/tdc/level_{level}/last.pt",
        metrics="results/tdc/level_{level}/metrics.csv",
        summary="results/tdc/level_{level}/train.json",
    log:
        "logs/train_level/{level}.log",
    benchmark:
        "benchmarks/train_level/{level}.tsv"
    conda:
        "../envs/cbedtdc.yaml"
    threads: THREADS
    resources:
        mpi="mpiexec",  # the environment's (first on PATH, rules/common.smk); profiles override: srun, jsrun
        tasks=config["train"]["ranks"],
        runtime=lambda wc, attempt: 120 * attempt,
        # a rank's CPUs on a cluster (sbatch --cpus-per-task; the local executor ignores it)
        cpus_per_task=config["train"]["threads_per_rank"] + config["train"]["workers"],
    params:
        **dag.train_params(config),
        shards=lambda wc, input: Path(input.train).parent,  # shard root
        loss=config["tdc"]["loss"],
    shell:
        # args.txt holds --classes/--rest/--epochs, one per line, read by argparse (@file), not by the shell
        '{resources.mpi} -n {resources.tasks} "$CBEDTDC_PYTHON" workflow_scripts/train.py --shards {params.shards:q}'
        " --model {output.model:q} --train-keys {input.train_keys:q} --dev-keys {input.dev_keys:q}"
        f" @{{input.args:q}} --loss {{params.loss:q}} --seed {{params.seed:q}} {LEVEL_TRAIN_FLAGS}"
        " > {log:q} 2>&1"


rule collect_missed:
    input:
        levels="results/tdc/levels.json",
        model="results/tdc/level_{level}/best.pt",
        train="results/shards/train.csv",
        dev="results/shards/dev.csv",
        missed=get_prev_missed,
    output:
        missed="results/tdc/level_{level}/missed.csv",
    log:
        "logs/collect_missed/{level}.log",
    benchmark:
        "benchmarks/collect_missed/{level}.tsv"
    conda:
        "../envs/cbedtdc.yaml"
    threads: THREADS
    params:
        shards=lambda wc, input: Path(input.train).parent,  # shard root
        batch=config["train"]["eval_batch_size"],
    shell:
        '"$CBEDTDC_PYTHON" workflow_scripts/collect_missed.py --levels {input.levels:q} --level {wildcards.level}'
        " --model {input.model:q} --shards {params.shards:q} --missed {input.missed:q}"
        " --out {output.missed:q} --batch-size {params.batch} --threads {threads} 2> {log:q}"


rule tune_routing:
    input:
        levels="results/tdc/levels.json",
        models=level_outputs("best.pt"),
        missed=level_outputs("missed.csv", LEVELS[:-1]),  # every level's trickle is part of a TDC run
        dev="results/shards/dev.csv",
    output:
        routing="results/tdc/routing.json",
    log:
        "logs/tune_routing/tune_routing.log",
    benchmark:
        "benchmarks/tune_routing/tune_routing.tsv"
    conda:
        "../envs/cbedtdc.yaml"
    threads: THREADS
    params:
        routing=config["tdc"]["routing"],  # not in levels.json: changing it retrains nothing
        tdc=lambda wc, input: Path(input.levels).parent,
        shards=lambda wc, input: Path(input.dev).parent,  # shard root
        batch=config["train"]["eval_batch_size"],
    shell:
        '"$CBEDTDC_PYTHON" workflow_scripts/tune_routing.py --tdc {params.tdc:q} --shards {params.shards:q}'
        " --out {output.routing:q} --routing {params.routing:q} --batch-size {params.batch}"
        " --threads {threads} 2> {log:q}"


rule tdc:
    input:
        levels="results/tdc/levels.json",
        models=level_outputs("best.pt"),
        missed=level_outputs("missed.csv", LEVELS[:-1]),
        routing="results/tdc/routing.json",
