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
    check_slurm_submission,
)
from cbedtdc.config import ConfigError, check_config, coerce_types, load_schema
from cbedtdc.layout import (
    SPLITS,
    discover_raw,
    n_levels,
    rule_interpreter,
    synth_file_plan,
)


def uses_conda():
    """True under --software-deployment-method conda: each rule runs in its activated conda env."""
    settings = workflow.deployment_settings
    return settings is not None and DeploymentMethod.CONDA in settings.deployment_method


# Interpreter and MPI launcher of the rules: those of the environment Snakemake runs in (a venv's snakemake
# called by path needs no activated venv), or the rule's conda env under --software-deployment-method conda.
# ENV_PATH puts that environment's bin/ first for the launcher, so the default resources.mpi "mpiexec" is its
# own; the srun/jsrun of the cluster profiles are found further along PATH.
PYTHON, ENV_PATH = rule_interpreter(sys.executable, conda=uses_conda())

SCHEMA = Path(workflow.basedir) / "config" / "schema.yaml"
# --config train='{epochs: 3}' arrives as strings: give leaves the types the schema asks for
config.update(coerce_types(config, load_schema(SCHEMA)))
try:  # one-line errors naming the key and what to set, before snakemake's validate() fills the defaults
    CLASSES = check_classes_config(config.get("classes", "top20"))
    check_config(config, SCHEMA)
except ConfigError as err:
    raise SystemExit(f"Error: {err}") from None
validate(config, schema="../config/schema.yaml")

LEVELS = [str(k) for k in range(1, n_levels(config["tdc"]) + 1)]
GENERATE = not config["raw_dir"]
try:
    if GENERATE:
        SYNTH_PLAN = {
            f.stem: f
            for f in synth_file_plan(
                config["synth"]["n_materials"], config["synth"]["materials_per_file"]
            )
        }
        RAW = {stem: f"results/raw/{stem}.h5" for stem in SYNTH_PLAN}
    else:
        RAW = {s: str(p) for s, p in discover_raw(config["raw_dir"]).items()}
    check_run_config(config, None if GENERATE else RAW)
except (ConfigError, OSError, ValueError) as err:
    where = "config error: " if GENERATE else "config error at raw_dir: "
    prefix = "" if str(err).startswith("config error") else where
    raise SystemExit(f"Error: {prefix}{err}") from None
STEMS = sorted(RAW)


wildcard_constraints:
    stem=r"batch_(train|dev|test)_\d+",
    split="train|dev|test",
    level=r"\d+",
    loss="ce|weighted_ce|logit_adjusted|balanced_softmax",


def get_raw(wildcards):
    """Path of one raw challenge file (generated or under raw_dir)."""
    return RAW[wildcards.stem]


def is_activated(section):
    return bool(config.get(section, {}).get("activate", False))


def get_final_output():
    """Everything a complete run leaves: summary, every TDC level, the files of the report."""
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
        "results/plots/headline.png",
        "results/plots/recall.png",
        "results/plots/confusion.png",
        "results/plots/routing.png",
        "results/metrics/per_class.csv",
        "results/metrics/levels.csv",
    ]
    if GENERATE and config["synth"]["gallery"]:
        out.append("results/plots/gallery.png")
    return out


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


def synth_materials_args():
    """--n-materials N, or --split-materials TRAIN DEV TEST when the config gives a per-split mapping."""
    n = config["synth"]["n_materials"]
    if isinstance(n, dict):
        return "--split-materials {train:d} {dev:d} {test:d}".format(**n)
    return f"--n-materials {int(n):d}"


# --- TDC: levels, routing, evaluation ------------------------------------------------------
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


def is_kinematic():
    """Generated kinematic patterns obey Friedel's law (real and Bloch-mode data do not)."""
    return GENERATE and config["synth"].get("mode", "kinematic") == "kinematic"


def friedel_groups_json():
    """Groups merged in the Friedel score, as JSON; none unless the data are kinematic."""
    import json

    return json.dumps(config["evaluate"]["friedel_groups"] if is_kinematic() else [])


