"""Config in, paths and params out: the pure functions behind ``rules/common.smk``.

The DAG is static: nothing here reads results. Every function takes the validated config (defaults filled
from ``config/schema.yaml``) and returns paths or rule params; a JSON or flag string is meant for a rule param
quoted with ``:q`` (or is made of shell-quoted values already, as its docstring says). ``root`` is the folder
of one training run: ``results`` for the run itself, ``results/replicates/seed_<s>`` for a replicate seed
(the data stage and the seed-free feature sources, e.g. ``symmetry``, stay under ``results``).
"""

from __future__ import annotations

import json

from cbedtdc.features import registry
from cbedtdc.features.spec import split_file
from cbedtdc.heads.options import DEFAULTS as HEAD_DEFAULTS
from cbedtdc.heads.options import XGBOOST_DEFAULTS

__all__ = ["HEAD_OPTIONS", "head_spec", "head_feature_dirs", "feature_files", "features_folders", "features_job",
           "head_file", "heads_json", "shared_json", "tdc_sources", "tdc_variant", "train_keys",
           "train_params", "replicate_seeds", "replicate_root", "synth_materials_args", "synth_args", "friedel_groups_arg", "data_kind"]

#: Options of a head that heads.variants entries and tdc.head may set (name, backbone, features are the rules').
HEAD_OPTIONS = frozenset(HEAD_DEFAULTS) - {"xgboost"}


def head_spec(options: dict, config: dict) -> str:
    """The :mod:`cbedtdc.heads` options of a heads.variants entry or tdc.head, as JSON; the booster settings of
    the ``xgboost:`` section go with an xgboost head.

    >>> head_spec({"name": "la", "loss": "logit_adjusted", "features": ["cnn"]}, {})
    '{"loss": "logit_adjusted"}'
    """
    spec = {k: v for k, v in options.items() if k in HEAD_OPTIONS}
    if spec.get("kind") == "xgboost":
        spec["xgboost"] = {k: config["xgboost"][k] for k in XGBOOST_DEFAULTS}
    return json.dumps(spec, sort_keys=True)


def head_feature_dirs(options: dict, backbone: str | None = None, root: str = "results") -> list[str]:
    """Folders of the feature sources of a head (:func:`cbedtdc.features.registry.head_feature_dirs`: a backbone
    source in ``root``, the seed-free ones under ``results``).

    >>> head_feature_dirs({"features": ["cnn", "symmetry"], "backbone": "ce"}, root="results/replicates/seed_1")
    ['results/replicates/seed_1/features/flat/ce', 'results/features/symmetry']
    """
    return registry.head_feature_dirs(options["features"], backbone or options.get("backbone"), root)


def feature_files(dirs, splits) -> list[str]:
    """``{dir}/{split}.h5`` of every folder and split."""
    return [str(split_file(d, s)) for d in dirs for s in splits]


def features_folders() -> str:
    """Rule ``features``' wildcard ``folder``: every folder under ``features/`` a registered source writes."""
    return registry.folder_pattern()


def features_job(folder: str, root: str = "results") -> dict:
    """What rule ``features`` runs for one folder: the source's name, its checkpoint (``""`` for a source without
    a backbone) and whether it uses the rule's threads.

    >>> features_job("flat/ce", "results/replicates/seed_2")
    {'source': 'cnn', 'model': 'results/replicates/seed_2/flat/ce/best.pt', 'threads': True}
    >>> features_job("symmetry")
    {'source': 'symmetry', 'model': '', 'threads': False}
    """
    src = registry.source_of_folder(folder)
    return {"source": src.name, "model": src.checkpoint(folder, root) if src.backbone else "", "threads": src.threads}


def tdc_sources(config: dict, root: str = "results") -> list[str]:
    """The feature folders of the shared-backbone TDC's level heads."""
    return head_feature_dirs(config["tdc"]["head"], config["tdc"]["shared_loss"], root)


def head_file(name: str, heads: dict, root: str = "results") -> str:
    """``<root>/heads/flat/NAME/head.{pt|json}`` of one heads.variants entry."""
    ext = "json" if heads[name]["kind"] == "xgboost" else "pt"
    return f"{root}/heads/flat/{name}/head.{ext}"


def heads_json(heads: dict, root: str = "results") -> str:
    """The flat heads for ``workflow_scripts/evaluate.py --heads``: file, backbone, sources and their folders."""
    return json.dumps({n: {"path": head_file(n, heads, root), "backbone": v["backbone"], "features": v["features"],
                           "dirs": head_feature_dirs(v, root=root)} for n, v in heads.items()})


def shared_json(config: dict, root: str = "results") -> str:
    """The shared-backbone TDC for ``workflow_scripts/evaluate.py --shared``; ``{}`` with own backbones."""
    if config["tdc"]["backbone"] != "shared":
        return "{}"
    return json.dumps({"backbone": config["tdc"]["shared_loss"], "features": config["tdc"]["head"]["features"],
                       "dirs": tdc_sources(config, root), "heads": f"{root}/tdc_shared/heads",
                       "routing": f"{root}/tdc_shared/routing.json"})


