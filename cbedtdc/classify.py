"""Classify new challenge-layout files with a trained run (``cbedtdc classify``).

The samples are read with the data stage's walk and checks (:func:`cbedtdc.io.walk_samples`,
:func:`cbedtdc.io.check_stack`) and preprocessing (:func:`cbedtdc.preprocess.preprocess_stack`),
then routed down the levels exactly as in the evaluation (the run's tuned
:class:`~cbedtdc.cascade.routing.RoutingRule`). Bad inputs, files and samples are returned as rejected
rows (key, file, group, reason), never crashed on; keys are paths relative to the input that named the
file, in predictions and rejected rows alike.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cbedtdc.calibration import softmax
from cbedtdc.cascade.plan import LevelPlan
from cbedtdc.cascade.routing import ArgmaxRule, RoutingRule
from cbedtdc.crystallography import sg_name
from cbedtdc.errors import InputError

__all__ = ["find_inputs", "check_device", "check_output", "read_samples", "load_run", "classify_files",
           "prediction_fields", "route_batch", "predict_images", "FeatureCache", "REJECTED_FIELDS", "LoadedRun"]

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
                # the same file named twice (a folder and a file in it): classified once, first key
                log.info("%s: named twice, classified once", path)
                continue
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
    cbedtdc.errors.InputError: --device 'gpu' is not a device: allowed are cpu, cuda, auto (auto = a GPU when torch sees one)
    """
    from cbedtdc.train import inference_device

    if name not in DEVICES:
        raise InputError(f"--device {name!r} is not a device: allowed are cpu, cuda, auto "
                         "(auto = a GPU when torch sees one)")
    if name == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError("--device cuda: torch sees no GPU (torch.cuda.is_available() is False); "
                             "use --device cpu, or auto to take a GPU when there is one")
    return inference_device(name)


