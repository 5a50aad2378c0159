"""The shard index (rule ``shard_index``): ``{shard_root}/{split}.csv``, where each sample of a split lies, and
``data_info.json``."""

from __future__ import annotations

import logging
from pathlib import Path

from cbedtdc.data.formats import DATA_INFO, SHARD_INDEX_FIELDS, DataError
from cbedtdc.io import read_csv, read_json, write_csv, write_json
from cbedtdc.layout import SPLITS

__all__ = ["build_shard_index"]

log = logging.getLogger(__name__)


def build_shard_index(splits_path, sidecars, shard_root, info_path=None) -> dict[str, int]:
    """Write ``{shard_root}/{split}.csv`` for every split from ``splits.csv`` and shard sidecars.

    Rows are in shard order (file name, then row), so a pass over a split reads each shard
    front to back. Raises :class:`DataError` when a sample of ``splits.csv`` is in no shard.
    ``info_path`` (``results/shards/data_info.json``) records the raw layout of the sidecars and the
    unit of the bootstrap intervals (:data:`DATA_INFO`: ``bootstrap_unit`` ``material`` or ``sample``).
    """
    shard_root = Path(shard_root)
    where = {}
    layouts = set()
    for side in sidecars:
        meta = read_json(side)
        layouts.add(meta.get("layout", "challenge_hdf5"))
        shard = Path(side).with_suffix(".h5")
        try:
            rel = shard.resolve().relative_to(shard_root.resolve()).as_posix()
        except ValueError as err:
            raise DataError(f"shard {shard} is not below shard_root {shard_root}") from err
        for entry in meta["samples"]:
            where[entry["key"]] = (rel, entry["row"])
    per_split = {s: [] for s in SPLITS}
    for r in read_csv(splits_path):
        if r["key"] not in where:
            raise DataError(f"sample {r['key']} of {splits_path} is in no shard; rerun the shard rule for "
                            f"{r['file']}")
        rel, row = where[r["key"]]
        per_split[r["split"]].append({"key": r["key"], "shard": rel, "row": row, "space_group": r["space_group"],
                                      "material": r["material"], "energy_keV": r["energy_keV"]})
    sizes = {}
    for split, rows in per_split.items():
        rows.sort(key=lambda r: (r["shard"], int(r["row"])))
        write_csv(shard_root / f"{split}.csv", rows, SHARD_INDEX_FIELDS)
        sizes[split] = len(rows)
    if info_path is not None:
        if len(layouts) > 1:
            raise DataError(f"shards of several raw layouts ({', '.join(sorted(layouts))}) in {shard_root}: "
                            "delete results/shards and rerun")
        info = DATA_INFO[layouts.pop() if layouts else "challenge_hdf5"]
        write_json(info_path, {**info, "samples": sizes})
        log.info("data: %s; bootstrap unit: %s", info["layout"], info["bootstrap_unit"])
    log.info("shard index: %s", ", ".join(f"{s} {n}" for s, n in sizes.items()))
    return sizes
