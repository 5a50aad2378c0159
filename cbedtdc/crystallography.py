"""The crystallographic hierarchy of the 230 space groups, derived from spglib's database (pure; no torch, no h5py).

Every property comes from the symmetry operations of the group's standard setting (the first Hall number
spglib lists for the group: unique axis b, cell choice 1, origin choice 1, hexagonal axes for R groups), read
with :func:`spglib.get_spacegroup_type` and :func:`spglib.get_symmetry_from_database` (Togo et al., spglib);
nothing per group is typed by hand:

- **crystal system** (7): from the rotation orders of the point group (the characteristic symmetry: four
  3-fold axes cubic, a 6-fold hexagonal, a 3-fold trigonal, a 4-fold tetragonal, three 2-fold orthorhombic,
  one monoclinic, none triclinic; a rotoinversion counts as the rotation ``-R``);
- **Bravais lattice** (14): crystal family letter (a, m, o, t, h, c) + centring letter of the Hall symbol,
  A and B written C (one Bravais type), R only in the hexagonal family (``hR``);
- **Laue class** (11): the point group of the rotation parts together with the inversion;
- **point group** (32): spglib's international point-group symbol;
- **extinction class**: Laue class + centring + reflection conditions. A reflection ``h`` is systematically
  absent when an operation ``(R, t)`` of the group has ``h R = h`` and ``h . t`` not an integer
  (International Tables for Crystallography Vol. A, reflection conditions); the set of absent ``hkl`` with
  ``|h|, |k|, |l| <= 6`` is the signature. Groups of one extinction class give the same kinematic (Friedel's
  law) diffraction symmetry and absences, so kinematic patterns cannot tell them apart.

A class of a level is named by its id, the smallest space-group number in it (so a space group's id is its
number), and by a readable name (``"monoclinic"``, ``"mP"``, ``"2/m"``, ...); an extinction class is named by
its Laue class, centring and member symbols, e.g. ``"2/m P: P2_1, P2_1/m"``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from cbedtdc.errors import InputError

__all__ = ["LEVELS", "SpaceGroupInfo", "space_group_info", "all_space_groups", "hierarchy_labels",
           "level_classes", "extinction_groups", "sg_name", "absent_reflections"]

log = logging.getLogger(__name__)

#: Levels of the hierarchy, coarsest first.
LEVELS = ("crystal_system", "bravais_lattice", "laue_class", "point_group", "extinction_class", "space_group")

#: The ``hkl`` grid on which reflection conditions are evaluated: every index in ``-HKL_MAX..HKL_MAX``.
HKL_MAX = 6

# crystal family letter of each crystal system (ITA Table 2.1.1.1; trigonal and hexagonal form one family)
_FAMILY = {"triclinic": "a", "monoclinic": "m", "orthorhombic": "o", "tetragonal": "t", "trigonal": "h",
           "hexagonal": "h", "cubic": "c"}


@dataclass(frozen=True)
class SpaceGroupInfo:
    """Where one space group sits in the crystallographic hierarchy (standard setting of spglib's database).

    Attributes
    ----------
    number : int
        International number 1..230.
    symbol : str
        Hermann-Mauguin short symbol, e.g. ``"P2_1/c"``.
    hall_number : int
        spglib's Hall number of the standard setting used.
    hall_symbol : str
        Hall symbol of that setting, e.g. ``"-P 2ybc"``.
    crystal_system : str
        One of the 7 crystal systems.
    bravais_lattice : str
        Pearson-style Bravais symbol, e.g. ``"mP"``, ``"oC"``, ``"hR"``, ``"cF"``.
    centring : str
        Lattice centring letter of the setting: P, A, B, C, I, F or R.
    laue_class : str
        One of the 11 Laue classes, e.g. ``"2/m"``.
    point_group : str
        One of the 32 point groups, e.g. ``"2/m"``.
    extinction_class : str
        Laue class, centring and the symbols of all groups that share them and their reflection conditions.
    extinction_id : int
        Smallest space-group number of the extinction class.
    absent : tuple of tuple of int
        The systematically absent ``(h, k, l)`` with every index in ``-HKL_MAX..HKL_MAX``, sorted.
    """

    number: int
    symbol: str
    hall_number: int
    hall_symbol: str
    crystal_system: str
    bravais_lattice: str
    centring: str
    laue_class: str
    point_group: str
    extinction_class: str
    extinction_id: int
    absent: tuple = field(repr=False)

    @property
    def name(self) -> str:
        """``"P2_1/c (14)"``: the symbol crystallographers read, with the number."""
        return f"{self.symbol} ({self.number})"


def _check_number(n) -> int:
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or not 1 <= int(n) <= 230:
        raise InputError(f"space group {n!r} is not a space-group number; allowed: integers 1..230")
    return int(n)


def _rotation_order(r: np.ndarray) -> int:
    """Order of the proper rotation ``det(r) * r`` (1, 2, 3, 4 or 6), from its trace."""
    proper = r * int(round(np.linalg.det(r)))
    return {3: 1, -1: 2, 0: 3, 1: 4, 2: 6}[int(np.trace(proper))]


def _crystal_system(rotations: np.ndarray) -> str:
    """The crystal system of a point group given as integer matrices (its characteristic symmetry)."""
    orders = [_rotation_order(r) for r in rotations]
    n2, n3 = orders.count(2), orders.count(3)
    if n3 >= 8:  # four 3-fold axes, two rotations each
        return "cubic"
    if 6 in orders:
        return "hexagonal"
    if n3:
        return "trigonal"
    if 4 in orders:
        return "tetragonal"
    if n2 >= 3:
        return "orthorhombic"
    return "monoclinic" if n2 else "triclinic"


def _unique_rotations(rotations) -> np.ndarray:
    return np.unique(np.asarray(rotations, dtype=np.intc).reshape(-1, 9), axis=0).reshape(-1, 3, 3)


def _hkl_grid() -> np.ndarray:
    r = np.arange(-HKL_MAX, HKL_MAX + 1)
    return np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1).reshape(-1, 3)


def _absent(rotations, translations, hkl: np.ndarray) -> np.ndarray:
    """Mask over ``hkl`` of the reflections absent by ``h R = h`` and ``h . t`` not an integer."""
    rot = np.asarray(rotations, dtype=np.int64).reshape(-1, 9)
    uniq, inverse = np.unique(rot, axis=0, return_inverse=True)  # centring repeats every rotation
    stacked = uniq.reshape(-1, 3, 3).transpose(1, 0, 2).reshape(3, -1)  # [i, r*3 + j] = R_r[i, j]
    h = hkl.astype(float)
    fixed = ((h @ stacked).reshape(len(h), -1, 3) == h[:, None, :]).all(axis=2)  # (hkl, rotations): h R = h
    phase = h @ np.asarray(translations, dtype=float).T  # (hkl, ops): h . t
    off = np.abs(phase - np.round(phase)) > 1e-6
    return (fixed[:, inverse.ravel()] & off).any(axis=1)


@lru_cache(maxsize=1)
def _table() -> tuple[SpaceGroupInfo, ...]:
    """The 230 groups in number order (computed once, ~0.5 s)."""
    import spglib

    with warnings.catch_warnings():  # spglib 2.x warns about its legacy error handling on every call
        warnings.simplefilter("ignore", DeprecationWarning)
        return _derive(spglib)


def _derive(spglib) -> tuple[SpaceGroupInfo, ...]:
    """:class:`SpaceGroupInfo` of every group from the standard setting's operations (see the module text)."""
    first: dict[int, int] = {}
    for hall in range(1, 531):  # spglib's 530 Hall settings; the first of each group is its standard setting
        first.setdefault(int(spglib.get_spacegroup_type(hall).number), hall)
    if sorted(first) != list(range(1, 231)):
        raise RuntimeError(f"spglib {spglib.__version__} lists {len(first)} space groups, not 230")
    hkl = _hkl_grid()
    rows = []
    for number in range(1, 231):
        hall = first[number]
        kind = spglib.get_spacegroup_type(hall)
        ops = spglib.get_symmetry_from_database(hall)
        rot = _unique_rotations(ops["rotations"])
        laue_rot = _unique_rotations(np.concatenate([rot, -rot]))
        laue = spglib.get_pointgroup(laue_rot)[0].strip()
        system = _crystal_system(rot)
        centring = kind.hall_symbol.lstrip("-")[0]
        family = _FAMILY[system]
        lattice = family + ("C" if centring in "AB" else centring)
        absent = tuple(map(tuple, hkl[_absent(ops["rotations"], ops["translations"], hkl)].tolist()))
        rows.append(dict(number=number, symbol=kind.international_short, hall_number=hall,
                         hall_symbol=kind.hall_symbol, crystal_system=system, bravais_lattice=lattice,
                         centring=centring, laue_class=laue, point_group=kind.pointgroup_international.strip(),
                         absent=absent))
    members: dict[tuple, list[dict]] = {}
    for r in rows:
        members.setdefault((r["laue_class"], r["centring"], r["absent"]), []).append(r)
    out = []
    for r in rows:
        group = members[(r["laue_class"], r["centring"], r["absent"])]
        name = f"{r['laue_class']} {r['centring']}: " + ", ".join(g["symbol"] for g in group)
        out.append(SpaceGroupInfo(**r, extinction_class=name, extinction_id=group[0]["number"]))
    log.debug("derived the hierarchy of 230 space groups from spglib %s", spglib.__version__)
    return tuple(out)


def all_space_groups() -> tuple[SpaceGroupInfo, ...]:
    """:class:`SpaceGroupInfo` of the 230 space groups, in number order.

    >>> len(all_space_groups())
    230
    """
    return _table()


def space_group_info(n) -> SpaceGroupInfo:
    """Where space group ``n`` sits in the hierarchy.

    >>> g = space_group_info(14)
    >>> g.symbol, g.crystal_system, g.bravais_lattice, g.laue_class, g.point_group
    ('P2_1/c', 'monoclinic', 'mP', '2/m', '2/m')
    >>> space_group_info(231)
    Traceback (most recent call last):
    ...
    cbedtdc.errors.InputError: space group 231 is not a space-group number; allowed: integers 1..230
    """
    return _table()[_check_number(n) - 1]


def sg_name(n) -> str:
    """``"P2_1/c (14)"``: Hermann-Mauguin symbol and number, the way tables and figures name a class.

    >>> sg_name(14), sg_name(225)
    ('P2_1/c (14)', 'Fm-3m (225)')
    """
    return space_group_info(n).name


def absent_reflections(n) -> tuple:
    """The systematically absent ``(h, k, l)`` of space group ``n`` on the grid ``|h|, |k|, |l| <= 6``.

    >>> (0, 1, 0) in absent_reflections(4), (0, 2, 0) in absent_reflections(4)  # P2_1: 0k0 needs k = 2n
    (True, False)
    """
    return space_group_info(n).absent


def _value(g: SpaceGroupInfo, level: str):
    return g.number if level == "space_group" else getattr(g, level)


@lru_cache(maxsize=None)
def _level_maps(level: str) -> tuple[dict, dict]:
    """``(space group -> class id, class id -> name)`` of one level; the id is the smallest member."""
    if level not in LEVELS:
        raise InputError(f"unknown hierarchy level {level!r}; allowed: {', '.join(LEVELS)}")
    ids: dict = {}
    names: dict[int, str] = {}
    for g in _table():
        cid = ids.setdefault(_value(g, level), g.number)
        names.setdefault(cid, g.name if level == "space_group" else str(_value(g, level)))
    return {g.number: ids[_value(g, level)] for g in _table()}, names


def level_classes(level: str) -> dict[int, str]:
    """All classes of ``level``: ``{id: name}``, ids (the smallest space-group number of the class) ascending.

    >>> level_classes("crystal_system")
    {1: 'triclinic', 3: 'monoclinic', 16: 'orthorhombic', 75: 'tetragonal', 143: 'trigonal', 168: 'hexagonal', 195: 'cubic'}
    """
    return dict(_level_maps(level)[1])


def hierarchy_labels(labels, level: str, *, names: bool = False):
    """Map space-group numbers to their class at ``level`` (one of :data:`LEVELS`).

    Parameters
    ----------
    labels : array_like of int
        Space-group numbers 1..230; any other value (e.g. 0 or -1 for "no prediction") maps to -1 (name
        ``"none"``), so it never matches a true class.
    level : str
        One of :data:`LEVELS`.
    names : bool
        Return the classes' names instead of their ids.

    Returns
    -------
    numpy.ndarray of int64 (ids: the smallest space-group number of the class), or list of str when ``names``.

    >>> hierarchy_labels([14, 2, 225, 216], "laue_class").tolist()  # 2/m, -1, m-3m, m-3m
    [3, 1, 207, 207]
    >>> hierarchy_labels([14, 0], "bravais_lattice", names=True)
    ['mP', 'none']
    """
    to_id, id_names = _level_maps(level)
    values = np.asarray(labels).ravel()
    if values.size and not np.issubdtype(values.dtype, np.integer):
        if not np.all(np.isfinite(values.astype(float))) or np.any(values.astype(float) % 1):
            raise InputError(f"hierarchy_labels: labels must be integer space-group numbers, got {values[:5]}...")
    ids = np.array([to_id.get(int(v), -1) for v in values], dtype=np.int64)
    if names:
        return [id_names.get(int(i), "none") for i in ids]
    return ids


def extinction_groups(classes) -> list[list[int]]:
    """Groups of two or more of ``classes`` that share an extinction class (Laue class, centring, absences).

    Kinematic patterns obey Friedel's law and show the Laue symmetry and the absences only, so they cannot
    separate the groups of one such class; :func:`cbedtdc.metrics.score` merges them (``friedel_groups``).
    Each group is sorted, the groups by their smallest member.

    >>> extinction_groups([14, 225, 1, 2, 216, 4, 11])
    [[1, 2], [4, 11], [216, 225]]
    """
    by_class: dict[int, list[int]] = {}
    for c in dict.fromkeys(_check_number(c) for c in classes):
        by_class.setdefault(space_group_info(c).extinction_id, []).append(c)
    return sorted((sorted(g) for g in by_class.values() if len(g) > 1), key=lambda g: g[0])
