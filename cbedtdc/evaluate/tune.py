"""One tuning machine for the flat heads and the TDC's level heads: the same grid, dev only, every try kept.

A *grid* is a mapping of head options (:data:`cbedtdc.heads.DEFAULTS`) to lists of values; its product is
the list of tries. Every try is fitted on the train split's features and scored on the dev split's:

- the **flat** side fits one head over the run's classes (its temperature on dev, as the ``head`` rule does);
- the **TDC** side fits every level head of the plan with that setting (as the ``tdc_heads`` rule does),
  tunes the routing on dev (as ``tune_routing_shared`` does) and scores the routed cascade on dev.

Both sides get exactly the same tries, so the comparison on test is between two settings each chosen among
the same number of candidates. The machine reads the ``train`` and ``dev`` features only: the test split is
never opened (the file names are fixed here, not taken from the caller), so a try on test is impossible by
construction. :func:`write_tries` writes every try and its dev scores to a CSV; :func:`best_tries` picks, per
side, the try with the best dev balanced accuracy (ties: the earlier try, i.e. the grid's order).
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import numpy as np

from cbedtdc import metrics
from cbedtdc.cascade.plan import LevelPlan
from cbedtdc.cascade.routing import DEFAULT, rule_for
from cbedtdc.cascade.shared import fit_level_heads, tdc_head_probs
from cbedtdc.errors import InputError
from cbedtdc.features.sources import load_split
from cbedtdc.heads import DEFAULTS, fit_head, resolve_spec
from cbedtdc.io import write_csv

__all__ = ["TUNE_SPLITS", "SIDES", "TRY_FIELDS", "expand_grid", "load_tuning_data", "tune", "write_tries",
           "best_tries", "read_grid", "run_tuning"]

log = logging.getLogger(__name__)

#: The only splits the tuning machine reads: fitting and choosing. The test split is not among them.
TUNE_SPLITS = ("train", "dev")
SIDES = ("flat", "tdc")
TRY_FIELDS = ["side", "try", "setting", "dev_balanced_accuracy", "dev_top1", "dev_macro_f1", "chosen"]


def expand_grid(grid: dict, base: dict | None = None) -> list[dict]:
    """The tries of ``grid`` (option -> list of values, in the order given), each on top of ``base``.

    Every try is checked (:func:`cbedtdc.heads.resolve_spec`) before any fitting starts, so a bad option
    stops the search at once, naming the try.

    >>> [t["loss"] + "/" + str(t["lr"]) for t in expand_grid({"loss": ["ce", "logit_adjusted"], "lr": [0.01, 0.003]})]
    ['ce/0.01', 'ce/0.003', 'logit_adjusted/0.01', 'logit_adjusted/0.003']
    >>> expand_grid({"epochs": [8]}, base={"sampler": "class_balanced"})
    [{'sampler': 'class_balanced', 'epochs': 8}]
    """
    if not isinstance(grid, dict) or not grid:
        raise InputError(f"tuning grid: must be a non-empty mapping of head options to lists, got {grid!r}")
    unknown = sorted(set(grid) - set(DEFAULTS))
    if unknown:
        raise InputError(f"tuning grid: unknown head option(s) {unknown}; allowed: {', '.join(sorted(DEFAULTS))}")
    names = list(grid)
    values = []
    for name in names:
        v = grid[name]
        v = list(v) if isinstance(v, (list, tuple)) else [v]
        if not v:
            raise InputError(f"tuning grid: option {name!r} has no value")
        values.append(v)
    tries = []
    for combo in itertools.product(*values):
        spec = {**(base or {}), **dict(zip(names, combo))}
        try:
            resolve_spec(spec)
        except InputError as err:
            raise InputError(f"tuning grid: try {len(tries) + 1} ({json.dumps(spec, sort_keys=True)}): {err}") from err
        tries.append(spec)
    return tries


def load_tuning_data(feature_dirs, classes) -> dict:
    """``{"train": (X, y), "dev": (X, y)}`` of the run's ``classes`` from the feature folders (train and dev only)."""
    classes = [int(c) for c in classes]
    out = {}
    for split in TUNE_SPLITS:  # fixed here: the test split is never read
        ss = load_split(feature_dirs, split, classes=classes)
        out[split] = (ss.X, np.asarray(ss.labels))
        if not len(ss):
            raise InputError(f"{', '.join(map(str, feature_dirs))}: no {split} sample of the run's classes "
                             f"{classes[:5]}...; give the features and run_classes.json of one run")
    return out


def _scores(labels, pred, classes) -> dict:
    return {"dev_balanced_accuracy": metrics.balanced_accuracy(labels, pred, classes),
            "dev_top1": metrics.top1(labels, pred), "dev_macro_f1": metrics.macro_f1(labels, pred, classes)}


def _flat_try(data, classes, spec, seed):
    pos = {c: i for i, c in enumerate(classes)}
    (X, y), (Xd, yd) = data["train"], data["dev"]
    idx, idx_d = np.array([pos[int(v)] for v in y]), np.array([pos[int(v)] for v in yd])
    head = fit_head(X, idx, len(classes), spec=spec, dev=(Xd, idx_d), seed=seed, source="tuning (flat)")
    pred = np.asarray(classes)[head.predict(Xd)]
    return _scores(yd, pred, classes)


