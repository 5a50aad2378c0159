"""The ``symmetry`` descriptors of a batch: polar resampling, angular spectra, band features (harmonics, rotation
and mirror scores), the bright-field disk; see the package docstring, steps 2 and 3, for every descriptor."""

from __future__ import annotations

import numpy as np

from cbedtdc.errors import InputError
from cbedtdc.features.symmetry.centre import floor_dynamic_range, locate, shift_to_centre
from cbedtdc.features.symmetry.params import SymmetryParams, panel_names
from cbedtdc.features.symmetry.plan import Plan, parabola, plan_for

__all__ = ["describe", "mirror_spectrum", "featureless", "CHUNK"]


def _mirror_summary(mir, plan: Plan):
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


def _band_features(H, G, wb, s, plan: Plan):
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


def _bf_radius(prof, plan: Plan):
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
                   parabola(-d[rows, np.maximum(i - 1, 0)], -d[rows, i], -d[rows, np.minimum(i + 1, n - 1)]), 0.0)
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
    plan = plan_for(int(S), params)
    feats = np.empty((B, 3 * len(panel_names(params))), dtype=np.float32)
    reasons = []
    for s in range(0, B, CHUNK):  # cache-sized chunks: every step streams through L2, not memory
        feats[s:s + CHUNK], r = _describe_chunk(x[s:s + CHUNK], plan)
        reasons += r
    return feats, reasons


#: Stacks described together inside :func:`describe` (any batch gives the same numbers; 32 stacks keep
#: each intermediate array within a core's cache, ~1.5x faster than 256 at once).
CHUNK = 32


def _describe_chunk(x, plan: Plan):
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
    scalars = np.stack([a["r_bf"], a["bf_contrast"] / s_safe, (~a["found"]).astype(np.float32)], 1)
    feats = np.concatenate([a["radial"], bands, scalars], 1).astype(np.float32)
    bad = ~a["usable"]
    if bad.any():
        feats[bad] = featureless(plan)
    feats = np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0)
    return feats.reshape(B, -1), _reasons(a, B)


def featureless(plan: Plan) -> np.ndarray:
    """The descriptors of a panel without any structure (a blank, all-zero or non-finite panel): every band flat
    (harmonic fractions at their floor, rotation and mirror scores 0), no radial profile, the bright-field radius at
    the innermost fine radius, no contrast, ``centre.nocentre`` = 1: the values a uniform panel tends to, so that a
    missing zone axis reads as "nothing recorded" rather than as the strongest harmonic content possible."""
    p = plan.params
    names = panel_names(p)
    floor = 0.0 if p.harmonic_scale == "sqrt" else float(np.log10(p.log_floor))
    out = np.zeros(len(names), dtype=np.float32)
    out[[i for i, n in enumerate(names) if n.split(".")[-1].startswith("h") and n.split(".")[-1][1:].isdigit()]] = floor
    out[names.index("bf.radius")] = plan.fine_r[0] / plan.k
    out[names.index("centre.nocentre")] = 1.0
    return out


def _analyse(x, plan: Plan) -> dict:
    """Centres, polar samples and angular spectra of panels ``x`` (N, S, S) (any real dtype)."""
    import scipy.fft as sfft

    N, S = len(x), plan.side
    integer = np.issubdtype(x.dtype, np.integer)  # shards: uint8, finite by construction
    x = np.array(x, dtype=np.float32)  # a copy: ours to change below (the dynamic-range floor)
    finite = np.ones(N, dtype=bool) if integer else np.isfinite(x).all(axis=(1, 2))
    if not finite.all():
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    flat = x.reshape(N, -1)
    lo, hi = flat.min(1), flat.max(1)
    valid = finite & (hi > lo)
    floor_dynamic_range(x, hi, plan.params)
    centres, rho, found = locate(x, plan, valid)
    xc = shift_to_centre(x, centres, plan)
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
    plan = plan_for(int(x.shape[-1]), params)
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
