"""Where things live: raw file discovery and the static plan of generated files.

Pure functions used by the Snakefile (``rules/common.smk``) and by the library, so that
the DAG is fixed by the config alone and is testable without Snakemake.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from cbedtdc.errors import InputError

__all__ = ["RAW_NAME", "SPLITS", "discover_raw", "split_of", "synth_file_plan", "SynthFile", "n_levels",
           "shell_prefix", "MIRROR_SPLITS", "MIRROR_STEM", "MIRROR_SAMPLE", "is_mirror",
           "mirror_members", "mirror_order", "mirror_plan", "chunk_members", "parse_mirror_stem", "split_of_stem",
           "raw_layout", "raw_data_kind"]

SPLITS = ("train", "dev", "test")
#: Challenge file names: batch_{train|dev|test}_{N}.h5 (N = rank of the simulation job).
RAW_NAME = re.compile(r"^batch_(train|dev|test)_(\d+)\.h5$")
#: Folders of the public STEMDL mirror (``stemdl_ds1a``) and the split each one becomes: the mirror's own split.
MIRROR_SPLITS = {"training": "train", "validation": "dev", "testing": "test", "inference": "test"}
#: Stem of one chunk of a mirror folder (one index_mirror + one shard_mirror job): mirror_{folder}_{k}.
MIRROR_STEM = re.compile(r"^mirror_(training|validation|testing|inference)_(\d+)$")
#: File names of mirror samples: sample-<n>.npz.
MIRROR_SAMPLE = re.compile(r"^sample-(\d+)\.npz$")


def split_of(name: str) -> str:
    """Split encoded in a challenge file name.

    >>> split_of("batch_dev_12.h5")
    'dev'
    """
    m = RAW_NAME.match(Path(name).name)
    if not m:
        raise InputError(f"{name}: not a challenge file name (expected batch_{{train,dev,test}}_N.h5)")
    return m.group(1)


def discover_raw(raw_dir, mirror_chunk: int | None = None) -> dict[str, Path]:
    """Map stem -> path for every ``batch_{train,dev,test}_N.h5`` below ``raw_dir`` (recursive).

    A STEMDL mirror root (:func:`is_mirror`) gives the chunk plan instead (:func:`mirror_plan`, stem ->
    folder, ``mirror_chunk`` files a chunk). Raises ``FileNotFoundError`` when the folder is missing or
    holds no challenge file and ``ValueError`` when the same file name occurs twice (the stem is the
    sample-key prefix).
    """
    root = Path(raw_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"raw_dir={str(raw_dir)!r} is not a directory")
    if is_mirror(root):
        if mirror_chunk is None:
            raise InputError(f"raw_dir={str(raw_dir)!r} is a STEMDL mirror: give mirror_chunk (data.mirror_chunk)")
        return mirror_plan(root, mirror_chunk)
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("batch_*.h5")):
        if not RAW_NAME.match(path.name):
            continue
        stem = path.name[:-3]
        if stem in found:
            raise InputError(f"raw_dir: {path} and {found[stem]} share the file name {path.name}; "
                             "sample keys would collide")
        found[stem] = path.resolve()
    if not found:
        raise FileNotFoundError(f"raw_dir={str(raw_dir)!r} holds no batch_{{train,dev,test}}_N.h5 file; "
                                + _ignored_files(root))
    return found


def _ignored_files(root: Path, shown: int = 6) -> str:
    """What :func:`discover_raw` saw and ignored, for its error message."""
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    if not files:
        return "the folder is empty"
    hdf = [f for f in files if f.lower().endswith((".h5", ".hdf5", ".hdf"))]
    listed = hdf or files
    names = ", ".join(listed[:shown]) + (f" and {len(listed) - shown} more" if len(listed) > shown else "")
    if hdf:
        return f"seen and ignored: {names} (rename them batch_{{train,dev,test}}_N.h5, e.g. batch_train_0.h5)"
    return f"seen and ignored {len(files)} non-HDF5 files: {names}"


# --------------------------------------------------------------------------- the STEMDL mirror
def is_mirror(root) -> bool:
    """True when ``root`` holds any of the mirror's folders ``training``, ``validation``, ``testing``,
    ``inference`` (one ``stat`` each: nothing below them is listed).

    A root that also holds the challenge layout (``train``/``dev``/``test`` folders or ``batch_*.h5``
    files next to them) is ambiguous: ``ValueError`` naming both.
    """
    root = Path(root)
    found = [f for f in MIRROR_SPLITS if (root / f).is_dir()]
    if not found:
        return False
    other = sorted(p.name for p in root.iterdir() if p.name in SPLITS or RAW_NAME.match(p.name))
    if other:
        raise InputError(f"raw_dir={str(root)!r} holds both the STEMDL mirror ({', '.join(found)}) and challenge "
                         f"files ({', '.join(other)}): point raw_dir at one of them")
    return True


def mirror_order(name: str):
    """Sort key of a mirror folder's entries: ``sample-<n>.npz`` by n, any other name after, by name.

    >>> sorted(["sample-10.npz", "notes.txt", "sample-9.npz"], key=mirror_order)
    ['sample-9.npz', 'sample-10.npz', 'notes.txt']
    """
    m = MIRROR_SAMPLE.match(name)
    return (0, int(m.group(1)), "") if m else (1, 0, name)


def mirror_members(folder) -> list[str]:
    """Every entry of one mirror folder, in :func:`mirror_order` (one ``scandir``, no ``stat`` per file).

    Entries that are not ``sample-<n>.npz`` files are members too: the index quarantines them by name,
    so nothing in the folder is silently dropped.
    """
    with os.scandir(folder) as it:
        return sorted((e.name for e in it), key=mirror_order)


def mirror_stem(folder: str, k: int) -> str:
    """Stem of chunk ``k`` of a mirror folder.

    >>> mirror_stem("training", 3), parse_mirror_stem("mirror_training_3")
    ('mirror_training_3', ('training', 3))
    """
    return f"mirror_{folder}_{k}"


def parse_mirror_stem(stem: str) -> tuple[str, int]:
    """``(folder, k)`` of a chunk stem; ``ValueError`` for anything else."""
    m = MIRROR_STEM.match(stem)
    if not m:
        raise InputError(f"{stem}: not a mirror chunk (expected mirror_{{training,validation,testing,inference}}_K)")
    return m.group(1), int(m.group(2))


def mirror_plan(root, chunk_files: int) -> dict[str, Path]:
    """Stem -> folder for every chunk of ``chunk_files`` entries of every mirror folder under ``root``.

    Computed from one directory listing per folder (187k files: well under a second). An empty folder
    still gets its chunk 0, whose index quarantines the folder, so it is not silently absent.
    """
    if chunk_files < 1:
        raise InputError(f"data.mirror_chunk={chunk_files}: give at least 1 file per job")
    plan = {}
    for folder in MIRROR_SPLITS:
        path = Path(root) / folder
        if not path.is_dir():
            continue
        with os.scandir(path) as it:  # the entries mirror_members sorts, counted without sorting
            n = sum(1 for _ in it)
        for k in range(max(1, math.ceil(n / chunk_files))):
            plan[mirror_stem(folder, k)] = path.resolve()
    return plan


def chunk_members(folder, stem: str, chunk_files: int) -> list[str]:
    """The entries of ``folder`` that chunk ``stem`` covers (the same listing as :func:`mirror_plan`)."""
    name, k = parse_mirror_stem(stem)
    if Path(folder).name != name:
        raise InputError(f"chunk {stem} belongs to folder {name}, not {folder}")
    return mirror_members(folder)[k * chunk_files: (k + 1) * chunk_files]


def split_of_stem(stem: str) -> str:
    """Split of a raw stem: challenge file stems by name, mirror chunks by folder.

    >>> split_of_stem("batch_dev_3"), split_of_stem("mirror_inference_0")
    ('dev', 'test')
    """
    if MIRROR_STEM.match(stem):
        return MIRROR_SPLITS[parse_mirror_stem(stem)[0]]
    return split_of(stem + ".h5")


def raw_layout(stems) -> str:
    """``"stemdl_mirror"`` when the stems are mirror chunks, else ``"challenge_hdf5"``."""
    return "stemdl_mirror" if any(MIRROR_STEM.match(s) for s in stems) else "challenge_hdf5"


def raw_data_kind(raw_dir, stems) -> str:
    """What the data under ``raw_dir`` are, in words (summary.json's ``data`` and the report).

    >>> raw_data_kind("/d", ["mirror_training_0"])
    'STEMDL mirror under /d (no material ids: every sample is its own material, intervals over samples)'
    """
    if raw_layout(stems) == "stemdl_mirror":
        return (f"STEMDL mirror under {raw_dir} (no material ids: every sample is its own material, "
                "intervals over samples)")
    return f"challenge files under {raw_dir}"


@dataclass(frozen=True)
class SynthFile:
    """One generated challenge file: its stem, split and the materials it holds."""

    stem: str
    split: str
    first_material: int  # index of its first material within the split
    n_materials: int
    tail: bool = False  # holds extra training materials of synth.tail_min_train (cbedtdc.synth.tail_per_class)


def split_material_counts(n_materials, fractions=(0.79, 0.11, 0.10)) -> dict[str, int]:
    """Materials per split: a total shared with the real proportions (at least one per split),
    or an explicit ``{"train": .., "dev": .., "test": ..}`` mapping.

    >>> split_material_counts(1000)
    {'train': 790, 'dev': 110, 'test': 100}
    >>> split_material_counts({"test": 40, "train": 300, "dev": 40})
    {'train': 300, 'dev': 40, 'test': 40}
    """
    if isinstance(n_materials, dict):
        if set(n_materials) != set(SPLITS) or any(int(v) < 1 for v in n_materials.values()):
            raise InputError(f"synth.n_materials={n_materials}: a mapping needs train, dev and test, each >= 1")
        return {split: int(n_materials[split]) for split in SPLITS}
    if n_materials < 3:
        raise InputError(f"synth.n_materials={n_materials}: need at least 3 (one per split)")
    dev = max(1, round(n_materials * fractions[1]))
    test = max(1, round(n_materials * fractions[2]))
    return {"train": n_materials - dev - test, "dev": dev, "test": test}


def synth_file_plan(n_materials, materials_per_file: int, tail_materials: int = 0) -> list[SynthFile]:
    """Static list of generated files (one ``synthesize`` job each); ``n_materials`` is a total
    or a per-split mapping (see :func:`split_material_counts`).

    ``tail_materials`` extra training materials (the tail option, ``cbedtdc.synth.SynthConfig.n_tail``) follow
    the train split's own materials in files of their own, numbered on after the plain train files, so the
    data stage reads them as train and every plain file is the same as without them.

    >>> [f.stem for f in synth_file_plan(250, 100)]
    ['batch_train_0', 'batch_train_1', 'batch_dev_0', 'batch_test_0']
    >>> [(f.stem, f.first_material, f.n_materials) for f in synth_file_plan(250, 100, 130) if f.tail]  # 197 train
    [('batch_train_2', 197, 100), ('batch_train_3', 297, 30)]
    """
    if tail_materials < 0:
        raise InputError(f"tail_materials={tail_materials}: must be >= 0")
    plan = []
    for split, count in split_material_counts(n_materials).items():
        plan += _files(split, 0, 0, count, materials_per_file, tail=False)
        if split == "train" and tail_materials:
            plan += _files(split, math.ceil(count / materials_per_file), count, tail_materials, materials_per_file,
                           tail=True)
    return plan


def _files(split, first_file: int, first: int, count: int, per_file: int, tail: bool) -> list[SynthFile]:
    """Files ``batch_{split}_{first_file}, ...`` of ``count`` materials from material ``first`` on."""
    return [SynthFile(f"batch_{split}_{first_file + i}", split, first + i * per_file,
                      min(per_file, count - i * per_file), tail)
            for i in range(math.ceil(count / per_file))]


def n_levels(tdc: dict) -> int:
    """Number of TDC levels fixed by the config (static DAG)."""
    if tdc.get("levels", "explicit") == "explicit":
        return len(tdc.get("level_sizes", [5, 5, 10]))
    return int(tdc.get("n_levels", 3))


def shell_prefix(executable, conda: bool) -> str:
    """The prefix of every rule's shell command (``shell.prefix``): bash strict mode, ``$CBEDTDC_PYTHON`` the
    interpreter of the rules and that environment's ``bin/`` first on ``PATH`` (hence its ``mpiexec``).

    ``executable`` is the interpreter Snakemake runs in (``sys.executable``), so a venv's snakemake called by path
    needs no activated venv and the caller's PATH does not matter. Under ``--software-deployment-method conda``
    (``conda=True``) the rule's own env is activated: plain ``python``, PATH untouched.

    >>> print(shell_prefix("/opt/my env/bin/python3", conda=False))
    set -euo pipefail; export CBEDTDC_PYTHON='/opt/my env/bin/python3' PATH='/opt/my env/bin':"$PATH"; 
    >>> print(shell_prefix("/opt/venv/bin/python3", conda=True))
    set -euo pipefail; export CBEDTDC_PYTHON=python; 
    """
    if conda:
        return "set -euo pipefail; export CBEDTDC_PYTHON=python; "
    path = Path(executable)
    return (f"set -euo pipefail; export CBEDTDC_PYTHON={shlex.quote(str(path))} "
            f'PATH={shlex.quote(str(path.parent))}:"$PATH"; ')
