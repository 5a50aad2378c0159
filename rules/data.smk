# Data stage: raw challenge files -> per-file index -> manifest -> split -> uint8 shards -> per-split lists.
# index_raw and shard run once per raw file (1,138 jobs on the real set); on a cluster the group "rawfile" lets a
# profile bundle them (group-components: rawfile=N), and shard then reads a raw file that index_raw just cached.
# A STEMDL mirror raw_dir (training/validation/testing/inference of sample-<n>.npz) runs index_mirror and
# shard_mirror instead, once per chunk of data.mirror_chunk files of a folder (187k files: 96 chunks); the
# folder is the job's input, so the DAG never lists the files themselves.


rule index_raw:
    input:
        raw=get_raw,
    output:
        index="results/data/index/{stem}.json",
    log:
        "logs/index_raw/{stem}.log",
    benchmark:
        "benchmarks/index_raw/{stem}.tsv"
    priority: CRITICAL
    group:
        "rawfile"
    conda:
        "../envs/cbedtdc.yaml"
    resources:
        mem_mb=1000,  # one raw stack at a time (3 MiB at 512 px) + h5py
        runtime=lambda wc, attempt: 30 * attempt,
    params:
        expected_side=config["data"]["expected_side"],
    shell:
        '"$CBEDTDC_PYTHON" workflow_scripts/index_raw.py --raw {input.raw:q} --out {output.index:q}'
        " --expected-side {params.expected_side} 2> {log:q}"


rule index_mirror:
    input:
        folder=get_raw,  # the mirror folder of the chunk
    output:
        index="results/data/index/{stem}.json",
    log:
        "logs/index_mirror/{stem}.log",
    benchmark:
        "benchmarks/index_mirror/{stem}.tsv"
    wildcard_constraints:
        stem=r"mirror_(training|validation|testing|inference)_\d+",
    group:
        "rawfile"
    conda:
        "../envs/cbedtdc.yaml"
    resources:
        mem_mb=1000,  # one 192 KiB sample at a time
        runtime=lambda wc, attempt: 30 * attempt,
    params:
        chunk=config["data"]["mirror_chunk"],
    shell:
        '"$CBEDTDC_PYTHON" workflow_scripts/index_mirror.py --folder {input.folder:q} --stem {wildcards.stem:q}'
        " --chunk {params.chunk:q} --out {output.index:q} 2> {log:q}"


rule manifest:
    input:
        indexes=expand("results/data/index/{stem}.json", stem=STEMS),
    output:
        manifest="results/data/manifest.csv",
        quarantine="results/data/quarantine.csv",
        report="results/data/manifest_report.json",
    log:
        log="logs/manifest/manifest.log",
        quarantine="logs/manifest/quarantine.csv",  # kept when the threshold stops the run
    benchmark:
        "benchmarks/manifest/manifest.tsv"
    priority: CRITICAL
    conda:
        "../envs/cbedtdc.yaml"
    resources:
        mem_mb=4000,  # 187k manifest rows
    params:
        max_fraction=config["data"]["quarantine_max_fraction"],
        image_size=config["image_size"],
    shell:
        '"$CBEDTDC_PYTHON" workflow_scripts/manifest.py --indexes {input.indexes:q} --manifest {output.manifest:q}'
        " --quarantine {output.quarantine:q} --report {output.report:q}"
        " --max-fraction {params.max_fraction} --image-size {params.image_size} 2> {log.log:q}"
        # snakemake deletes the outputs of a failed job: keep the quarantine list beside the log
        " || {{ cp {output.quarantine:q} {log.quarantine:q} 2> /dev/null; exit 1; }}"


rule split:
    input:
        manifest="results/data/manifest.csv",
    output:
        splits="results/data/splits.csv",
        counts="results/data/class_counts.csv",
    log:
        "logs/split/split.log",
    benchmark:
        "benchmarks/split/split.tsv"
    priority: CRITICAL
    conda:
        "../envs/cbedtdc.yaml"
    params:
        resplit="--resplit" if config["data"]["resplit"] else "",
        fractions=config["data"]["split_fractions"],
        seed=config["seed"],
    shell:
        '"$CBEDTDC_PYTHON" workflow_scripts/split.py --manifest {input.manifest:q} --splits {output.splits:q}'
        " --counts {output.counts:q} {params.resplit} --fractions {params.fractions:q}"
        " --seed {params.seed} 2> {log:q}"


