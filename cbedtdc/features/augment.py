"""Training-time augmentation of a descriptor source: perturbed copies of the training stacks (config
``features.augment``, docs/robustness.md).

The heads on the physics descriptors learn what a clean pattern looks like; a real detector adds shot noise, a
beam centre off the image centre, a camera length known to a few percent and, now and then, a zone axis not
recorded (:mod:`cbedtdc.perturb`). With ``copies`` > 0, rule ``features`` writes the train split's descriptor
file with ``copies`` perturbed copies of every training stack after the clean rows; dev and test stay clean, so
every choice made on dev and every test score reads unperturbed patterns.

Each copy of stack ``i`` draws from ``numpy.random.default_rng([seed, copy, i])`` (the same seed gives the same
rows, whatever the batch size): ``dose`` (log-uniform electrons per pixel in ``dose``), ``centre_offset``
(uniform fraction in ``centre_offset``) and ``q_scale`` (uniform factor in ``q_scale``) each with probability
``p``, in that order, then one panel, uniformly chosen, blanked with probability ``blank_panel``. The shards hold
``10 (log I + 17)`` as uint8 (:mod:`cbedtdc.preprocess`): a copy decodes the intensities (:func:`shard_intensities`,
exact up to the uint8 step of 10 % in intensity), perturbs them and encodes them again as the shards were
(:func:`cbedtdc.preprocess.preprocess_stack`). At 64 px the generated shards are the raw stacks, so a copy is the
robustness curves' perturbation of the raw stack; on larger raw stacks resized to the shards, ``dose`` counts
electrons per shard pixel.

A copy's key is ``"<key>@aug<copy>"`` (:func:`augmented_keys`); a head joining several sources keeps these rows
only when every source has them (:func:`cbedtdc.features.sources.load_sources`), so a head on ``[cnn, symmetry]``
trains on the clean rows alone and a head on ``[symmetry]`` on all of them.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from cbedtdc.config import schema_defaults
from cbedtdc.errors import InputError
from cbedtdc.preprocess import LOG_FLOOR, preprocess_stack

__all__ = ["AUG_MARK", "Augment", "augment_from_json", "augmented_keys", "is_augmented", "shard_intensities",
           "augment_stack", "augment_batch"]

_DEFAULTS = schema_defaults("features", "augment")

#: Separates a training key from its copy number: ``"batch_train_0.h5/sample_3_1@aug0"``.
AUG_MARK = "@aug"


@dataclasses.dataclass(frozen=True)
class Augment:
    """Settings of ``features.augment`` (defaults: config/schema.yaml)."""

    copies: int = _DEFAULTS["copies"]
    p: float = _DEFAULTS["p"]
    dose: tuple = tuple(_DEFAULTS["dose"])
    centre_offset: tuple = tuple(_DEFAULTS["centre_offset"])
    q_scale: tuple = tuple(_DEFAULTS["q_scale"])
    blank_panel: float = _DEFAULTS["blank_panel"]

    def __post_init__(self):
        def rng(name, lo_min):
            v = getattr(self, name)
            if len(v) != 2 or not lo_min <= v[0] <= v[1]:
                raise InputError(f"features.augment.{name}={list(v)}: give [low, high] with {lo_min} <= low <= high")

        if int(self.copies) < 0:
            raise InputError(f"features.augment.copies={self.copies}: must be >= 0 (0: off)")
        for name in ("p", "blank_panel"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise InputError(f"features.augment.{name}={getattr(self, name)}: a probability, in [0, 1]")
        rng("dose", 1e-12)
        rng("centre_offset", 0.0)
        rng("q_scale", 1e-12)

    def settings(self) -> dict:
        """The JSON-able settings (recorded in the train file's ``model_meta["augment"]``)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def augment_from_json(text: str) -> Augment | None:
    """The settings of a ``--augment`` JSON object, missing keys at their defaults; ``None`` when off (``{}``, the
    CLI's default, or ``copies: 0``).

    >>> augment_from_json("{}") is None, augment_from_json('{"copies": 3}').copies, augment_from_json('{"p": 1}').copies
    (True, 3, 2)
    """
    try:
        d = json.loads(text or "{}")
    except ValueError as err:
        raise InputError(f"--augment {text!r}: not a JSON object ({err})") from err
    if not isinstance(d, dict):
        raise InputError(f"--augment {text!r}: not a JSON object")
    if not d:
        return None
    unknown = set(d) - {f.name for f in dataclasses.fields(Augment)}
    if unknown:
        raise InputError(f"--augment: unknown key(s) {sorted(unknown)} (allowed: "
                         f"{', '.join(f.name for f in dataclasses.fields(Augment))})")
    a = Augment(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
    return a if a.copies > 0 else None


def augmented_keys(keys, copies: int) -> list[str]:
    """The keys of the copies, copy after copy, each in ``keys``' order.

    >>> augmented_keys(["a/1", "a/2"], 2)
    ['a/1@aug0', 'a/2@aug0', 'a/1@aug1', 'a/2@aug1']
    """
    return [f"{k}{AUG_MARK}{c}" for c in range(int(copies)) for k in keys]


def is_augmented(key: str) -> bool:
    """Whether ``key`` names a perturbed training copy.

    >>> is_augmented("a/1@aug0"), is_augmented("a/1")
    (True, False)
    """
    return AUG_MARK in key


def shard_intensities(x) -> np.ndarray:
    """Intensities (float32) of shard stacks ``x`` (uint8 ``10 (log I + 17)``): ``exp(x / 10 - 17)``, 0 for 0.

    >>> shard_intensities(np.array([0, 170], np.uint8)).round(3).tolist()
    [0.0, 1.0]
    """
    x = np.asarray(x, dtype=np.float32)
    return np.where(x > 0, np.exp(x / np.float32(10.0) + np.float32(LOG_FLOOR)), 0.0).astype(np.float32)


def augment_stack(stack, aug: Augment, rng: np.random.Generator) -> np.ndarray:
    """One perturbed copy of a shard stack ``(3, S, S)`` uint8, drawn from ``rng`` (see the module docstring)."""
    from cbedtdc.perturb import perturb

    s = shard_intensities(stack)
    if rng.random() < aug.p:
        s = perturb(s, "dose", float(np.exp(rng.uniform(np.log(aug.dose[0]), np.log(aug.dose[1])))), rng)
    if rng.random() < aug.p:
        s = perturb(s, "centre_offset", float(rng.uniform(*aug.centre_offset)), rng)
    if rng.random() < aug.p:
        s = perturb(s, "q_scale", float(rng.uniform(*aug.q_scale)), rng)
    if rng.random() < aug.blank_panel:
        s = perturb(s, "blank_panel", int(rng.integers(len(s))), rng)
    return preprocess_stack(s, s.shape[-1], overwrite=True)


def augment_batch(stacks, index0: int, copy: int, aug: Augment, seed: int) -> np.ndarray:
    """Copy ``copy`` of shard stacks ``(B, 3, S, S)`` whose first is stack ``index0`` of the split."""
    return np.stack([augment_stack(s, aug, np.random.default_rng([int(seed), int(copy), int(index0) + i]))
                     for i, s in enumerate(stacks)])


def augment_arg(settings: dict, source, split: str) -> str:
    """Rule ``features``' ``--augment``: the JSON of ``settings`` (config ``features.augment``) for the train split
    of a source that augments (:attr:`cbedtdc.features.spec.FeatureSource.augments`) with ``copies`` > 0, else
    ``{}``.

    >>> from cbedtdc.features.registry import get_source
    >>> sym, cnn = get_source("symmetry"), get_source("cnn")
    >>> augment_arg({"copies": 1}, sym, "train"), augment_arg({"copies": 1}, cnn, "train")
    ('{"copies": 1}', '{}')
    >>> augment_arg({"copies": 1}, sym, "dev"), augment_arg({"copies": 0}, sym, "train")
    ('{}', '{}')
    """
    on = source.augments and split == "train" and int(settings.get("copies", 0)) > 0
    return json.dumps(settings, sort_keys=True) if on else "{}"
