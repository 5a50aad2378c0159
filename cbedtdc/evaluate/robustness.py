"""Robustness curves: the run's models on test stacks perturbed as a real detector and microscope would.

A fixed, seeded subset of the run's test materials is read from the raw files (intensities before the log
scaling), every perturbation of :data:`cbedtdc.perturb.PERTURBATIONS` is applied at every configured strength
(config ``robustness.perturbations``), the stacks are preprocessed as the shards were
(:func:`cbedtdc.preprocess.preprocess_stack`) and classified in memory by the four models of the run
(:func:`run_models`) through :func:`cbedtdc.classify.predict_images`; the flat head and the TDC share their
feature blocks per batch (:class:`cbedtdc.classify.FeatureCache`). Each row scores one model on one perturbed
batch: balanced accuracy with a bootstrap interval over materials, top-1, crystal-system accuracy, and the ratio
to the model's clean balanced accuracy on the same stacks.

Mistilt and specimen thickness are generator settings, not image operations (:data:`RENDERED`): rule
``robustness_synthesize`` renders the run's first test materials again with more mistilt or a thickness beyond the
training range (config ``robustness.rendered``, :func:`rendered_settings`), and :func:`rendered_table` scores them
paired with the run's own rendering of the same samples.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cbedtdc.classes import read_run_classes
from cbedtdc.errors import InputError
from cbedtdc.io import index_file, read_csv, read_json, write_csv
from cbedtdc.metrics import balanced_accuracy, bootstrap_materials, hierarchy_scores, top1

__all__ = ["ROBUSTNESS_FIELDS", "MODELS", "RENDERED", "run_models", "held_out_rows", "choose_materials",
           "read_raw_stacks", "score_predictions", "load_models", "preprocessed", "robustness_table",
           "rendered_rows", "pair_renderings", "rendered_settings", "own_strengths", "rendered_table", "run_robustness"]

log = logging.getLogger(__name__)

#: Columns of ``results/metrics/robustness.csv``; the clean row of each model has perturbation ``clean``. The
#: rendered perturbations' rows (:data:`RENDERED`) also give ``difference`` [``difference_lo``, ``difference_hi``]:
#: the balanced accuracy minus that on the run's own rendering of the same samples, with a paired interval.
ROBUSTNESS_FIELDS = ["perturbation", "strength", "model", "variant", "n", "n_materials", "balanced_accuracy", "lo",
                     "hi", "top1", "crystal_system", "point_group", "ratio_to_clean", "difference", "difference_lo",
                     "difference_hi"]
#: Perturbations the generator renders (its settings, not an image operation): beam mistilt and specimen thickness.
RENDERED = ("mistilt", "thickness")
#: The models scored, in this order: the headline flat model, the TDC, the head on the physics descriptors alone
#: and the flat CNN's own softmax.
MODELS = ("flat", "tdc", "descriptors", "cnn")


def _best(variants, keep):
    rows = [r for r in variants if r.get("family") == "flat" and keep(r)]
    rows = [r for r in rows if r.get("dev_balanced_accuracy") is not None] or rows
    return max(rows, key=lambda r: r.get("dev_balanced_accuracy") or 0.0) if rows else None


def _flat_folder(name: str, root: Path) -> Path:
    """Folder of the flat variant named in ``summary.json`` (``flat/ce/cnn`` or ``flat/<sources>/<head>``)."""
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != "flat":
        raise InputError(f"summary.json names flat variant {name!r}, not flat/<sources>/<head>; rerun rule evaluate")
    return root / "flat" / parts[1] if parts[2] == "cnn" else root / "heads" / "flat" / parts[2]


def run_models(summary: dict, root) -> dict:
    """``{model: (variant name, folder)}`` of the four models of :data:`MODELS` in a run's ``summary.json``.

    ``flat``: the headline flat model (chosen on dev by evaluate); ``tdc``: the run's TDC (``tdc_shared`` with a
    shared backbone, else ``tdc``); ``descriptors``: the flat head on ``[symmetry]`` alone with the best dev
    balanced accuracy; ``cnn``: the flat CNN with the best dev balanced accuracy (its own softmax). A model the
    run lacks (no head on the descriptors alone) is left out, and said so in the log.

    >>> s = {"flat": {"model": "flat/ce+symmetry/cnn_sym_crt"}, "tdc": {"backbone": "shared"}, "best": {"tdc": "t"},
    ...      "variants": [{"name": "flat/ce/cnn", "family": "flat", "head": "cnn", "backbone": "ce",
    ...                    "features": ["cnn"], "dev_balanced_accuracy": 0.5},
    ...                   {"name": "flat/symmetry/sym_crt", "family": "flat", "head": "sym_crt",
    ...                    "features": ["symmetry"], "dev_balanced_accuracy": 0.4}]}
    >>> for model, (variant, folder) in run_models(s, "results").items():
    ...     print(model, variant, folder)
    flat flat/ce+symmetry/cnn_sym_crt results/heads/flat/cnn_sym_crt
    tdc t results/tdc_shared
    descriptors flat/symmetry/sym_crt results/heads/flat/sym_crt
    cnn flat/ce/cnn results/flat/ce
    """
    root = Path(root)
    try:
        flat = summary["flat"]["model"]
        backbone = summary["tdc"]["backbone"]
    except KeyError as err:
        raise InputError(f"summary.json lacks {err}: it was written by another version; rerun rule evaluate") from None
    variants = summary.get("variants", [])
    tdc = summary.get("best", {}).get("tdc") or "tdc"  # the run's one cascade, by its variant name
    out = {"flat": (flat, _flat_folder(flat, root)),
           "tdc": (tdc, root / ("tdc_shared" if backbone == "shared" else "tdc"))}
    desc = _best(variants, lambda r: list(r.get("features") or []) == ["symmetry"])
    if desc is not None:
        out["descriptors"] = (desc["name"], _flat_folder(desc["name"], root))
    else:
        log.info("no flat head on [symmetry] alone in heads.variants: no descriptor-only curve")
    cnn = _best(variants, lambda r: r.get("head") == "cnn")
    if cnn is not None:
        out["cnn"] = (cnn["name"], _flat_folder(cnn["name"], root))
    else:
        log.info("no flat CNN (flat.losses is empty): no CNN curve")
    return {m: out[m] for m in MODELS if m in out}


def held_out_rows(splits_path, classes) -> list[dict]:
    """The test rows of ``splits.csv`` (key, file, group, space_group, material, energy_keV) of the run's classes."""
    keep = {int(c) for c in classes}
    rows = [r for r in read_csv(splits_path) if r["split"] == "test" and int(r["space_group"]) in keep]
    if not rows:
        raise InputError(f"{splits_path}: no test sample of the run's classes {sorted(keep)}")
    return rows


