"""The split of every sample (rule ``split``): the file-given split, or a re-split by material per space group;
``splits.csv`` and ``class_counts.csv``."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict

import numpy as np

from cbedtdc.data.formats import SPLIT_FIELDS, DataError
from cbedtdc.io import read_csv, write_csv
from cbedtdc.layout import MIRROR_SPLITS, SPLITS

__all__ = ["assign_splits", "class_counts", "write_splits"]

log = logging.getLogger(__name__)


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
