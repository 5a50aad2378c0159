"""Classify new challenge-layout files with a trained run (``cbedtdc classify``).

The samples are read with the data stage's walk and checks (:func:`cbedtdc.io.walk_samples`,
:func:`cbedtdc.io.check_stack`) and preprocessing (:func:`cbedtdc.preprocess.preprocess_stack`),
then routed down the levels exactly as in the evaluation (:func:`cbedtdc.cascade.route`). Bad
inputs, files and samples are returned as rejected rows (key, file, group, reason), never crashed
on; keys are paths relative to the input that named the file, in predictions and rejected rows alike.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cbedtdc.cascade import LevelPlan, load_levels, read_routing, route_tuned, softmax

__all__ = ["find_inputs", "check_device", "check_output", "read_samples", "load_run", "classify_files",
           "prediction_fields", "REJECTED_FIELDS", "LoadedRun"]

log = logging.getLogger(__name__)


DEVICES = ("cpu", "cuda", "auto")
REJECTED_FIELDS = ["key", "file", "group", "reason"]


def find_inputs(inputs) -> tuple[list[tuple[Path, str]], list[dict]]:
    """``(files, rejected)``: the HDF5 and ``.npz`` files named in ``inputs`` with their keys, and bad inputs.

    Folders are searched recursively for ``*.h5`` and ``*.npz`` (STEMDL mirror samples). A file's
    key is its path relative to the input that named it: its name for a file given directly, the
    path inside the folder for a folder
    (``a/good.h5`` and ``a/sub/good.h5`` give ``good.h5`` and ``sub/good.h5``). The same key is
    the prefix of the sample keys and the ``key``/``file`` of the rejected rows. A path that does
    not exist, a folder without any ``.h5``/``.npz`` file and a file whose key another input already gave
    are rejected rows (``key``, ``file``, ``group`` "", ``reason``), so the other inputs still run.

    >>> find_inputs(["no/such.h5"])[1][0]["reason"]
    'no such file or folder'
    """
    files, rejected, seen = [], [], {}

    def reject(key, reason):
        log.warning("rejected %s: %s", key, reason)
        rejected.append({"key": key, "file": key, "group": "", "reason": reason})

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix in (".h5", ".npz") and q.is_file())
            if not found:
                other = sorted(q.relative_to(p).as_posix() for q in p.rglob("*") if q.is_file())
                seen_text = f"; saw {len(other)} other file(s), e.g. {', '.join(other[:3])}" if other else ""
                reject(str(item), f"folder holds no .h5 or .npz file{seen_text}: give .h5/.npz files or a folder "
                       "of them")
                continue
            named = [(q, q.relative_to(p).as_posix()) for q in found]
        elif p.exists():
            named = [(p, p.name)]
        else:
            reject(str(item), "no such file or folder")
            continue
        for path, key in named:
            real = path.resolve()
            if real in seen.values():
                continue  # the same file named twice (a folder and a file in it): classified once, first key
            if key in seen:
                reject(key, f"{path} gives the same key as {seen[key]}: classify them in separate runs "
                       "or give their common parent folder")
                continue
            seen[key] = real
            files.append((path, key))
    return files, rejected


def check_device(name: str) -> str:
    """The torch device of ``--device name``, checked before any work.

    Allowed: ``cpu``, ``cuda`` (a GPU torch sees) and ``auto`` (a GPU when torch sees one, else
    the CPU); anything else, or ``cuda`` without a GPU, raises ``ValueError`` with a one-line message.

    >>> check_device("cpu")
    'cpu'
    >>> check_device("gpu")
    Traceback (most recent call last):
    ...
    ValueError: --device 'gpu' is not a device: allowed are cpu, cuda, auto (auto = a GPU when torch sees one)
    """
    from cbedtdc.train import inference_device

    if name not in DEVICES:
        raise ValueError(f"--device {name!r} is not a device: allowed are cpu, cuda, auto "
                         "(auto = a GPU when torch sees one)")
    if name == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda: torch sees no GPU (torch.cuda.is_available() is False); "
                             "use --device cpu, or auto to take a GPU when there is one")
    return inference_device(name)


def check_output(path, flag: str = "--out") -> Path:
    """``path`` as a ``Path`` when a CSV can be written there; ``ValueError`` naming ``flag`` if not.

    Checked before any inference: a path that names a directory, or whose parent is a file.
    """
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{flag} {p} is a directory: give a CSV file name, e.g. {p / 'predictions.csv'}")
    parent = next((a for a in p.absolute().parents if a.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ValueError(f"{flag} {p}: {parent} is a file, not a folder: give a path in a folder")
    return p


def read_samples(path, image_size: int):
    """Yield ``(group, uint8 stack (3, S, S) or None, true space group or None, reason)`` for one file.

    A file that cannot be opened yields one entry with group "" and the reason. The
    ``space_group`` attribute is optional (new data); an unparsable one is ignored. A STEMDL mirror
    ``.npz`` is one sample, group ``data`` (already log-scaled: resized and rounded, not scaled again);
    its ``label`` is optional likewise.
    """
    from cbedtdc.io import STACK, check_stack, parse_space_group, walk_samples
    from cbedtdc.preprocess import preprocess_stack

    if Path(path).suffix == ".npz":
        from cbedtdc.mirror import read_npz
        from cbedtdc.preprocess import scaled_to_uint8

        data, truth, reason = read_npz(path, require_label=False, min_side=image_size)
        yield ("", None, None, reason) if reason else ("data", scaled_to_uint8(data, image_size), truth, "")
        return

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


@dataclass
class LoadedRun:
    """A trained run ready to classify: its plan, the levels' probabilities of a batch, the tuned routing."""

    plan: LevelPlan
    probs: Callable  # (B, 3, S, S) tensor on the device -> one (B, n_outputs_k) array per level
    tuned: dict | None
    image_size: int


