"""The data stage's formats, in one place: the columns of ``manifest.csv``, ``quarantine.csv``, ``splits.csv`` and
the shard index ``{split}.csv``, what ``data_info.json`` says per raw layout, and :class:`DataError`."""

from __future__ import annotations

from cbedtdc.errors import CbedtdcError

__all__ = ["DataError", "MANIFEST_FIELDS", "QUARANTINE_FIELDS", "SPLIT_FIELDS", "SHARD_INDEX_FIELDS",
           "QUARANTINE_KEPT", "DATA_INFO"]

MANIFEST_FIELDS = (
    "file", "group", "split", "space_group", "material", "energy_keV", "formula", "side",
    "a", "b", "c", "alpha", "beta", "gamma", "warnings",
)
QUARANTINE_FIELDS = ("file", "group", "reason")
SPLIT_FIELDS = ("key", "file", "group", "split", "file_split", "space_group", "material", "energy_keV")
SHARD_INDEX_FIELDS = ("key", "shard", "row", "space_group", "material", "energy_keV")
QUARANTINE_KEPT = "logs/manifest/quarantine.csv"  # where rule manifest (rules/data.smk) keeps it when the job fails


class DataError(CbedtdcError, RuntimeError):
    """Bad data that stops the stage (the message names the file, sample and reason)."""


#: What results/shards/data_info.json says per raw layout: the unit of the bootstrap intervals.
DATA_INFO = {
    "challenge_hdf5": {"layout": "challenge_hdf5", "material_ids": True, "bootstrap_unit": "material",
                       "note": "intervals over materials (all samples of a material drawn together)"},
    "stemdl_mirror": {"layout": "stemdl_mirror", "material_ids": False, "bootstrap_unit": "sample",
                      "note": "the STEMDL mirror has no material ids: every sample is its own material "
                              "(material = sample key), so intervals are over samples"},
}
