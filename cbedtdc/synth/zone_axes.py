"""Zone-axis policies: which three beam directions a material is seen along.

``lowindex``
    Three low-index lattice directions [uvw] per crystal family (cubic [001], [011], [111];
    tetragonal [001], [100], [110]; hexagonal/trigonal [001], [100], [210]; orthorhombic [001],
    [100], [010]; monoclinic [010], [001], [100]; triclinic [001], [100], [010]). The beam runs
    along the direct-lattice vector u a + v b + w c; every one is a true zone axis.
``namsa``
    Like the original simulation (NAMSA, ``smc_19_sim.py``): the normals of the planes (hkl) of
    the three strongest reflections with 1 A < d < 5 A (kinematic electron intensities here,
    X-ray ones there). The beam runs along g_hkl; such a direction is in general *not* a zone
    axis, so some panels show few disks, as in the challenge data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .crystal import Crystal
from .scattering import structure_factors
from cbedtdc.errors import InputError

__all__ = ["ZoneAxis", "LOWINDEX", "zone_axes", "POLICIES"]

POLICIES = ("lowindex", "namsa")

LOWINDEX = {
    "cubic": ((0, 0, 1), (0, 1, 1), (1, 1, 1)),
    "tetragonal": ((0, 0, 1), (1, 0, 0), (1, 1, 0)),
    "hexagonal": ((0, 0, 1), (1, 0, 0), (2, 1, 0)),
    "trigonal": ((0, 0, 1), (1, 0, 0), (2, 1, 0)),
    "orthorhombic": ((0, 0, 1), (1, 0, 0), (0, 1, 0)),
    "monoclinic": ((0, 1, 0), (0, 0, 1), (1, 0, 0)),
    "triclinic": ((0, 0, 1), (1, 0, 0), (0, 1, 0)),
}


@dataclass(frozen=True)
class ZoneAxis:
    """One beam direction.

    Attributes
    ----------
    indices : tuple of int
        [uvw] (``lowindex``) or (hkl) (``namsa``); written to the ``z_dirs`` attribute.
    direction : ndarray (3,)
        Unit beam direction in the crystal's Cartesian frame.
    d_hkl : float or None
        Spacing [A] of the defining reflection (``namsa``), which sets the disk size there.
    """

    indices: tuple
    direction: np.ndarray
    d_hkl: float | None = None


def _unit(v):
    return v / np.linalg.norm(v)


def _strongest_planes(crystal: Crystal, b_iso: float, n: int = 3) -> list[ZoneAxis]:
    recip = crystal.recip
    lim = np.ceil(np.linalg.norm(crystal.cell, axis=1) / 1.0).astype(int)  # |h_i| <= |a_i| / d_min
    grids = np.meshgrid(*[np.arange(-m, m + 1) for m in lim], indexing="ij")
    hkl = np.stack([g.ravel() for g in grids], axis=1)
    # one representative of each +-g pair: first non-zero index positive
    first = np.where(hkl[:, 0] != 0, hkl[:, 0], np.where(hkl[:, 1] != 0, hkl[:, 1], hkl[:, 2]))
    hkl = hkl[first > 0]
    g_len = np.linalg.norm(hkl @ recip, axis=1)
    keep = (g_len > 0.2) & (g_len < 1.0)  # 1 A < d < 5 A
    hkl, g_len = hkl[keep], g_len[keep]
    if len(hkl) == 0:
        raise InputError(f"space group {crystal.space_group}: no reflection with 1 A < d < 5 A")
    inten = np.abs(structure_factors(hkl, crystal.frac, crystal.species, crystal.symbols, g_len, b_iso)) ** 2
    order = np.lexsort((g_len, -np.round(inten, 9)))  # strongest first, ties -> lowest order
    chosen: list[ZoneAxis] = []
    for i in order:
        d = _unit(hkl[i] @ recip)
        if any(abs(np.dot(d, z.direction)) > 0.999 for z in chosen):
            continue  # parallel to a chosen one (higher order of the same planes)
        chosen.append(ZoneAxis(tuple(int(x) for x in hkl[i]), d, float(1.0 / g_len[i])))
        if len(chosen) == n:
            return chosen
    while len(chosen) < n:  # degenerate tiny sets: repeat the strongest
        chosen.append(chosen[0])
    return chosen


def zone_axes(crystal: Crystal, policy: str = "lowindex", b_iso: float = 0.5) -> list[ZoneAxis]:
    """The three beam directions of ``crystal`` under ``policy``.

    >>> from cbedtdc.synth.crystal import random_crystal
    >>> c = random_crystal(194, np.random.default_rng(1))
    >>> [z.indices for z in zone_axes(c)]
    [(0, 0, 1), (1, 0, 0), (2, 1, 0)]
    """
    if policy == "lowindex":
        return [ZoneAxis(uvw, _unit(np.asarray(uvw, float) @ crystal.cell)) for uvw in LOWINDEX[crystal.family]]
    if policy == "namsa":
        return _strongest_planes(crystal, b_iso)
    raise InputError(f"synth.zone_axes={policy!r}: must be one of {', '.join(POLICIES)}")