def check_output(path, flag: str = "--out") -> Path:
    """``path`` as a ``Path`` when a CSV can be written there; ``ValueError`` naming ``flag`` if not.

    Checked before any inference: a path that names a directory, or whose parent is a file.
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{flag} {p} is a directory: give a CSV file name, e.g. {p / 'predictions.csv'}")
    parent = next((a for a in p.absolute().parents if a.exists()), None)
    if parent is not None and not parent.is_dir():
        raise InputError(f"{flag} {p}: {parent} is a file, not a folder: give a path in a folder")
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
            except ValueError as e:  # the label is optional here: classified, scored without a truth
                log.warning("%s, %s: space_group attribute unreadable (%s); no truth column for it", path, node.name, e)
                truth = None
        return (preprocess_stack(stack, image_size), truth), ""

    for group, result, reason in walk_samples(path, read):
        if reason:
            yield group, None, None, reason
        else:
            yield group, result[0], result[1], ""


@dataclass
class LoadedRun:
    """A trained variant ready to classify: what it is, its plan (one level for a flat model), the levels'
    probabilities of a batch of stacks, the tuned routing rule (a flat model, one level: the argmax of its
    classes), the image side it reads."""

    kind: str  # "flat CNN", "flat head", "own-backbone TDC", "shared-backbone TDC"
    folder: Path
    plan: LevelPlan
    probs: Callable  # (B, 3, S, S) uint8 tensor on the device -> one (B, n_outputs_k) array per level
    rule: RoutingRule
    image_size: int


def _cnn_levels(kind, folder, plan, models, rule) -> LoadedRun:
    from cbedtdc.train import forward

    size = int(models[0][1]["image_size"])
    if any(int(m["image_size"]) != size for _, m in models):
        raise InputError(f"{folder}: the levels were trained at different image sizes")

    def probs(x):
        return [softmax(forward(model, x, meta["orientation"]).float().cpu().numpy()) for model, meta in models]

    return LoadedRun(kind, folder, plan, probs, rule, size)


class FeatureCache:
    """The feature blocks of the last batch, by source record: variants loaded with the same cache (a flat head and
    the shared TDC on ``[cnn, symmetry]``) compute each source once per batch instead of once per variant.

    A block is reused only for the very batch object it was computed from (``x is`` the cached one) and for a record
    of the same source, backbone or settings, sha256 and image size.

    >>> cache, calls = FeatureCache(), []
    >>> x = object()
    >>> [cache.get({"source": "s"}, x, lambda: calls.append(1) or 7) for _ in range(2)], len(calls)
    ([7, 7], 1)
    """

    def __init__(self):
        self._x, self._blocks = None, {}

    def get(self, record: dict, x, compute):
        if x is not self._x:
            self._x, self._blocks = x, {}
        # what determines the block: the source, its backbone or settings, their hash, the side (not e.g. the path
        # of the training features the record also names)
        key = json.dumps([record.get(k) for k in ("source", "model", "model_sha256", "image_size")], default=str)
        if key not in self._blocks:
            self._blocks[key] = compute()
        return self._blocks[key]


def source_extractor(sources, folder: Path, device: str, cache: FeatureCache | None = None):
    """``(features of a batch, image size)`` for the feature sources a head recorded (``info["sources"]``), each
    computed by its registered source (:mod:`cbedtdc.features.registry`), which checks that the head was fitted on
    the same backbone (sha256) or settings; the blocks are concatenated in the recorded order. With a ``cache``,
    a source block already computed for the same batch by another variant is reused."""
    from cbedtdc.features.registry import SOURCES

    parts, size = [], None
    for src in sources:
        if src["source"] not in SOURCES:
            raise InputError(f"{folder}: its heads read feature source {src['source']!r}, which this version does not "
                             f"have ({', '.join(SOURCES)}); rerun the run")
        extract, own = SOURCES[src["source"]].batch_features(src, folder, device)
        if own and size and own != size:
            raise InputError(f"{folder}: its sources were computed at {size} and {own} px")
        size = size or own
        parts.append((src, extract))

    if size is None:
        raise InputError(f"{folder}: its heads record no image size for their sources; rerun the run")

    def features(x):
        blocks = [f(x) if cache is None else cache.get(src, x, lambda f=f: f(x)) for src, f in parts]
        return blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)

    return features, size


def _recorded_sources(info: dict, path: Path) -> list[dict]:
    """The feature sources a head or the shared TDC's heads recorded (``sources``, written by every head since the
    feature-source registry); a file without them is an error naming it.

    >>> _recorded_sources({"backbone": "results/flat/ce/best.pt"}, Path("head.pt"))
    Traceback (most recent call last):
    ...
    cbedtdc.errors.InputError: head.pt records no feature sources (written by an older version): retrain it (rerun its
    rule, head or tdc_heads) before classifying with it
    """
    sources = info.get("sources")
    if not sources:
        raise InputError(f"{path} records no feature sources (written by an older version): retrain it (rerun its "
                         "rule, head or tdc_heads) before classifying with it")
    return sources


def _flat_head(folder: Path, head_file: Path, device: str, cache=None) -> LoadedRun:
    from cbedtdc.heads import load_head

    head = load_head(head_file)
    features, size = source_extractor(_recorded_sources(head.info, head_file), folder, device, cache)
    classes = [int(c) for c in head.info["classes"]]
    return LoadedRun("flat head", folder, LevelPlan([classes]), lambda x: [head.predict_proba(features(x))],
                     ArgmaxRule(), size)


def _shared_tdc(folder: Path, device: str, cache=None) -> LoadedRun:
    """The shared-backbone cascade in ``folder`` (``results/tdc_shared``): its feature sources, then every level's
    head; the plan is ``../tdc/levels.json``."""
    from cbedtdc.cascade.load import load_cascade
    from cbedtdc.cascade.shared import tdc_head_probs

    cas = load_cascade(folder.parent / "tdc" / "levels.json", folder / "routing.json", heads_dir=folder / "heads")
    features, size = source_extractor(_recorded_sources(cas.manifest, folder / "heads" / "heads.json"), folder, device,
                                      cache)
    return LoadedRun("shared-backbone TDC", folder, cas.plan, lambda x: tdc_head_probs(cas.heads, features(x)),
                     cas.rule, size)


def _own_tdc(folder: Path, device: str) -> LoadedRun:
    from cbedtdc.cascade.load import load_cascade

    cas = load_cascade(folder / "levels.json", folder / "routing.json", device=device)
    return _cnn_levels("own-backbone TDC", folder, cas.plan, cas.models, cas.rule)


def _run_tdc(run: Path) -> Path:
    """The TDC of a run folder (``results``): the one its saved config names, else the one that was tuned."""
    saved = run / "run_config.yaml"
    if saved.exists():
        import yaml

        backbone = ((yaml.safe_load(saved.read_text()) or {}).get("tdc") or {}).get("backbone")
        if backbone in ("own", "shared"):
            return run / ("tdc_shared" if backbone == "shared" else "tdc")
    return run / ("tdc_shared" if (run / "tdc_shared" / "routing.json").exists() else "tdc")


def load_run(run_dir, device: str = "cpu", cache: FeatureCache | None = None) -> LoadedRun:
    """Any trained variant folder: a run (``results``: its TDC), an own-backbone TDC (``results/tdc``), the
    shared-backbone TDC (``results/tdc_shared``), a flat CNN (``results/flat/<loss>``) or a flat head
    (``results/heads/flat/<name>``). Variants loaded with one ``cache`` share their feature blocks per batch
    (:class:`FeatureCache`)."""
    from cbedtdc.train import inference_device, load_model

    folder = Path(run_dir)
    device = inference_device(device)
    if (folder / "tdc" / "levels.json").exists():
        folder = _run_tdc(folder)
    if (folder / "heads" / "heads.json").exists():
        run = _shared_tdc(folder, device, cache)
    elif (folder / "levels.json").exists():
        run = _own_tdc(folder, device)
    elif (folder / "best.pt").exists():
        model, meta = load_model(folder / "best.pt", device=device)
        if meta.get("rest"):
            raise InputError(f"{folder}/best.pt has a 'rest' output: classify its whole TDC folder instead")
        run = _cnn_levels("flat CNN", folder, LevelPlan([[int(c) for c in meta["classes"]]]), [(model, meta)],
                          ArgmaxRule())
    elif any((folder / f"head.{ext}").exists() for ext in ("pt", "json")):
        head_file = next(folder / f"head.{ext}" for ext in ("pt", "json") if (folder / f"head.{ext}").exists())
        run = _flat_head(folder, head_file, device, cache)
    else:
        raise FileNotFoundError(f"{folder}: not a trained variant; give a run folder (results), a TDC (results/tdc, "
                                "results/tdc_shared), a flat CNN (results/flat/<loss>) or a flat head "
                                "(results/heads/flat/<name>)")
    log.info("classifying with the %s in %s (%d classes, %d level(s), %d px)", run.kind, run.folder,
             len(run.plan.classes), run.plan.n_levels, run.image_size)
    return run


def _prediction_rows(plan, probs, routed, batch, top: int) -> list[dict]:
    """One classify row per sample of ``batch``: ``prob`` and the ``top`` columns on one scale.

    Posterior routing: the hierarchical posterior ``P(c)`` over all classes, ranked like the prediction (after
    the prior correction when the routing uses it), so ``top1`` is the prediction and ``top1_prob`` its ``prob``.
    Argmax or threshold routing (and a flat model): the keeping level's calibrated softmax over its classes.
    """
    rows = []
    classes = np.asarray(plan.classes)
    for i, (key, _, truth) in enumerate(batch):
        k = int(routed.kept[i])
        if routed.joint is not None:
            outs, cls = classes, routed.joint[i]
            rank = routed.scores[i] if routed.scores is not None else cls
        else:
            outs = np.asarray(plan.outputs(k))
            cls = probs[k][i, : len(outs)]
            rank = cls
        order = np.argsort(-rank, kind="stable")[:top]
        row = {"key": key, "space_group": int(routed.pred[i]), "space_group_name": sg_name(int(routed.pred[i])),
               "level": k + 1, "prob": round(float(routed.conf[i]), 6),
               "true_space_group": "" if truth is None else truth}
        for j in range(top):
            row[f"top{j + 1}_space_group"] = int(outs[order[j]]) if j < len(order) else ""
            row[f"top{j + 1}_prob"] = round(float(cls[order[j]]), 6) if j < len(order) else ""
        rows.append(row)
    return rows


def classify_files(run_dir, inputs, *, batch_size: int = 64, top: int = 5, device: str = "cpu"):
    """Classify every sample of challenge-layout files with a trained variant (:func:`load_run`).

    Returns ``(predictions, rejected)``: one dict per classified sample (``key``, ``space_group``,
    ``space_group_name`` such as ``P2_1/c (14)``, ``level``, ``prob``, ``top1_space_group``/``top1_prob`` ...
    ``top5_*`` on the same scale as ``prob`` (:func:`_prediction_rows`), ``true_space_group`` when the file has
    one) and one dict per bad input, file or sample (:data:`REJECTED_FIELDS`: ``key``, ``file``, ``group``,
    ``reason``). Sample keys are ``<file key>/<group>``, the file key being its path relative to the input that
    named it (:func:`find_inputs`); a missing path or an empty folder is a rejected row and the other inputs are
    classified. ``device`` is checked (:func:`check_device`) before the run is loaded.
    """
    import torch

    device = check_device(device)
    run = load_run(run_dir, device)
    plan, size = run.plan, run.image_size
    files, rejected = find_inputs(inputs)
    predictions = []

    def run_batch(batch):
        x = torch.from_numpy(np.stack([b[1] for b in batch])).to(device)
        probs, routed = route_batch(run, x)
        predictions.extend(_prediction_rows(plan, probs, routed, batch, top))

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


def route_batch(run: LoadedRun, x):
    """``(level probabilities, routing)`` of one batch ``x`` ((B, 3, S, S) uint8 tensor on the run's device)."""
    import torch

    with torch.inference_mode():
        probs = run.probs(x)
    return probs, run.rule.route(run.plan, probs)


def predict_images(runs: dict, images, *, device: str = "cpu", batch_size: int = 64) -> dict:
    """Predicted space groups of preprocessed stacks in memory, by every loaded variant: ``{name: (N,) int array}``.

    ``runs``: ``{name: LoadedRun}``, all reading ``images``' side; ``images``: (N, 3, S, S) uint8 as
    :func:`cbedtdc.preprocess.preprocess_stack` writes them. Every variant sees the same batch tensor, so variants
    loaded with one :class:`FeatureCache` compute each feature source once per batch.
    """
    import torch

    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise InputError(f"predict_images takes (N, 3, S, S) uint8 stacks, got {images.dtype} {images.shape}")
    for name, run in runs.items():
        if run.image_size != images.shape[-1]:
            raise InputError(f"{name} ({run.folder}) reads {run.image_size} px stacks, got {images.shape[-1]} px")
    out = {name: [] for name in runs}
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device)
        for name, run in runs.items():
            out[name].append(np.asarray(route_batch(run, x)[1].pred, dtype=int))
    return {name: np.concatenate(p) if p else np.zeros(0, int) for name, p in out.items()}


def prediction_fields(top: int = 5) -> list[str]:
    """Column order of the classify CSV.

    ``prob`` is the probability of the predicted space group and ``topK_prob`` those of the ``K``-th
    candidates, on one scale (:func:`_prediction_rows`).

    >>> prediction_fields(top=1)
    ['key', 'space_group', 'space_group_name', 'level', 'prob', 'top1_space_group', 'top1_prob', 'true_space_group']
    """
    cols = ["key", "space_group", "space_group_name", "level", "prob"]
    for j in range(1, top + 1):
        cols += [f"top{j}_space_group", f"top{j}_prob"]
    return cols + ["true_space_group"]
