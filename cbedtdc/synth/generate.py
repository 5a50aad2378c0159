"""From config to challenge-layout files: class plan, materials, samples, atomic HDF5 writing.

Everything is a pure function of the config and the seed, addressed by (split, material index
within the split, energy index), so every ``synthesize`` job computes the same class plan and
the files can be written by independent jobs on any number of cores or cluster nodes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..classes import real_counts, resolve_classes
from ..config import schema_defaults
from ..io import atomic_path
from ..layout import SPLITS, split_material_counts, split_of
from .crystal import Crystal, random_crystal
from .multislice import DEVICES, MultisliceError, multislice_panel, resolve_device
from .render import LAMBDA_100, Optics, Panel, detector, prepare_panels, render_panel
from .render import MODES as RENDER_MODES
from .zone_axes import POLICIES, zone_axes
from cbedtdc.errors import InputError

__all__ = ["SynthConfig", "Material", "materials_per_class", "tail_per_class", "class_sequence", "make_material",
           "render_sample", "write_file", "synthesize_file", "ENERGY_START_KEV", "ENERGY_STEP_KEV", "MODES"]

log = logging.getLogger(__name__)

ENERGY_START_KEV = 100  # the challenge: 100, 110, ..., 190 keV
ENERGY_STEP_KEV = 10
# Per-material / per-sample random ranges (see docs/synth.md for the reasoning).
Q_MAX = (1.0, 2.0)         # half field of view [1/A]
OVERLAP = (0.3, 0.6)       # disk radius / (g_min / 2) at 100 keV (<= 0.85 at 190 keV: no overlap)
B_ISO = (0.2, 1.5)         # Debye-Waller B [A^2]
THICKNESS = (100.0, 500.0)  # specimen thickness [A]

_PLAN_TAG = 7  # separates the class-plan stream from the material streams
_TAIL_PLAN = len(SPLITS)  # the class plan of the tail's extra training materials (after train, dev, test)
#: Intensity models: the renderer's (kinematic, bloch) and abTEM multislice (cbedtdc.synth.multislice).
MODES = RENDER_MODES + ("multislice",)


#: Defaults of the ``synth`` section (config/schema.yaml), the defaults of :class:`SynthConfig`.
_SYNTH = schema_defaults("synth")


@dataclass(frozen=True)
class SynthConfig:
    """Settings of the generator (the ``synth`` config section plus ``classes`` and ``seed``; defaults: the
    config schema's).

    ``mistilt`` is the standard deviation of the beam mistilt as a fraction of the disk radius;
    ``holz`` switches higher-order Laue zones on; ``mode`` is the intensity model (``kinematic``
    or the dynamical ``bloch``, see :func:`cbedtdc.synth.render.render_panel`, or ``multislice``,
    :func:`cbedtdc.synth.multislice.multislice_panel`, with ``phonons`` frozen-phonon configurations,
    slices of ``slice_thickness`` [A], on ``device`` auto, cpu or gpu). ``tail_min_train`` > 0 adds extra
    training materials to every class with fewer training samples (:func:`tail_per_class`). ``thickness``: the
    ``(low, high)`` range [A] each sample's specimen thickness is drawn from, uniformly; ``None`` (not a config
    key) is :data:`THICKNESS`. Only the robustness curves render with another range (rule ``robustness_synthesize``):
    the same uniform draw, so a sample's thickness maps to the same place in the new range.
    """

    classes: tuple = ()
    n_materials: int = _SYNTH["n_materials"]
    energies_per_material: int = _SYNTH["energies_per_material"]
    image_size: int = _SYNTH["image_size"]
    frequency: str = _SYNTH["frequency"]
    floor: int = _SYNTH["floor"]
    zone_axes: str = _SYNTH["zone_axes"]
    noise: bool = _SYNTH["noise"]
    seed: int = schema_defaults()["seed"]
    holz: bool = _SYNTH["holz"]
    mistilt: float = _SYNTH["mistilt"]
    mode: str = _SYNTH["mode"]
    phonons: int = _SYNTH["phonons"]
    slice_thickness: float = _SYNTH["slice_thickness"]
    device: str = _SYNTH["device"]
    tail_min_train: int = _SYNTH["tail_min_train"]
    thickness: tuple | None = None
    split_counts: dict = field(default=None, compare=False)

    def __post_init__(self):
        if not self.classes:
            raise InputError("synth: no classes given")
        if self.frequency not in ("real", "balanced"):
            raise InputError(f"synth.frequency={self.frequency!r}: must be 'real' or 'balanced'")
        if self.zone_axes not in POLICIES:
            raise InputError(f"synth.zone_axes={self.zone_axes!r}: must be one of {', '.join(POLICIES)}")
        if self.mode not in MODES:
            raise InputError(f"synth.mode={self.mode!r}: must be one of {', '.join(MODES)}")
        if self.device not in DEVICES:
            raise InputError(f"synth.device={self.device!r}: must be one of {', '.join(DEVICES)}")
        if self.phonons < 1:
            raise InputError(f"synth.phonons={self.phonons}: must be at least 1")
        if not 0.1 <= self.slice_thickness <= 10.0:
            raise InputError(f"synth.slice_thickness={self.slice_thickness}: must be in 0.1..10 A")
        if not 1 <= self.energies_per_material <= 10:
            raise InputError(f"synth.energies_per_material={self.energies_per_material}: must be in 1..10")
        if self.image_size < 16:
            raise InputError(f"synth.image_size={self.image_size}: must be at least 16")
        if self.tail_min_train < 0:
            raise InputError(f"synth.tail_min_train={self.tail_min_train}: must be >= 0 (0: no tail materials)")
        t = self.thickness
        if t is not None and not (len(t) == 2 and 0 < t[0] <= t[1]):
            raise InputError(f"thickness={self.thickness}: must be (low, high) in A with 0 < low <= high")
        if self.split_counts is None:
            object.__setattr__(self, "split_counts", split_material_counts(self.n_materials))

    @classmethod
    def from_config(cls, config: dict) -> "SynthConfig":
        """Build from the whole pipeline config (``synth`` section, ``classes``, ``seed``)."""
        s = dict(config.get("synth", {}))
        keys = {"n_materials", "energies_per_material", "image_size", "frequency", "floor", "zone_axes",
                "noise", "holz", "mistilt", "mode", "phonons", "slice_thickness", "device", "tail_min_train"}
        kwargs = {k: s[k] for k in keys if k in s}
        if isinstance(kwargs.get("n_materials"), dict):  # per-split counts
            kwargs["split_counts"] = split_material_counts(kwargs["n_materials"])
            kwargs["n_materials"] = sum(kwargs["split_counts"].values())
        return cls(classes=tuple(resolve_classes(config.get("classes", "top20"))),
                   seed=int(config.get("seed", 0)), **kwargs)

    @property
    def energies(self) -> list[int]:
        return [ENERGY_START_KEV + ENERGY_STEP_KEV * j for j in range(self.energies_per_material)]

    @property
    def n_tail(self) -> int:
        """Extra training materials of the tail option (0 when ``tail_min_train`` is 0)."""
        return sum(tail_per_class(self).values())


def materials_per_class(classes, n: int, frequency: str = "real", floor: int = 0) -> dict[int, int]:
    """How many of ``n`` materials each class gets.

    Every class first gets ``min(floor, n // len(classes))``; the rest is shared in proportion
    to the real training counts (``real``; groups absent from the real data get only the floor)
    or equally (``balanced``), by the largest-remainder method.

    >>> materials_per_class([225, 1, 2], 10, "balanced")
    {225: 4, 1: 3, 2: 3}
    >>> materials_per_class([14, 222], 10, "real", floor=2)
    {14: 8, 222: 2}
    """
    classes = [int(c) for c in classes]
    if frequency == "real":
        counts = real_counts()
        weights = np.array([counts.get(c, (0, 0, 0))[0] for c in classes], dtype=float)
        if weights.sum() == 0:
            weights[:] = 1.0
    elif frequency == "balanced":
        weights = np.ones(len(classes))
    else:
        raise InputError(f"frequency={frequency!r}: must be 'real' or 'balanced'")
    base = min(int(floor), n // len(classes))
    out = np.full(len(classes), base)
    rest = n - base * len(classes)
    share = weights / weights.sum() * rest
    out += np.floor(share).astype(int)
    left = n - out.sum()
    order = np.lexsort((np.arange(len(classes)), -(share - np.floor(share))))
    out[order[:left]] += 1
    return {c: int(m) for c, m in zip(classes, out)}


def tail_per_class(cfg: SynthConfig) -> dict[int, int]:
    """Extra training materials per class of the tail option: every class whose planned training samples
    (materials x ``energies_per_material``, :func:`materials_per_class` of the train split) are fewer than
    ``tail_min_train`` gets the materials that bring it to at least ``tail_min_train`` samples; the others,
    and every class when ``tail_min_train`` is 0, get none (absent from the dict).

    >>> cfg = SynthConfig(classes=(14, 62, 225, 229), n_materials={"train": 14, "dev": 4, "test": 4},
    ...                   energies_per_material=2, floor=1, tail_min_train=10)
    >>> materials_per_class(cfg.classes, 14, "real", 1), tail_per_class(cfg)
    ({14: 5, 62: 3, 225: 5, 229: 1}, {62: 2, 229: 4})
    """
    if cfg.tail_min_train <= 0:
        return {}
    per = materials_per_class(cfg.classes, cfg.split_counts["train"], cfg.frequency, cfg.floor)
    need = -(-cfg.tail_min_train // cfg.energies_per_material)  # ceil: materials that give tail_min_train samples
    return {c: need - m for c, m in per.items() if m < need}


def _shuffled_plan(per: dict[int, int], seed: int, stream: int) -> np.ndarray:
    seq = np.repeat(np.array(list(per), dtype=int), list(per.values()))
    rng = np.random.default_rng([seed, _PLAN_TAG, stream])
    return seq[rng.permutation(len(seq))]


def class_sequence(cfg: SynthConfig, split: str) -> np.ndarray:
    """Space group of every material of ``split``, in material order (deterministic).

    The train split with the tail option is the plain train plan followed by the tail's extra materials
    (:func:`tail_per_class`, shuffled by a stream of their own): materials ``0 .. split_counts["train"] - 1``
    are those of the run without the tail, so its files are unchanged.
    """
    per = materials_per_class(cfg.classes, cfg.split_counts[split], cfg.frequency, cfg.floor)
    seq = _shuffled_plan(per, cfg.seed, SPLITS.index(split))
    if split == "train" and cfg.tail_min_train > 0:
        seq = np.concatenate([seq, _shuffled_plan(tail_per_class(cfg), cfg.seed, _TAIL_PLAN)])
    return seq


@dataclass(frozen=True)
class Material:
    """One synthetic material: its crystal, optics and the three prepared panels."""

    split: str
    index: int
    crystal: Crystal
    optics: Optics
    panels: list[Panel]

    @property
    def material_id(self) -> str:
        return f"synth-{self.split}-{self.index}"


def _material_rng(cfg: SynthConfig, split: str, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, SPLITS.index(split), int(index), int(stream)])


def _thickness(cfg: SynthConfig) -> tuple:
    return THICKNESS if cfg.thickness is None else tuple(float(t) for t in cfg.thickness)


def make_material(cfg: SynthConfig, split: str, index: int, space_group: int | None = None) -> Material:
    """Material ``index`` of ``split``: crystal of its planned group, optics and panel geometry."""
    if space_group is None:
        space_group = int(class_sequence(cfg, split)[index])
    rng = _material_rng(cfg, split, index, 0)
    crystal = random_crystal(space_group, rng)
    optics = Optics(q_max=rng.uniform(*Q_MAX), overlap=rng.uniform(*OVERLAP), b_iso=rng.uniform(*B_ISO),
                    holz=cfg.holz)
    axes = zone_axes(crystal, cfg.zone_axes, optics.b_iso)
    angles = rng.uniform(0.0, 2 * np.pi, len(axes))
    panels = prepare_panels(crystal, axes, optics, angles, energies_kev=cfg.energies,
                            min_thickness=min(_thickness(cfg)[0], THICKNESS[0]),  # the run's reflections, or more
                            mode="kinematic" if cfg.mode == "multislice" else cfg.mode)
    return Material(split, int(index), crystal, optics, panels)


def render_sample(cfg: SynthConfig, material: Material, energy_index: int) -> tuple[np.ndarray, dict]:
    """The (3, S, S) float32 stack and the attributes of one sample, typed like the real files."""
    energy = cfg.energies[energy_index]
    rng = _material_rng(cfg, material.split, material.index, 1 + energy_index)
    thickness = rng.uniform(*_thickness(cfg))
    stack = np.empty((len(material.panels), cfg.image_size, cfg.image_size), dtype=np.float32)
    for p, panel in enumerate(material.panels):
        r100 = panel.semi_angle / LAMBDA_100
        tilt = rng.normal(0.0, cfg.mistilt * r100, 2) if cfg.mistilt > 0 else (0.0, 0.0)
        if cfg.mode == "multislice":
            image = multislice_panel(material.crystal, panel, material.optics.b_iso, energy, thickness, cfg.image_size,
                                     rng, tilt=tilt, phonons=cfg.phonons, slice_thickness=cfg.slice_thickness,
                                     device=resolve_device(cfg.device))
        else:
            image = render_panel(panel, energy, thickness, cfg.image_size, tilt=tilt, mode=cfg.mode)
        stack[p] = detector(image, rng, panel.q_max) if cfg.noise else image.astype(np.float32)
    c = material.crystal
    attrs = {
        "space_group": np.bytes_(str(c.space_group).encode()),
        "material": np.bytes_(material.material_id.encode()),
        "energy_keV": np.int64(energy),
        "z_dirs": np.array([[p.axis.indices for p in material.panels]], dtype=np.int64),
        "y_dirs": np.array([[p.e1 for p in material.panels]], dtype=np.float64),
        "semi_angles_rad": np.array([p.semi_angle for p in material.panels], dtype=np.float64),
        "d_hkls_angstrom": np.array([p.d_hkl for p in material.panels], dtype=np.float64),
        "abc_angstrom": np.asarray(c.abc, dtype=np.float64),
        "angles_degree": np.asarray(c.angles, dtype=np.float64),
        "formula": c.formula,
    }
    return stack, attrs


def write_file(path, cfg: SynthConfig, first_material: int, n_materials: int, progress: bool = False) -> Path:
    """Write one challenge-layout file of ``n_materials`` materials starting at ``first_material``.

    The split comes from the file name (``batch_{split}_N.h5``); train materials from ``split_counts["train"]``
    on are the tail option's (:func:`tail_per_class`, in files of their own). Groups are ``sample_i_j``
    (i = material within the file, j = energy index). The file is written under a temporary
    name in the same folder (HDF5 mode "x") and renamed when complete, so an interrupted job
    never leaves a file a rerun would trust. At most one material's stacks are held in memory. A material
    that multislice cannot simulate (:class:`~cbedtdc.synth.multislice.MultisliceError`) gets no group; it is
    logged with the reason and listed in the file's root attribute ``skipped_materials`` (one line each).
    """
    import h5py  # lazy

    path = Path(path)
    split = split_of(path.name)
    seq = class_sequence(cfg, split)
    total = len(seq)
    if first_material < 0 or first_material + n_materials > total:
        raise InputError(f"{path.name}: materials {first_material}..{first_material + n_materials - 1} "
                         f"outside the {total} materials of split {split!r}"
                         + (f" ({cfg.n_tail} of them tail materials)" if split == "train" and cfg.n_tail else ""))
    skipped: list[str] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_materials, desc=path.name, unit="material", mininterval=5.0)
    try:
        with atomic_path(path) as tmp, h5py.File(tmp, "x", libver="earliest") as f:
            for i in range(n_materials):
                index = first_material + i
                material = make_material(cfg, split, index, int(seq[index]))
                try:  # one material's samples, then written: a material multislice cannot simulate leaves none
                    samples = [render_sample(cfg, material, j) for j in range(cfg.energies_per_material)]
                except MultisliceError as err:
                    reason = f"{material.material_id} (space group {material.crystal.space_group}): {err}"
                    log.warning("%s: not simulated, skipped: %s", path.name, reason)
                    skipped.append(reason)
                    samples = []
                for j, (stack, attrs) in enumerate(samples):
                    g = f.create_group(f"sample_{i}_{j}")
                    g.create_dataset("cbed_stack", data=stack)
                    for key, value in attrs.items():
                        g.attrs[key] = value
                if bar is not None:
                    bar.update(1)
            if cfg.mode == "multislice":  # the record of what was not simulated, and why (the other modes never skip)
                f.attrs["skipped_materials"] = "\n".join(skipped)
    finally:
        if bar is not None:
            bar.close()
    log.info("%s: %d materials x %d energies of split %s written (%d skipped)", path, n_materials - len(skipped),
             cfg.energies_per_material, split, len(skipped))
    return path


def synthesize_file(out, first_material: int, file_materials: int, *, classes="top20", split_materials=None,
                    progress: bool = False, **settings) -> Path:
    """Write one generated challenge file from the generator settings (what rule synthesize runs).

    ``settings`` are the other fields of :class:`SynthConfig` (``n_materials``, ``energies_per_material``,
    ``image_size``, ...); ``classes`` is ``top20``, ``all`` or a list of space groups; ``split_materials``
    the materials per split (train, dev, test), overriding the 79/11/10 % split of ``n_materials``.
    """
    cfg = SynthConfig(classes=tuple(resolve_classes(classes)),
                      split_counts=dict(zip(SPLITS, split_materials)) if split_materials else None, **settings)
    log.info("%s: materials %d..%d, %d classes, %d energies, %d px, %s, seed %d", out, first_material,
             first_material + file_materials - 1, len(cfg.classes), cfg.energies_per_material, cfg.image_size,
             cfg.mode, cfg.seed)
    return write_file(out, cfg, first_material, file_materials, progress=progress)
