# Config in, paths out. The DAG is static: nothing here reads results.
import os
import shutil
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod
from snakemake.utils import validate

from cbedtdc.checks import (
    check_classes_config,
    check_lsf_submission,
    check_run_config,
    check_tdc_config,
    check_slurm_submission,
)
from cbedtdc import dag
from cbedtdc.config import ConfigError, check_config, coerce_types, load_schema
from cbedtdc.layout import SPLITS, discover_raw, n_levels, shell_prefix, synth_file_plan


def uses_conda():
    """True under --software-deployment-method conda: each rule runs in its activated conda env."""
    settings = workflow.deployment_settings
    return settings is not None and DeploymentMethod.CONDA in settings.deployment_method


# Interpreter and MPI launcher of the rules: those of the environment Snakemake runs in (a venv's snakemake
# called by path needs no activated venv), or the rule's conda env under --software-deployment-method conda.
# The prefix of every shell command sets $CBEDTDC_PYTHON and puts that environment's bin/ first on PATH (so the
# default resources.mpi "mpiexec" is its own; the srun/jsrun of the cluster profiles are found further along).
# A prefix is not part of a rule's code: moving the venv reruns nothing.
shell.prefix(shell_prefix(sys.executable, conda=uses_conda()))

SCHEMA = Path(workflow.basedir) / "config" / "schema.yaml"
# --config train='{epochs: 3}' arrives as strings: give leaves the types the schema asks for
config.update(coerce_types(config, load_schema(SCHEMA)))
try:  # one-line errors naming the key and what to set, before snakemake's validate() fills the defaults
    CLASSES = check_classes_config(config.get("classes", "top20"))
    check_config(config, SCHEMA)
except ConfigError as err:
    raise SystemExit(f"Error: {err}") from None
validate(config, schema="../config/schema.yaml")


def synth_tail_materials():
    """Extra training materials of synth.tail_min_train (cbedtdc.synth.tail_per_class; 0 when off)."""
    if not config["synth"]["tail_min_train"]:
        return 0
    from cbedtdc.synth import SynthConfig

    return SynthConfig.from_config(config).n_tail


LEVELS = [str(k) for k in range(1, n_levels(config["tdc"]) + 1)]
GENERATE = not config["raw_dir"]
try:
    if GENERATE:
        SYNTH_PLAN = {
            f.stem: f
            for f in synth_file_plan(
                config["synth"]["n_materials"],
                config["synth"]["materials_per_file"],
                synth_tail_materials(),
            )
        }
        RAW = {stem: f"results/raw/{stem}.h5" for stem in SYNTH_PLAN}
    else:
        RAW = {  # challenge files, or chunks of STEMDL mirror folders (stem -> folder)
            s: str(p)
            for s, p in discover_raw(
                config["raw_dir"], config["data"]["mirror_chunk"]
            ).items()
        }
    check_run_config(config, None if GENERATE else RAW)
except (ConfigError, OSError, ValueError) as err:
    where = "config error: " if GENERATE else "config error at raw_dir: "
    prefix = "" if str(err).startswith("config error") else where
    raise SystemExit(f"Error: {prefix}{err}") from None
STEMS = sorted(RAW)
HEADS = {v["name"]: v for v in config["heads"]["variants"]}
REPLICATES = dag.replicate_seeds(
    config
)  # training seeds beyond config["seed"] (rules/replicates.smk)
try:  # one line naming the key: level sizes that cannot cover the run's classes, untrained backbones
    check_tdc_config(config, CLASSES)
except ConfigError as err:
    raise SystemExit(f"Error: {err}") from None


wildcard_constraints:
    stem=r"batch_(train|dev|test)_\d+",
    split="train|dev|test",
    level=r"\d+",
    loss="ce|weighted_ce|logit_adjusted|balanced_softmax",
    folder=dag.features_folders(),  # every folder of a registered feature source
    rseed=r"\d+",


# Threads of every job that runs torch or XGBoost: what one training job uses (ranks x threads per rank).
THREADS = config["train"]["ranks"] * config["train"]["threads_per_rank"]
# Scheduling priority of the critical path, data stage -> flat training: on a few cores a side job that is ready
# early (the transfer's multislice renderings, the descriptors) must not hold the cores that training waits for.
CRITICAL = 10


