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
"""

# Over 500 lines, on purpose: the manifest, the splits, the shard index and ShardDataset read and write the same
# CSV rows and shard layout; one module keeps each format in one place (each function is short).
from __future__ import annotations

import logging
import os
import re
from collections import Counter, OrderedDict, defaultdict
from pathlib import Path

import numpy as np

from cbedtdc.io import read_csv, read_json, write_csv, write_json
from cbedtdc.layout import MIRROR_SPLITS, SPLITS
from cbedtdc.errors import CbedtdcError, InputError, MissingKeysError

__all__ = [
    "DataError",
    "MANIFEST_FIELDS",
    "QUARANTINE_FIELDS",
    "SPLIT_FIELDS",
    "SHARD_INDEX_FIELDS",
    "build_manifest",
    "write_manifest",
    "assign_splits",
    "write_splits",
    "build_shard_index",
    "DATA_INFO",
    "ShardDataset",
    "panel_of",
]

log = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------- manifest
def build_manifest(indexes, *, min_side: int = 0) -> tuple[list[dict], list[dict], dict]:
    """Merge per-file indexes (dicts or JSON paths) into manifest rows, quarantine rows, report.

    Samples whose side is below ``min_side`` (the shard ``image_size``; stacks are only ever
    shrunk) are quarantined here, so the indexes do not depend on ``image_size``. Duplicate
    keys (the same ``file/group`` in two indexes) keep the first occurrence, accepted or
    quarantined, and quarantine the others as ``duplicate key``. Materials found in two splits,
    materials with several space groups and per-file attribute warnings are reported.
    Counts add up: ``report["seen"] == len(manifest) + len(quarantine)``.
    """
    manifest, quarantine = [], []
    seen = 0
    first_source = {}
    for item in indexes:
        idx = read_json(item) if isinstance(item, (str, os.PathLike)) else item
        source = str(item) if isinstance(item, (str, os.PathLike)) else idx["file"]
        seen += idx["seen"]
        for q in idx["quarantine"]:
            key = f"{q['file']}/{q['group']}"
            reason = q["reason"]
            if key in first_source:
                reason = f"duplicate key (first seen in {first_source[key]})"
            else:
                first_source[key] = source
            quarantine.append({"file": q["file"], "group": q["group"], "reason": reason})
        for rec in idx["samples"]:
            key = f"{rec['file']}/{rec['group']}"
            if key in first_source:
                quarantine.append({"file": rec["file"], "group": rec["group"],
                                   "reason": f"duplicate key (first seen in {first_source[key]})"})
                continue
            first_source[key] = source
            if int(rec["side"]) < min_side:
                quarantine.append({"file": rec["file"], "group": rec["group"],
                                   "reason": f"side {rec['side']} smaller than image_size {min_side}"})
                continue
            a, b, c = rec.get("abc_angstrom", [float("nan")] * 3)
            al, be, ga = rec.get("angles_degree", [float("nan")] * 3)
            manifest.append({
                "file": rec["file"], "group": rec["group"], "split": rec["split"],
                "space_group": int(rec["space_group"]), "material": rec["material"],
                "energy_keV": rec["energy_keV"], "formula": rec.get("formula", ""), "side": rec["side"],
                "a": a, "b": b, "c": c, "alpha": al, "beta": be, "gamma": ga,
                "warnings": rec.get("warnings", ""),
            })
    splits_of = defaultdict(set)
    groups_of = defaultdict(set)
    for row in manifest:
        splits_of[row["material"]].add(row["split"])
        groups_of[row["material"]].add(row["space_group"])
    multi_split = sorted(m for m, s in splits_of.items() if len(s) > 1)
    multi_group = sorted(m for m, g in groups_of.items() if len(g) > 1)
    reasons = Counter(_reason_kind(q["reason"]) for q in quarantine)
    report = {
        "seen": seen,
        "accepted": len(manifest),
        "quarantined": len(quarantine),
        "quarantined_fraction": len(quarantine) / seen if seen else 0.0,
        "reasons": dict(sorted(reasons.items())),
        "materials": len(splits_of),
        "materials_in_several_splits": multi_split,
        "materials_with_several_space_groups": multi_group,
        "samples_with_attribute_warnings": sum(bool(r["warnings"]) for r in manifest),
        "space_groups": len({r["space_group"] for r in manifest}),
    }
    if seen != len(manifest) + len(quarantine):
        raise DataError(f"count mismatch: {seen} samples seen, {len(manifest)} accepted + "
                        f"{len(quarantine)} quarantined; an index file is corrupt, rerun index_raw")
    return manifest, quarantine, report


def _reason_kind(reason: str) -> str:
    """Reason without sample-specific details, for the summary counts.

    A shape stays whole (its dimensions are the problem); counts in parentheses and error texts
    after a colon are cut.

    >>> _reason_kind("shape (3, 128, 128) not (3, 512, 512)"), _reason_kind("non-finite values (1 NaN, 0 inf)")
    ('shape (3, 128, 128) not (3, 512, 512)', 'non-finite values')
    >>> _reason_kind("cannot open: truncated file")
    'cannot open'
    """
    if reason.startswith("shape "):
        return reason
    for cut in (" (", ": "):
        if cut in reason:
            reason = reason.split(cut)[0]
    return reason


_SIDE = re.compile(r"side (\d+) smaller than image_size (\d+)")
_SHAPE = re.compile(r"shape \(3, (\d+), \1\) not \(3, (\d+), \2\)")


def _size_advice(quarantine, generated: bool | None) -> str:
    """What to set when every quarantined sample is only too small for ``image_size`` or not of
    ``data.expected_side``: a setting, not the files, is wrong; "" otherwise."""
    sides = [_SIDE.fullmatch(q["reason"]) for q in quarantine]
    shapes = [_SHAPE.fullmatch(q["reason"]) for q in quarantine]
    if all(sides):
        have = max(int(m[1]) for m in sides)
        want = int(sides[0][2])
        if generated:
            return (f"every sample is smaller than image_size {want} (largest side {have}): the generated data "
                    f"are too small, not bad: set synth.image_size to at least {want} or image_size to at most "
                    f"{have}")
        fix = f"set image_size to at most {have}"
        if generated is None:
            fix += f", or for generated data (no raw_dir) synth.image_size to at least {want}"
        return (f"every sample is smaller than image_size {want} (largest side {have}): the files are not "
                f"bad, the setting is: {fix}")
    if all(shapes):
        have = sorted({int(m[1]) for m in shapes})
        want = int(shapes[0][2])
        text = (f"every sample has a side other than data.expected_side {want} "
                f"(found {', '.join(map(str, have))}): set data.expected_side to 0 (any square side)")
        if generated is not False:
            text += f" or {'' if generated else 'for generated data '}synth.image_size to {want}"
        return text
    return ""


def _reason_summary(quarantine, n: int = 3) -> str:
    """The ``n`` most common quarantine reasons with counts; a reason whose details vary keeps one
    example in full (``'cannot open': 4, e.g. 'cannot open: truncated file'``)."""
    by_kind = defaultdict(Counter)
    for q in quarantine:
        by_kind[_reason_kind(q["reason"])][q["reason"]] += 1
    parts = []
    for kind, full in sorted(by_kind.items(), key=lambda kv: (-kv[1].total(), kv[0]))[:n]:
        text = f"{kind!r}: {full.total()}"
        example = full.most_common(1)[0][0]
        parts.append(text if example == kind else f"{text}, e.g. {example!r}")
    return "; ".join(parts)


def write_manifest(indexes, manifest_path, quarantine_path, report_path, *, max_fraction: float,
                   min_side: int = 0, generated: bool | None = None) -> dict:
    """Build and write the manifest; raise :class:`DataError` above ``max_fraction`` quarantined.

    ``quarantine_path`` is written first, also when the threshold stops the stage, so the rejected
    samples can be read (the rule keeps it as ``logs/manifest/quarantine.csv``, since Snakemake
    deletes a failed job's outputs); the manifest and the report are then not written. The
    message names the fraction, the threshold and its setting (``data.quarantine_max_fraction``),
    the most common reasons in full and the quarantine file; when every sample only failed on its
    side or shape, it names the setting to change instead (``image_size``, ``synth.image_size``
    when ``generated`` is true or unknown (None), ``data.expected_side``). Every quarantined
    entry has been logged.
    """
    manifest, quarantine, report = build_manifest(indexes, min_side=min_side)
    for q in quarantine:
        log.info("quarantined %s/%s: %s", q["file"], q["group"], q["reason"])
    for m in report["materials_in_several_splits"]:
        log.warning("material %s occurs in several splits (leak between splits; set data.resplit)", m)
    for m in report["materials_with_several_space_groups"]:
        log.warning("material %s carries several space groups", m)
    if report["seen"] == 0:
        raise DataError("no samples found: every raw file is empty")
    write_csv(quarantine_path, quarantine, QUARANTINE_FIELDS)
    if report["quarantined_fraction"] > max_fraction:
        advice = _size_advice(quarantine, generated) if len(quarantine) == report["seen"] else ""
        raise DataError(
            f"{report['quarantined']} of {report['seen']} samples quarantined "
            f"({report['quarantined_fraction']:.1%} > data.quarantine_max_fraction={max_fraction}); "
            f"most common reasons: {_reason_summary(quarantine)}; every rejected sample is listed in "
            f"{quarantine_path} (in a pipeline run: {QUARANTINE_KEPT}, as Snakemake deletes a failed job's "
            "outputs); "
            + (advice or "fix or remove those files, or raise data.quarantine_max_fraction")
        )
    write_json(report_path, report)
    write_csv(manifest_path, manifest, MANIFEST_FIELDS)
    log.info("manifest: %d accepted, %d quarantined of %d seen; %d materials, %d space groups",
             report["accepted"], report["quarantined"], report["seen"], report["materials"], report["space_groups"])
    return report


# --------------------------------------------------------------------------- split
def _largest_remainder(n: int, fractions) -> list[int]:
    """Integer counts summing to n, proportional to fractions (ties go to earlier splits).

    >>> _largest_remainder(10, [0.79, 0.11, 0.10]), _largest_remainder(2, [0.79, 0.11, 0.10])
    ([8, 1, 1], [2, 0, 0])
    """
    f = np.asarray(fractions, dtype=float)
    f = f / f.sum()
    raw = n * f
    base = np.floor(raw).astype(int)
    order = sorted(range(len(f)), key=lambda i: (-(raw[i] - base[i]), i))
    for i in order[: n - base.sum()]:
        base[i] += 1
    return base.tolist()


def assign_splits(manifest, *, resplit: bool = False, fractions=(0.79, 0.11, 0.10), seed: int = 0) -> list[dict]:
    """Split of every manifest row.

    With ``resplit=False`` the split of the file name is kept. With ``resplit=True`` materials
    are re-assigned: per space group (a material's most common one), its materials are
    shuffled with a seeded generator and divided by largest remainder, so no material is in
    two splits, every split follows the fractions per class, and classes with very few
    materials go to train first (as in the real data, rare groups are absent from dev/test).
    """
    rows = [dict(r) for r in manifest]
    if resplit:
        per_material = defaultdict(Counter)
        for r in rows:
            per_material[r["material"]][int(r["space_group"])] += 1
        by_group = defaultdict(list)
        for material in sorted(per_material):
            group = min(per_material[material].items(), key=lambda kv: (-kv[1], kv[0]))[0]
            by_group[group].append(material)
        target = {}
        for group in sorted(by_group):
            mats = by_group[group]
            rng = np.random.default_rng([seed, group])
            mats = [mats[i] for i in rng.permutation(len(mats))]
            counts = _largest_remainder(len(mats), fractions)
            pos = 0
            for split, k in zip(SPLITS, counts):
                for m in mats[pos: pos + k]:
                    target[m] = split
                pos += k
    out = []
    for r in rows:
        split = target[r["material"]] if resplit else r["split"]
        out.append({
            "key": f"{r['file']}/{r['group']}", "file": r["file"], "group": r["group"], "split": split,
            "file_split": r["split"], "space_group": int(r["space_group"]), "material": r["material"],
            "energy_keV": r["energy_keV"],
        })
    return out


def class_counts(split_rows) -> list[dict]:
    """Rows ``space_group, train, dev, test, total`` sorted by train count, then total, then group."""
    counts = defaultdict(Counter)
    for r in split_rows:
        counts[int(r["space_group"])][r["split"]] += 1
    rows = [{"space_group": g, **{s: c[s] for s in SPLITS}, "total": sum(c.values())} for g, c in counts.items()]
    rows.sort(key=lambda r: (-r["train"], -r["total"], r["space_group"]))
    return rows


def write_splits(manifest_path, splits_path, counts_path, *, resplit=False, fractions=(0.79, 0.11, 0.10), seed=0):
    """Read ``manifest.csv``, assign splits, write ``splits.csv`` and ``class_counts.csv``."""
    manifest = read_csv(manifest_path)
    if resplit and any(r["material"] == f"{r['file']}/{r['group']}" and r["file"] in MIRROR_SPLITS
                       for r in manifest[:1]):
        raise DataError(f"{manifest_path}: data.resplit is refused for the STEMDL mirror: it has no material ids, "
                        "so a re-split could put samples of one material in train and test; keep its own split "
                        "(data.resplit: false)")
    rows = assign_splits(manifest, resplit=resplit, fractions=fractions, seed=seed)
    mats = defaultdict(set)
    for r in rows:
        mats[r["material"]].add(r["split"])
    leaks = sorted(m for m, s in mats.items() if len(s) > 1)
    if leaks:
        log.warning("%d materials occur in several splits (file-given split), e.g. %s", len(leaks), leaks[:5])
    counts = class_counts(rows)
    write_csv(counts_path, counts, ("space_group", *SPLITS, "total"))
    write_csv(splits_path, rows, SPLIT_FIELDS)
    per_split = Counter(r["split"] for r in rows)
    log.info("splits (%s): %s", "re-split by material" if resplit else "file-given",
             ", ".join(f"{s} {per_split[s]}" for s in SPLITS))
    return rows


# --------------------------------------------------------------------------- shard index
#: What results/shards/data_info.json says per raw layout: the unit of the bootstrap intervals.
DATA_INFO = {
    "challenge_hdf5": {"layout": "challenge_hdf5", "material_ids": True, "bootstrap_unit": "material",
                       "note": "intervals over materials (all samples of a material drawn together)"},
    "stemdl_mirror": {"layout": "stemdl_mirror", "material_ids": False, "bootstrap_unit": "sample",
                      "note": "the STEMDL mirror has no material ids: every sample is its own material "
                              "(material = sample key), so intervals are over samples"},
}


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


# --------------------------------------------------------------------------- dataset
_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64 finaliser: a fast, well-spread hash of a 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def panel_of(seed: int, epoch: int, index: int) -> int:
    """Orientation panel (0, 1, 2) drawn for one sample in one epoch; pure and reproducible.

    >>> [panel_of(0, 0, i) for i in range(8)] == [panel_of(0, 0, i) for i in range(8)]
    True
    """
    return _mix(_mix(_mix(seed) ^ epoch) ^ index) % 3


class ShardDataset:
    """Map-style torch dataset over the uint8 shards of one split.

    Parameters
    ----------
    shard_root : path-like
        Folder holding ``{split}.csv`` and the shard files (``results/shards``).
    split : {"train", "dev", "test"}
    keys : iterable of str, optional
        Keep only these ``"file/group"`` keys (in the split's order). Unknown keys raise.
    classes : iterable of int, optional
        Keep only samples of these space groups.
    orientation : {"stack", "random", 0, 1, 2}
        ``"stack"``: items are (3, S, S); ``"random"``: one panel (1, S, S) drawn from
        (seed, epoch, index), see :meth:`set_epoch`; 0/1/2: that panel, (1, S, S).
    seed : int
        Seed of the random panel choice.

    Items are ``(torch.uint8 tensor, int space_group)``. ``keys``, ``labels`` (space-group
    numbers), ``materials`` and ``energies`` are in index order.

    Shard files are opened lazily in the process that reads (each DataLoader worker opens its
    own), and a sample costs one positioned read of its chunk (a third of it for one panel).
    DataLoader workers copy the dataset when an iterator starts, so call ``set_epoch`` before
    iterating; with ``persistent_workers=True`` the copy is made once and ``set_epoch`` in the
    parent does not reach the workers.
    """

    #: Shard files kept open per process (least recently used closed first); the real train
    #: split spans ~900 files, more than a default limit of 1,024 descriptors allows per dataset.
    MAX_OPEN = 128

    def __init__(self, shard_root, split, *, keys=None, classes=None, orientation="stack", seed=0):
        if split not in SPLITS:
            raise InputError(f"split={split!r}: must be one of {', '.join(SPLITS)}")
        if orientation not in ("stack", "random", 0, 1, 2):
            raise InputError(f"orientation={orientation!r}: must be 'stack', 'random', 0, 1 or 2")
        self.shard_root = Path(shard_root)
        self.split = split
        self.orientation = orientation
        self.seed = int(seed)
        self.epoch = 0
        table = self.shard_root / f"{split}.csv"
        if not table.exists():
            raise FileNotFoundError(f"{table} not found: build the data stage first (snakemake shards)")
        rows = read_csv(table)
        self.shards = sorted({r["shard"] for r in rows})
        shard_id = {s: i for i, s in enumerate(self.shards)}
        self.keys = [r["key"] for r in rows]
        self.labels = np.array([int(r["space_group"]) for r in rows], dtype=np.int64)
        self.materials = np.array([r["material"] for r in rows], dtype=str)
        self.energies = np.array([float(r["energy_keV"]) for r in rows], dtype=np.float64)
        self._shard = np.array([shard_id[r["shard"]] for r in rows], dtype=np.int32)
        self._row = np.array([int(r["row"]) for r in rows], dtype=np.int64)
        self._handles = None
        self.image_size = self._probe_image_size()
        mask = np.ones(len(self.keys), dtype=bool)
        if keys is not None:
            wanted = set(keys)
            missing = wanted.difference(self.keys)
            if missing:
                raise MissingKeysError(f"{len(missing)} keys not in split {split} of {self.shard_root}, "
                               f"e.g. {sorted(missing)[:3]}")
            mask &= np.array([k in wanted for k in self.keys], dtype=bool)
        if classes is not None:
            mask &= np.isin(self.labels, np.asarray(list(classes), dtype=np.int64))
        if not mask.all():
            self._restrict(np.flatnonzero(mask))

    # -- bookkeeping
    def _probe_image_size(self) -> int:
        if not self.shards:
            return 0
        meta = read_json((self.shard_root / self.shards[0]).with_suffix(".json"))
        return int(meta["image_size"])

    def _restrict(self, idx) -> None:
        idx = np.asarray(idx, dtype=np.int64)
        self.keys = [self.keys[i] for i in idx]
        self.labels = self.labels[idx]
        self.materials = self.materials[idx]
        self.energies = self.energies[idx]
        self._shard = self._shard[idx]
        self._row = self._row[idx]

    def subset(self, indices) -> ShardDataset:
        """A copy restricted to ``indices`` (positions in this dataset), in that order."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__getstate__())
        new._restrict(indices)
        return new

    def set_epoch(self, epoch: int) -> None:
        """Select the random panels of ``epoch`` (orientation="random")."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return (f"ShardDataset({str(self.shard_root)!r}, {self.split!r}, n={len(self)}, "
                f"orientation={self.orientation!r}, image_size={self.image_size})")

    # -- reading
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handles"] = None  # never pickle open files; each process opens its own
        return state

    def _chunk_offsets(self, sid: int) -> np.ndarray:
        """File offset of every sample's chunk in shard ``sid`` (read once per process)."""
        import h5py

        path = self.shard_root / self.shards[sid]
        s = self.image_size
        try:
            fh = h5py.File(path, "r")
        except OSError as err:
            raise DataError(f"{path}: cannot open shard ({err}); it is truncated or not HDF5, "
                            "delete it and rerun the shard rule") from err
        with fh:
            dset = fh["images"]
            n = dset.shape[0]
            if dset.shape[1:] != (3, s, s):
                raise DataError(f"{path}: images are {dset.shape[1:]}, the split list's first shard has "
                                f"(3, {s}, {s}); rebuild the shards with one image_size")
            offsets = np.full(n, -1, dtype=np.int64)
            plain = dset.chunks == (1, 3, s, s) and dset.id.get_create_plist().get_nfilters() == 0
            if plain and n:
                if hasattr(dset.id, "chunk_iter"):
                    def visit(info):
                        offsets[info.chunk_offset[0]] = info.byte_offset
                    dset.id.chunk_iter(visit)
                else:  # HDF5 < 1.14: one query per chunk
                    for k in range(dset.id.get_num_chunks()):
                        info = dset.id.get_chunk_info(k)
                        offsets[info.chunk_offset[0]] = info.byte_offset
        if n and (not plain or (offsets < 0).any()):
            raise DataError(f"{path}: images are not one uncompressed chunk per sample; rebuild the shard")
        return offsets

    def _fd(self, sid: int):
        """(fd, chunk offsets) of shard ``sid`` in this process; at most MAX_OPEN files stay open."""
        pid = os.getpid()
        if self._handles is None or self._handles[0] != pid:
            self._handles = (pid, OrderedDict(), {})  # after a fork: never reuse the parent's files
        _, fds, offsets = self._handles
        fd = fds.get(sid)
        if fd is None:
            if sid not in offsets:
                offsets[sid] = self._chunk_offsets(sid)
            fd = fds[sid] = os.open(self.shard_root / self.shards[sid], os.O_RDONLY)
            if len(fds) > self.MAX_OPEN:
                os.close(fds.popitem(last=False)[1])
        else:
            fds.move_to_end(sid)
        return fd, offsets[sid]

    def _read_into(self, i: int, out: np.ndarray, panel: int | None = None) -> None:
        """Read item ``i``'s stack (or one ``panel`` of it) into the contiguous uint8 ``out``."""
        fd, offsets = self._fd(int(self._shard[i]))
        plane = self.image_size * self.image_size
        offset = int(offsets[self._row[i]]) + (plane * panel if panel is not None else 0)
        if os.preadv(fd, [out], offset) != out.nbytes:
            raise DataError(f"{self.shard_root / self.shards[self._shard[i]]}: short read for {self.keys[i]}; "
                            "the shard is truncated, rebuild it")

    def _panel(self, i: int) -> int | None:
        if self.orientation == "stack":
            return None
        return panel_of(self.seed, self.epoch, i) if self.orientation == "random" else int(self.orientation)

    def _check(self, i) -> int:
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        return i

    def image(self, i: int) -> np.ndarray:
        """The (3, S, S) uint8 stack of item ``i`` as a numpy array (whatever the orientation)."""
        s = self.image_size
        out = np.empty((3, s, s), dtype=np.uint8)
        self._read_into(self._check(i), out)
        return out

    def __getitem__(self, i):
        import torch

        i = self._check(i)
        panel = self._panel(i)
        s = self.image_size
        out = np.empty((3 if panel is None else 1, s, s), dtype=np.uint8)
        self._read_into(i, out, panel)  # a random panel reads one third of the chunk
        return torch.from_numpy(out), int(self.labels[i])

    def __getitems__(self, indices):
        """Batch fetch used by ``DataLoader``: one array for the batch, one read per sample."""
        import torch

        idx = [self._check(i) for i in indices]
        s = self.image_size
        batch = np.empty((len(idx), 3 if self.orientation == "stack" else 1, s, s), dtype=np.uint8)
        for k, i in enumerate(idx):
            self._read_into(i, batch[k], self._panel(i))
        t = torch.from_numpy(batch)
        return [(t[k], int(self.labels[i])) for k, i in enumerate(idx)]

    def __del__(self):
        handles = getattr(self, "_handles", None)
        if handles is not None and handles[0] == os.getpid():
            for fd in handles[1].values():
                try:
                    os.close(fd)
                except OSError:
                    pass
