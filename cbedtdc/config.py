"""Configuration checks with one-line errors that name the offending key."""

from __future__ import annotations

from pathlib import Path

__all__ = ["ConfigError", "check_config"]


class ConfigError(ValueError):
    """The configuration does not match config/schema.yaml."""


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
