"""One source per setting: config/schema.yaml's defaults are the defaults. config/config.yaml repeats them (with
comments), and every defaults table of the library and of the CLIs in workflow_scripts/ is generated from them
or equal to them; the docs quote them. Each mismatch names the key and the two places."""

from __future__ import annotations

import re
from importlib import util
from pathlib import Path

import pytest
import yaml

from cbedtdc.config import schema_defaults, schema_path
from conftest import REPO

ROOT = REPO
CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
DEFAULTS = schema_defaults()

# keys the schema gives a default that config/config.yaml leaves out on purpose (comment beside each)
NOT_IN_CONFIG = {
    "tdc.head.tau_norm", "tdc.head.posthoc_tau", "tdc.head.epochs", "tdc.head.temperature",  # rarely changed
}


def leaves(tree: dict, prefix: str = "") -> dict:
    """``{"train.epochs": 3, ...}``: the leaves of a nested config (lists are values)."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(leaves(value, name + "."))
        else:
            out[name] = value
    return out


def mismatches(table: dict, expected: dict, where: str, source: str = "config/schema.yaml") -> list[str]:
    """One line per key of ``table`` whose value differs from ``expected`` (or that ``expected`` lacks)."""
    out = []
    for key, value in table.items():
        if key not in expected:
            out.append(f"{where}: key {key!r} has no default in {source}")
        elif value != expected[key] or isinstance(value, bool) != isinstance(expected[key], bool):
            out.append(f"{where}: {key} = {value!r}, {source} says {expected[key]!r}")
    return out


def assert_matches_schema(table: dict, section: str, where: str, rename: dict | None = None) -> None:
    """Assert that a defaults ``table`` (e.g. a module's ``DEFAULTS`` dict or a CLI's parser defaults) equals the
    schema's defaults of ``section`` (``"xgboost"``, ``"tdc.head"``), key by key. ``rename`` maps the table's
    names to the schema's (``{"how": "levels"}``). Use it for every new defaults table (the heads' and the XGBoost
    defaults join here when they move into ``cbedtdc/heads/``)."""
    expected = DEFAULTS
    for part in section.split(".") if section else []:
        expected = expected[part]
    rename = rename or {}
    table = {rename.get(k, k): v for k, v in table.items()}
    problems = mismatches(table, expected, where, f"config/schema.yaml {section or '<top level>'}")
    assert not problems, "\n".join(problems)


def parser_defaults(script: str, keys) -> dict:
    """``{dest: default}`` of the given options of ``workflow_scripts/<script>``'s ``get_parser()``."""
    spec = util.spec_from_file_location(f"cli_{Path(script).stem}", ROOT / "workflow_scripts" / script)
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    actions = {a.dest: a.default for a in module.get_parser()._actions}
    return {k: actions[k] for k in keys}


def test_schema_is_the_one_in_the_repository():
    assert schema_path() == ROOT / "config" / "schema.yaml"


def test_config_yaml_equals_the_schema_defaults_key_by_key():
    problems = mismatches(leaves(CONFIG), leaves(DEFAULTS), "config/config.yaml")
    missing = sorted(set(leaves(DEFAULTS)) - set(leaves(CONFIG)) - NOT_IN_CONFIG)
    problems += [f"config/config.yaml: {key} missing (the schema's default is "
                 f"{leaves(DEFAULTS)[key]!r}); add it with a comment" for key in missing]
    assert not problems, "\n".join(problems)


def test_mismatches_can_fail():
    """The comparison that every test here rests on reports a changed value, a missing key and bool vs int."""
    assert mismatches({"a": 1, "b": True, "c": 2}, {"a": 2, "b": 1}, "t") == [
        "t: a = 1, config/schema.yaml says 2", "t: b = True, config/schema.yaml says 1",
        "t: key 'c' has no default in config/schema.yaml"]


def test_engine_defaults_are_the_train_section():
    from cbedtdc.train import DEFAULTS as ENGINE

    table = {k: v for k, v in ENGINE.items() if k not in ("loss", "seed")}
    assert_matches_schema(table, "train", "cbedtdc.train.DEFAULTS")
    assert ENGINE["loss"] == DEFAULTS["tdc"]["loss"] and ENGINE["seed"] == DEFAULTS["seed"]
    assert set(table) == set(DEFAULTS["train"]), "every train key is an engine option"


def test_train_cli_defaults_are_the_engine_defaults():
    from cbedtdc.train import DEFAULTS as ENGINE, LAUNCHER_KEYS

    keys = [k for k in ENGINE if k not in LAUNCHER_KEYS]
    table = parser_defaults("train.py", keys)
    assert_matches_schema({k: table[k] for k in keys if k in DEFAULTS["train"]}, "train", "workflow_scripts/train.py")
    assert table["loss"] == ENGINE["loss"] and table["seed"] == ENGINE["seed"]


def test_synth_defaults():
    from dataclasses import fields

    from cbedtdc.synth import SynthConfig

    # thickness: the range of the robustness renderings only (robustness.rendered), not a synth key
    table = {f.name: f.default for f in fields(SynthConfig)
             if f.name not in ("classes", "split_counts", "seed", "thickness")}
    assert_matches_schema(table, "synth", "cbedtdc.synth.SynthConfig")
    cli = parser_defaults("synthesize.py", ["n_materials", "energies", "image_size", "frequency", "floor",
                                            "zone_axes", "noise", "holz", "mistilt", "mode", "phonons",
                                            "slice_thickness", "device", "tail_min_train"])
    assert_matches_schema(cli, "synth", "workflow_scripts/synthesize.py", {"energies": "energies_per_material"})


