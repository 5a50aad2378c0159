"""Transfer across intensity models: the run's models on the same test materials rendered by another mode.

The generator fixes a material (crystal, optics, zone axes, thickness of each energy) by (seed, split, material
index), whatever the intensity model (:func:`cbedtdc.synth.generate.make_material`), so the first test materials
rendered in ``multislice`` (or ``bloch``, ``kinematic``) at 100 keV are the run's own test materials at 100 keV
under other physics. Rule ``transfer`` scores the four models of the run (:func:`cbedtdc.evaluate.robustness.
run_models`) on both renderings of the materials every rendering holds, and the paired difference of each model's
balanced accuracy (other mode minus the run's own mode) with a bootstrap over those materials
(:func:`cbedtdc.metrics.paired_difference`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cbedtdc.classes import read_run_classes
from cbedtdc.errors import InputError
from cbedtdc.evaluate.robustness import (held_out_rows, load_models, pair_renderings, preprocessed, read_raw_stacks,
                                         rendered_rows, run_models, score_predictions)
from cbedtdc.io import read_json, write_csv
from cbedtdc.metrics import paired_difference

__all__ = ["TRANSFER_FIELDS", "transfer_file_plan", "rendered_rows", "pair_renderings", "transfer_table",
           "run_transfer"]

log = logging.getLogger(__name__)

#: Columns of ``results/metrics/transfer.csv``: one row per rendering and model; ``difference`` (with its paired
#: interval) is the model's balanced accuracy on that rendering minus on the run's own (empty on the own rows).
TRANSFER_FIELDS = ["mode", "own_mode", "model", "variant", "n", "n_materials", "balanced_accuracy", "lo", "hi",
                   "top1", "crystal_system", "point_group", "difference", "difference_lo", "difference_hi"]


def transfer_file_plan(n_materials: int, per_file: int, test_materials: int) -> list[tuple[int, int]]:
    """``(first material, materials)`` of every transfer file: the first ``n_materials`` test materials (at most
    the ``test_materials`` of the split) in files of ``per_file``.

    >>> transfer_file_plan(16, 8, 400), transfer_file_plan(10, 8, 400), transfer_file_plan(16, 8, 5)
    ([(0, 8), (8, 8)], [(0, 8), (8, 2)], [(0, 5)])
    """
    if n_materials < 1 or per_file < 1:
        raise InputError(f"transfer.n_materials={n_materials}, transfer.materials_per_file={per_file}: both must be "
                         "at least 1")
    n = min(int(n_materials), int(test_materials))
    return [(first, min(per_file, n - first)) for first in range(0, n, per_file)]


def transfer_table(own_raw, other_raws: dict, y, materials, runs: dict, variants: dict, own_mode: str, classes, *,
                   n_boot: int = 1000, seed: int = 0, device: str = "cpu", batch_size: int = 64) -> list[dict]:
    """Rows of ``transfer.csv`` (:data:`TRANSFER_FIELDS`): every model on the run's own rendering, then on each
    other mode's rendering of the same samples (``other_raws``: ``{mode: raw stacks}``, rows aligned with
    ``own_raw``, ``y`` and ``materials``), with the paired difference to the own rendering."""
    from cbedtdc.classify import predict_images

    size = next(iter(runs.values())).image_size
    y, materials = np.asarray(y), np.asarray(materials)
    own = predict_images(runs, preprocessed(own_raw, size), device=device, batch_size=batch_size)
    rows = []

    def row(mode, model, pred, diff=None):
        s = score_predictions(y, pred, classes, materials, n_boot, seed)
        out = {"mode": mode, "own_mode": own_mode, "model": model, "variant": variants[model],
               **{k: s[k] for k in TRANSFER_FIELDS if k in s}}
        if diff is not None:
            out.update(difference=diff["difference"], difference_lo=diff["ci95"][0], difference_hi=diff["ci95"][1])
        return out

    rows += [row(own_mode, m, p) for m, p in own.items()]
    own_ba = {r["model"]: r["balanced_accuracy"] for r in rows}
    for mode, raw in other_raws.items():
        if len(raw) != len(y):
            raise InputError(f"{mode}: {len(raw)} stacks for {len(y)} paired samples")
        preds = predict_images(runs, preprocessed(raw, size), device=device, batch_size=batch_size)
        for m, p in preds.items():
            rows.append(row(mode, m, p, paired_difference(y, p, own[m], classes, materials, n_boot, seed)))
            log.info("%s, %s: balanced accuracy %.3f (%s %.3f)", mode, m, rows[-1]["balanced_accuracy"], own_mode,
                     own_ba[m])
    return rows


def run_transfer(summary_path, splits_path, run_classes_path, raw_files, rendered: dict, out_csv, *, own_mode: str,
                 n_boot: int = 1000, seed: int = 0, device: str = "cpu", batch_size: int = 64) -> list[dict]:
    """Write ``transfer.csv`` for the run whose results folder holds ``summary_path`` (rule ``transfer``).

    ``rendered``: ``{mode: [transfer files]}``; ``raw_files``: the run's raw files (its own rendering).
    """
    from cbedtdc.train import inference_device

    device = inference_device(device)
    if own_mode in rendered:
        raise InputError(f"transfer mode {own_mode} is the run's own mode: name other modes in transfer.modes")
    classes = read_run_classes(run_classes_path)
    models = run_models(read_json(summary_path), Path(summary_path).parent.parent)
    others = {m: rendered_rows(files) for m, files in rendered.items()}
    own_rows, other_rows = pair_renderings(held_out_rows(splits_path, classes), others, classes)
    log.info("transfer: %d samples of %d materials in %s and %s", len(own_rows),
             len({r["material"] for r in own_rows}), own_mode, ", ".join(rendered))
    own_raw = read_raw_stacks(own_rows, raw_files)
    other_raws = {m: read_raw_stacks(rows, rendered[m]) for m, rows in other_rows.items()}
    runs = load_models(models, device)
    table = transfer_table(own_raw, other_raws, [int(r["space_group"]) for r in own_rows],
                           [r["material"] for r in own_rows], runs, {m: v[0] for m, v in models.items()}, own_mode,
                           classes, n_boot=n_boot, seed=seed, device=device, batch_size=batch_size)
    write_csv(out_csv, table, TRANSFER_FIELDS)
    return table