def choose_materials(rows, n_materials: int, seed: int) -> list[dict]:
    """Every row of ``n_materials`` test materials drawn without replacement by ``seed`` (all when there are fewer),
    in their original order.

    >>> rows = [{"material": m} for m in "aabbccdd"]
    >>> [r["material"] for r in choose_materials(rows, 2, 0)] == [r["material"] for r in choose_materials(rows, 2, 0)]
    True
    >>> len(choose_materials(rows, 2, 0)), len(choose_materials(rows, 9, 0))
    (4, 8)
    """
    if n_materials < 1:
        raise InputError(f"robustness.n_materials={n_materials}: must be at least 1")
    names = sorted({r["material"] for r in rows})
    if n_materials < len(names):
        rng = np.random.default_rng([int(seed), 25])
        names = set(np.asarray(names)[rng.choice(len(names), size=n_materials, replace=False)].tolist())
    else:
        names = set(names)
    return [r for r in rows if r["material"] in names]


def read_raw_stacks(rows, raw_files) -> np.ndarray:
    """The raw ``cbed_stack`` (float32) of every row (``file``: a file name, ``group``), from ``raw_files``."""
    import h5py

    from cbedtdc.io import STACK

    by_name = {}
    for p in raw_files:
        by_name.setdefault(Path(p).name, Path(p))
    out, handles = [], {}
    try:
        for r in rows:
            path = by_name.get(r["file"])
            if path is None:
                raise InputError(f"sample {r['file']}/{r['group']}: no raw file named {r['file']} among the "
                                 f"{len(by_name)} given; give the run's raw files (--raw)")
            if path.suffix != ".h5":
                raise InputError(f"{path}: robustness needs raw intensities from challenge HDF5 files; STEMDL mirror "
                                 "samples are already log-scaled (set robustness.activate: false)")
            if path not in handles:
                handles[path] = h5py.File(path, "r")
            try:
                out.append(np.asarray(handles[path][r["group"]][STACK][()], dtype=np.float32))
            except KeyError:
                raise InputError(f"{path}: sample {r['group']} has no {STACK} (the raw file changed after the data "
                                 "stage's splits.csv; rerun the data stage)") from None
    finally:
        for f in handles.values():
            f.close()
    return np.stack(out)


