"""Classify new challenge-layout files with a trained run (``cbedtdc classify``).

The samples are read with the data stage's walk and checks (:func:`cbedtdc.io.walk_samples`,
:func:`cbedtdc.io.check_stack`) and preprocessing (:func:`cbedtdc.preprocess.preprocess_stack`),
then routed down the levels exactly as in the evaluation (:func:`cbedtdc.cascade.route`). Bad
files and samples are returned as rejected rows (file, group, reason), never crashed on.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cbedtdc.cascade import LevelPlan, load_levels, load_routing, route, softmax

__all__ = ["find_inputs", "read_samples", "load_run", "classify_files", "prediction_fields"]

log = logging.getLogger(__name__)


def find_inputs(inputs) -> list[Path]:
    """HDF5 files named in ``inputs``; folders are searched recursively for ``*.h5``.

    A path that does not exist raises ``FileNotFoundError`` naming it; a folder without any
    ``.h5`` file raises too (nothing to classify is a user error, not an empty result).
    """
    files = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*.h5") if q.is_file())
            if not found:
                raise FileNotFoundError(f"{p}: folder holds no .h5 file")
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return list(dict.fromkeys(files))


def read_samples(path, image_size: int):
    """Yield ``(group, uint8 stack (3, S, S) or None, true space group or None, reason)`` for one file.

    A file that cannot be opened yields one entry with group "" and the reason. The
    ``space_group`` attribute is optional (new data); an unparsable one is ignored.
    """
    from cbedtdc.io import STACK, check_stack, parse_space_group, walk_samples
    from cbedtdc.preprocess import preprocess_stack

    def read(name, node):
        if STACK not in node:
            return None, f"missing dataset {STACK}"
        stack, reason = check_stack(node[STACK], min_side=image_size)
        if reason:
            return None, reason
        truth = None
        if "space_group" in node.attrs:
            try:
                truth = parse_space_group(node.attrs["space_group"])
            except ValueError:
                truth = None
        return (preprocess_stack(stack, image_size), truth), ""

    for group, result, reason in walk_samples(path, read):
        if reason:
            yield group, None, None, reason
        else:
            yield group, result[0], result[1], ""


def load_run(run_dir, device: str = "cpu"):
    """``(plan, models, thresholds)`` of a TDC folder, or a one-level plan for a flat ``best.pt`` folder."""
    from cbedtdc.train import inference_device, load_model

    run = Path(run_dir)
    for tdc in (run, run / "tdc"):
        if (tdc / "levels.json").exists():
            plan, models = load_levels(tdc, device=device)
            routing = tdc / "routing.json"
            if not routing.exists():
                raise FileNotFoundError(f"{routing} missing: finish the run (rule tune_routing) before classifying")
            return plan, models, load_routing(routing, plan)
    if (run / "best.pt").exists():
        model, meta = load_model(run / "best.pt", device=inference_device(device))
        if meta.get("rest"):
            raise ValueError(f"{run}/best.pt has a 'rest' output: classify its whole TDC folder instead")
        return LevelPlan([[int(c) for c in meta["classes"]]]), [(model, meta)], None
    raise FileNotFoundError(f"{run}: neither a TDC folder (levels.json) nor a model folder (best.pt); "
                            "give results/tdc or results/flat/<loss>")


def _prediction_rows(plan, probs, routed, batch, top: int) -> list[dict]:
    """One classify row per sample of ``batch`` from the levels' probabilities and the routing."""
    rows = []
    for i, (key, _, truth) in enumerate(batch):
        k = int(routed.kept[i])
        outs = plan.outputs(k)
        cls = probs[k][i, : len(outs)]
        order = np.argsort(-cls, kind="stable")[:top]
        row = {"key": key, "space_group": int(routed.pred[i]), "level": k + 1, "prob": round(float(routed.conf[i]), 6),
               "true_space_group": "" if truth is None else truth}
        for j in range(top):
            row[f"top{j + 1}_space_group"] = int(outs[order[j]]) if j < len(order) else ""
            row[f"top{j + 1}_prob"] = round(float(cls[order[j]]), 6) if j < len(order) else ""
        rows.append(row)
    return rows


def classify_files(run_dir, inputs, *, batch_size: int = 64, top: int = 5, device: str = "cpu"):
    """Classify every sample of challenge-layout files with a trained TDC (or flat model).

    Returns ``(predictions, rejected)``: one dict per classified sample (``key``, ``space_group``,
    ``level``, ``prob``, ``top1_space_group``/``top1_prob`` ... ``top5_*`` from the keeping
    level's class outputs, ``true_space_group`` when the file has one) and one dict per bad
    file or sample (``file``, ``group``, ``reason``), as the data stage reports them.
    """
    import torch

    from cbedtdc.train import forward, inference_device

    device = inference_device(device)
    plan, models, thresholds = load_run(run_dir, device)
    size = int(models[0][1]["image_size"])
    if any(int(m["image_size"]) != size for _, m in models):
        raise ValueError(f"{run_dir}: levels trained at different image sizes")
    predictions, rejected = [], []

    def run_batch(batch):
        x = torch.from_numpy(np.stack([b[1] for b in batch])).to(device)
        with torch.inference_mode():
            probs = [softmax(forward(model, x, meta["orientation"]).float().cpu().numpy()) for model, meta in models]
        predictions.extend(_prediction_rows(plan, probs, route(plan, probs, thresholds), batch, top))

    batch = []
    for path in find_inputs(inputs):
        for group, img, truth, reason in read_samples(path, size):
            if reason:
                log.warning("rejected %s/%s: %s", path.name, group, reason)
                rejected.append({"file": str(path), "group": group, "reason": reason})
                continue
            batch.append((f"{path.name}/{group}", img, truth))
            if len(batch) == batch_size:
                run_batch(batch)
                batch = []
    if batch:
        run_batch(batch)
    return predictions, rejected


def prediction_fields(top: int = 5) -> list[str]:
    """Column order of the classify CSV.

    >>> prediction_fields(top=1)
    ['key', 'space_group', 'level', 'prob', 'top1_space_group', 'top1_prob', 'true_space_group']
    """
    cols = ["key", "space_group", "level", "prob"]
    for j in range(1, top + 1):
        cols += [f"top{j}_space_group", f"top{j}_prob"]
    return cols + ["true_space_group"]