def get_raw(wildcards):
    """Path of one raw challenge file (generated or under raw_dir)."""
    return RAW[wildcards.stem]


def is_shared():
    """tdc.backbone: shared (every level a head on the same feature sources)."""
    return config["tdc"]["backbone"] == "shared"


def get_final_output():
    """Everything a complete run leaves: summary, every TDC level, the files of the report, the replicates."""
    return [
        "results/metrics/summary.json",
        *get_tdc_final_output(),
        *get_report_files(),
    ]


def get_report_files():
    """Every file the report shows: figures, tables, the run's configuration (the target of `make report`)."""
    out = [
        "results/run_config.yaml",
        "results/plots/headline.csv",
        "results/plots/variants.csv",
    ]
    out += [f"results/plots/{name}.png" for name in PLOTS]
    out += ["results/metrics/per_class.csv", "results/metrics/levels.csv"]
    if GENERATE and config["synth"]["gallery"]:
        out.append("results/plots/gallery.png")
    if REPLICATES:
        out.append(
            "results/metrics/replicates.csv"
        )  # rule replicates (rules/replicates.smk)
    return out + get_robustness_report_files()


PLOTS = [
    "headline",
    "recall",
    "confusion",
    "routing",
    "hierarchy",
    "calibration",
    "selective",
]


def run_config_json():
    """The run's configuration (defaults filled) as JSON, for rule run_config."""
    import json

    return json.dumps(config, sort_keys=True)


# --- SYNTH: the built-in generator ---------------------------------------------------------
def get_synth_first(wildcards):
    """Index (within its split) of the first material of a generated file."""
    return SYNTH_PLAN[wildcards.stem].first_material


def get_synth_count(wildcards):
    """Number of materials in a generated file."""
    return SYNTH_PLAN[wildcards.stem].n_materials


def get_synth_tail(wildcards):
    """--tail-min-train for the files of tail materials only: the plain files' commands stay those of a run
    without the tail, so switching it on adds jobs and reruns none."""
    if SYNTH_PLAN[wildcards.stem].tail:
        return f"--tail-min-train {int(config['synth']['tail_min_train'])}"
    return ""


def get_synth_gpus():
    """GPUs of one synthesize job: 1 for abTEM multislice on device auto or gpu (cluster profiles pass it on)."""
    synth = config["synth"]
    return int(synth["mode"] == "multislice" and synth["device"] != "cpu")


def get_synth_launch(wildcards, resources):
    """Launcher of one synthesize job: resources.gpu_launch (jsrun on Summit) when it uses a GPU, else none."""
    return resources.gpu_launch if get_synth_gpus() else ""


# --- TRAIN and TDC: flags of workflow_scripts/train.py, levels ------------------------------
TRAIN_KEYS = dag.train_keys(config)
# Shell fragment: "--arch {params.arch:q} --epochs {params.epochs:q} ..." for a rule whose params are train_params.
TRAIN_FLAGS = " ".join(f"--{k.replace('_', '-')} {{params.{k}:q}}" for k in TRAIN_KEYS)
# A TDC level gets its epochs (its budget) from its args.txt, once: the same flags without train.epochs and
# train.images (the flat budget, already shared by the levels in levels.json).
LEVEL_TRAIN_FLAGS = " ".join(
    f"--{k.replace('_', '-')} {{params.{k}:q}}"
    for k in TRAIN_KEYS
    if k not in ("epochs", "images")
)


def get_prev_missed(wildcards):
    """Hard reading: level k > 1 trains on what level k-1 missed (a DAG edge); rest reading: none."""
    k = int(wildcards.level)
    if config["tdc"]["mode"] == "hard" and k > 1:
        return [f"results/tdc/level_{k - 1}/missed.csv"]
    return []


def get_prev_runs(wildcards):
    """Hard reading: train.json of levels 1..k-1 (their images seen set level k's budget)."""
    k = int(wildcards.level)
    if config["tdc"]["mode"] == "hard":
        return [f"results/tdc/level_{j}/train.json" for j in range(1, k)]
    return []