def _cnn_levels(plan, models, tuned) -> LoadedRun:
    from cbedtdc.train import forward

    size = int(models[0][1]["image_size"])
    if any(int(m["image_size"]) != size for _, m in models):
        raise ValueError("the run's levels were trained at different image sizes")

    def probs(x):
        return [softmax(forward(model, x, meta["orientation"]).float().cpu().numpy()) for model, meta in models]

    return LoadedRun(plan, probs, tuned, size)


def _shared_levels(results: Path, plan: LevelPlan, device: str) -> LoadedRun:
    """The shared-backbone cascade: the flat backbone's pooled features, then every level's head."""
    from cbedtdc.features import pooled_features
    from cbedtdc.headjobs import load_tdc_heads, tdc_head_probs
    from cbedtdc.train import inference_device, load_model

    shared = results / "tdc_shared"
    manifest, heads = load_tdc_heads(shared / "heads", plan)
    routing = shared / "routing.json"
    if not routing.exists():
        raise FileNotFoundError(f"{routing} missing: finish the run (rule tune_routing_shared) before classifying")
    tuned = read_routing(routing, plan)
    backbone = Path(manifest["backbone"])
    if not backbone.is_absolute():
        backbone = results.parent / backbone  # recorded relative to the run's working directory
    if not backbone.exists():
        raise FileNotFoundError(f"{shared}/heads/heads.json: its backbone {backbone} is missing; rerun the run")
    digest = hashlib.sha256(backbone.read_bytes()).hexdigest()
    if manifest.get("backbone_sha256") and digest != manifest["backbone_sha256"]:
        raise ValueError(f"{backbone} changed after the level heads were fitted on its features; rerun the run "
                         "(snakemake reruns features and heads)")
    model, meta = load_model(backbone, device=inference_device(device))

    def probs(x):
        feats = pooled_features(model, x, meta["orientation"]).float().cpu().numpy()
        return tdc_head_probs(heads, feats)

    return LoadedRun(plan, probs, tuned, int(meta["image_size"]))


def _shared_is_current(results: Path) -> bool:
    """True when the run in ``results`` uses the shared-backbone cascade (its saved config says so, or only the
    shared cascade was tuned)."""
    shared = (results / "tdc_shared" / "routing.json").exists()
    saved = results / "run_config.yaml"
    if shared and saved.exists():
        import yaml

        cfg = yaml.safe_load(saved.read_text()) or {}
        return (cfg.get("tdc") or {}).get("backbone") == "shared"
    return shared and not (results / "tdc" / "routing.json").exists()


def load_run(run_dir, device: str = "cpu") -> LoadedRun:
    """A TDC run (``results``, or its ``tdc`` folder; own or shared backbone), or a flat ``best.pt`` folder."""
    from cbedtdc.train import inference_device, load_model

    run = Path(run_dir)
    if (run / "tdc" / "levels.json").exists() and _shared_is_current(run):
        plan = LevelPlan.load(run / "tdc" / "levels.json")
        return _shared_levels(run, plan, device)
    for tdc in (run, run / "tdc"):
        if (tdc / "levels.json").exists():
            if tdc == run and _shared_is_current(run.parent):
                return _shared_levels(run.parent, LevelPlan.load(tdc / "levels.json"), device)
            plan, models = load_levels(tdc, device=device)
            routing = tdc / "routing.json"
            if not routing.exists():
                raise FileNotFoundError(f"{routing} missing: finish the run (rule tune_routing) before classifying")
            return _cnn_levels(plan, models, read_routing(routing, plan))
    if (run / "best.pt").exists():
        model, meta = load_model(run / "best.pt", device=inference_device(device))
        if meta.get("rest"):
            raise ValueError(f"{run}/best.pt has a 'rest' output: classify its whole TDC folder instead")
        return _cnn_levels(LevelPlan([[int(c) for c in meta["classes"]]]), [(model, meta)], None)
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
    input, file or sample (:data:`REJECTED_FIELDS`: ``key``, ``file``, ``group``, ``reason``).
    Sample keys are ``<file key>/<group>``, the file key being its path relative to the input
    that named it (:func:`find_inputs`); a missing path or an empty folder is a rejected row and
    the other inputs are classified. ``device`` is checked (:func:`check_device`) before the run
    is loaded.
    """
    import torch

    device = check_device(device)
    run = load_run(run_dir, device)
    plan, size = run.plan, run.image_size
    files, rejected = find_inputs(inputs)
    predictions = []

    def run_batch(batch):
        x = torch.from_numpy(np.stack([b[1] for b in batch])).to(device)
        with torch.inference_mode():
            probs = run.probs(x)
        predictions.extend(_prediction_rows(plan, probs, route_tuned(plan, probs, run.tuned or {}), batch, top))

    batch = []
    for path, key in files:
        for group, img, truth, reason in read_samples(path, size):
            if reason:
                log.warning("rejected %s/%s: %s", key, group, reason)
                rejected.append({"key": f"{key}/{group}" if group else key, "file": key, "group": group,
                                 "reason": reason})
                continue
            batch.append((f"{key}/{group}", img, truth))
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
