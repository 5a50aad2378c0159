"""CBED rendering (kinematic with two-beam-saturated intensities, or dynamical Bloch waves) and a detector model.

Geometry (all reciprocal quantities in 1/A, crystallographers' convention without 2 pi):

* The beam runs along the unit vector n; a panel is the plane perpendicular to n, with
  in-plane axes (e1, e2). A reflection g has in-plane part g_perp = (g.e1, g.e2) and g_par = g.n.
* The probe is a cone of semi-angle alpha [rad]; in reciprocal units every disk has radius
  r = alpha / lambda. A pixel of disk g belongs to the incident tilt tau = q - g_perp (+ the
  mistilt tau0 of the whole pattern).
* Exact Ewald-sphere excitation error for that tilt (k = 1/lambda, kz = sqrt(k^2 - |tau|^2)):
  s_g = -(2 (tau . g_perp + g_par kz) + |g|^2) / (2 k), which gives rocking fringes inside the
  disks and, for g_par != 0, HOLZ lines and rings.
* Two-beam-saturated intensity: u_g = gamma lambda |F_g| / V (= pi / xi_g),
  s_eff = sqrt(s_g^2 + (u_g / pi)^2), I_g = u_g^2 t^2 sinc^2(t s_eff) <= 1.
* The bright-field disk carries I_0 = exp(-sum_g I_g) (= 1 - sum_g I_g for weak beams, but never
  negative when many strong beams are excited at once): deficit lines where HOLZ or strong ZOLZ
  reflections are excited.
* Disks are drawn with sub-pixel centres and anti-aliased rims (the weight of a pixel falls
  linearly over one pixel across the rim), so a 6-fold net stays 6-fold on a square grid.

Kinematic intensities obey Friedel's law (I_g = I_-g), so ZOLZ patterns show the Laue-class
projection. The renderer is split into :func:`prepare_panels` (per material: reflections,
structure factors, frame) and a per-sample intensity function of the ``mode``: ``kinematic``, or
``bloch``, dynamical Bloch-wave intensities (:func:`_bloch_intensities`) from the same ``Panel``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .crystal import Crystal
from .scattering import lorentz_gamma, structure_factors, wavelength
from .zone_axes import ZoneAxis
from cbedtdc.errors import InputError

__all__ = ["Optics", "Panel", "BlochBeams", "prepare_panels", "render_panel", "detector", "MODES", "MAX_BEAMS",
           "LAMBDA_100"]

MODES = ("kinematic", "bloch")
#: Beam cap of the dynamical mode (run time grows as beams^3 per tilt).
MAX_BEAMS = 61
#: Tilt grid of the dynamical mode: at most this many points across a disk diameter.
MAX_TILTS = 17
#: Wavelength at 100 keV: the convergence semi-angle is fixed there, as in the original simulation.
LAMBDA_100 = wavelength(100.0)
_ZOLZ_TOL = 1e-7    # |g.n| [1/A] below which a reflection lies in the zero-order Laue zone
_EXTINCT = 1e-8     # |F| [A] below which a reflection is systematically absent


@dataclass(frozen=True)
class Optics:
    """Per-material optical settings.

    Attributes
    ----------
    q_max : float
        Half width of the field of view [1/A] (the image spans -q_max..q_max).
    overlap : float
        Disk radius as a fraction of g_min / 2 at 100 keV (0.5 = the original's "three-beam"
        rule); the semi-angle is fixed, so disks grow with energy as 1 / lambda.
    b_iso : float
        Isotropic Debye-Waller factor B [A^2].
    holz : bool
        Include reflections outside the zero-order Laue zone.
    s_cut : float
        Reflections whose excitation error stays above ``s_cut / t`` over the whole disk are
        dropped (ZOLZ reflections are always kept).
    """

    q_max: float = 1.5
    overlap: float = 0.5
    b_iso: float = 0.5
    holz: bool = True
    s_cut: float = 8.0


@dataclass(frozen=True)
class Panel:
    """Energy-independent geometry of one zone axis of one material."""

    axis: ZoneAxis
    e1: np.ndarray          # (3,) panel x axis, Cartesian unit vector
    e2: np.ndarray          # (3,) panel y axis
    gx: np.ndarray          # (M,) in-plane coordinates of the candidate reflections [1/A]
    gy: np.ndarray
    g_par: np.ndarray       # (M,) component along the beam
    g2: np.ndarray          # (M,) |g|^2
    f_abs: np.ndarray       # (M,) |F_g| [A]
    zolz: np.ndarray        # (M,) bool
    semi_angle: float       # convergence semi-angle [rad]
    d_hkl: float            # spacing [A] that set the disk size
    volume: float           # cell volume [A^3]
    q_max: float
    s_cut: float
    bloch: "BlochBeams | None" = None


@dataclass(frozen=True)
class BlochBeams:
    """ZOLZ beams of the dynamical mode: the transmitted beam first, then the shortest g
    (systematically absent ones included: they are excited by double diffraction)."""

    gx: np.ndarray          # (B,) in-plane coordinates [1/A]; gx[0] = gy[0] = 0
    gy: np.ndarray
    g2: np.ndarray          # (B,) |g|^2
    u: np.ndarray           # (B, B) complex F_{g-h} / (pi V) [1/A^2] (times gamma -> U_{g-h}); zero diagonal


def _enumerate(crystal: Crystal, g_lim: float):
    """Every reflection g != 0 with |g| <= g_lim, in lexicographic (h, k, l) order: Miller indices, g, |g|^2.

    Only the l range that can reach the sphere is listed for each (h, k) (the roots of |h a* + k b* + l c*| = g_lim,
    widened by one), not the whole box of indices; the exact test |g|^2 <= g_lim^2 then decides."""
    recip = crystal.recip
    lim = np.floor(g_lim * np.linalg.norm(crystal.cell, axis=1)).astype(int)  # h_i = g . a_i
    hh, kk = np.meshgrid(np.arange(-lim[0], lim[0] + 1), np.arange(-lim[1], lim[1] + 1), indexing="ij")
    hh, kk = hh.ravel(), kk.ravel()
    u = np.outer(hh, recip[0]) + np.outer(kk, recip[1])  # (P, 3): h a* + k b*
    cc = float(recip[2] @ recip[2])
    b = u @ recip[2]
    disc = b * b - cc * (np.einsum("ij,ij->i", u, u) - g_lim**2)
    root = np.sqrt(np.maximum(disc, 0.0))
    lo = np.maximum(np.floor((-b - root) / cc).astype(int) - 1, -lim[2])
    hi = np.minimum(np.ceil((-b + root) / cc).astype(int) + 1, lim[2])
    n = np.where(disc >= -1e-9 * cc * g_lim**2, np.maximum(hi - lo + 1, 0), 0)
    start = np.repeat(lo - np.cumsum(n) + n, n)  # l = lo + position within the (h, k) run
    hkl = np.stack([np.repeat(hh, n), np.repeat(kk, n), start + np.arange(int(n.sum()))], axis=1)
    g = hkl @ recip
    g2 = np.einsum("ij,ij->i", g, g)
    keep = g2 <= g_lim**2
    origin = hh.size // 2  # the (h, k) = (0, 0) pair: its run holds l = 0 (|0| <= g_lim)
    keep[int(n[:origin].sum()) - int(lo[origin])] = False
    return hkl[keep], g[keep], g2[keep]


#: The 26 lattice vectors [uvw] with entries in -1..1, in the order :func:`_frame` tries them.
_NEIGHBOURS = [uvw for uvw in np.array(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1])).reshape(3, -1).T if uvw.any()]


def _frame(crystal: Crystal, n: np.ndarray, angle: float):
    """In-plane axes: e1 along the projection of the shortest lattice vector not parallel to n,
    then turned by ``angle`` about n."""
    best = None
    cell = crystal.cell
    for uvw in _NEIGHBOURS:
        v = uvw @ cell
        p = v - np.dot(v, n) * n
        length = np.sqrt(v.dot(v))  # = np.linalg.norm(v), without its checks
        if np.sqrt(p.dot(p)) > 1e-3 * length and (best is None or length < best[0]):
            best = (length, p)
    e1 = best[1] / np.linalg.norm(best[1])
    e2 = np.cross(n, e1)
    c, s = np.cos(angle), np.sin(angle)
    return c * e1 + s * e2, -s * e1 + c * e2


def _shortest_allowed(crystal: Crystal, hkl, g_len, b_iso: float, first: int = 48) -> float | None:
    """The shortest |g| among reflections that are not systematically absent (None when all are): structure
    factors of the ``first`` shortest, then of the rest only when those are all absent."""
    order = np.argsort(g_len, kind="stable")
    for part in (order[:first], order[first:]):
        f = np.abs(structure_factors(hkl[part], crystal.frac, crystal.species, crystal.symbols, g_len[part], b_iso))
        allowed = g_len[part][f > _EXTINCT]
        if allowed.size:
            return float(allowed.min())
    return None


def prepare_panels(crystal: Crystal, axes: list[ZoneAxis], optics: Optics, angles,
                   energies_kev=(100.0,), min_thickness: float = 100.0, mode: str = "kinematic",
                   max_beams: int = MAX_BEAMS) -> list[Panel]:
    """Reflections, structure factors and frames of every zone axis of one material.

    Parameters
    ----------
    crystal : Crystal
    axes : list of ZoneAxis
    optics : Optics
    angles : sequence of float
        In-plane rotation [rad] of each panel.
    energies_kev : sequence of float
        Energies the panels will be rendered at (bounds the candidate HOLZ reflections).
    min_thickness : float
        Smallest specimen thickness [A] that will be rendered (same purpose).
    mode : str
        ``kinematic``, or ``bloch`` to also prepare the beams of the dynamical mode.
    max_beams : int
        Beam cap of the dynamical mode (the transmitted beam included).
    """
    if mode not in MODES:
        raise InputError(f"render mode {mode!r}: must be one of {', '.join(MODES)}")
    k_lo = 1.0 / wavelength(min(energies_kev))
    k_hi = 1.0 / wavelength(max(energies_kev))
    grow = LAMBDA_100 / wavelength(max(energies_kev))  # disk radius growth over 100 keV
    r_bound = 0.5 * grow  # generous bound on r for the enumeration
    half_diag = optics.q_max * np.sqrt(2.0)
    g_lim = half_diag + r_bound + 0.05
    hkl, g, g2 = _enumerate(crystal, g_lim)
    volume = crystal.volume
    panels = []
    for axis, angle in zip(axes, angles):
        n = axis.direction
        g_par = g @ n
        zolz = np.abs(g_par) < _ZOLZ_TOL
        # disk size: the shortest allowed ZOLZ reflection (lowindex) or the defining plane (namsa)
        if axis.d_hkl is not None:
            g_min = 1.0 / axis.d_hkl
            d_hkl = axis.d_hkl
        else:
            g_min = _shortest_allowed(crystal, hkl[zolz], np.sqrt(g2[zolz]), optics.b_iso)
            if g_min is None:
                g_min = float(np.sqrt(g2.min()))
            d_hkl = 1.0 / g_min
        semi_angle = optics.overlap * g_min / 2.0 * LAMBDA_100
        r_max = semi_angle * k_hi
        # every candidate lies in a slab about the zone plane (|g_perp| <= g_lim bounds its margin): the exact tests
        # run only on the rows of that slab (or of the ZOLZ without HOLZ)
        if optics.holz:
            slab = (r_max * g_lim / k_lo + optics.s_cut / min_thickness + 1e-3) * (1 + 1e-9)
            rows = np.nonzero((g_par > -g_lim**2 / (2 * k_lo) - slab) & (g_par < slab))[0]
        else:
            rows = np.nonzero(zolz)[0]
        gp, gg = g_par[rows], g2[rows]
        g_perp = np.sqrt(np.maximum(gg - gp**2, 0.0))
        margin = r_max * g_perp / k_lo + optics.s_cut / min_thickness + 1e-3
        near = (gp > -gg / (2 * k_lo) - margin) & (gp < -gg / (2 * k_hi) + margin)
        keep = zolz[rows] | (near if optics.holz else False)
        keep &= g_perp - r_max < half_diag
        cand = rows[keep]
        e1, e2 = _frame(crystal, n, angle)
        gc = g[cand]
        f_abs = np.abs(structure_factors(hkl[cand], crystal.frac, crystal.species, crystal.symbols,
                                         np.sqrt(g2[cand]), optics.b_iso))
        allowed = f_abs > _EXTINCT
        bloch = None
        if mode == "bloch":
            bloch = _bloch_beams(crystal, hkl[zolz], g[zolz], g2[zolz], e1, e2, optics.b_iso, max_beams)
        panels.append(Panel(axis=axis, e1=e1, e2=e2, gx=(gc @ e1)[allowed], gy=(gc @ e2)[allowed],
                            g_par=g_par[cand][allowed], g2=g2[cand][allowed], f_abs=f_abs[allowed],
                            zolz=zolz[cand][allowed], semi_angle=semi_angle, d_hkl=d_hkl, volume=volume,
                            q_max=optics.q_max, s_cut=optics.s_cut, bloch=bloch))
    return panels


def _bloch_beams(crystal: Crystal, hkl, g, g2, e1, e2, b_iso: float, max_beams: int) -> BlochBeams:
    # whole shells of equal |g| only, so the cap keeps the beam set centrosymmetric (+g with -g)
    order = np.argsort(g2, kind="stable")
    shell = np.round(g2[order] / max(float(g2[order[0]]) if order.size else 1.0, 1e-12), 6)
    n = min(max(0, max_beams - 1), len(order))
    if n < len(order) and n > 0 and shell[n] == shell[n - 1]:
        n = int(np.searchsorted(shell, shell[n], side="left"))
    order = order[:n]
    beams_hkl = np.vstack([np.zeros((1, 3), dtype=int), hkl[order]])
    bg = np.vstack([np.zeros((1, 3)), g[order]])
    diff = (beams_hkl[:, None, :] - beams_hkl[None, :, :]).reshape(-1, 3)
    dg = np.linalg.norm(diff @ crystal.recip, axis=1)
    f = structure_factors(diff, crystal.frac, crystal.species, crystal.symbols, dg, b_iso)
    u = (f / (np.pi * crystal.volume)).reshape(len(bg), len(bg))
    np.fill_diagonal(u, 0.0)  # U_0 only shifts the mean phase
    return BlochBeams(gx=bg @ e1, gy=bg @ e2, g2=np.concatenate([[0.0], g2[order]]), u=u)


def _bloch_intensities(beams: BlochBeams, k: float, gamma: float, thickness: float, tilts) -> np.ndarray:
    """|psi_g|^2 (T, B) at the incident tilts (T, 2) [1/A]: Bloch waves, no absorption.

    Structure matrix A = gamma U_{g-h} + diag(2 k s_g(tau)); with A C = C diag(w),
    psi_g(t) = sum_j C_gj exp(i pi w_j t / k) conj(C_0j).
    """
    s = -(2 * (tilts[:, :1] * beams.gx + tilts[:, 1:] * beams.gy) + beams.g2) / (2 * k)  # (T, B)
    a = np.broadcast_to(gamma * beams.u, (len(tilts),) + beams.u.shape).copy()
    idx = np.arange(len(beams.g2))
    a[:, idx, idx] = 2 * k * s
    w, c = np.linalg.eigh(a)
    phase = np.exp(1j * np.pi * w * thickness / k)  # (T, B)
    psi = np.einsum("tgj,tj->tg", c, phase * np.conj(c[:, 0, :]))
    return np.abs(psi) ** 2


def _two_beam(u, t, s):
    """u^2 t^2 sinc^2(t s_eff), written without a division by zero (s_eff >= u / pi > 0)."""
    s_eff = np.sqrt(s * s + (u / np.pi) ** 2)
    x = np.sin(np.pi * t * s_eff) / (np.pi * s_eff)
    return (u * x) ** 2


# ~95 lines, on purpose: one physical model (disks, HOLZ lines, dynamical/kinematic intensities, detector) whose
# steps share a dozen arrays; split, they would pass them all around.
def render_panel(panel: Panel, energy_kev: float, thickness: float, size: int, tilt=(0.0, 0.0),
                 mode: str = "kinematic") -> np.ndarray:
    """Noise-free CBED intensities of one panel, float64 (size, size), incident beam = 1 per pixel.

    Parameters
    ----------
    panel : Panel
    energy_kev : float
        Beam energy.
    thickness : float
        Specimen thickness t [A].
    size : int
        Image side S; the optic axis is the pixel (S - 1) / 2 (a pixel centre for odd S).
    tilt : (float, float)
        Mistilt tau0 of the pattern centre from the zone axis [1/A] in panel coordinates.
    mode : str
        ``kinematic`` (two-beam saturated, Friedel's law holds) or ``bloch``: ZOLZ intensities
        from Bloch waves (no absorption, beams capped at ``MAX_BEAMS``, solved on a tilt grid
        of at most ``MAX_TILTS`` points across the disk and interpolated bilinearly), which
        breaks Friedel's law for non-centrosymmetric projections; HOLZ reflections and ZOLZ
        reflections beyond the beam cap are added kinematically (without deficit lines in the
        bright-field disk).
    """
    # Longer than 80 lines on purpose: the disk geometry of this panel and energy (k, r, dq, c, tilt) is
    # shared by the `splat` closure for the reflections and for the bright-field deficit; split apart,
    # nine arguments would travel between the pieces (and the shards must stay byte-identical).
    if mode not in MODES:
        raise InputError(f"render mode {mode!r}: must be one of {', '.join(MODES)}")
    lam = wavelength(energy_kev)
    k = 1.0 / lam
    r = panel.semi_angle / lam
    dq = 2.0 * panel.q_max / size
    c = (size - 1) / 2.0
    t0x, t0y = float(tilt[0]), float(tilt[1])
    u = lorentz_gamma(energy_kev) * lam * panel.f_abs / panel.volume

    # keep: ZOLZ disks inside the field, plus any reflection excited somewhere in its disk
    g_perp = np.hypot(panel.gx, panel.gy)
    kz0 = np.sqrt(k * k - t0x * t0x - t0y * t0y)
    s_c = -(2 * (t0x * panel.gx + t0y * panel.gy + panel.g_par * kz0) + panel.g2) / (2 * k)
    excited = np.abs(s_c) - r * g_perp / k < panel.s_cut / thickness
    inside = g_perp - r < panel.q_max * np.sqrt(2.0)
    keep = inside & (panel.zolz | excited)

    if mode == "bloch":
        if panel.bloch is None:
            raise InputError("render mode 'bloch' needs panels prepared with prepare_panels(..., mode='bloch')")
        # ZOLZ disks of the Bloch beam set come from the Bloch waves; HOLZ and the ZOLZ disks
        # beyond the beam cap stay kinematic
        keep &= ~(panel.zolz & (panel.g2 <= panel.bloch.g2.max() * (1 + 1e-9)))

    # stencil: a pixel o pixels from the rounded centre lies >= (|o| - 1/2) dq from the disk's centre, and a pixel
    # counts (w > 0) only within r + dq / 2: |o| < r / dq + 1; one more ring is margin
    half = int(np.ceil(r / dq)) + 1
    oy, ox = np.mgrid[-half:half + 1, -half:half + 1]
    ox, oy = ox.ravel(), oy.ravel()
    image = np.zeros(size * size)

    def splat(gx, gy, g_par, g2, u_g, deficit_of=None):
        cx, cy = gx / dq + c, gy / dq + c
        ix = np.rint(cx).astype(int)[:, None] + ox
        iy = np.rint(cy).astype(int)[:, None] + oy
        tx = (ix - c) * dq - gx[:, None]
        ty = (iy - c) * dq - gy[:, None]
        w = np.clip((r - np.hypot(tx, ty)) / dq + 0.5, 0.0, 1.0)
        ok = (w > 0) & (ix >= 0) & (ix < size) & (iy >= 0) & (iy < size)
        rows, cols = np.nonzero(ok)
        txx = tx[rows, cols] + t0x
        tyy = ty[rows, cols] + t0y
        if deficit_of is None:
            kz = np.sqrt(k * k - txx * txx - tyy * tyy)
            s = -(2 * (txx * gx[rows] + tyy * gy[rows] + g_par[rows] * kz) + g2[rows]) / (2 * k)
            inten = _two_beam(u_g[rows], thickness, s)
        else:  # bright-field disk: exp(-sum of the excited beams) at each tilt
            dgx, dgy, dgp, dg2, du = deficit_of
            kz = np.sqrt(k * k - txx * txx - tyy * tyy)
            lost = np.zeros(len(txx))
            for j in range(0, len(dgx), 256):  # bounded memory
                sl = slice(j, j + 256)
                s = -(2 * (np.outer(txx, dgx[sl]) + np.outer(tyy, dgy[sl]) + np.outer(kz, dgp[sl]))
                      + dg2[sl]) / (2 * k)
                lost += _two_beam(du[sl], thickness, s).sum(axis=1)
            inten = np.exp(-lost)
        image[:] += np.bincount(iy[rows, cols] * size + ix[rows, cols], weights=inten * w[rows, cols],
                                minlength=size * size)

    sel = np.nonzero(keep)[0]
    if sel.size:
        splat(panel.gx[sel], panel.gy[sel], panel.g_par[sel], panel.g2[sel], u[sel])
    if mode == "bloch":
        image += _splat_bloch(panel.bloch, k, lorentz_gamma(energy_kev), thickness, r, dq, size, (t0x, t0y))
        return image.reshape(size, size)
    ex = np.nonzero(keep & excited)[0]
    zero = np.zeros(1)
    splat(zero, zero, zero, zero, zero,
          deficit_of=(panel.gx[ex], panel.gy[ex], panel.g_par[ex], panel.g2[ex], u[ex]))
    return image.reshape(size, size)


def _splat_bloch(beams: BlochBeams, k: float, gamma: float, thickness: float, r: float, dq: float, size: int,
                 tilt) -> np.ndarray:
    """All ZOLZ disks of the dynamical mode, flattened image (size * size,)."""
    c = (size - 1) / 2.0
    nt = int(min(MAX_TILTS, 2 * np.ceil(r / dq) + 1))
    nt = max(nt, 3)
    axis = np.linspace(-r, r, nt)
    ty, tx = np.meshgrid(axis, axis, indexing="ij")
    tilts = np.stack([tx.ravel() + tilt[0], ty.ravel() + tilt[1]], axis=1)
    grid = _bloch_intensities(beams, k, gamma, thickness, tilts).reshape(nt, nt, -1)  # (y, x, beam)
    step = axis[1] - axis[0]

    inside = np.hypot(beams.gx, beams.gy) - r < (size / 2.0) * dq * np.sqrt(2.0)
    b = np.nonzero(inside)[0]
    half = int(np.ceil(r / dq)) + 2
    oy, ox = np.mgrid[-half:half + 1, -half:half + 1]
    ix = np.rint(beams.gx[b] / dq + c).astype(int)[:, None] + ox.ravel()
    iy = np.rint(beams.gy[b] / dq + c).astype(int)[:, None] + oy.ravel()
    tx = (ix - c) * dq - beams.gx[b][:, None]
    ty = (iy - c) * dq - beams.gy[b][:, None]
    w = np.clip((r - np.hypot(tx, ty)) / dq + 0.5, 0.0, 1.0)
    ok = (w > 0) & (ix >= 0) & (ix < size) & (iy >= 0) & (iy < size)
    rows, cols = np.nonzero(ok)
    fx = np.clip((tx[rows, cols] + r) / step, 0.0, nt - 1 - 1e-9)
    fy = np.clip((ty[rows, cols] + r) / step, 0.0, nt - 1 - 1e-9)
    x0, y0 = fx.astype(int), fy.astype(int)
    wx, wy = fx - x0, fy - y0
    beam = b[rows]
    inten = ((1 - wx) * (1 - wy) * grid[y0, x0, beam] + wx * (1 - wy) * grid[y0, x0 + 1, beam]
             + (1 - wx) * wy * grid[y0 + 1, x0, beam] + wx * wy * grid[y0 + 1, x0 + 1, beam])
    return np.bincount(iy[rows, cols] * size + ix[rows, cols], weights=inten * w[rows, cols],
                       minlength=size * size)


@lru_cache(maxsize=4)
def _radius_px(size: int) -> np.ndarray:
    """Distance [pixels] of every pixel from the optic axis (pixel (size - 1) / 2); read-only, shared."""
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(xx - c, yy - c)
    r.flags.writeable = False
    return r


def detector(image: np.ndarray, rng: np.random.Generator, q_max: float) -> np.ndarray:
    """Diffuse background, detector blur and Poisson noise; float32 of the same shape.

    The background (10^-3.5 to 10^-2 of the incident beam at the centre) falls off exponentially
    with |q| (thermal diffuse scattering), the blur is a Gaussian point-spread function of 0.5-1
    pixel at 128^2 (scaled with the image side) and the dose is 10^4-10^6 electrons per pixel of
    the bright-field disk at 128^2 (the same total dose at other sizes). With the pipeline's
    standard log scaling, lower doses turn most of the field into isolated single counts.
    """
    from scipy.ndimage import gaussian_filter  # lazy

    size = image.shape[0]
    scale = size / 128.0
    q = _radius_px(size) * (2.0 * q_max / size)
    level = 10.0 ** rng.uniform(-3.5, -2.0)
    q0 = rng.uniform(0.3, 1.0)
    img = image + level * np.exp(-q / q0)
    img = gaussian_filter(img, sigma=rng.uniform(0.5, 1.0) * scale, mode="constant")
    dose = 10.0 ** rng.uniform(4.0, 6.0) / scale**2
    return (rng.poisson(img * dose) / dose).astype(np.float32)