def score_predictions(y, pred, classes, materials, n_boot: int, seed: int) -> dict:
    """Balanced accuracy ``[lo, hi]`` (bootstrap over materials), top-1 and crystal-system and point-group top-1.

    >>> s = score_predictions([14, 14, 225], [14, 2, 225], [14, 225, 2], ["a", "b", "c"], 0, 0)
    >>> round(s["balanced_accuracy"], 2), round(s["crystal_system"], 2), round(s["point_group"], 2)
    (0.75, 0.67, 0.67)
    """
    y, pred = np.asarray(y), np.asarray(pred)
    lo, hi = bootstrap_materials(lambda i: balanced_accuracy(y[i], pred[i], classes), materials, n_boot, seed)
    h = hierarchy_scores(y, pred, classes)
    return {"n": int(len(y)), "n_materials": int(len(set(materials))),
            "balanced_accuracy": balanced_accuracy(y, pred, classes), "lo": lo, "hi": hi, "top1": top1(y, pred),
            "crystal_system": h["crystal_system"]["top1"], "point_group": h["point_group"]["top1"]}


def load_models(models: dict, device: str = "cpu") -> dict:
    """``{model: LoadedRun}`` of :func:`run_models`' folders, sharing one feature cache."""
    from cbedtdc.classify import FeatureCache, load_run

    cache = FeatureCache()
    runs = {m: load_run(folder, device, cache=cache) for m, (_, folder) in models.items()}
    sizes = {r.image_size for r in runs.values()}
    if len(sizes) != 1:
        raise InputError(f"the models read stacks of different sides {sorted(sizes)}: "
                         + ", ".join(f"{m} {r.image_size}" for m, r in runs.items()))
    return runs


def preprocessed(raw, size: int) -> np.ndarray:
    """Raw stacks as the shards hold them: (N, 3, size, size) uint8 (:func:`cbedtdc.preprocess.preprocess_stack`)."""
    from cbedtdc.preprocess import preprocess_stack

    return np.stack([preprocess_stack(s, size) for s in raw])


def robustness_table(raw, y, materials, runs: dict, variants: dict, perturbations: dict, classes, *, seed: int = 0,
                     n_boot: int = 1000, device: str = "cpu", batch_size: int = 64) -> list[dict]:
    """Rows of ``robustness.csv`` (:data:`ROBUSTNESS_FIELDS`): every model on the clean ``raw`` stacks, then on
    every perturbation and strength of ``perturbations`` (``{name: [strength, ...]}``).

    Perturbation ``k`` at strength ``j`` draws from ``numpy.random.default_rng([seed, k, j])``, stack after stack
    in row order, so the same seed gives the same table. ``variants``: ``{model: variant name}``.
    """
    from cbedtdc.classify import predict_images
    from cbedtdc.perturb import PERTURBATIONS, perturb

    unknown = sorted(set(perturbations) - set(PERTURBATIONS))
    if unknown:
        raise InputError(f"robustness.perturbations: {', '.join(unknown)} unknown; allowed: {', '.join(PERTURBATIONS)} "
                         f"({', '.join(RENDERED)}: under robustness.rendered, rendered by the generator)")
    size = next(iter(runs.values())).image_size
    y, materials = np.asarray(y), np.asarray(materials)
    rows, clean = [], {}

    def add(name, strength, images):
        preds = predict_images(runs, images, device=device, batch_size=batch_size)
        for model, pred in preds.items():
            s = score_predictions(y, pred, classes, materials, n_boot, seed)
            if name == "clean":
                clean[model] = s["balanced_accuracy"]
            base = clean[model]
            rows.append({"perturbation": name, "strength": strength, "model": model, "variant": variants[model],
                         **{k: s[k] for k in ROBUSTNESS_FIELDS if k in s},
                         "ratio_to_clean": s["balanced_accuracy"] / base if base > 0 else float("nan")})

    add("clean", "", preprocessed(raw, size))
    for k, name in enumerate(PERTURBATIONS):  # a fixed order (and stream) per perturbation, whatever the config's
        for j, strength in enumerate(perturbations.get(name, ())):
            rng = np.random.default_rng([int(seed), k, j])
            images = preprocessed([perturb(s, name, float(strength), rng) for s in raw], size)
            add(name, strength, images)
            log.info("%s %s: %s", name, strength, ", ".join(f"{r['model']} {r['balanced_accuracy']:.3f}"
                                                            for r in rows[-len(runs):]))
    return rows


