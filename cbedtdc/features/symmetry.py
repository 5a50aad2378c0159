"""The ``symmetry`` feature source: rotation-invariant physics descriptors of every CBED panel.

No backbone and no torch: vectorised numpy/scipy over a batch of uint8 shard stacks ``(B, 3, S, S)``
(the log-scaled intensities of :mod:`cbedtdc.preprocess`). Every panel goes through:

1. **Centre** (:func:`find_centres`): the centre of the direct beam's disk, found as the maximum of the
   Gaussian-weighted 180-degree self-correlation ``rho(c) = sum_x w(x-c) I(x) I(2c-x) / sum_x w(x-c)
   I(x)^2`` (``w`` of width ``centre_sigma``, ``I`` the crop minus its mean) over every half-pixel ``c``
   within ``centre_search`` px of the image centre, less a mild quadratic prior for the image centre
   (``centre_prior`` at the edge of the search). The disk *positions* of a zone-axis pattern are
   centrosymmetric about the direct beam (``g`` and ``-g`` are both in the zero layer) even where
   Friedel's law fails for their intensities, and the log scale of the shards evens those out. All
   candidates come from one FFT autoconvolution of the windowed crop (a product of two Gaussian windows
   centred at ``c0`` and ``2c - c0`` is a Gaussian centred at ``c``; the normaliser is a separable blur),
   then a parabola through the peak gives the sub-pixel centre. The brightest blob was tried first and
   dropped: on the default data it is not the direct beam in ~40 % of the panels (a strong reflection
   near the centre), while the self-correlation finds every panel's centre within 0.06 px. Strongly
   non-centrosymmetric intensities can pull the centre to a pseudo-centre (tests: a one-mirror pattern
   whose -g disks are at 0.3 of g's). Fallback, never a NaN: a blank, all-zero or non-finite panel, one
   with an rms contrast below ``min_contrast`` grey levels in the centre crop, or ``rho <
   min_centre_rho`` uses the geometric centre ``(S-1)/2``, sets the panel's ``centre.nocentre`` feature
   to 1 and names the reason (a blank or non-finite panel also gets all-zero descriptors).
2. **Polar resampling**: the panel is shifted (bilinear, sub-pixel) so that its centre sits on the
   geometric centre, then ONE precomputed sparse bilinear matrix (``n_radii`` radii x ``n_angles``
   angles, plus a fine central profile) maps the whole batch to polar coordinates ``f_r(theta)``.
   Lengths are set for 64 px and scale with the side, so larger panels (the real 512-px stacks after
   :func:`cbedtdc.preprocess.log_scale`) give the same layout; this module reads only shards, and a
   512-px panel would want an area-averaging (not bilinear) polar matrix, which is not built.
3. **Angular Fourier transform** ``F_m(r)`` of every ring: a rotation of the pattern multiplies
   ``F_m`` by ``exp(i m phi)``; only quantities without that phase are kept.

Descriptors of one panel (``descriptor_names`` gives every column's name, ``p{panel}.{group}...``):

- ``radial.r{k}`` (lattice spacings, HOLZ ring): the angular mean ``F_0(r)/T`` minus its mean over r,
  divided by the panel's polar standard deviation ``s``. Peaks sit at the radii of the strongest
  reflections (the reciprocal lattice in the zero layer) and, when it is inside the field, at the first
  HOLZ ring, whose radius ``G = sqrt(2 k H)`` gives the spacing ``1/H`` along the beam. Friedel's law
  hides nothing here (it is already rotation-averaged).
- per *band* (rings ``band_edges`` in px at 64 px, plus ``bf`` = the bright-field disk ``r <= 0.9
  r_bf``, plus ``all`` = every ring), with weights ``r`` (ring area):

  - ``h{m}`` for m = 1..``n_harmonics``: ``log10`` of the fraction of the band's angular energy
    (``sum_r r |F_m(r)|^2`` over all m >= 1, plus a floor ``(flat_level s)^2`` per ring so that a nearly
    isotropic band gives small fractions instead of normalised interpolation noise) in harmonic m. An
    n-fold rotation axis along the beam leaves only multiples of n. Friedel's law (kinematic
    diffraction, ``|F(g)| = |F(-g)|``) makes every zero-layer pattern centrosymmetric, i.e. adds a
    2-fold axis and hides the odd harmonics: a 3-fold axis then shows as 6-fold (trigonal looks
    hexagonal), which only Friedel-breaking, dynamical data (``synth.mode: bloch``, real CBED) tell
    apart (the zero layer shows the *projection* diffraction group, the diffraction group with
    ``1_R`` added; Buxton et al. 1976).
  - ``rot{n}`` for n = 2, 3, 4, 6: the self-correlation of the band under a rotation by 360/n degrees,
    ``sum_m frac_m cos(2 pi m / n)`` (1: an exact n-fold axis). ``rot2`` is the Friedel descriptor:
    ``rot2 = E_even - E_odd``, 1 for a centrosymmetric pattern, less where Friedel's law is broken
    (odd harmonics: polar / non-centrosymmetric projections in dynamical CBED; in kinematic data only
    mistilt and noise lower it).
  - the mirror spectrum ``M(a) = sum_theta f(theta) f(2a - theta) / sum_theta f^2`` for all ``n_angles``
    mirror-line angles ``a`` in [0, 180) deg at once (reflection about ``a`` is a convolution in angle:
    ``M = irfft(sum_r r F_m(r)^2)``, low-passed at ``mirror_harmonics``); summarised rotation-
    invariantly by ``mir.top{k}`` (the k highest local maxima: ``top1`` is the best mirror's strength),
    ``mir.npk50`` / ``mir.npk80`` (the number of mirror peaks above 0.5 / 0.8: mirror lines; with
    Friedel's 2-fold every mirror at ``a`` comes with one at ``a + 90`` deg) and ``mir.f{j}`` for j =
    1..``mirror_orders`` (the magnitude of the j-th Fourier order of ``M(a)``: j equally spaced mirrors,
    as in ``jmm``: 2mm -> j = 2, 3m -> 3, 4mm -> 4, 6mm and 3m plus Friedel's 2-fold -> 6). Buxton et
    al. (1976) identify the diffraction group, hence the candidate point groups, from the rotation
    and mirror symmetry of the bright-field disk and of the whole pattern taken separately: here the
    ``bf`` band and the ``all`` band; the whole pattern's symmetry includes the HOLZ reflections and
    so the 3-D symmetry along the beam.

- ``bf.radius``: the bright-field disk radius in px (at 64 px), the radius of the steepest fall of
  the fine central profile: the convergence semi-angle over the smallest reflection (the generator
  sets it from ``g_min``), i.e. a reciprocal-lattice length; ``bf.contrast``: the disk's mean over the
  ring just outside it, over ``s``.
- ``centre.rho``: the 180-degree self-correlation of the found centre (the whole pattern's Friedel
  symmetry, near 1 for kinematic data); ``centre.nocentre``: 1 where the geometric centre was used
  (documented fallback), else 0.

Every descriptor is invariant to rotations about the centre (up to interpolation) and to affine
changes of the log intensities (``a * x + b``, a > 0: a scaled exposure shifts log intensities; a
rescaled uint8 range scales them), since the mean is removed and every quantity is a ratio. None is
ever NaN: a blank panel gives zeros with ``nocentre = 1``.

References: Buxton, Eades, Steeds & Rackham (1976), *The symmetry of electron diffraction zone axis
patterns*, Phil. Trans. R. Soc. A 281:171-194 (doi 10.1098/rsta.1976.0024). See ``docs/symmetry.md``.
"""

