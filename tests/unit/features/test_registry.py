"""The one list of feature sources (cbedtdc.features.registry): the schema's enum, the folders, the checks."""

from __future__ import annotations

import re

import numpy as np
import pytest
import yaml

from cbedtdc import dag
from cbedtdc.config import schema_path
from cbedtdc.errors import InputError
from cbedtdc.features import registry
from cbedtdc.features.spec import FeatureSource, descriptor_source


def schema_sources(path) -> list[str]:
    """The enum of a head's ``features`` items in a schema file; tdc.head and heads.variants must agree."""
    props = yaml.safe_load(path.read_text())["properties"]
    tdc = props["tdc"]["properties"]["head"]["properties"]["features"]["items"]["enum"]
    flat = props["heads"]["properties"]["variants"]["items"]["properties"]["features"]["items"]["enum"]
    assert tdc == flat, f"{path}: tdc.head.features {tdc} and heads.variants features {flat} differ"
    return tdc


def test_the_schema_enum_is_the_registry():
    assert schema_sources(schema_path()) == list(registry.SOURCES), \
        "config/schema.yaml's features enum must list cbedtdc.features.registry.SOURCES, in its order"


def test_every_folder_belongs_to_one_source_and_each_source_to_its_folders():
    for folder, name in [("flat/ce", "cnn"), ("flat/weighted_ce", "cnn"), ("level_12", "cnn"),
                         ("symmetry", "symmetry")]:
        assert registry.source_of_folder(folder).name == name
        assert re.fullmatch(dag.features_folders(), folder)
    for name, src in registry.SOURCES.items():
        own = src.folder_of("ce")
        assert [s.name for s in registry.SOURCES.values() if re.fullmatch(s.pattern, own)] == [name]
    with pytest.raises(InputError, match="written by 0 feature sources"):
        registry.source_of_folder("nothing")
    assert not re.fullmatch(dag.features_folders(), "symmetry/extra")


def test_folders_of_a_head_by_training_root():
    assert dag.head_feature_dirs({"features": ["symmetry", "cnn"], "backbone": "weighted_ce"},
                                 root="results/replicates/seed_3") == [
        "results/features/symmetry", "results/replicates/seed_3/features/flat/weighted_ce"]
    assert dag.features_job("level_2", "results/replicates/seed_3") == {
        "source": "cnn", "model": "results/tdc/level_2/best.pt", "threads": True}
    with pytest.raises(InputError, match="needs the flat model"):
        registry.feature_dir("cnn")
    with pytest.raises(InputError, match="must be one of cnn, symmetry"):
        registry.feature_dir("cnnn", "ce")


def test_a_source_description_is_checked():
    def describe(x):
        return np.zeros((len(x), 1), np.float32), [""] * len(x)

    with pytest.raises(InputError, match="lower-case"):
        descriptor_source("Bad-Name", "x", describe, ["a"], {"version": "1"})
    with pytest.raises(InputError, match="need a 'version'"):
        descriptor_source("ok", "x", describe, ["a"], {})
    with pytest.raises(InputError, match="with a backbone has"):
        FeatureSource(name="half", summary="x", folder="flat/{backbone}", extract=print, batch_features=print,
                      backbone=True)


def test_backbone_check_reads_the_registry():
    from cbedtdc.checks import check_tdc_config
    from cbedtdc.config import ConfigError

    tdc = {"levels": "explicit", "level_sizes": [2, 2], "mode": "rest", "hard_outputs": "cumulative", "n_levels": 2,
           "backbone": "shared", "shared_loss": "weighted_ce", "head": {"features": ["symmetry"]}}
    config = {"tdc": tdc, "flat": {"losses": []}, "heads": {"variants": [{"name": "s", "features": ["symmetry"]}]}}
    check_tdc_config(config, [1, 2, 3, 14])  # no source needs a backbone: no flat model is needed
    config["heads"]["variants"].append({"name": "c", "features": ["symmetry", "cnn"], "backbone": "ce"})
    with pytest.raises(ConfigError, match="head c uses backbone ce, not among flat.losses"):
        check_tdc_config(config, [1, 2, 3, 14])