def level_outputs(name, levels=None):
    """``results/tdc/level_{k}/{name}`` for every level (default) or the given ones."""
    return expand(
        f"results/tdc/level_{{level}}/{name}",
        level=LEVELS if levels is None else levels,
    )


def get_tdc_final_output():
    """What a complete TDC run leaves: every level, the routing, the figures (for rule all and --report)."""
    if is_shared():
        return [
            "results/tdc_shared/heads/heads.json",
            "results/tdc_shared/routing.json",
        ]
    return [
        "results/tdc/routing.json",
        *level_outputs("best.pt"),
        *level_outputs("missed.csv", LEVELS[:-1]),
    ]


# --- HEADS and EVALUATE: feature sources, flat heads, the shared TDC, per training root ------
TDC_SOURCES = dag.tdc_sources(config)


def get_head_features(wildcards):
    """Train and dev files of every feature source of a flat head."""
    dirs = dag.head_feature_dirs(HEADS[wildcards.head], root=root_of(wildcards))
    return dag.feature_files(dirs, ("train", "dev"))


def get_features_model(wildcards):
    """The checkpoint a backbone source's folder is computed through (a flat model or an own-backbone level)."""
    model = dag.features_job(wildcards.folder, root_of(wildcards))["model"]
    return {"model": model} if model else {}


def features_model_args(wildcards, input):
    """--model of a backbone source's features job (shell-quoted), nothing for a source without a backbone."""
    import shlex

    return f"--model {shlex.quote(input.model)}" if "model" in input.keys() else ""


def get_features_threads(wildcards):
    """Threads of a features job: the torch threads of a training job for a source that uses them, else one."""
    return THREADS if dag.features_job(wildcards.folder)["threads"] else 1


def root_of(wildcards):
    """The training root of a job: results, or a replicate's folder (wildcard rseed)."""
    seed = getattr(wildcards, "rseed", None)
    return "results" if seed is None else dag.replicate_root(seed)


def get_eval_inputs(wildcards):
    """The heads, the cascade and every features file evaluate scores, in one training root."""
    root = root_of(wildcards)
    dirs = {d for v in HEADS.values() for d in dag.head_feature_dirs(v, root=root)}
    dirs |= set(dag.tdc_sources(config, root)) if is_shared() else set()
    out = [dag.head_file(n, HEADS, root) for n in HEADS]
    out += dag.feature_files(sorted(dirs), ("dev", "test"))
    if is_shared():
        return out + [
            f"{root}/tdc_shared/heads/heads.json",
            f"{root}/tdc_shared/routing.json",
        ]
    return out + ["results/tdc/routing.json", *level_outputs("best.pt")]


# --- ROBUSTNESS and TRANSFER (rules/robustness.smk) -----------------------------------------
def robustness_on():
    """robustness.activate on challenge HDF5 data (generated or raw_dir); the STEMDL mirror is log-scaled already."""
    from cbedtdc.layout import raw_layout

    mirror = not GENERATE and raw_layout(STEMS) == "stemdl_mirror"
    return config["robustness"]["activate"] and not mirror


def transfer_modes():
    """The other intensity models of transfer.modes; none with raw_dir set (no generator) or transfer off."""
    if not (GENERATE and config["transfer"]["activate"]):
        return []
    return [m for m in config["transfer"]["modes"] if m != config["synth"]["mode"]]


def transfer_plan():
    """{part: (first material, materials)} of the transfer files (the first test materials)."""
    if not transfer_modes():
        return {}
    from cbedtdc.evaluate.transfer import transfer_file_plan
    from cbedtdc.synth import SynthConfig

    t = config["transfer"]
    test = SynthConfig.from_config(config).split_counts["test"]
    return dict(
        enumerate(transfer_file_plan(t["n_materials"], t["materials_per_file"], test))
    )


TRANSFER_PLAN = transfer_plan()


def get_transfer_files(mode):
    """The transfer files of one mode."""
    return [f"results/transfer/{mode}/batch_test_{part}.h5" for part in TRANSFER_PLAN]