def rendered_rows(files) -> list[dict]:
    """Every sample of the rendered transfer files (``file`` name, ``group``, ``space_group``, ``material``,
    ``energy_keV``), checked like the run's raw files (:func:`cbedtdc.io.index_file`); a bad sample is logged and
    left out (the pairing then leaves its material out of every rendering)."""
    rows = []
    for path in files:
        idx = index_file(path, split="test")
        for q in idx["quarantine"]:
            log.warning("%s/%s: left out of the transfer scores: %s", q["file"], q["group"], q["reason"])
        rows += idx["samples"]
    return rows


def _key(row) -> tuple[str, float]:
    return row["material"], round(float(row["energy_keV"]), 3)


def pair_renderings(own: list[dict], others: dict, classes, what: str = "transfer") -> tuple[list[dict], dict]:
    """``(own rows, {mode: rows})`` of the (material, energy) samples that every rendering holds, in one order.

    Only the run's classes are kept. A sample whose space group differs between renderings is an error: the
    files were rendered for another run (seed, classes or material counts). ``what`` names the reading in messages
    (``transfer``, ``robustness``: its files under ``results/<what>``).

    >>> own = [{"material": "m0", "energy_keV": "100.0", "space_group": "14"},
    ...        {"material": "m1", "energy_keV": "100.0", "space_group": "225"},
    ...        {"material": "m1", "energy_keV": "110.0", "space_group": "225"}]
    >>> ms = [{"material": "m1", "energy_keV": 100.0, "space_group": 225}]
    >>> o, other = pair_renderings(own, {"multislice": ms}, [14, 225])
    >>> [r["material"] for r in o], [r["material"] for r in other["multislice"]]
    (['m1'], ['m1'])
    """
    keep = {int(c) for c in classes}
    own_by = {_key(r): r for r in own if int(r["space_group"]) in keep}
    by_mode = {m: {_key(r): r for r in rows if int(r["space_group"]) in keep} for m, rows in others.items()}
    common = set(own_by)
    for m, rows in by_mode.items():
        common &= set(rows)
    for m, rows in by_mode.items():  # what a rendering lacks leaves the pairing: say which samples
        missing = sorted((set(rows) | set(own_by)) - common)
        if missing:
            log.warning("%s: %d sample(s) left out of the pairing with %s (not in every rendering), e.g. %s",
                        what, len(missing), m, missing[0])
    for m, rows in by_mode.items():
        for k in common:
            if int(rows[k]["space_group"]) != int(own_by[k]["space_group"]):
                raise InputError(f"{m} rendering of {k[0]} is space group {rows[k]['space_group']}, the run's test "
                                 f"split says {own_by[k]['space_group']}: the {what} files were rendered for another "
                                 f"run; delete results/{what} and rerun")
    if not common:
        raise InputError(f"no test material of the run's classes is in every rendering (run's own and "
                         f"{', '.join(others)}): raise {what}'s n_materials or check the {what} files' logs")
    order = sorted(common)
    return [own_by[k] for k in order], {m: [rows[k] for k in order] for m, rows in by_mode.items()}


