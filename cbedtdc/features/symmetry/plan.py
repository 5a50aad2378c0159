"""The precomputed plan of the ``symmetry`` descriptors: everything that depends only on the panel side and the
settings (the polar matrix, band weights, harmonic weights, the centre's window and prior), cached per side."""

from __future__ import annotations

import functools

import numpy as np

from cbedtdc.errors import InputError
from cbedtdc.features.symmetry.params import SymmetryParams

__all__ = ["polar_matrix", "Plan", "plan_for", "parabola"]


def polar_matrix(side: int, radii, n_angles: int, centre=None):
    """Sparse ``(len(radii) * n_angles, side * side)`` bilinear interpolation matrix (CSR, float32).

    Row ``i * n_angles + k`` samples the image at ``centre + r_i (cos t_k, sin t_k)`` (x along columns,
    y along rows), ``t_k = 2 pi k / n_angles``; ``centre`` defaults to ``(side - 1) / 2``. Points outside
    the image are extrapolated from the nearest pixel cell (:func:`describe`'s radii stay inside).

    >>> P = polar_matrix(8, [1.0], 4)
    >>> P.shape, np.allclose(P.sum(axis=1), 1.0)
    ((4, 64), True)
    """
    import scipy.sparse as sp

    c = (side - 1) / 2 if centre is None else float(centre)
    radii = np.asarray(radii, dtype=np.float64)
    t = 2 * np.pi * np.arange(n_angles) / n_angles
    y = (c + radii[:, None] * np.sin(t)[None, :]).ravel()
    x = (c + radii[:, None] * np.cos(t)[None, :]).ravel()
    y0 = np.clip(np.floor(y), 0, side - 2).astype(np.int64)
    x0 = np.clip(np.floor(x), 0, side - 2).astype(np.int64)
    fy, fx = y - y0, x - x0
    rows = np.repeat(np.arange(len(y)), 4)
    cols = np.stack([y0 * side + x0, y0 * side + x0 + 1, (y0 + 1) * side + x0, (y0 + 1) * side + x0 + 1], 1).ravel()
    vals = np.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], 1).ravel()
    m = sp.csr_matrix((vals.astype(np.float32), (rows, cols)), shape=(len(y), side * side))
    m.sum_duplicates()
    return m


class Plan:
    """Everything that depends only on (side, params): matrices, weights, windows."""

    def __init__(self, side: int, params: SymmetryParams):
        import scipy.fft as sfft
        import scipy.sparse as sp

        k = params.scaled(side)
        self.side, self.params, self.k = side, params, k
        if side < 8:
            raise InputError(f"panels of {side} px: the symmetry descriptors need at least 8 px")
        r_top = min(params.r_max * k, (side - 1) / 2 - 1)  # the inscribed circle, whatever the side
        self.radii = np.linspace(params.r_min * k, r_top, params.n_radii)
        self.T = params.n_angles
        # fine central profile (32 angles a radius) for the bright-field disk radius, below the rings
        self.fine_r = np.arange(0.25, params.bf_max + 2.0, 0.25) * k
        self.n_fine = 32
        self.polar_fine = sp.vstack([polar_matrix(side, self.radii, self.T),
                                     polar_matrix(side, self.fine_r, self.n_fine)]).tocsr()
        # bands: weights (n_fixed, R), ring-area weight r
        r_ref = self.radii / k
        e = params.band_edges
        self.bands = np.stack([((r_ref >= lo) & (r_ref < hi)) * r_ref for lo, hi in zip(e[:-1], e[1:])]).astype(
            np.float32)
        self.all_band = r_ref.astype(np.float32)
        # harmonic weights: 2 for 0 < m < T/2, 1 at Nyquist (energy of a real signal)
        nh = self.T // 2 + 1
        self.mw = np.full(nh, 2.0, dtype=np.float32)
        self.mw[0] = 0.0
        if self.T % 2 == 0:
            self.mw[-1] = 1.0
        m = np.arange(nh)
        self.rot_cos = np.stack([np.cos(2 * np.pi * m / n) for n in params.rotations], 1).astype(np.float32)
        self.mir_keep = ((m >= 1) & (m <= params.mirror_harmonics)).astype(np.float32)
        # centre: crop, its Gaussian window, the separable blur of the normaliser, the centre prior
        self.W = min(int(round(params.centre_crop * k)), side - 2)
        self.W -= self.W % 2
        self.L = sfft.next_fast_len(2 * self.W - 1)
        self.sigma = params.centre_sigma * k
        v = np.arange(self.W) - self.W // 2
        self.win = np.exp(-(v[:, None] ** 2 + v[None, :] ** 2) / (2 * self.sigma ** 2)).astype(np.float32)
        self.search = int(round(params.centre_search * k))
        jj = np.arange(-2 * self.search, 2 * self.search + 1)
        self.gsep = np.exp(-((self.W // 2 + jj)[:, None] - np.arange(self.W)[None, :]) ** 2
                           / (2 * self.sigma ** 2)).astype(np.float32)
        dist2 = (jj[:, None] ** 2 + jj[None, :] ** 2) / (2.0 * self.search) ** 2  # (offset / search)^2
        self.prior = (params.centre_prior * dist2).astype(np.float32)
        self.pad = self.search + 2  # padding of the shift step (shifts are clipped to +-search)


@functools.lru_cache(maxsize=8)
def plan_for(side: int, params: SymmetryParams) -> Plan:
    return Plan(side, params)


def parabola(lm, l0, lp):
    """Vertex offset (in steps) of the parabola through (-1, lm), (0, l0), (1, lp), clipped to +-0.5."""
    den = lm - 2 * l0 + lp
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(den < 0, 0.5 * (lm - lp) / den, 0.0)
    return np.clip(np.nan_to_num(off), -0.5, 0.5)