def tdc_variant(config: dict) -> str:
    """Name of the TDC reading for per-variant copies of the summary (:func:`cbedtdc.cascade.routing.reading_name`).

    >>> tdc_variant({"tdc": {"mode": "rest", "routing": "threshold"}})
    'rest_threshold'
    """
    from cbedtdc.cascade.routing import reading_name

    return reading_name(config["tdc"]["mode"], config["tdc"]["routing"])


def train_keys(config: dict) -> list[str]:
    """Every ``config["train"]`` key but ``ranks`` (the launcher's ``-n``) is one flag of ``workflow_scripts/train.py``."""
    return [k for k in config["train"] if k != "ranks"]


def train_params(config: dict) -> dict:
    """``config["train"]`` values (one per training flag) and the master seed, as rule params."""
    return {**{k: config["train"][k] for k in train_keys(config)}, "seed": config["seed"]}


def replicate_seeds(config: dict) -> list[int]:
    """Training seeds of the replicates beyond the run's own (``replicates``: a count or a list of seeds).

    >>> replicate_seeds({"seed": 0, "replicates": 3}), replicate_seeds({"seed": 5, "replicates": [5, 7, 9]})
    ([1, 2], [7, 9])
    """
    rep = config.get("replicates", 1)
    seeds = list(range(config["seed"], config["seed"] + int(rep))) if isinstance(rep, int) else [int(s) for s in rep]
    return [s for s in seeds if s != config["seed"]]


def replicate_root(seed) -> str:
    """The folder of one replicate's training, heads and evaluation."""
    return f"results/replicates/seed_{seed}"


def synth_materials_args(config: dict) -> str:
    """``--n-materials N``, or ``--split-materials TRAIN DEV TEST`` for a per-split mapping."""
    n = config["synth"]["n_materials"]
    if isinstance(n, dict):
        return "--split-materials {train:d} {dev:d} {test:d}".format(**n)
    return f"--n-materials {int(n):d}"


def synth_args(config: dict, classes, **override) -> str:
    """The generator's flags for the run's settings (``workflow_scripts/synthesize.py``: all but ``--out``,
    ``--first-material``, ``--file-materials``, ``--tail-min-train`` and ``--progress``), shell-quoted, for the rules
    that render the run's own materials again (transfer, robustness); ``override`` sets a flag by its name
    (``energies=1``, ``mode="multislice"``, ``thickness=(500, 700)``).

    >>> synth_args({"seed": 0, "synth": {"n_materials": 60, "energies_per_material": 2, "image_size": 32,
    ...             "frequency": "real", "floor": 1, "zone_axes": "lowindex", "noise": True, "holz": False,
    ...             "mistilt": 0.1, "mode": "kinematic", "phonons": 4, "slice_thickness": 2.0, "device": "auto"}},
    ...            [14, 225], mistilt=0.2, thickness=(500, 700.0))
    '--n-materials 60 --classes 14,225 --energies 2 --image-size 32 --frequency real --floor 1 --zone-axes lowindex
     --noise --no-holz --mistilt 0.2 --mode kinematic --phonons 4 --slice-thickness 2.0 --device auto --seed 0
     --thickness 500 700.0'
    """
    import shlex

    s = config["synth"]
    flags = {"classes": ",".join(map(str, classes)), "energies": s["energies_per_material"],
             "image_size": s["image_size"], "frequency": s["frequency"], "floor": s["floor"],
             "zone_axes": s["zone_axes"], "noise": bool(s["noise"]), "holz": bool(s["holz"]), "mistilt": s["mistilt"],
             "mode": s["mode"], "phonons": s["phonons"], "slice_thickness": s["slice_thickness"],
             "device": s["device"], "seed": config["seed"]}
    unknown = sorted(set(override) - set(flags) - {"thickness"})
    if unknown:
        raise ValueError(f"synth_args: no generator flag {', '.join(unknown)}")
    flags.update(override)
    out = [synth_materials_args(config)]
    for key, value in flags.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else f"--no-{key}")
        elif isinstance(value, (list, tuple)):
            out.append(" ".join([flag, *(shlex.quote(str(v)) for v in value)]))
        else:
            out.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(out)


def friedel_groups_arg(config: dict, generate: bool) -> str:
    """Groups merged in the Friedel score: ``auto`` (evaluate derives them), JSON, or none unless the data are
    generated kinematic patterns (real and Bloch-mode data break Friedel's law)."""
    kinematic = generate and config["synth"].get("mode", "kinematic") == "kinematic"
    groups = config["evaluate"]["friedel_groups"] if kinematic else []
    return groups if groups == "auto" else json.dumps(groups)


def data_kind(config: dict, generate: bool, stems=()) -> str:
    """What the evaluated data are, as recorded in summary.json (``stems``: the raw files or mirror chunks)."""
    if not generate:
        from cbedtdc.layout import raw_data_kind

        return raw_data_kind(config["raw_dir"], stems)
    return f"generated ({config['synth'].get('mode', 'kinematic')})"
