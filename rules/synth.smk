# Built-in generator (only when raw_dir is empty): one job per batch_{split}_N.h5 file of the static plan
# (cbedtdc.layout.synth_file_plan), so generation spreads over cores and cluster nodes; every job computes the
# same class plan from config + seed. synth.tail_min_train adds train files of extra materials for the rare classes
# after the plain ones (only those jobs get --tail-min-train). Then a gallery with one stack per class.


rule synthesize:
    output:
        raw="results/raw/{stem}.h5",
    log:
        "logs/synthesize/{stem}.log",
    benchmark:
        "benchmarks/synthesize/{stem}.tsv"
    priority: CRITICAL
    conda:
        "../envs/cbedtdc.yaml"
    resources:
        mem_mb=1000,  # one material's stacks + its reflection list (multislice: potential of ~1e5 atoms)
        runtime=lambda wc, attempt: 30 * attempt,
        gpu=get_synth_gpus(),  # 1 in multislice mode (device auto/gpu): SLURM --gpus=1; unused locally
        gpu_launch="env",  # runs the job where gpu=1; profiles: a jsrun resource set with a GPU on Summit
    params:
        launch=get_synth_launch,
        first=get_synth_first,
        n_file=get_synth_count,
        materials=dag.synth_materials_args(config),  # integers only (schema-checked)
        classes=",".join(map(str, CLASSES)),
        energies=config["synth"]["energies_per_material"],
        size=config["synth"]["image_size"],
        frequency=config["synth"]["frequency"],
        floor=config["synth"]["floor"],
        zone_axes=config["synth"]["zone_axes"],
        noise="--noise" if config["synth"]["noise"] else "--no-noise",
        holz="--holz" if config["synth"]["holz"] else "--no-holz",
        mistilt=config["synth"]["mistilt"],
        mode=config["synth"]["mode"],
        phonons=config["synth"]["phonons"],
        slice_thickness=config["synth"]["slice_thickness"],
        device=config["synth"]["device"],
        tail=get_synth_tail,
        seed=config["seed"],
    shell:
        '{params.launch} "$CBEDTDC_PYTHON" workflow_scripts/synthesize.py --out {output.raw:q}'
        " --first-material {params.first:q}"
        " --file-materials {params.n_file:q} {params.materials} --classes {params.classes:q}"
        " --energies {params.energies:q} --image-size {params.size:q} --frequency {params.frequency:q}"
        " --floor {params.floor:q} --zone-axes {params.zone_axes:q} {params.noise} {params.holz}"
        " --mistilt {params.mistilt:q} --mode {params.mode:q} --phonons {params.phonons:q}"
        " --slice-thickness {params.slice_thickness:q} --device {params.device:q} {params.tail} --seed {params.seed:q}"
        " 2> {log:q}"


rule gallery:
    input:
        raw=[RAW[stem] for stem in STEMS],
    output:
        png=report(
            "results/plots/gallery.png",
            caption="../report/gallery.rst",
            category="Data",
        ),
    log:
        "logs/gallery/gallery.log",
    benchmark:
        "benchmarks/gallery/gallery.tsv"
    conda:
        "../envs/cbedtdc.yaml"
    resources:
        mem_mb=2000,
    params:
        classes=",".join(map(str, CLASSES)),
    shell:
        '"$CBEDTDC_PYTHON" workflow_scripts/gallery.py --raw {input.raw:q} --out {output.png:q}'
        " --classes {params.classes:q} 2> {log:q}"