# Over 500 lines, on purpose: one descriptor pipeline (centre, polar matrix, harmonics, mirror spectrum, bands)
# whose stages share one precomputed plan, and its docstring documents every descriptor (~100 lines).
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
from cbedtdc.errors import InputError

__all__ = ["SOURCE", "VERSION", "SymmetryParams", "params_dict", "params_sha256", "descriptor_names", "describe",
           "find_centres", "mirror_spectrum", "polar_matrix", "extract_symmetry_to_file"]

log = logging.getLogger(__name__)

SOURCE = "symmetry"
VERSION = "1"
REF_SIDE = 64  # lengths in px below are at this side and scale with the image side


@dataclasses.dataclass(frozen=True)
class SymmetryParams:
    """Settings of the descriptor set; lengths are px at a 64-px panel (scaled with the side)."""

    n_radii: int = 30  # rings at r = r_min .. r_max
    r_min: float = 1.0
    r_max: float = 30.0
    n_angles: int = 128  # angles per ring (mirror spectrum resolution 180 / n_angles deg)
    band_edges: tuple = (1.0, 4.0, 8.0, 12.0, 16.0, 20.0, 25.0, 30.5)  # radial bands [lo, hi) in px
    n_harmonics: int = 16  # h1..h16 per band
    mirror_harmonics: int = 32  # low-pass of the mirror spectrum (smooth peaks)
    mirror_top: int = 4  # highest mirror peaks kept
    mirror_orders: int = 6  # Fourier orders of the mirror spectrum kept
    rotations: tuple = (2, 3, 4, 6)
    centre_search: int = 6  # the 180-degree self-correlation is searched +-this many px around the image centre
    centre_sigma: float = 5.0  # Gaussian window of the 180-degree self-correlation
    centre_crop: int = 32  # side of the crop the self-correlation is computed on
    centre_prior: float = 0.05  # rho penalty at the search edge (quadratic in the offset)
    min_centre_rho: float = 0.3  # below: no visible centre, fallback to the geometric centre
    min_contrast: float = 2.0  # grey levels (rms in the centre crop): flatter has no visible centre
    bf_max: float = 8.0  # the bright-field disk edge is searched for below this radius
    flat_level: float = 0.05  # angular std / panel std below which a band counts as flat
    harmonic_scale: str = "log10"  # log10 | sqrt: the scale of the harmonic fractions
    log_floor: float = 1e-4  # harmonic fractions are floored here before log10

    def scaled(self, side: int) -> float:
        return side / REF_SIDE


