"""The one list of feature sources: :data:`SOURCES`, read by the config check, the rules, the heads and ``classify``.

A head names the sources it reads (``features: [cnn, symmetry]``); each name is a key of :data:`SOURCES`,
whose :class:`~cbedtdc.features.spec.FeatureSource` says where the source's ``{split}.h5`` live, how rule
``features`` writes them and how ``cbedtdc classify`` computes them for new patterns. ``config/schema.yaml``'s
enum of ``features`` items lists the same names (``tests/unit/features/test_registry.py`` checks it).

Adding a source (docs/architecture.md, "Adding a feature source"): a module ``cbedtdc/features/<name>.py``
defining ``SOURCE`` (for a source computed from the patterns alone:
:func:`~cbedtdc.features.spec.descriptor_source`), its entry in :data:`SOURCES` below, and its name in the
schema's enum.
"""

from __future__ import annotations

import re

from cbedtdc.errors import InputError
from cbedtdc.features import cnn, symmetry
from cbedtdc.features.spec import FeatureSource

__all__ = ["SOURCES", "get_source", "feature_dir", "head_feature_dirs", "folder_pattern", "source_of_folder",
           "needs_backbone"]

#: The feature sources by name, in the order the docs list them: the one list of names.
SOURCES: dict[str, FeatureSource] = {s.name: s for s in (cnn.SOURCE, symmetry.SOURCE)}


def get_source(name: str) -> FeatureSource:
    """The source called ``name``; an unknown name raises, listing the known ones.

    >>> get_source("symmetry").backbone, get_source("cnn").backbone
    (False, True)
    """
    try:
        return SOURCES[name]
    except KeyError:
        raise InputError(f"feature source {name!r}: must be one of {', '.join(SOURCES)}") from None


def feature_dir(name: str, backbone: str | None = None, root: str = "results") -> str:
    """Folder of one source's ``{split}.h5`` for a head on ``backbone`` in the training root ``root``.

    >>> feature_dir("cnn", "ce"), feature_dir("symmetry", root="results/replicates/seed_1")
    ('results/features/flat/ce', 'results/features/symmetry')
    """
    return get_source(name).directory(backbone, root)


def head_feature_dirs(features, backbone: str | None = None, root: str = "results") -> list[str]:
    """Folders of a head's sources, in its order (a backbone source in ``root``, the others seed-free).

    >>> head_feature_dirs(["cnn", "symmetry"], "ce", root="results/replicates/seed_1")
    ['results/replicates/seed_1/features/flat/ce', 'results/features/symmetry']
    """
    return [feature_dir(s, backbone, root) for s in features]


def folder_pattern() -> str:
    """Regular expression of every folder under ``features/`` some source writes (rule ``features``' wildcard).

    >>> bool(re.fullmatch(folder_pattern(), "flat/ce")), bool(re.fullmatch(folder_pattern(), "symmetry"))
    (True, True)
    """
    return "|".join(f"(?:{s.pattern})" for s in SOURCES.values())


def source_of_folder(folder: str) -> FeatureSource:
    """The source that writes ``folder`` (a path under ``features/``, e.g. ``flat/ce``, ``level_2``, ``symmetry``).

    >>> source_of_folder("level_2").name, source_of_folder("symmetry").name
    ('cnn', 'symmetry')
    """
    hits = [s for s in SOURCES.values() if re.fullmatch(s.pattern, folder)]
    if len(hits) != 1:
        raise InputError(f"features/{folder}: written by {len(hits)} feature sources "
                         f"({', '.join(s.name for s in hits) or 'none'}); each folder belongs to exactly one of "
                         f"{', '.join(SOURCES)}")
    return hits[0]


def needs_backbone(features) -> bool:
    """Whether a head on ``features`` reads a trained flat backbone.

    >>> needs_backbone(["symmetry"]), needs_backbone(["cnn", "symmetry"])
    (False, True)
    """
    return any(get_source(f).backbone for f in features)
