"""Electron scattering: relativistic wavelength, atomic form factors, structure factors.

The 4-Gaussian electron scattering factors are package data (``cbedtdc/tables/electron_scattering.csv``,
extracted once from pymatgen's MIT-licensed table; the source is cited in the file), so the data
path does not depend on pymatgen internals.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from importlib import resources

import numpy as np
from cbedtdc.errors import InputError

__all__ = ["ELECTRON_REST_KEV", "wavelength", "lorentz_gamma", "scattering_table", "form_factors",
           "structure_factors"]

#: Electron rest energy [keV].
ELECTRON_REST_KEV = 510.99895


def wavelength(energy_kev: float) -> float:
    """Relativistic electron wavelength [Angstrom] at an accelerating voltage of ``energy_kev``.

    >>> round(wavelength(100), 5)
    0.03701
    >>> round(wavelength(200), 5)
    0.02508
    """
    e_ev = 1000.0 * float(energy_kev)
    return float(12.2642584 / np.sqrt(e_ev * (1.0 + e_ev / (2.0 * 1000.0 * ELECTRON_REST_KEV))))


def lorentz_gamma(energy_kev: float) -> float:
    """Relativistic mass factor gamma = 1 + E / (m c^2).

    >>> round(lorentz_gamma(100), 4)
    1.1957
    """
    return 1.0 + float(energy_kev) / ELECTRON_REST_KEV


@lru_cache(maxsize=1)
def scattering_table() -> dict[str, tuple[int, np.ndarray]]:
    """``{symbol: (Z, coeffs)}`` with ``coeffs`` of shape (4, 2): rows (a_i [A], b_i [A^2]).

    >>> z, c = scattering_table()["O"]
    >>> z, c.shape
    (8, (4, 2))
    """
    text = resources.files("cbedtdc").joinpath("tables/electron_scattering.csv").read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    out = {}
    for row in csv.DictReader(lines):
        coeffs = np.array([[float(row[f"a{i}"]), float(row[f"b{i}"])] for i in range(1, 5)])
        out[row["symbol"]] = (int(row["Z"]), coeffs)
    return out


def form_factors(symbols, s) -> np.ndarray:
    """Electron scattering factors f_e(s) [Angstrom] of each element at each s = |g|/2 [1/A].

    Parameters
    ----------
    symbols : sequence of str
        Element symbols (E,).
    s : array_like
        Scattering vectors sin(theta)/lambda (M,).

    Returns
    -------
    ndarray (E, M)

    >>> f = form_factors(["Si"], [0.0, 0.5])
    >>> bool(f[0, 0] > f[0, 1] > 0)
    True
    """
    table = scattering_table()
    s2 = np.asarray(s, dtype=float) ** 2
    out = np.empty((len(symbols), s2.size))
    for i, sym in enumerate(symbols):
        try:
            coeffs = table[sym][1]
        except KeyError as err:
            raise InputError(f"element {sym!r}: no electron scattering factor in the table "
                             f"(available: {', '.join(sorted(table))})") from err
        out[i] = np.exp(-np.outer(s2, coeffs[:, 1])) @ coeffs[:, 0]
    return out


def structure_factors(hkl, frac, species, symbols, g_len, b_iso: float) -> np.ndarray:
    """Kinematic structure factors F_g [Angstrom] with an isotropic Debye-Waller factor.

    F_g = sum_j f_e,j(|g|/2) exp(-B |g|^2 / 4) exp(2 pi i h . x_j)

    Parameters
    ----------
    hkl : array (M, 3) of int
        Miller indices.
    frac : array (N, 3)
        Fractional atom coordinates.
    species : array (N,) of int
        Index of each atom's element in ``symbols``.
    symbols : sequence of str
        Element symbols.
    g_len : array (M,)
        |g| [1/A] of each reflection.
    b_iso : float
        Debye-Waller B [A^2].

    Returns
    -------
    complex ndarray (M,)

    A face-centred cubic cell extinguishes (100) and (110):

    >>> fcc = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])
    >>> F = structure_factors([[1, 0, 0], [1, 1, 0], [1, 1, 1]], fcc, [0, 0, 0, 0], ["Cu"],
    ...                       np.array([0.28, 0.39, 0.48]), 0.5)
    >>> [bool(abs(x) < 1e-8) for x in F]
    [True, True, False]
    """
    hkl = np.asarray(hkl, dtype=float)
    frac = np.asarray(frac, dtype=float)
    species = np.asarray(species)
    g_len = np.asarray(g_len, dtype=float)
    fe = form_factors(symbols, g_len / 2.0) * np.exp(-b_iso * g_len**2 / 4.0)  # (E, M)
    phase = np.exp(2j * np.pi * (hkl @ frac.T))  # (M, N)
    out = np.zeros(len(hkl), dtype=complex)
    for e in range(len(symbols)):
        out += fe[e] * phase[:, species == e].sum(axis=1)
    return out