def get_transfer_rendered(wildcards, input):
    """--rendered MODE=FILE of every transfer file (shell-quoted)."""
    import shlex

    pairs = [f"{m}={f}" for m in transfer_modes() for f in get_transfer_files(m)]
    return " ".join(shlex.quote(p) for p in pairs)


def robustness_renderings():
    """{(perturbation, strength as written in paths): generator setting} of robustness.rendered (the first test
    materials rendered with more mistilt or thicker); none with raw_dir set (no generator) or robustness off.
    """
    if not (GENERATE and robustness_on()):
        return {}
    from cbedtdc.evaluate.robustness import rendered_settings
    from cbedtdc.errors import InputError

    try:
        settings = rendered_settings(
            config["robustness"]["rendered"], config["synth"]["mistilt"]
        )
    except InputError as err:
        raise SystemExit(f"Error: {err}") from None
    return {(p, str(s)): v for (p, s), v in settings.items()}


RENDERINGS = robustness_renderings()


def get_rendered_files():
    """The rendered file of every robustness rendering."""
    return [f"results/robustness/{p}/{s}/batch_test_0.h5" for p, s in RENDERINGS]


def get_robustness_rendered(wildcards, input):
    """--rendered PERTURBATION=STRENGTH=FILE of every rendering (shell-quoted), nothing when there is none."""
    import shlex

    pairs = [f"{p}={s}={f}" for (p, s), f in zip(RENDERINGS, get_rendered_files())]
    return " ".join(["--rendered", *map(shlex.quote, pairs)]) if pairs else ""


def get_rendering_materials(wildcards):
    """Materials of a rendered file: the first robustness.rendered.n_materials test materials (at most the split's)."""
    from cbedtdc.synth import SynthConfig

    test = SynthConfig.from_config(config).split_counts["test"]
    return min(config["robustness"]["rendered"]["n_materials"], test)


def get_rendering_args(wildcards):
    """The run's generator flags with one rendering's mistilt or thickness range (shell-quoted)."""
    key = (wildcards.perturbation, wildcards.strength)
    if key not in RENDERINGS:
        raise ValueError(
            f"{key[0]} {key[1]} is not in robustness.rendered: add it there to render it"
        )
    return dag.synth_args(config, CLASSES, **RENDERINGS[key])


def get_transfer_args(wildcards):
    """The run's generator flags in another mode, one energy (100 keV), transfer.phonons (shell-quoted)."""
    return dag.synth_args(
        config,
        CLASSES,
        energies=1,
        mode=wildcards.mode,
        phonons=config["transfer"]["phonons"],
    )


def get_run_models():
    """Every model robustness and transfer may score (the headline flat model is chosen on dev by evaluate)."""
    flat = expand("results/flat/{loss}/best.pt", loss=config["flat"]["losses"])
    return flat + [dag.head_file(n, HEADS) for n in HEADS] + get_tdc_final_output()


def get_robustness_report_files():
    """robustness.csv, its figure and transfer.csv when they are on."""
    out = []
    if robustness_on():
        out += ["results/metrics/robustness.csv", "results/plots/robustness.png"]
    if transfer_modes():
        out.append("results/metrics/transfer.csv")
    return out


def lsf_project_setting():
    """The profile's default-resources.lsf_project as written (summit profile: "$LSF_PROJECT"), or None."""
    resources = workflow.resource_settings.default_resources
    value = resources.get("lsf_project") if hasattr(resources, "get") else None
    return getattr(value, "raw", value)


onstart:
    # before the first job is submitted (never in a dry run): bsub present and the LSF project set;
    # under SLURM every job fits a node of its partition (sinfo) and training ranks start with srun
    try:
        check_lsf_submission(
            getattr(workflow.executor_settings, "submit_cmd", None),
            lsf_project_setting(),
            os.environ,
            shutil.which,
        )
        check_slurm_submission(
            getattr(workflow.executor_plugin, "name", None), workflow.dag
        )
    except ConfigError as err:
        raise SystemExit(f"Error: {err}") from None