def test_tdc_and_routing_cli_defaults():
    plan = parser_defaults("plan_levels.py", ["mode", "how", "level_sizes", "n_levels", "max_ratio",
                                              "hard_outputs", "budget_split", "epochs"])
    assert plan.pop("epochs") == DEFAULTS["train"]["epochs"], "plan_levels.py --epochs: the flat train.epochs"
    assert_matches_schema(plan, "tdc", "workflow_scripts/plan_levels.py", {"how": "levels"})
    from cbedtdc.cascade.routing import ROUTINGS
    from cbedtdc.config import schema_property

    assert tuple(schema_property("tdc", "routing")["enum"]) == ROUTINGS, "tdc.routing: schema enum vs ROUTINGS"
    for script in ("tune_routing.py", "tune_routing_shared.py"):
        spec = util.spec_from_file_location(f"cli_{Path(script).stem}", ROOT / "workflow_scripts" / script)
        module = util.module_from_spec(spec)
        spec.loader.exec_module(module)
        action = next(a for a in module.get_parser()._actions if a.dest == "routing")
        # no default of its own (the rules pass tdc.routing, whose default is the schema's), the allowed values once
        assert action.required and tuple(action.choices) == ROUTINGS, script


def test_routing_library_defaults_are_the_schema_default():
    """Every library function that takes the routing rule defaults to tdc.routing's schema default."""
    import inspect

    from cbedtdc.cascade import jobs, routing, shared

    default = DEFAULTS["tdc"]["routing"]
    assert routing.DEFAULT == default, "cbedtdc/cascade/routing/rules.py DEFAULT vs the schema's tdc.routing"
    for fn, arg in ((routing.rule_for, "name"), (routing.reading_name, "name"), (jobs.tune_routing, "routing"),
                    (shared.tune_shared_routing, "routing")):
        got = inspect.signature(fn).parameters[arg].default
        assert got == default, f"{fn.__module__}.{fn.__name__}({arg}={got!r}): the schema says {default!r}"
    assert routing.rule_for().name == default


def test_data_and_evaluate_cli_defaults():
    assert_matches_schema(parser_defaults("split.py", ["fractions"]), "data", "workflow_scripts/split.py",
                          {"fractions": "split_fractions"})
    assert_matches_schema(parser_defaults("manifest.py", ["max_fraction"]), "data", "workflow_scripts/manifest.py",
                          {"max_fraction": "quarantine_max_fraction"})
    assert_matches_schema(parser_defaults("index_raw.py", ["expected_side"]), "data",
                          "workflow_scripts/index_raw.py")
    assert_matches_schema(parser_defaults("evaluate.py", ["bootstrap"]), "evaluate", "workflow_scripts/evaluate.py")
    for script in ("split.py", "evaluate.py", "synthesize.py"):
        assert_matches_schema(parser_defaults(script, ["seed"]), "", f"workflow_scripts/{script}")


# --- the docs quote the defaults that run -------------------------------------------------------------------
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
# `tdc.routing: posterior` (default)  or  | `tdc.levels` | `explicit` (default) |
INLINE = re.compile(r"`([a-z_]+(?:\.[a-z_]+)+): ([^`]+)` \(default\)")
TABLE_ROW = re.compile(r"^\| `([a-z_]+(?:\.[a-z_]+)+)` \| `([^`]+)` \(default\)", re.M)
# docs/synth.md's table of the synth section: | `n_materials` | 4000 | ...
SYNTH_ROW = re.compile(r"^\| `([a-z_]+)`(?: \(top level\))? \| ([^|]+?) \|", re.M)


def quoted_defaults() -> list[tuple[str, str, str]]:
    """``(doc, key, quoted value)`` of every "(default)" claim of a config key in the docs."""
    out = []
    for doc in DOCS:
        text = doc.read_text()
        out += [(doc.name, k, v) for k, v in INLINE.findall(text) + TABLE_ROW.findall(text)]
    synth = (ROOT / "docs" / "synth.md").read_text()
    table = synth[synth.index("| key | default | meaning |"):].split("\n\n")[0]
    for key, value in SYNTH_ROW.findall(table):
        out.append(("synth.md", key if key in ("classes", "seed") else f"synth.{key}", value.strip()))
    return out


def test_docs_find_the_claims_they_check():
    keys = {k for _, k, _ in quoted_defaults()}
    named = {"tdc.routing", "tdc.backbone", "tdc.levels", "synth.n_materials", "synth.image_size",
             "synth.materials_per_file"}  # the keys issue 18 found quoted wrong
    assert named <= keys, f"the docs no longer quote {sorted(named - keys)}: update this test's patterns"


@pytest.mark.parametrize("doc, key, value", quoted_defaults())
def test_docs_quote_the_schema_default(doc, key, value):
    default = leaves(DEFAULTS)[key]
    assert yaml.safe_load(value.replace(",", "")) == default, (
        f"docs/{doc}: {key} quoted as {value!r} (default), config/schema.yaml (= config/config.yaml) says "
        f"{default!r}")


def test_head_and_booster_defaults_equal_the_schema():
    """cbedtdc.heads.options holds the one table of head options; the ones the config exposes (tdc.head, every
    heads.variants entry) and the booster settings (xgboost:) default to the same values in the schema."""
    from cbedtdc.heads.options import DEFAULTS as HEAD, XGBOOST_DEFAULTS

    exposed = {k: v for k, v in DEFAULTS["tdc"]["head"].items() if k != "features"}
    assert exposed, "the schema's tdc.head defaults"
    assert_matches_schema({k: HEAD[k] for k in exposed}, "tdc.head", "cbedtdc/heads/options.py DEFAULTS")
    assert_matches_schema(XGBOOST_DEFAULTS, "xgboost", "cbedtdc/heads/options.py XGBOOST_DEFAULTS")
    assert set(XGBOOST_DEFAULTS) == set(DEFAULTS["xgboost"])
