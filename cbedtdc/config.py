"""Configuration checks with one-line errors that name the offending key."""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from cbedtdc.errors import InputError

__all__ = ["ConfigError", "check_config", "coerce_types", "load_schema", "schema_defaults", "schema_path",
           "schema_property", "write_run_config"]


class ConfigError(InputError):
    """The configuration does not match config/schema.yaml."""


_TYPES = {"integer": int, "number": (int, float), "boolean": bool, "array": list, "object": dict, "string": str}


def _wanted(schema: dict) -> set[str]:
    types = schema.get("type")
    out = set([types] if isinstance(types, str) else types or [])
    for alt in schema.get("oneOf", []) + schema.get("anyOf", []):
        out |= _wanted(alt)
    return out


def coerce_types(value, schema: dict):
    """Turn strings from ``snakemake --config`` into the types the schema asks for.

    Snakemake parses nested overrides such as ``--config train='{epochs: 3}'`` with every leaf
    left a string; a leaf whose schema does not allow a string is parsed as YAML and kept when
    the result has an allowed type.

    >>> coerce_types({"epochs": "3", "arch": "resnet18"},
    ...              {"properties": {"epochs": {"type": "integer"}, "arch": {"type": "string"}}})
    {'epochs': 3, 'arch': 'resnet18'}
    >>> coerce_types("[ce, weighted_ce]", {"type": "array", "items": {"type": "string"}})
    ['ce', 'weighted_ce']
    """
    import yaml

    wanted = _wanted(schema)
    if isinstance(value, str) and wanted and "string" not in wanted:
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        ok = tuple(t for w in wanted for t in (_TYPES[w] if isinstance(_TYPES[w], tuple) else (_TYPES[w],)))
        if isinstance(parsed, ok) and not (isinstance(parsed, bool) and "boolean" not in wanted):
            value = parsed
    elif isinstance(value, str) and "string" in wanted and len(wanted) > 1:
        # e.g. classes: "top20" or a list given as text
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        if isinstance(parsed, list) and "array" in wanted:
            value = parsed
    if isinstance(value, dict):
        props = dict(schema.get("properties", {}))
        for alt in schema.get("oneOf", []) + schema.get("anyOf", []):
            props.update(alt.get("properties", {}))
        return {k: coerce_types(v, props.get(k, {})) for k, v in value.items()}
    if isinstance(value, list):
        items = schema.get("items")
        if items is None:
            for alt in schema.get("oneOf", []):
                if alt.get("type") == "array":
                    items = alt.get("items")
        return [coerce_types(v, items or {}) for v in value]
    return value


def load_schema(schema_path=None) -> dict:
    """Read the YAML JSON-schema file (default: the repository's ``config/schema.yaml``, :func:`schema_path`)."""
    import yaml

    return yaml.safe_load(Path(schema_path or _schema_file()).read_text())


def schema_path() -> Path:
    """``config/schema.yaml`` of the checkout this package is imported from (the package is installed editable,
    ``pip install -e .``; the workflow's rules validate against the same file).

    >>> schema_path().name
    'schema.yaml'
    """
    path = Path(__file__).resolve().parents[1] / "config" / "schema.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: no config schema next to the cbedtdc package; install cbedtdc from a checkout "
                          "of the repository (pip install -e .), which holds config/schema.yaml")
    return path


@lru_cache(maxsize=1)
def _schema_file() -> Path:
    return schema_path()


@lru_cache(maxsize=1)
def _schema() -> dict:
    return load_schema(_schema_file())


def _defaults(node: dict) -> dict:
    out = {}
    for key, prop in node.get("properties", {}).items():
        if "properties" in prop:
            out[key] = _defaults(prop)
        elif "default" in prop:
            out[key] = copy.deepcopy(prop["default"])
    return out


def schema_defaults(*path: str) -> dict:
    """The defaults of the config schema, the single source of every setting's default, as a nested dict;
    ``path`` selects a section (``schema_defaults("train")``).

    >>> schema_defaults("train")["arch"], schema_defaults()["seed"]
    ('resnet18', 0)
    """
    node = _schema()
    for key in path:
        node = node["properties"][key]
    return _defaults(node)


def schema_property(*path: str) -> dict:
    """The schema of one key (``schema_property("train", "arch")``: type, enum, minimum, default, description)."""
    node = _schema()
    for key in path:
        node = node["properties"][key]
    return copy.deepcopy(node)


def check_config(config: dict, schema_path) -> None:
    """Validate ``config`` against the JSON schema; raise :class:`ConfigError` with one line.

    The message names the key path (``train.epochs``), what was given and what is allowed, e.g.
    ``config error at train: unknown key 'epochz' (allowed: arch, batch_size, ...)``.
    Defaults are not filled here (``snakemake.utils.validate`` does that afterwards).
    """
    import jsonschema
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if not errors:
        return
    err = errors[0]
    where = ".".join(str(p) for p in err.absolute_path) or "<top level>"
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        msg = f"unknown key {', '.join(map(repr, extra))} (allowed: {', '.join(allowed)})"
    elif err.validator == "oneOf" and "description" in err.schema:
        msg = f"{err.instance!r} is not valid: {err.schema['description']}"
    else:
        msg = err.message
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    raise ConfigError(f"config error at {where}: {msg}{more}")


RUN_CONFIG_HEADER = (
    "# Configuration of the run whose results are under results/ (written by rule run_config).\n"
    "# The report is built from it: make report  (= snakemake --configfile results/run_config.yaml ...).\n"
)


def write_run_config(config: dict, path) -> None:
    """Write the run's full configuration (defaults filled) as YAML, atomically.

    Given back with ``--configfile`` it reproduces the run's DAG and the report's description.

    >>> import tempfile, yaml
    >>> with tempfile.TemporaryDirectory() as d:
    ...     write_run_config({"seed": 3, "train": {"arch": "resnet18"}}, f"{d}/run_config.yaml")
    ...     yaml.safe_load(open(f"{d}/run_config.yaml"))
    {'seed': 3, 'train': {'arch': 'resnet18'}}
    """
    import yaml

    from cbedtdc.io import atomic_path

    with atomic_path(path, suffix=".yaml") as tmp:
        Path(tmp).write_text(RUN_CONFIG_HEADER + yaml.safe_dump(config, sort_keys=False))