def data_kind():
    """What the evaluated data are, as recorded in summary.json."""
    if not GENERATE:
        return f"challenge files under {config['raw_dir']}"
    return f"generated ({config['synth'].get('mode', 'kinematic')})"


# --- TRAIN: flags of workflow_scripts/train.py, shared by train_flat and train_level -------
# Every config["train"] key except `ranks` (the launcher's -n) becomes one flag.
TRAIN_KEYS = [k for k in config["train"] if k != "ranks"]
# Shell fragment: "--arch {params.arch:q} --epochs {params.epochs:q} ..." for a rule whose params are train_params().
TRAIN_FLAGS = " ".join(f"--{k.replace('_', '-')} {{params.{k}:q}}" for k in TRAIN_KEYS)


def train_params():
    """config["train"] values (one per training flag) and the master seed, as rule params."""
    return {**{k: config["train"][k] for k in TRAIN_KEYS}, "seed": config["seed"]}


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
        "results/plots/headline.png",
        "results/plots/recall.png",
        "results/plots/confusion.png",
        "results/plots/routing.png",
    ]


# --- HEADS: features of the flat models, flat heads, the shared-backbone TDC -------------
HEAD_KEYS = [
    "kind",
    "loss",
    "sampler",
    "resample",
    "tau_norm",
    "posthoc_tau",
    "epochs",
    "temperature",
]
HEADS = {v["name"]: v for v in config.get("heads", {}).get("variants", [])}


def is_shared():
    """tdc.backbone: shared (every level a head on the features of one flat model)."""
    return config["tdc"]["backbone"] == "shared"


def head_spec(options):
    """The cbedtdc.heads options of a heads.variants entry or tdc.head, as JSON (a rule param, quoted :q)."""
    import json

    spec = {k: options[k] for k in HEAD_KEYS if k in options}
    if spec.get("kind") == "xgboost":  # the booster settings of the xgboost: section
        keys = [
            "n_estimators",
            "max_depth",
            "learning_rate",
            "subsample",
            "colsample_bytree",
            "early_stopping",
        ]
        spec["xgboost"] = {k: config["xgboost"][k] for k in keys}
    return json.dumps(spec, sort_keys=True)


def head_file(name):
    """results/heads/flat/NAME/head.{pt|json} of one heads.variants entry."""
    ext = "json" if HEADS[name].get("kind", "linear") == "xgboost" else "pt"
    return f"results/heads/flat/{name}/head.{ext}"


def head_backbone(name):
    return HEADS[name].get("backbone", "ce")


def get_head_features(wildcards):
    """Train and dev features of the flat model a head re-trains on."""
    loss = head_backbone(wildcards.head)
    return {s: f"results/features/flat/{loss}/{s}.h5" for s in ("train", "dev")}


def get_eval_heads(wildcards=None):
    """Every flat head file and the test features it is scored on (rule evaluate)."""
    out = [head_file(n) for n in HEADS]
    losses = {head_backbone(n) for n in HEADS}
    if is_shared():
        losses.add(config["tdc"]["shared_loss"])
    return out + [
        f"results/features/flat/{loss}/{s}.h5"
        for loss in sorted(losses)
        for s in ("dev", "test")
    ]


def get_eval_tdc(wildcards=None):
    """The cascade rule evaluate scores: the level ResNets and routing.json, or the shared TDC's heads."""
    if is_shared():
        return [
            "results/tdc_shared/heads/heads.json",
            "results/tdc_shared/routing.json",
        ]
    return ["results/tdc/routing.json", *level_outputs("best.pt")]


def eval_head_args():
    """--head NAME=LOSS=FILE per flat head and the shared TDC's flags (each value shell-quoted)."""
    import shlex

    args = [shlex.quote(f"{n}={head_backbone(n)}={head_file(n)}") for n in HEADS]
    out = ("--head " + " ".join(args)) if args else ""
    if is_shared():
        out += " --shared-loss " + shlex.quote(config["tdc"]["shared_loss"])
        out += " --shared-heads results/tdc_shared/heads --shared-routing results/tdc_shared/routing.json"
    return out + " --features-root results/features"


