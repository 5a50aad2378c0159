"""Space-group class sets and the real class frequencies of the SMC 2020 challenge.

The per-space-group sample counts of the challenge's train/dev/test splits are shipped
in ``cbedtdc/tables/real_counts.csv`` (source: participants' EDA of the released set,
187,155 samples, 200 of 230 groups present).
"""

from __future__ import annotations

import csv
from functools import lru_cache
from importlib import resources
from cbedtdc.errors import InputError

__all__ = ["real_counts", "resolve_classes", "read_run_classes", "TOP20"]


@lru_cache(maxsize=1)
def real_counts() -> dict[int, tuple[int, int, int]]:
    """Return ``{space_group: (train, dev, test)}`` sample counts of the real data set.

    Groups absent from the real set are absent from the mapping.

    >>> real_counts()[225]
    (11160, 1650, 1560)
    """
    text = resources.files("cbedtdc").joinpath("tables/real_counts.csv").read_text()
    out: dict[int, tuple[int, int, int]] = {}
    for row in csv.DictReader(text.splitlines()):
        out[int(row["space_group"])] = (int(row["train"]), int(row["dev"]), int(row["test"]))
    return out


def _by_frequency(groups) -> list[int]:
    counts = real_counts()
    return sorted(groups, key=lambda g: (-counts.get(g, (0, 0, 0))[0], g))


TOP20: tuple[int, ...] = tuple(_by_frequency(real_counts())[:20])


def resolve_classes(spec) -> list[int]:
    """Turn the ``classes`` config value into space-group numbers ordered by real frequency.

    Parameters
    ----------
    spec : {"top20", "all"} or list of int
        ``top20``: the 20 most frequent groups of the real training split; ``all``: all 230
        groups; a list: those groups.

    >>> resolve_classes("top20")[:5]
    [14, 225, 1, 2, 62]
    >>> resolve_classes([2, 225, 1])
    [225, 1, 2]
    >>> resolve_classes([14, 14])
    Traceback (most recent call last):
    ...
    cbedtdc.errors.InputError: classes: duplicate space group 14 in [14, 14]; list each once
    """
    if isinstance(spec, str):
        if spec == "top20":
            return list(TOP20)
        if spec == "all":
            return _by_frequency(range(1, 231))
        raise InputError(f"classes={spec!r} is not a class set; allowed: top20, all, or a list of space groups "
                         "1..230 such as [14, 225, 1]")
    if not isinstance(spec, (list, tuple)):
        raise InputError(f"classes={spec!r}: give top20, all, or a list of space groups 1..230")
    groups = []
    for g in spec:
        if isinstance(g, bool) or not isinstance(g, int) and not (isinstance(g, str) and g.strip().isdigit()):
            raise InputError(f"classes: {g!r} is not a space-group number (allowed: integers 1..230)")
        groups.append(int(g))
    bad = [g for g in groups if not 1 <= g <= 230]
    if bad:
        raise InputError(f"classes: space group {', '.join(map(str, bad))} out of range (allowed 1..230, got {bad})")
    dup = sorted({g for g in groups if groups.count(g) > 1})
    if dup:
        raise InputError(f"classes: duplicate space group {', '.join(map(str, dup))} in {groups}; list each once")
    return _by_frequency(groups)


def read_run_classes(path) -> list[int]:
    """The run's one class order, from ``run_classes.json`` (rule ``check_classes``: the checked counts per
    class, keyed by space group in the run's order). Every head, level, evaluation and ``classify`` reads it.

    >>> import json, tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "run_classes.json")
    >>> _ = open(f, "w").write(json.dumps({"225": {"train": 3}, "14": {"train": 9}}))
    >>> read_run_classes(f)
    [225, 14]
    """
    import json
    from pathlib import Path

    try:
        d = json.loads(Path(path).read_text())
        classes = [int(k) for k in d]
    except (OSError, ValueError, TypeError) as err:
        raise InputError(f"{path}: not a readable run_classes.json ({err}); rerun rule check_classes") from err
    if not classes:
        raise InputError(f"{path}: no class; rerun rule check_classes")
    return classes
