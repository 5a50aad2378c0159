"""Replicate seeds: the same data, the backbone and heads retrained per training seed, every variant's scores
across seeds (``replicates.json`` / ``replicates.csv``), as published numbers are seed means.

Each seed's ``summary.json`` already holds its bootstrap interval over test materials (the spread of the test
set); this adds the spread over training seeds (the spread of the training), and the TDC-minus-best-flat
difference per seed and pooled over seeds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["aggregate", "csv_rows", "load_summaries", "REPLICATE_FIELDS"]

#: Columns of ``replicates.csv``.
REPLICATE_FIELDS = ["variant", "family", "seeds", "balanced_accuracy_mean", "balanced_accuracy_sd",
                    "balanced_accuracy_min", "balanced_accuracy_max", "top1_mean", "top1_sd", "per_seed"]


def _t95(n: int) -> float:
    """Two-sided 95 % Student t quantile with ``n - 1`` degrees of freedom (inf for one seed)."""
    if n < 2:
        return math.inf
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1))


def _spread(values) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    sd = float(v.std(ddof=1)) if len(v) > 1 else None
    return {"mean": float(v.mean()) if len(v) else None, "sd": sd, "min": float(v.min()) if len(v) else None,
            "max": float(v.max()) if len(v) else None, "n": int(len(v))}


def load_summaries(pairs) -> dict:
    """``{seed: summary.json dict}`` from ``(seed, path)`` pairs; a repeated seed, an unreadable file or one without
    the ``variants`` (each with ``name``, ``family``, ``balanced_accuracy``, ``top1``) stops with the file and seed.
    Whether every seed has every score is checked once, by :func:`aggregate` (give it the paths)."""
    out = {}
    for seed, path in pairs:
        if seed in out:
            raise InputError(f"{path}: seed {seed} given twice")
        try:
            summary = json.loads(Path(path).read_text())
            for v in summary["variants"]:
                v["name"], v["family"], v["balanced_accuracy"], v["top1"]
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"{path} (seed {seed}): not a run's summary.json ({type(e).__name__}: {e})") from None
        out[seed] = summary
    return out


def check_complete(summaries: dict, paths: dict | None = None) -> None:
    """Raise :class:`InputError` when a seed lacks a variant, or the TDC-minus-flat difference, that another seed
    has: its score would silently leave the mean. The message names the seed, its file (from ``paths``, ``{seed:
    path}``), what is missing and which seeds have it. A score that is present but NaN (``null``) is fine: it is
    written ``nan``.

    >>> v = {"name": "flat/ce/cnn", "family": "flat", "balanced_accuracy": 0.3, "top1": 0.3}
    >>> check_complete({0: {"variants": [v]}, 1: {"variants": []}}, {1: "seed_1/summary.json"})
    Traceback (most recent call last):
    ...
    cbedtdc.errors.InputError: seed_1/summary.json (seed 1): no variant flat/ce/cnn, which seed 0 has; rerun that
    seed's evaluation (rule evaluate / evaluate_replicate) or leave the seed out of replicates
    """
    paths = paths or {}
    fix = "rerun that seed's evaluation (rule evaluate / evaluate_replicate) or leave the seed out of replicates"

    def where(seed):
        return f"{paths[seed]} (seed {seed})" if seed in paths else f"the summary of seed {seed}"

    def seeds_text(seeds):
        return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"

    seeds = sorted(summaries)
    names = {s: [v["name"] for v in summaries[s]["variants"]] for s in seeds}
    for name in dict.fromkeys(n for s in seeds for n in names[s]):
        have = [s for s in seeds if name in names[s]]
        lack = [s for s in seeds if name not in names[s]]
        if lack:
            raise InputError(f"{where(lack[0])}: no variant {name}, which {seeds_text(have)} "
                             f"{'have' if len(have) > 1 else 'has'}; {fix}")
    key = "balanced_accuracy_difference"
    have = [s for s in seeds if key in (summaries[s].get("best") or {})]
    lack = [s for s in seeds if s not in have]
    if have and lack:
        raise InputError(f"{where(lack[0])}: no best.{key} (best TDC minus best flat), which {seeds_text(have)} "
                         f"{'have' if len(have) > 1 else 'has'}; {fix}")


def _fmt(v) -> str:
    return "nan" if v is None else f"{v:.4f}"


def aggregate(summaries: dict, paths: dict | None = None) -> dict:
    """``{"seeds", "variants": [...], "difference": {...}}`` from ``{training seed: summary.json dict}``.

    Every seed must hold every variant (the same name in every summary) and, if one does, the difference
    (:func:`check_complete`, whose message names the file from ``paths``, ``{seed: path}``); ``difference`` gives
    the dev-chosen best TDC minus best flat balanced accuracy per seed, their mean, standard deviation and a 95 %
    t-interval over seeds. A score that is NaN (``null``) is written
    ``nan`` per seed and left out of the mean and spread (``n`` counts the seeds used).

    >>> s = lambda ba, d: {"variants": [{"name": "flat/ce/cnn", "family": "flat", "balanced_accuracy": ba,
    ...                                   "top1": ba}], "best": {"balanced_accuracy_difference": d}}
    >>> out = aggregate({0: s(0.30, 0.01), 1: s(0.34, 0.03)})
    >>> round(out["variants"][0]["balanced_accuracy"]["mean"], 3), round(out["difference"]["mean"], 3)
    (0.32, 0.02)
    """
    check_complete(summaries, paths)
    seeds = sorted(summaries)
    names = []
    for s in seeds:
        names += [v["name"] for v in summaries[s]["variants"] if v["name"] not in names]
    rows = []
    for name in names:
        got = {s: next(v for v in summaries[s]["variants"] if v["name"] == name) for s in seeds}
        rows.append({"variant": name, "family": next(iter(got.values()))["family"], "seeds": sorted(got),
                     "balanced_accuracy": _spread(v["balanced_accuracy"] for v in got.values()),
                     "top1": _spread(v["top1"] for v in got.values()),
                     "per_seed": {str(s): v["balanced_accuracy"] for s, v in got.items()}})
    diffs = {str(s): (summaries[s].get("best") or {}).get("balanced_accuracy_difference") for s in seeds}
    d = _spread(diffs.values())
    half = _t95(d["n"]) * d["sd"] / math.sqrt(d["n"]) if d["sd"] is not None else None
    diff = {**d, "per_seed": diffs, "ci95_over_seeds": None if half is None or math.isinf(half)
            else [d["mean"] - half, d["mean"] + half]}
    return {"seeds": seeds, "variants": rows, "difference": diff}


def csv_rows(agg: dict) -> list[dict]:
    """Rows of ``replicates.csv`` (balanced accuracy and top-1 across seeds per variant)."""
    out = []
    for r in agg["variants"]:
        ba, t1 = r["balanced_accuracy"], r["top1"]
        out.append({"variant": r["variant"], "family": r["family"], "seeds": " ".join(map(str, r["seeds"])),
                    "balanced_accuracy_mean": ba["mean"], "balanced_accuracy_sd": ba["sd"],
                    "balanced_accuracy_min": ba["min"], "balanced_accuracy_max": ba["max"],
                    "top1_mean": t1["mean"], "top1_sd": t1["sd"],
                    "per_seed": " ".join(f"{s}:{_fmt(v)}" for s, v in r["per_seed"].items())})
    d = agg["difference"]
    out.append({"variant": "best TDC - best flat (chosen on dev per seed)", "family": "difference",
                "seeds": " ".join(map(str, agg["seeds"])), "balanced_accuracy_mean": d["mean"],
                "balanced_accuracy_sd": d["sd"], "balanced_accuracy_min": d["min"], "balanced_accuracy_max": d["max"],
                "top1_mean": None, "top1_sd": None,
                "per_seed": " ".join(f"{s}:{_fmt(v)}" for s, v in d["per_seed"].items())})
    return out