def rendered_settings(rendered: dict, own_mistilt: float) -> dict:
    """``{(perturbation, strength): generator setting}`` of every rendering of ``robustness.rendered``.

    ``mistilt`` strength ``x``: ``{"mistilt": x}``, the s.d. of the beam tilt as a fraction of the disk radius (the
    run's is ``own_mistilt``, ``synth.mistilt``; a strength equal to it is an error: that rendering is the run's
    own). ``thickness`` strengths, increasing and above the generator's range
    (:data:`cbedtdc.synth.generate.THICKNESS`, 100-500 A), are the upper edges of thickness bins: strength
    ``T_j`` renders every sample with a thickness drawn uniformly in ``(T_{j-1}, T_j)``, ``T_0`` = 500 A.

    >>> for key, setting in rendered_settings({"mistilt": [0.2], "thickness": [700, 1000]}, 0.1).items():
    ...     print(key, setting)
    ('mistilt', 0.2) {'mistilt': 0.2}
    ('thickness', 700) {'thickness': (500.0, 700)}
    ('thickness', 1000) {'thickness': (700, 1000)}
    """
    from cbedtdc.synth.generate import THICKNESS

    unknown = sorted(set(rendered) - set(RENDERED) - {"n_materials"})
    if unknown:
        raise InputError(f"robustness.rendered: {', '.join(unknown)} unknown; allowed: n_materials, "
                         f"{', '.join(RENDERED)}")
    out = {}
    for x in rendered.get("mistilt") or []:
        if x < 0 or x == own_mistilt:
            why = "negative" if x < 0 else f"the run's own (synth.mistilt {own_mistilt}): its own rendering"
            raise InputError(f"robustness.rendered.mistilt: {x} is {why}; give other mistilts >= 0")
        out[("mistilt", x)] = {"mistilt": x}
    low = THICKNESS[1]
    for t in rendered.get("thickness") or []:
        if t <= low:
            raise InputError(f"robustness.rendered.thickness: {list(rendered['thickness'])} must increase from above "
                             f"the generator's {THICKNESS[0]:g}-{THICKNESS[1]:g} A (each the upper edge of a bin)")
        out[("thickness", t)] = {"thickness": (low, t)}
        low = t
    return out


def own_strengths(own_mistilt: float) -> dict:
    """The strength at which each rendered perturbation's curve starts: the run's own rendering (``synth.mistilt``,
    the generator's upper thickness edge).

    >>> own_strengths(0.1)
    {'mistilt': 0.1, 'thickness': 500.0}
    """
    from cbedtdc.synth.generate import THICKNESS

    return {"mistilt": float(own_mistilt), "thickness": float(THICKNESS[1])}


def rendered_table(own_raw, raws: dict, y, materials, runs: dict, variants: dict, classes, own: dict, *,
                   seed: int = 0, n_boot: int = 1000, device: str = "cpu", batch_size: int = 64) -> list[dict]:
    """Rows of ``robustness.csv`` (:data:`ROBUSTNESS_FIELDS`) of the rendered perturbations: ``raws`` is
    ``{(perturbation, strength): raw stacks}``, rows aligned with ``own_raw`` (the run's own rendering of the same
    samples), ``y`` and ``materials``. Each perturbation's curve, by increasing strength, holds every model on
    ``own_raw`` at strength ``own[perturbation]`` (:func:`own_strengths`; ratio 1) and one row per strength and
    model with ``ratio_to_clean`` (over the own rendering's balanced accuracy) and the paired difference
    (:func:`cbedtdc.metrics.paired_difference`)."""
    from cbedtdc.classify import predict_images
    from cbedtdc.metrics import paired_difference

    size = next(iter(runs.values())).image_size
    y, materials = np.asarray(y), np.asarray(materials)
    base = predict_images(runs, preprocessed(own_raw, size), device=device, batch_size=batch_size)
    scores = {m: score_predictions(y, p, classes, materials, n_boot, seed) for m, p in base.items()}
    rows = []

    def row(name, strength, model, s):
        clean = scores[model]["balanced_accuracy"]
        return {"perturbation": name, "strength": f"{float(strength):g}", "model": model, "variant": variants[model],
                **{k: s[k] for k in ROBUSTNESS_FIELDS if k in s},
                "ratio_to_clean": s["balanced_accuracy"] / clean if clean > 0 else float("nan")}

    for name in RENDERED:
        points = [k for k in raws if k[0] == name]
        if not points:
            continue
        for _, key in sorted([(float(own[name]), None)] + [(float(k[1]), k) for k in points],
                                    key=lambda p: p[0]):  # along the curve, the own rendering in its place
            if key is None:
                rows += [row(name, own[name], m, scores[m]) for m in base]
                continue
            if len(raws[key]) != len(y):
                raise InputError(f"{key[0]} {key[1]}: {len(raws[key])} stacks for {len(y)} paired samples")
            preds = predict_images(runs, preprocessed(raws[key], size), device=device, batch_size=batch_size)
            for m, p in preds.items():
                d = paired_difference(y, p, base[m], classes, materials, n_boot, seed)
                rows.append({**row(name, key[1], m, score_predictions(y, p, classes, materials, n_boot, seed)),
                             "difference": d["difference"], "difference_lo": d["ci95"][0],
                             "difference_hi": d["ci95"][1]})
            log.info("%s %s: %s", name, key[1], ", ".join(f"{r['model']} {r['balanced_accuracy']:.3f} "
                                                          f"(own {scores[r['model']]['balanced_accuracy']:.3f})"
                                                          for r in rows[-len(runs):]))
    return rows


