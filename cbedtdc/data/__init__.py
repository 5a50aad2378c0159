"""The data stage after indexing: manifest, split, shard index, and ``ShardDataset``.

Flow (one function per rule, each called by a thin CLI in ``workflow_scripts/``):

1. :func:`cbedtdc.io.index_file` - one JSON index per raw file (accepted + quarantined samples);
2. :func:`build_manifest` - merge the indexes: ``manifest.csv``, ``quarantine.csv``, a report;
3. :func:`assign_splits` - keep the file-given split or re-split by material: ``splits.csv``,
   ``class_counts.csv``;
4. :func:`cbedtdc.preprocess.write_shard` - one uint8 shard per raw file;
5. :func:`build_shard_index` - ``{shard_root}/{split}.csv``, the sample list of each split;
6. :class:`ShardDataset` - a map-style torch dataset over one split.

torch is imported only when a sample is fetched.

Modules: :mod:`~cbedtdc.data.formats` (the CSV columns, :class:`DataError`), :mod:`~cbedtdc.data.manifest`,
:mod:`~cbedtdc.data.splits`, :mod:`~cbedtdc.data.shard_index`, :mod:`~cbedtdc.data.dataset`; every public name is
importable from ``cbedtdc.data``.
"""

from cbedtdc.data.dataset import ShardDataset, panel_of
from cbedtdc.data.formats import (DATA_INFO, MANIFEST_FIELDS, QUARANTINE_FIELDS, SHARD_INDEX_FIELDS, SPLIT_FIELDS,
                                  DataError)
from cbedtdc.data.manifest import build_manifest, write_manifest
from cbedtdc.data.shard_index import build_shard_index
from cbedtdc.data.splits import assign_splits, class_counts, write_splits

__all__ = [
    "DataError",
    "MANIFEST_FIELDS",
    "QUARANTINE_FIELDS",
    "SPLIT_FIELDS",
    "SHARD_INDEX_FIELDS",
    "build_manifest",
    "write_manifest",
    "assign_splits",
    "class_counts",
    "write_splits",
    "build_shard_index",
    "DATA_INFO",
    "ShardDataset",
    "panel_of",
]
