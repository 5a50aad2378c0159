# Flat baselines: one classifier over the run's classes per loss in config["flat"]["losses"], trained by the
# same engine (workflow_scripts/train.py) as every TDC level, on the same shards.


rule train_flat:
    input:
        train="results/shards/train.csv",
        dev="results/shards/dev.csv",
        checked="results/data/run_classes.json",  # the data hold every class of the run
    output:
        model="results/flat/{loss}/best.pt",
        last="results/flat/{loss}/last.pt",
        metrics="results/flat/{loss}/metrics.csv",
        info="results/flat/{loss}/train.json",
    log:
        "logs/train_flat/{loss}.log",
    benchmark:
        "benchmarks/train_flat/{loss}.tsv"
    priority: CRITICAL
    conda:
        "../envs/cbedtdc.yaml"
    threads: THREADS
    resources:
        mpi="mpiexec",  # the environment's (first on PATH, rules/common.smk); profiles override: srun (SLURM), jsrun (LSF)
        tasks=config["train"]["ranks"],
        # a rank's CPUs on a cluster (sbatch --cpus-per-task; the local executor ignores it)
        cpus_per_task=config["train"]["threads_per_rank"] + config["train"]["workers"],
    params:
        **dag.train_params(config),
        shards=lambda wc, input: Path(input.train).parent,  # shard root: {split}.csv and files/
        classes=",".join(str(c) for c in CLASSES),
    shell:
        '{resources.mpi} -n {resources.tasks} "$CBEDTDC_PYTHON" workflow_scripts/train.py'
        " --shards {params.shards:q} --model {output.model:q} --classes {params.classes:q}"
        f" --loss {{wildcards.loss:q}} --seed {{params.seed:q}} {TRAIN_FLAGS} > {{log:q}} 2>&1"


rule flat:
    input:
        expand("results/flat/{loss}/best.pt", loss=config["flat"]["losses"]),