def params_dict(params: SymmetryParams | None = None) -> dict:
    """The settings as a plain JSON-able dict, with the version.

    >>> params_dict()["version"], params_dict()["n_angles"]
    ('1', 128)
    """
    p = dataclasses.asdict(params or SymmetryParams())
    return {"version": VERSION, **{k: list(v) if isinstance(v, tuple) else v for k, v in p.items()}}


def params_sha256(params: SymmetryParams | None = None) -> str:
    """SHA-256 of the sorted JSON of :func:`params_dict`: the features file's ``model_sha256``."""
    return hashlib.sha256(json.dumps(params_dict(params), sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------- names
def _band_names(params: SymmetryParams) -> list[str]:
    e = params.band_edges
    return [f"b{lo:g}-{hi:g}" for lo, hi in zip(e[:-1], e[1:])] + ["bf", "all"]


def _band_feature_names(params: SymmetryParams) -> list[str]:
    names = [f"h{m}" for m in range(1, params.n_harmonics + 1)]
    names += [f"rot{n}" for n in params.rotations]
    names += [f"mir.top{k}" for k in range(1, params.mirror_top + 1)] + ["mir.npk50", "mir.npk80"]
    names += [f"mir.f{j}" for j in range(1, params.mirror_orders + 1)]
    return names


def _panel_names(params: SymmetryParams) -> list[str]:
    names = [f"radial.r{k}" for k in range(params.n_radii)]
    for b in _band_names(params):
        names += [f"{b}.{f}" for f in _band_feature_names(params)]
    return names + ["bf.radius", "bf.contrast", "centre.rho", "centre.nocentre"]


def descriptor_names(params: SymmetryParams | None = None) -> list[str]:
    """Name of every column of :func:`describe`'s output: ``p{panel}.{descriptor}``, panel 0, 1, 2.

    >>> names = descriptor_names()
    >>> len(names), names[0], names[-1]
    (966, 'p0.radial.r0', 'p2.centre.nocentre')
    """
    params = params or SymmetryParams()
    return [f"p{p}.{n}" for p in range(3) for n in _panel_names(params)]


# ------------------------------------------------------------------------------------- precomputed plan
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


class _Plan:
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
def _plan(side: int, params: SymmetryParams) -> _Plan:
    return _Plan(side, params)


# ------------------------------------------------------------------------------------------------ centre
def _parabola(lm, l0, lp):
    """Vertex offset (in steps) of the parabola through (-1, lm), (0, l0), (1, lp), clipped to +-0.5."""
    den = lm - 2 * l0 + lp
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(den < 0, 0.5 * (lm - lp) / den, 0.0)
    return np.clip(np.nan_to_num(off), -0.5, 0.5)


def _centres(x: np.ndarray, plan: _Plan, valid: np.ndarray):
    """Centres (N, 2) as (y, x) px, rho (N,), found (N,) of panels ``x`` (N, S, S) float32."""
    import scipy.fft as sfft

    p, S = plan.params, plan.side
    N = len(x)
    geo = (S - 1) / 2
    W, L = plan.W, plan.L
    c0 = W // 2
    o = int(np.rint(geo)) - c0  # crop origin; crop index c0 is the pixel nearest the image centre
    crop = x[:, o:o + W, o:o + W]
    crop = crop - crop.mean((1, 2), keepdims=True)
    contrast = np.sqrt((crop ** 2).mean((1, 2)))
    f = crop * plan.win
    u = f * crop
    Ff = sfft.rfft2(f, s=(L, L), workers=1)
    ff = sfft.irfft2(Ff * Ff, s=(L, L), workers=1)
    s2 = 2 * plan.search
    j = np.arange(-s2, s2 + 1)
    num = ff[:, 2 * c0 + j[:, None], 2 * c0 + j[None, :]]  # (f * f)(2c), c = c0 + j/2
    den = plan.gsep @ u @ plan.gsep.T  # (u * g)(2c - c0): a separable Gaussian blur, the normaliser
    tiny = 1e-6 * np.maximum(den.reshape(N, -1).max(1), 1e-30)[:, None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(den > tiny, num / den, -1.0)
    rho = np.nan_to_num(rho, nan=-1.0)
    n = len(j)
    score = rho - plan.prior  # a mild preference for the image centre among near-equal candidates
    best = score.reshape(N, -1).argmax(1)
    by, bx = np.divmod(best, n)
    rows = np.arange(N)
    rmax = rho[rows, by, bx]
    smax = score[rows, by, bx]
    ym = score[rows, np.maximum(by - 1, 0), bx]
    yp = score[rows, np.minimum(by + 1, n - 1), bx]
    xm = score[rows, by, np.maximum(bx - 1, 0)]
    xq = score[rows, by, np.minimum(bx + 1, n - 1)]
    dy = np.where((by > 0) & (by < n - 1), _parabola(ym, smax, yp), 0.0)
    dx = np.where((bx > 0) & (bx < n - 1), _parabola(xm, smax, xq), 0.0)
    cy = o + c0 + (j[by] + dy) / 2
    cx = o + c0 + (j[bx] + dx) / 2
    found = valid & (contrast >= p.min_contrast) & (rmax >= p.min_centre_rho)
    cy = np.where(found, cy, geo)
    cx = np.where(found, cx, geo)
    return np.stack([cy, cx], 1), np.where(valid, np.clip(rmax, -1.0, 1.0), 0.0).astype(np.float32), found


def _border_mean(x: np.ndarray) -> np.ndarray:
    """Mean of each panel's outermost pixel ring (the padding value)."""
    s = x.shape[-1]
    tot = x[:, 0, :].sum(1) + x[:, -1, :].sum(1) + x[:, 1:-1, 0].sum(1) + x[:, 1:-1, -1].sum(1)
    return (tot / (4 * s - 4)).astype(np.float32)


def find_centres(panels, params: SymmetryParams | None = None):
    """Pattern centres of panels ``(N, S, S)``: ``(centres (N, 2) as (y, x) px, found (N,) bool)``.

    ``found`` is False where the geometric centre ``(S - 1) / 2`` was used (see the module docstring).
    """
    params = params or SymmetryParams()
    x = np.asarray(panels, dtype=np.float32)
    if x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise InputError(f"panels of shape {x.shape}: expected (N, S, S)")
    finite = np.isfinite(x).all(axis=(1, 2))
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    flat = x.reshape(len(x), -1)
    valid = finite & (flat.max(1) > flat.min(1))
    centres, _, found = _centres(x, _plan(x.shape[-1], params), valid)
    return centres, found


# ------------------------------------------------------------------------------------------- describe
def _shift_to_centre(x, centres, plan: _Plan):
    """Panels resampled (bilinear) so that ``centres`` land on the geometric centre.

    Shifts below a pixel (the usual case) interpolate towards the neighbour on the shift's side, the
    edge pixels repeated; larger shifts take the panel's border mean outside the image.
    """
    N, S = len(x), plan.side
    P = plan.pad
    d = np.clip(centres - (S - 1) / 2, -(P - 2), P - 2).astype(np.float32)
    small = (np.abs(d) < 1).all(1)
    if small.all():
        return _subpixel_shift(x, d)
    out = np.empty_like(x)
    if small.any():
        out[small] = _subpixel_shift(x[small], d[small])
    big = np.flatnonzero(~small)
    xb, db = x[big], d[big]
    i0 = np.floor(db).astype(np.int64)
    fr = db - i0
    fill = _border_mean(xb)
    xp = np.empty((len(big), S + 2 * P + 1, S + 2 * P + 1), dtype=np.float32)
    xp[:] = fill[:, None, None]
    xp[:, P:P + S, P:P + S] = xb
    g = np.empty((len(big), S + 1, S + 1), dtype=np.float32)
    for k, (a, b) in enumerate(i0):
        g[k] = xp[k, P + a:P + a + S + 1, P + b:P + b + S + 1]
    fy, fx = fr[:, 0][:, None, None], fr[:, 1][:, None, None]
    t = g[:, :, :-1] + fx * (g[:, :, 1:] - g[:, :, :-1])  # separable bilinear: along x, then along y
    out[big] = t[:, :-1] + fy * (t[:, 1:] - t[:, :-1])
    return out


def _subpixel_shift(x, d):
    """``x`` sampled at ``p + d`` for ``|d| < 1`` per axis (bilinear, edge pixels repeated)."""
    t = _lerp_neighbour(x, d[:, 1], axis=2)  # along x (columns), then along y (rows)
    return _lerp_neighbour(t, d[:, 0], axis=1)


def _lerp_neighbour(x, d, axis: int):
    """``x + |d| (neighbour - x)``, the neighbour at +1 along ``axis`` where ``d > 0``, else at -1."""
    def sl(a, b):
        return (slice(None),) * axis + (slice(a, b),)

    nb = np.empty_like(x)
    nb[sl(None, -1)] = x[sl(1, None)]  # the neighbour at +1 ...
    nb[sl(-1, None)] = x[sl(-1, None)]
    neg = np.flatnonzero(d < 0)
    if len(neg):  # ... or at -1
        xn = x[neg]
        tail = np.concatenate([xn[sl(None, 1)], xn[sl(None, -1)]], axis=axis)
        nb[neg] = tail
    nb -= x
    nb *= np.abs(d)[:, None, None]
    nb += x
    return nb


def _mirror_summary(mir, plan: _Plan):
    """Rotation-invariant summary of mirror spectra ``mir`` (..., T): top peaks, peak counts, orders."""
    p = plan.params
    peak = (mir > np.roll(mir, 1, -1)) & (mir >= np.roll(mir, -1, -1))
    heights = np.where(peak, mir, 0.0)
    k = p.mirror_top
    top = -np.sort(np.partition(-heights, k - 1, axis=-1)[..., :k], axis=-1)
    top = np.clip(top, 0.0, 1.0)
    n50 = (peak & (mir >= 0.5)).sum(-1, dtype=np.float32)
    n80 = (peak & (mir >= 0.8)).sum(-1, dtype=np.float32)
    import scipy.fft as sfft

    orders = np.abs(sfft.rfft(mir, axis=-1, workers=1))[..., 1: p.mirror_orders + 1] / plan.T
    return np.concatenate([top, n50[..., None], n80[..., None], orders], -1)


def _band_features(H, G, wb, s, plan: _Plan):
    """Features of bands with ring weights ``wb`` (N, nb, R) from ``H = |F|^2`` and ``G = F^2`` (N, R, M);
    ``s`` (N,): each panel's polar standard deviation."""
    import scipy.fft as sfft

    p = plan.params
    Hb = wb @ H  # (N, nb, M) band power per harmonic
    E = (Hb * plan.mw).sum(-1)  # band energy over m >= 1
    # a band whose angular std is below flat_level x the panel's std counts as flat: its fractions,
    # rotation and mirror scores shrink to 0 instead of normalising interpolation noise
    eps = (p.flat_level * s[:, None]) ** 2 * plan.T ** 2 * wb.sum(-1)
    safe = (E + eps)[..., None]
    frac = Hb * plan.mw / safe
    h = frac[..., 1: p.n_harmonics + 1]
    h = np.sqrt(h) if p.harmonic_scale == "sqrt" else np.log10(np.maximum(h, p.log_floor))
    rot = frac @ plan.rot_cos  # (N, nb, n_rot)
    Gb = (wb @ G.view(np.float32)).view(np.complex64) * plan.mir_keep  # complex sums as two real ones
    num = sfft.irfft(Gb, n=plan.T, axis=-1, workers=1)
    den = sfft.irfft(Hb * plan.mir_keep, n=plan.T, axis=-1, workers=1)[..., :1] + eps[..., None] / plan.T
    mir = num / den
    ms = _mirror_summary(mir, plan)
    out = np.concatenate([h, rot, ms], -1)
    return out


def _bf_radius(prof, plan: _Plan):
    """Bright-field disk radius (px at 64 px) and contrast from the fine central profiles ``prof`` (N, n_fine_r)."""
    p, k = plan.params, plan.k
    N = len(prof)
    d = np.diff(prof, axis=1)  # fall between successive fine radii
    lim = plan.fine_r[1:] <= p.bf_max * k
    dl = np.where(lim[None, :], d, np.inf)
    i = dl.argmin(1)
    rows = np.arange(N)
    n = d.shape[1]
    off = np.where((i > 0) & (i < n - 1),
                   _parabola(-d[rows, np.maximum(i - 1, 0)], -d[rows, i], -d[rows, np.minimum(i + 1, n - 1)]), 0.0)
    step = plan.fine_r[1] - plan.fine_r[0]
    r_edge = 0.5 * (plan.fine_r[i] + plan.fine_r[i + 1]) + off * step
    r_edge = np.where(np.isfinite(dl[rows, i]) & (dl[rows, i] < 0), r_edge, plan.fine_r[0])
    inside = plan.fine_r[None, :] <= r_edge[:, None]
    outside = (plan.fine_r[None, :] > r_edge[:, None]) & (plan.fine_r[None, :] <= r_edge[:, None] + 2 * k)
    mean_in = (prof * inside).sum(1) / np.maximum(inside.sum(1), 1)
    mean_out = (prof * outside).sum(1) / np.maximum(outside.sum(1), 1)
    return r_edge / k, mean_in - mean_out


def describe(stacks, params: SymmetryParams | None = None):
    """Symmetry descriptors of a batch of stacks.

    Parameters
    ----------
    stacks : array ``(B, 3, S, S)``
        Shard stacks (uint8 log-scaled intensities) or any real array of that shape (e.g. float
        log intensities of a raw stack; the descriptors are invariant to ``a * x + b``).
    params : SymmetryParams, optional

    Returns
    -------
    features : float32 ``(B, D)``
        ``D = len(descriptor_names(params))``, 3 panels one after the other; never NaN.
    reasons : list of str
        Per sample: ``""`` when every panel was read normally, else why a panel fell back, e.g.
        ``"panel 1: blank panel (constant 0); panel 2: no visible centre (geometric centre used)"``.
    """
    params = params or SymmetryParams()
    x = np.asarray(stacks)
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3]:
        raise InputError(f"stacks of shape {x.shape}: expected (B, 3, S, S)")
    B, _, S, _ = x.shape
    plan = _plan(int(S), params)
    feats = np.empty((B, 3 * len(_panel_names(params))), dtype=np.float32)
    reasons = []
    for s in range(0, B, CHUNK):  # cache-sized chunks: every step streams through L2, not memory
        feats[s:s + CHUNK], r = _describe_chunk(x[s:s + CHUNK], plan)
        reasons += r
    return feats, reasons


#: Stacks described together inside :func:`describe` (any batch gives the same numbers; 32 stacks keep
#: each intermediate array within a core's cache, ~1.5x faster than 256 at once).
CHUNK = 32


def _describe_chunk(x, plan: _Plan):
    B, _, S, _ = x.shape
    a = _analyse(x.reshape(3 * B, S, S), plan)
    N, R = 3 * B, a["pol"].shape[1]
    r_ref = (plan.radii / plan.k).astype(np.float32)
    bf_band = (r_ref[None, :] <= 0.9 * a["r_bf"][:, None]) * r_ref[None, :]
    bf_band[:, 0] = np.maximum(bf_band[:, 0], r_ref[0])  # at least the innermost ring
    wb = np.concatenate([np.broadcast_to(plan.bands, (N, *plan.bands.shape)), bf_band[:, None, :],
                         np.broadcast_to(plan.all_band, (N, 1, R))], 1).astype(np.float32)
    bands = _band_features(a["H"], a["G"], wb, a["s_safe"], plan).reshape(N, -1)
    s_safe = a["s_safe"]
    scalars = np.stack([a["r_bf"], a["bf_contrast"] / s_safe, a["rho"], (~a["found"]).astype(np.float32)], 1)
    feats = np.concatenate([a["radial"], bands, scalars], 1).astype(np.float32)
    bad = ~a["usable"]
    feats[bad] = 0.0
    feats[bad, -1] = 1.0
    feats = np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0)
    return feats.reshape(B, -1), _reasons(a, B)


def _analyse(x, plan: _Plan) -> dict:
    """Centres, polar samples and angular spectra of panels ``x`` (N, S, S) (any real dtype)."""
    import scipy.fft as sfft

    N, S = len(x), plan.side
    integer = np.issubdtype(x.dtype, np.integer)  # shards: uint8, finite by construction
    x = x.astype(np.float32, copy=False)
    finite = np.ones(N, dtype=bool) if integer else np.isfinite(x).all(axis=(1, 2))
    if not finite.all():
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    flat = x.reshape(N, -1)
    lo, hi = flat.min(1), flat.max(1)
    valid = finite & (hi > lo)
    centres, rho, found = _centres(x, plan, valid)
    xc = _shift_to_centre(x, centres, plan)
    T, R = plan.T, len(plan.radii)
    both = (plan.polar_fine @ xc.reshape(N, -1).T).T  # ONE sparse product for the batch: rings + fine profile
    pol = both[:, : R * T].reshape(N, R, T)
    fine = both[:, R * T:].reshape(N, len(plan.fine_r), plan.n_fine).mean(-1)
    ring_mean = pol.mean(-1)
    s = np.sqrt(((pol - ring_mean.mean(1)[:, None, None]) ** 2).mean((1, 2)))
    usable = valid & (s > 1e-6)
    s_safe = np.where(usable, s, 1.0)
    F = sfft.rfft(pol, axis=-1, workers=1)  # (N, R, T/2+1) complex64
    F[..., 0] = 0
    r_bf, bf_contrast = _bf_radius(fine, plan)
    return {"plan": plan, "finite": finite, "lo": lo, "hi": hi, "valid": valid, "usable": usable,
            "found": found & usable, "centres": centres, "rho": rho, "pol": pol, "s_safe": s_safe,
            "radial": (ring_mean - ring_mean.mean(1, keepdims=True)) / s_safe[:, None], "F": F,
            "H": (F.real ** 2 + F.imag ** 2).astype(np.float32), "G": (F * F).astype(np.complex64),
            "r_bf": r_bf, "bf_contrast": bf_contrast}


def mirror_spectrum(panels, params: SymmetryParams | None = None):
    """Whole-pattern mirror spectrum of panels ``(N, S, S)``: ``(M (N, T), angles in degrees (T,))``.

    ``M[i, k]`` is the normalised correlation of panel ``i`` (about its found centre, rings weighted by
    radius, harmonics up to ``mirror_harmonics``) with its reflection about the line at ``angles[k]``
    (degrees from the +x axis, i.e. along columns, towards +y, i.e. down the rows): 1 for an exact mirror.
    """
    import scipy.fft as sfft

    params = params or SymmetryParams()
    x = np.asarray(panels)
    if x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise InputError(f"panels of shape {x.shape}: expected (N, S, S)")
    plan = _plan(int(x.shape[-1]), params)
    a = _analyse(x, plan)
    w = plan.all_band
    Hb = w @ a["H"]
    Gb = (w @ a["G"].view(np.float32)).view(np.complex64) * plan.mir_keep
    num = sfft.irfft(Gb, n=plan.T, axis=-1)
    eps = (params.flat_level * a["s_safe"][:, None]) ** 2 * plan.T * w.sum()
    den = sfft.irfft(Hb * plan.mir_keep, n=plan.T, axis=-1)[..., :1] + eps
    return (num / den).reshape(len(x), plan.T), 180.0 * np.arange(plan.T) / plan.T


def _reasons(a: dict, B: int) -> list[str]:
    out = []
    for b in range(B):
        parts = []
        for p in range(3):
            i = 3 * b + p
            if not a["finite"][i]:
                why = "non-finite values (NaN/inf read as 0)"
            elif a["hi"][i] == a["lo"][i]:
                hi = float(a["hi"][i])
                why = "all-zero panel" if hi == 0 else f"blank panel (constant {hi:g})"
            elif not a["usable"][i]:
                why = "no pattern inside the polar disk (features zero)"
            elif not a["found"][i]:
                why = "no visible centre (geometric centre used)"
            else:
                continue
            parts.append(f"panel {p}: {why}")
        out.append("; ".join(parts))
    return out


# ------------------------------------------------------------------------------------------ to a file
def extract_symmetry_to_file(shard_root, split: str, out_path, *, keys=None, batch_size: int = 256,
                             progress: bool = True, params: SymmetryParams | None = None) -> dict:
    """Write the symmetry descriptors of ``split`` to ``out_path`` (a :mod:`cbedtdc.features.store` file).

    Streams batches of ``batch_size`` stacks through :class:`cbedtdc.data.ShardDataset` (memory: one
    batch); the file is written under a temporary name and renamed when complete, so an interrupted
    run is simply rerun. Samples with a fallback panel are kept (their features are finite, with the
    ``nocentre`` flag set) and counted in the log, with their keys.

    Returns
    -------
    dict
        ``n``, ``dim``, ``split``, ``seconds``, ``samples_per_s``, ``out``, ``fallback`` (count).
    """
    from tqdm import tqdm

    from cbedtdc.data import ShardDataset
    from cbedtdc.features.store import FeatureWriter

    if int(batch_size) < 1:
        raise InputError(f"batch_size={batch_size}: must be >= 1")
    params = params or SymmetryParams()
    ds = ShardDataset(shard_root, split, keys=keys, orientation="stack")
    dim = len(descriptor_names(params))
    S = ds.image_size
    t0 = time.perf_counter()
    flagged = []
    writer = FeatureWriter(out_path, ds.keys, ds.labels, dim=dim, split=split, source=SOURCE,
                           model=f"{SOURCE}/{VERSION}", model_sha256=params_sha256(params),
                           model_meta={**params_dict(params), "names": descriptor_names(params), "image_size": S},
                           chunk_rows=int(batch_size))
    with writer:
        bar = tqdm(total=len(ds), desc=f"symmetry {split}", unit="sample", mininterval=5.0, disable=not progress)
        with bar:
            buf = np.empty((int(batch_size), 3, S, S), dtype=np.uint8)
            for start in range(0, len(ds), int(batch_size)):
                stop = min(start + int(batch_size), len(ds))
                for i in range(start, stop):
                    buf[i - start] = ds.image(i)
                feats, reasons = describe(buf[: stop - start], params)
                writer.append(feats)
                flagged += [(ds.keys[start + i], r) for i, r in enumerate(reasons) if r]
                bar.update(stop - start)
    secs = time.perf_counter() - t0
    done = writer.done
    if flagged:
        log.warning("%d of %d %s samples have a fallback panel (features kept, nocentre flag set), e.g. %s",
                    len(flagged), done, split, "; ".join(f"{k}: {r}" for k, r in flagged[:5]))
        for k, r in flagged:
            log.info("fallback %s: %s", k, r)
    info = {"n": done, "dim": dim, "split": split, "seconds": round(secs, 3),
            "samples_per_s": round(done / secs, 2) if secs > 0 else None, "out": str(Path(out_path)),
            "fallback": len(flagged)}
    log.info("symmetry descriptors of %d %s samples (%d-d) in %.1f s (%.0f samples/s) -> %s", done, split, dim,
             secs, info["samples_per_s"] or 0, out_path)
    return info
