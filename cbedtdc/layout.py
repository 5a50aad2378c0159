"""Where things live: raw file discovery and the static plan of generated files.

Pure functions used by the Snakefile (``rules/common.smk``) and by the library, so that
the DAG is fixed by the config alone and is testable without Snakemake.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RAW_NAME", "SPLITS", "discover_raw", "split_of", "synth_file_plan", "SynthFile", "n_levels",
           "shell_prefix", "feature_dir", "FEATURES_ROOT"]

SPLITS = ("train", "dev", "test")
#: Challenge file names: batch_{train|dev|test}_{N}.h5 (N = rank of the simulation job).
RAW_NAME = re.compile(r"^batch_(train|dev|test)_(\d+)\.h5$")


def split_of(name: str) -> str:
    """Split encoded in a challenge file name.

    >>> split_of("batch_dev_12.h5")
    'dev'
    """
    m = RAW_NAME.match(Path(name).name)
    if not m:
        raise ValueError(f"{name}: not a challenge file name (expected batch_{{train,dev,test}}_N.h5)")
    return m.group(1)


def discover_raw(raw_dir) -> dict[str, Path]:
    """Map stem -> path for every ``batch_{train,dev,test}_N.h5`` below ``raw_dir`` (recursive).

    Raises ``FileNotFoundError`` when the folder is missing or holds no challenge file and
    ``ValueError`` when the same file name occurs twice (the stem is the sample-key prefix).
    """
    root = Path(raw_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"raw_dir={str(raw_dir)!r} is not a directory")
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("batch_*.h5")):
        if not RAW_NAME.match(path.name):
            continue
        stem = path.name[:-3]
        if stem in found:
            raise ValueError(f"raw_dir: {path} and {found[stem]} share the file name {path.name}; "
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


@dataclass(frozen=True)
class SynthFile:
    """One generated challenge file: its stem, split and the materials it holds."""

    stem: str
    split: str
    first_material: int  # index of its first material within the split
    n_materials: int


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
            raise ValueError(f"synth.n_materials={n_materials}: a mapping needs train, dev and test, each >= 1")
        return {split: int(n_materials[split]) for split in SPLITS}
    if n_materials < 3:
        raise ValueError(f"synth.n_materials={n_materials}: need at least 3 (one per split)")
    dev = max(1, round(n_materials * fractions[1]))
    test = max(1, round(n_materials * fractions[2]))
    return {"train": n_materials - dev - test, "dev": dev, "test": test}


def synth_file_plan(n_materials, materials_per_file: int) -> list[SynthFile]:
    """Static list of generated files (one ``synthesize`` job each); ``n_materials`` is a total
    or a per-split mapping (see :func:`split_material_counts`).

    >>> [f.stem for f in synth_file_plan(250, 100)]
    ['batch_train_0', 'batch_train_1', 'batch_dev_0', 'batch_test_0']
    """
    plan = []
    for split, count in split_material_counts(n_materials).items():
        n_files = math.ceil(count / materials_per_file)
        for i in range(n_files):
            first = i * materials_per_file
            plan.append(SynthFile(f"batch_{split}_{i}", split, first, min(materials_per_file, count - first)))
    return plan


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


#: Where each feature source of a head is written (``results/features/<source>/<split>.h5``).
FEATURES_ROOT = "results/features"


def feature_dir(source: str, backbone: str | None = None) -> str:
    """Folder of a feature source: ``cnn`` is the flat model of ``backbone`` (a flat loss), ``symmetry`` the
    physics descriptors.

    >>> feature_dir("cnn", "ce"), feature_dir("symmetry")
    ('results/features/flat/ce', 'results/features/symmetry')
    """
    if source == "cnn":
        if not backbone:
            raise ValueError("feature source cnn needs the flat model (backbone) it comes from")
        return f"{FEATURES_ROOT}/flat/{backbone}"
    if source == "symmetry":
        return f"{FEATURES_ROOT}/symmetry"
    raise ValueError(f"feature source {source!r}: must be cnn or symmetry")