def _tdc_try(data, plan: LevelPlan, spec, seed, routing):
    (X, y), (Xd, yd) = data["train"], data["dev"]
    heads = fit_level_heads(plan, (X, y), (Xd, yd), spec=spec, seed=seed, source="tuning (tdc)")
    probs = tdc_head_probs(heads, Xd)
    r = rule_for(routing, plan.mode).tune(plan, probs, yd).route(plan, probs)
    return _scores(yd, r.pred, plan.classes)


def tune(data: dict, classes, tries: list[dict], *, plan: LevelPlan | None = None, routing: str = DEFAULT,
         seed: int = 0, sides=SIDES) -> list[dict]:
    """Every try of ``tries`` on each side of ``sides`` (``flat``; ``tdc`` needs ``plan``): rows of :data:`TRY_FIELDS`.

    ``data`` comes from :func:`load_tuning_data`; ``routing`` is the TDC's rule (config ``tdc.routing``),
    tuned on dev for every try exactly as the pipeline does.
    """
    classes = [int(c) for c in classes]
    if "tdc" in sides and plan is None:
        raise InputError("tuning the TDC side needs the run's levels.json (rule plan_levels)")
    rows = []
    for side in sides:
        for i, spec in enumerate(tries, 1):
            got = (_flat_try(data, classes, spec, seed) if side == "flat"
                   else _tdc_try(data, plan, spec, seed, routing))
            rows.append({"side": side, "try": i, "setting": json.dumps(spec, sort_keys=True), **got, "chosen": 0})
            log.info("%s try %d/%d %s: dev balanced accuracy %.4f", side, i, len(tries), rows[-1]["setting"],
                     got["dev_balanced_accuracy"])
    for row in best_tries(rows).values():
        row["chosen"] = 1
    return rows


def best_tries(rows) -> dict:
    """``{side: row}`` of the best dev balanced accuracy per side (the earliest try among equals).

    >>> r = [{"side": "flat", "try": 1, "dev_balanced_accuracy": 0.5}, {"side": "flat", "try": 2,
    ...      "dev_balanced_accuracy": 0.6}, {"side": "tdc", "try": 1, "dev_balanced_accuracy": 0.4}]
    >>> {s: row["try"] for s, row in best_tries(r).items()}
    {'flat': 2, 'tdc': 1}
    """
    best: dict = {}
    for row in rows:
        cur = best.get(row["side"])
        if cur is None or float(row["dev_balanced_accuracy"]) > float(cur["dev_balanced_accuracy"]):
            best[row["side"]] = row
    return best


def write_tries(path, rows) -> None:
    """Every try and its dev scores, atomically (``tuning.csv``)."""
    write_csv(path, [{k: r[k] for k in TRY_FIELDS} for r in rows], TRY_FIELDS)


def read_grid(path) -> tuple[dict, dict]:
    """``(grid, base)`` of a tuning file (YAML): ``grid:`` option -> list of values, ``base:`` fixed options."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise InputError(f"{path}: not a readable tuning grid ({err})") from err
    if not isinstance(doc, dict) or "grid" not in doc:
        raise InputError(f"{path}: a tuning file needs a 'grid:' mapping of head options to lists of values")
    base = doc.get("base") or {}
    if not isinstance(base, dict):
        raise InputError(f"{path}: 'base:' must be a mapping of head options")
    return doc["grid"], base


def run_tuning(feature_dirs, run_classes_path, grid_path, out_csv, *, levels_path=None, routing: str = DEFAULT,
               seed: int = 0, threads: int = 0) -> dict:
    """Tune both sides on the features ``feature_dirs`` (CLI ``workflow_scripts/tune_heads.py``); write ``out_csv``.

    Returns ``{side: chosen row}``; the flat side only when ``levels_path`` is ``None``.
    """
    from cbedtdc.classes import read_run_classes

    grid, base = read_grid(grid_path)
    if threads:
        base = {**base, "threads": int(threads)}
    tries = expand_grid(grid, base)
    classes = read_run_classes(run_classes_path)
    plan = LevelPlan.load(levels_path) if levels_path else None
    if plan is not None:  # both checked before any fitting
        rule_for(routing, plan.mode)
        if sorted(plan.classes) != sorted(classes):
            raise InputError(f"{levels_path} plans classes {sorted(plan.classes)}, {run_classes_path} has "
                             f"{sorted(classes)}: give the levels.json and run_classes.json of one run")
    data = load_tuning_data(feature_dirs, classes)
    log.info("tuning %d tries per side on %d train / %d dev samples of %s", len(tries), len(data["train"][1]),
             len(data["dev"][1]), " + ".join(str(d) for d in feature_dirs))
    rows = tune(data, classes, tries, plan=plan, routing=routing, seed=seed,
                sides=SIDES if plan is not None else ("flat",))
    write_tries(out_csv, rows)
    return best_tries(rows)
