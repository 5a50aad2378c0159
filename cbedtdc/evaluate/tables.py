"""The tables of an evaluation: per_class.csv, levels.csv, confusion_{flat,tdc}.csv, predictions.csv."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cbedtdc.crystallography import sg_name
from cbedtdc.evaluate.variants import TestSet
from cbedtdc.io import write_csv
from cbedtdc.metrics import confusion_matrix, per_class_recall

__all__ = ["LEVEL_FIELDS", "write_tables", "jsonable"]

#: Columns of ``levels.csv``.
LEVEL_FIELDS = ["level", "classes", "reached", "kept", "kept_fraction", "belongs", "own_total", "own_kept",
                "correct", "accuracy", "share_of_test", "oracle_accuracy", "images_seen"]


def write_tables(out_dir: Path, plan, classes, ts: TestSet, flat_recall: dict, flat_best, r, oracle, levels) -> None:
    """per_class.csv, levels.csv, confusion_{flat,tdc}.csv and predictions.csv, rows in the run's class order.

    ``flat_recall`` maps a column suffix (``ce``, ``ce_crt``) to the test predictions of that flat model;
    ``flat_best`` are the predictions of the headline flat model (confusion matrix, predictions.csv).
    """
    y = ts.labels
    owner = dict(zip(classes, (plan.level_of(classes) + 1).tolist()))
    n_train = {c: int((ts.train_labels == c).sum()) for c in classes}
    recall_cols = {f"recall_flat_{lo}": per_class_recall(y, pred, classes) for lo, pred in flat_recall.items()}
    recall_cols["recall_tdc"] = per_class_recall(y, r.pred, classes)
    recall_cols["recall_tdc_estimated"] = per_class_recall(y, oracle, classes)
    rows = []
    for i, c in enumerate(classes):
        row = {"space_group": c, "name": sg_name(int(c)), "level": owner[c], "n_train": n_train[c],
               "n_test": int((y == c).sum())}
        row.update({name: ("" if np.isnan(v[i]) else round(float(v[i]), 6)) for name, v in recall_cols.items()})
        rows.append(row)
    write_csv(out_dir / "per_class.csv", rows, list(rows[0]))
    write_csv(out_dir / "levels.csv", [{**lv, "classes": " ".join(map(str, lv["classes"]))} for lv in levels],
              LEVEL_FIELDS)
    header = ["true\\pred"] + [str(c) for c in classes] + ["other"]
    for name, pred in (("flat", flat_best), ("tdc", r.pred)):
        cm = confusion_matrix(y, pred, classes)
        write_csv(out_dir / f"confusion_{name}.csv",
                  [dict(zip(header, [str(c)] + row.tolist())) for c, row in zip(classes, cm)], header)
    pred_rows = [{"key": k, "material": m, "space_group": int(t_), "flat_pred": int(fp), "tdc_pred": int(tp),
                  "tdc_level": int(lv) + 1, "tdc_prob": round(float(cf), 6)}
                 for k, m, t_, fp, tp, lv, cf in zip(ts.keys, ts.materials, y, flat_best, r.pred, r.kept,
                                                     r.conf)]
    write_csv(out_dir / "predictions.csv", pred_rows, list(pred_rows[0]))


def jsonable(obj):
    """NaN -> None, numpy scalars -> Python, recursively (strict JSON for outside readers).

    >>> jsonable({"a": float("nan"), "b": [np.int64(2), 0.5]})
    {'a': None, 'b': [2, 0.5]}
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if not np.isfinite(obj) else float(obj)
    return obj