def _rendered_inputs(splits_path, classes, rendered: dict) -> tuple[list[dict], dict]:
    """The run's own test rows and ``{(perturbation, strength): rows}`` of the rendered files, paired by (material,
    energy) (:func:`pair_renderings`)."""
    labels = {f"{p} {s:g}": (p, s) for p, s in rendered}
    others = {label: rendered_rows(rendered[key]) for label, key in labels.items()}
    own, paired = pair_renderings(held_out_rows(splits_path, classes), others, classes, what="robustness")
    return own, {labels[label]: rows for label, rows in paired.items()}


def run_robustness(summary_path, splits_path, run_classes_path, raw_files, out_csv, *, perturbations: dict,
                   n_materials: int, seed: int = 0, n_boot: int = 1000, device: str = "cpu",
                   batch_size: int = 64, rendered: dict | None = None, own_mistilt: float | None = None) -> list[dict]:
    """Write ``robustness.csv`` for the run whose results folder holds ``summary_path`` (rule ``robustness``).

    ``rendered``: ``{(perturbation, strength): [files]}`` of the rendered perturbations (rule
    ``robustness_synthesize``; none with ``raw_dir`` set), whose curves start at the run's own setting
    (``own_mistilt``: its ``synth.mistilt``).
    """
    from cbedtdc.train import inference_device

    rendered = rendered or {}
    if not rendered and not any(list(v or []) for v in perturbations.values()):
        raise InputError("robustness.perturbations: every list of strengths is empty; give at least one strength or "
                         "set robustness.activate: false")
    unknown = sorted({p for p, _ in rendered} - set(RENDERED))
    if unknown:
        raise InputError(f"rendered perturbation {', '.join(unknown)} unknown; allowed: {', '.join(RENDERED)}")
    if any(p == "mistilt" for p, _ in rendered) and own_mistilt is None:
        raise InputError("rendered mistilt files given without the run's own mistilt (synth.mistilt)")
    device = inference_device(device)
    summary = read_json(summary_path)
    classes = read_run_classes(run_classes_path)
    root = Path(summary_path).parent.parent  # results/metrics/summary.json -> results
    models = run_models(summary, root)
    variants = {m: v[0] for m, v in models.items()}
    rows = choose_materials(held_out_rows(splits_path, classes), n_materials, seed)
    log.info("robustness: %d test samples of %d materials, models %s", len(rows),
             len({r["material"] for r in rows}), ", ".join(f"{m}={v[0]}" for m, v in models.items()))
    raw = read_raw_stacks(rows, raw_files)
    runs = load_models(models, device)
    table = robustness_table(raw, [int(r["space_group"]) for r in rows], [r["material"] for r in rows], runs,
                             variants, perturbations, classes, seed=seed, n_boot=n_boot, device=device,
                             batch_size=batch_size)
    if rendered:
        own_rows, other_rows = _rendered_inputs(splits_path, classes, rendered)
        log.info("rendered: %d test samples of %d materials in %s", len(own_rows),
                 len({r["material"] for r in own_rows}), ", ".join(f"{p} {s:g}" for p, s in rendered))
        table += rendered_table(read_raw_stacks(own_rows, raw_files),
                                {k: read_raw_stacks(r, rendered[k]) for k, r in other_rows.items()},
                                [int(r["space_group"]) for r in own_rows], [r["material"] for r in own_rows], runs,
                                variants, classes, own_strengths(own_mistilt if own_mistilt is not None else 0.0),
                                seed=seed, n_boot=n_boot, device=device, batch_size=batch_size)
    write_csv(out_csv, table, ROBUSTNESS_FIELDS)
    return table
