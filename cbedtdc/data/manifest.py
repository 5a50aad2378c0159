"""Merge the per-file indexes into ``manifest.csv``, ``quarantine.csv`` and the data report (rule ``manifest``)."""

from __future__ import annotations

import logging
import os
import re
from collections import Counter, defaultdict

from cbedtdc.data.formats import MANIFEST_FIELDS, QUARANTINE_FIELDS, QUARANTINE_KEPT, DataError
from cbedtdc.io import read_json, write_csv, write_json

__all__ = ["build_manifest", "write_manifest"]

log = logging.getLogger(__name__)


def build_manifest(indexes, *, min_side: int = 0) -> tuple[list[dict], list[dict], dict]:
    """Merge per-file indexes (dicts or JSON paths) into manifest rows, quarantine rows, report.

    Samples whose side is below ``min_side`` (the shard ``image_size``; stacks are only ever
    shrunk) are quarantined here, so the indexes do not depend on ``image_size``. Duplicate
    keys (the same ``file/group`` in two indexes) keep the first occurrence, accepted or
    quarantined, and quarantine the others as ``duplicate key``. Materials found in two splits,
    materials with several space groups, per-file attribute warnings and the materials the generator
    could not simulate (``materials_not_simulated``: the files' ``skipped_materials``; no samples) are reported.
    Counts add up: ``report["seen"] == len(manifest) + len(quarantine)``.
    """
    manifest, quarantine = [], []
    seen = 0
    first_source = {}
    not_simulated = []  # the generator's record of materials it could not simulate: no samples, so not quarantined
    for item in indexes:
        idx = read_json(item) if isinstance(item, (str, os.PathLike)) else item
        not_simulated += [f"{idx['file']}: {line}" for line in idx.get("skipped_materials", [])]
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
        "materials_not_simulated": not_simulated,
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
    for m in report["materials_not_simulated"]:
        log.warning("not simulated by the generator, so no samples: %s", m)
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