rule check_classes:
    input:
        counts="results/data/class_counts.csv",
    output:
        checked="results/data/run_classes.json",
    log:
        "logs/check_classes/check_classes.log",
    benchmark:
        "benchmarks/check_classes/check_classes.tsv"
    priority: CRITICAL
    conda:
        "../envs/cbedtdc.yaml"
    params:
        classes=",".join(map(str, CLASSES)),  # nothing else: a TDC setting must not retrain the flat models
    shell:
        # before any training job: every class of the run has training samples, dev and test are not empty
        '"$CBEDTDC_PYTHON" workflow_scripts/check_classes.py --counts {input.counts:q} --classes {params.classes:q}'
        " --out {output.checked:q} 2> {log:q}"


rule shard:
    input:
        raw=get_raw,
        index="results/data/index/{stem}.json",
    output:
        shard="results/shards/files/{stem}.h5",
        sidecar="results/shards/files/{stem}.json",
    log:
        "logs/shard/{stem}.log",
    benchmark:
        "benchmarks/shard/{stem}.tsv"
    priority: CRITICAL
    group:
        "rawfile"
    conda:
        "../envs/cbedtdc.yaml"
    resources:
        mem_mb=1000,  # two raw stacks at a time, whatever the file size
        runtime=lambda wc, attempt: 30 * attempt,
    params:
        image_size=config["image_size"],
    shell:
        '"$CBEDTDC_PYTHON" workflow_scripts/shard.py --raw {input.raw:q} --index {input.index:q}'
        " --shard {output.shard:q} --image-size {params.image_size} 2> {log:q}"


rule shard_mirror:
    input:
        folder=get_raw,
        index="results/data/index/{stem}.json",
    output:
        shard="results/shards/files/{stem}.h5",
        sidecar="results/shards/files/{stem}.json",
    log:
        "logs/shard_mirror/{stem}.log",
    benchmark:
        "benchmarks/shard_mirror/{stem}.tsv"
    wildcard_constraints:
        stem=r"mirror_(training|validation|testing|inference)_\d+",
    group:
        "rawfile"
    conda:
        "../envs/cbedtdc.yaml"
    resources:
        mem_mb=1000,
        runtime=lambda wc, attempt: 30 * attempt,
    params:
        image_size=config["image_size"],
    shell:
        '"$CBEDTDC_PYTHON" workflow_scripts/shard.py --folder {input.folder:q} --index {input.index:q}'
        " --shard {output.shard:q} --image-size {params.image_size} 2> {log:q}"


rule shard_index:
    input:
        splits="results/data/splits.csv",
        shards=expand("results/shards/files/{stem}.h5", stem=STEMS),
        sidecars=expand("results/shards/files/{stem}.json", stem=STEMS),
    output:
        lists=expand("results/shards/{split}.csv", split=SPLITS),
        info="results/shards/data_info.json",  # layout, bootstrap unit (material, or sample on the mirror)
    log:
        "logs/shard_index/shard_index.log",
    benchmark:
        "benchmarks/shard_index/shard_index.tsv"
    priority: CRITICAL
    conda:
        "../envs/cbedtdc.yaml"
    params:
        shard_root=lambda wc, output: Path(output.lists[0]).parent,
    shell:
        '"$CBEDTDC_PYTHON" workflow_scripts/shard_index.py --splits {input.splits:q} --sidecars {input.sidecars:q}'
        " --shard-root {params.shard_root:q} --info {output.info:q} 2> {log:q}"


rule shards:
    input:
        expand("results/shards/{split}.csv", split=SPLITS),
        "results/shards/data_info.json",
        expand("results/shards/files/{stem}.h5", stem=STEMS),  # a lost shard is rebuilt
        "results/data/class_counts.csv",
        "results/data/quarantine.csv",