def tdc_variant():
    """Name of the TDC reading for per-variant copies: rest, rest_threshold or hard."""
    tdc = config["tdc"]
    if tdc["mode"] == "rest" and tdc["routing"] == "threshold":
        return "rest_threshold"
    return tdc["mode"]


def get_xgb_heads(wildcards=None):
    """CNN-XGBoost heads evaluated beside the CNNs (xgboost.activate) and the dev and test features they
    are scored on, else none."""
    if not is_activated("xgboost"):
        return []
    jobs = [f"flat/{loss}" for loss in config["flat"]["losses"]]
    jobs += [f"level_{level}" for level in LEVELS]
    return [f"results/xgboost/{j}/head.json" for j in jobs] + [
        f"results/features/{j}/{s}.h5" for j in jobs for s in ("dev", "test")
    ]


def xgb_flags():
    """Booster flags of workflow_scripts/xgboost_head.py from config["xgboost"], shell-quoted."""
    import shlex

    keys = [
        "n_estimators",
        "max_depth",
        "learning_rate",
        "subsample",
        "colsample_bytree",
    ]
    keys.append("early_stopping")
    return " ".join(
        f"--{k.replace('_', '-')} {shlex.quote(str(config['xgboost'][k]))}"
        for k in keys
    )


def check_tdc_config():
    """Fail at parse time, in one line, on level sizes that cannot cover the run's classes."""
    tdc = config["tdc"]
    if tdc["levels"] == "ratio" and tdc["backbone"] != "shared":
        raise SystemExit(
            "Error: config error at tdc.levels: ratio plans the number of levels from the data, which the "
            "own-backbone DAG needs at parse time; set tdc.backbone: shared, or tdc.levels: explicit or auto"
        )
    if (
        tdc["backbone"] == "shared"
        and tdc["shared_loss"] not in config["flat"]["losses"]
    ):
        raise SystemExit(
            f"Error: config error at tdc.shared_loss: {tdc['shared_loss']} is not among flat.losses "
            f"{config['flat']['losses']}; add it there or pick one of them"
        )
    if tdc["backbone"] == "shared" and is_activated("xgboost"):
        raise SystemExit(
            "Error: config error at xgboost.activate: its heads sit on the own-backbone level ResNets; with "
            "tdc.backbone: shared set tdc.head.kind: xgboost (or add an xgboost entry to heads.variants) instead"
        )
    for name, v in HEADS.items():
        if v.get("backbone", "ce") not in config["flat"]["losses"]:
            raise SystemExit(
                f"Error: config error at heads.variants: head {name} uses backbone {v.get('backbone', 'ce')}, "
                f"not among flat.losses {config['flat']['losses']}; add it there or change the head's backbone"
            )
    if tdc["levels"] == "explicit":
        sizes = tdc["level_sizes"]
        if sum(sizes) != len(CLASSES):
            raise SystemExit(
                f"Error: config error at tdc.level_sizes: {sizes} add up to {sum(sizes)}, the run has "
                f"{len(CLASSES)} classes; change tdc.level_sizes or set tdc.levels: auto"
            )
        if tdc["mode"] == "rest":
            smallest = sizes[-1]  # the other levels add a "rest" output
        else:
            smallest = min(sizes) if tdc["hard_outputs"] == "own" else sizes[0]
        if smallest < 2:
            raise SystemExit(
                f"Error: config error at tdc.level_sizes: {sizes} leaves a level with one output; "
                "a classifier needs at least 2"
            )
    elif tdc["n_levels"] > len(CLASSES):
        raise SystemExit(
            f"Error: config error at tdc.n_levels: {tdc['n_levels']} levels for {len(CLASSES)} classes"
        )


check_tdc_config()


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
