"""The centre of every panel (the maximum of the Gaussian-weighted 180-degree self-correlation) and the sub-pixel
shift that puts it on the geometric centre; see the package docstring, step 1."""

from __future__ import annotations

import numpy as np

from cbedtdc.errors import InputError
from cbedtdc.features.symmetry.params import SymmetryParams
from cbedtdc.features.symmetry.plan import Plan, parabola, plan_for

__all__ = ["find_centres", "floor_dynamic_range", "locate", "shift_to_centre"]


def locate(x: np.ndarray, plan: Plan, valid: np.ndarray):
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
    dy = np.where((by > 0) & (by < n - 1), parabola(ym, smax, yp), 0.0)
    dx = np.where((bx > 0) & (bx < n - 1), parabola(xm, smax, xq), 0.0)
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
    x = np.array(panels, dtype=np.float32)  # a copy: floored in place
    if x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise InputError(f"panels of shape {x.shape}: expected (N, S, S)")
    finite = np.isfinite(x).all(axis=(1, 2))
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    flat = x.reshape(len(x), -1)
    hi = flat.max(1)
    valid = finite & (hi > flat.min(1))
    floor_dynamic_range(x, hi, params)
    centres, _, found = locate(x, plan_for(x.shape[-1], params), valid)
    return centres, found


def floor_dynamic_range(x: np.ndarray, hi: np.ndarray, params: SymmetryParams) -> None:
    """Floor panels ``x`` (N, S, S) float32, in place, at ``hi - 10 ln(dynamic_range)`` grey levels (``hi``: each
    panel's maximum): the shards' ``10 (log I + 17)`` of an intensity ``dynamic_range`` times below the brightest
    pixel, one electron where that pixel holds ``dynamic_range`` (shot noise: at a low dose the dark pixels hold 0
    or 1 electrons, and the log scale turns those into the panel's largest contrasts). 0: no floor."""
    if params.dynamic_range > 0:
        np.maximum(x, (hi - np.float32(10.0 * np.log(params.dynamic_range)))[:, None, None], out=x)


def shift_to_centre(x, centres, plan: Plan):
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
