"""The ``symmetry`` feature source: invariances, symmetry read-outs, the centre, a per-sample reference,
determinism, bad input, the features file and its CLI. Smooth synthetic 64-px patterns (Gaussian disks
at chosen radii and angles, the disk geometry centrosymmetric like every zone-axis pattern, intensities
optionally Friedel-broken) and the tiny 16-px shards."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi

from cbedtdc.features import read_features
from cbedtdc.features import symmetry as Y
from cbedtdc.features.symmetry.plan import plan_for
from conftest import REPO

sys.path.insert(0, str(REPO / "workflow_scripts"))

S = 64
NAMES = np.array(Y.descriptor_names())
#: The smooth synthetic patterns below span ~160 grey levels with their disks 80-160 below the brightest pixel, far
#: wider than a shard's log scale; the dynamic-range floor (SymmetryParams.dynamic_range, default 1000 = 69 grey
#: levels) would flatten them, so the tests of the geometry read them without it.
P0 = Y.SymmetryParams(dynamic_range=0)


def describe(x, params=P0):
    return Y.describe(x, params)


def blobs(spec, centre=None, side=S, sigma=1.6, bg=40.0, disk=120.0):
    """A central disk plus Gaussian disks at ``(radius px, angle deg, amplitude)`` around ``centre`` (y, x)."""
    cy, cx = ((side - 1) / 2,) * 2 if centre is None else centre
    yy, xx = np.mgrid[0:side, 0:side].astype(float)
    img = bg + disk * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.0 ** 2))
    for r, a, amp in spec:
        t = np.deg2rad(a)
        img += amp * np.exp(-((yy - cy - r * np.sin(t)) ** 2 + (xx - cx - r * np.cos(t)) ** 2) / (2 * sigma ** 2))
    return img


def pattern(n=1, mirror=None, friedel=0.8, centre=None,
            rings=((8, 10, 80), (14, 37, 60), (21, 71, 50), (27, 5, 40))):
    """An n-fold pattern; ``mirror`` (deg): add the reflection of every disk about that line; ``friedel``:
    the amplitude of the disk at -g relative to g (1.0: Friedel's law, centrosymmetric)."""
    spec = []
    for r, a0, amp in rings:
        for k in range(n):
            a = a0 + 360 * k / n
            disks = [(r, a, amp)] if mirror is not None else [(r, a, amp), (r + 3, a + 23, amp * 0.5)]
            if mirror is not None:
                disks.append((r, 2 * mirror - a, amp))
            for rr, aa, am in disks:
                spec += [(rr, aa, am), (rr, aa + 180, am * friedel)]
    return blobs(spec, centre=centre)


def col(name):
    return int(np.flatnonzero(NAMES == name)[0])


def cols(regex):
    return np.array([bool(re.search(regex, n)) for n in NAMES])


def one(panel):
    """A stack of three copies of one panel, as a batch of one."""
    return np.stack([panel] * 3)[None]


# ------------------------------------------------------------------------------------------ layout
def test_names_params_and_version():
    p = Y.SymmetryParams()
    f, reasons = Y.describe(one(pattern()))
    assert f.shape == (1, len(NAMES)) and f.dtype == np.float32 and reasons == [""]
    assert len(set(NAMES)) == len(NAMES) and NAMES[0] == "p0.radial.r0"
    assert Y.params_dict()["version"] == Y.VERSION
    assert Y.params_sha256() == Y.params_sha256(p) != Y.params_sha256(Y.SymmetryParams(n_harmonics=12))
    assert len(Y.descriptor_names(Y.SymmetryParams(n_harmonics=12))) < len(NAMES)


# ------------------------------------------------------------------------------------- invariances
#: Largest change allowed under a rotation by an arbitrary angle (interpolation: scipy's cubic rotation,
#: then the descriptors' bilinear polar sampling), per descriptor group (units of the descriptor).
ROTATION_TOL = {
    r"\.radial\.": 0.05,  # in units of the panel's standard deviation
    r"\.rot\d": 0.15,  # correlations in [-1, 1]
    r"\.mir\.top": 0.2,
    r"\.mir\.f": 0.1,
    r"\.mir\.npk": 1.0,  # a peak count may change by one where a peak sits at the threshold
    r"bf\.radius": 0.1,  # px
}


@pytest.mark.parametrize("angle", [37.0, 123.0, 211.0])
def test_rotation_changes_descriptors_within_tolerance(angle):
    x = np.stack([pattern(1), pattern(3, friedel=0.7), pattern(4, mirror=0.0, friedel=0.9)])
    xr = np.stack([ndi.rotate(p, angle, reshape=False, order=3, mode="nearest") for p in x])
    f0, r0 = describe(x[None])
    f1, r1 = describe(xr[None])
    assert r0 == r1 == [""]
    d = np.abs(f1 - f0)[0]
    for regex, tol in ROTATION_TOL.items():
        assert d[cols(regex)].max() <= tol, (regex, NAMES[cols(regex)][d[cols(regex)].argmax()])
    # harmonic fractions (log10): within 0.1 (about 25 %) wherever the fraction is at least 1 %, outside the
    # innermost band (rings of 1-3 px, where a rotation moves the few pixels most)
    h = cols(r"\.h\d+$") & ~cols(r"\.(b1-4|bf)\.") & (f0[0] >= -2)
    assert d[h].max() <= 0.1, NAMES[h][d[h].argmax()]
    assert d[cols(r"\.h\d+$") & (f0[0] >= -2)].max() <= 0.5
    # over the whole vector: small against the spread between different patterns
    other, _ = describe(np.stack([pattern(2, friedel=1.0), pattern(6, friedel=1.0), pattern(1, friedel=0.5)])[None])
    assert np.linalg.norm(f1 - f0) < 0.2 * np.linalg.norm(other - f0)


def test_intensity_scale_and_offset_leave_descriptors_unchanged():
    x = np.stack([pattern(1), pattern(3, friedel=0.7), pattern(4, mirror=0.0)])
    f0, _ = describe(x[None])
    for a, b in ((0.6, 20.0), (2.5, -30.0)):
        f1, _ = describe((a * x + b)[None])
        np.testing.assert_allclose(f1, f0, atol=2e-3)
    u8 = np.round(x).astype(np.uint8)  # as shards hold them
    f2, _ = describe(u8[None])
    f3, _ = describe(np.round(0.5 * u8 + 60).astype(np.uint8)[None])
    d = np.abs(f3 - f2)[0]  # uint8 rounding of a halved range: quantisation noise, largest in the nearly
    inner = cols(r"\.(b1-4|bf)\.")  # isotropic central rings
    assert d[cols(r"\.(radial|rot\d|mir\.top\d|mir\.f\d)") & ~inner].max() < 0.05
    assert d[cols(r"\.(radial|rot\d|mir\.top\d|mir\.f\d)")].max() < 0.15


# --------------------------------------------------------------------------------- symmetry read-outs
@pytest.mark.parametrize("n", [2, 3, 4, 6])
def test_n_fold_pattern_has_harmonics_only_at_multiples_of_n(n):
    friedel = 1.0 if n % 2 == 0 else 0.6  # a 3-fold pattern keeps 3-fold only without Friedel's 2-fold
    f, _ = describe(one(pattern(n, friedel=friedel)))
    for band in ("all", "b8-12", "b20-25"):
        frac = 10.0 ** np.array([f[0, col(f"p0.{band}.h{m}")] for m in range(1, 17)])
        m = np.arange(1, 17)
        assert frac[m % n != 0].max() <= 1e-3, (band, frac)
        assert frac[m % n == 0].max() >= 0.1
        assert f[0, col(f"p0.{band}.rot{n}")] > 0.97
    if n == 3:
        assert f[0, col("p0.all.rot2")] < 0.9  # Friedel broken: odd harmonics present
    else:
        assert f[0, col("p0.all.rot2")] > 0.97


def peaks(M, level):
    pk = (M > np.roll(M, 1)) & (M >= np.roll(M, -1)) & (M >= level)
    return np.flatnonzero(pk)


@pytest.mark.parametrize("line", [0.0, 30.0, 57.0])
def test_one_mirror_line_gives_one_peak_at_its_angle(line):
    img = pattern(1, mirror=line, friedel=0.4)  # one mirror, no 2-fold axis (Friedel's law broken)
    M, angles = Y.mirror_spectrum(img[None], P0)
    pk = peaks(M[0], 0.9)
    assert len(pk) == 1, (angles[pk], M[0][pk])
    assert abs(angles[pk[0]] - line) <= 180 / len(angles)  # within one step of the angle grid
    f, _ = describe(one(img))
    assert f[0, col("p0.all.mir.top1")] > 0.95 and f[0, col("p0.all.mir.top2")] < 0.9


@pytest.mark.parametrize("n, expected", [(1, [0.0, 90.0]), (2, [0.0, 90.0]), (4, [0.0, 45.0, 90.0, 135.0]),
                                         (6, [0.0, 30.0, 60.0, 90.0, 120.0, 150.0])])
def test_mirror_spectrum_has_one_peak_per_mirror_line(n, expected):
    # with Friedel's law (a 2-fold axis) a mirror at a implies one at a + 90: 2mm, 4mm, 6mm
    M, angles = Y.mirror_spectrum(pattern(n, mirror=0.0, friedel=1.0)[None], P0)
    found = angles[peaks(M[0], 0.9)]
    assert len(found) == len(expected)
    assert np.abs(found - expected).max() <= 180 / len(angles)  # within one step of the angle grid
    f, _ = describe(one(pattern(n, mirror=0.0, friedel=1.0)))
    assert f[0, col("p0.all.mir.npk80")] == len(expected)


def test_pattern_without_mirror_has_no_strong_mirror_peak():
    M, _ = Y.mirror_spectrum(pattern(4, friedel=1.0)[None], P0)  # 4-fold, disks at +23 deg: chiral, 4/m-like
    assert M.max() < 0.9


@pytest.mark.parametrize("centre", [(33.7, 29.2), (27.9, 35.1), (31.5, 31.5), (30.2, 32.8)])
def test_shifted_centre_is_found_within_a_pixel(centre):
    img = pattern(4, mirror=0.0, friedel=0.8, centre=centre)
    found_at, found = Y.find_centres(img[None], P0)
    assert found[0]
    assert np.hypot(*(found_at[0] - centre)) < 0.25  # well within the required pixel
    f_shift, _ = describe(one(img))
    f_mid, _ = describe(one(pattern(4, mirror=0.0, friedel=0.8)))
    sym = cols(r"p0\.all\.(rot\d|mir\.top1)")
    np.testing.assert_allclose(f_shift[0, sym], f_mid[0, sym], atol=0.03)


# --------------------------------------------------------------------------- a per-sample reference
def _parabola(lm, l0, lp):
    den = lm - 2 * l0 + lp
    return float(np.clip(0.5 * (lm - lp) / den, -0.5, 0.5)) if den < 0 else 0.0


def reference_centre(img, p):
    """The centre by direct evaluation of the Gaussian-weighted 180-degree correlation at every candidate."""
    side = img.shape[0]
    k = side / 64
    geo = (side - 1) / 2
    W = min(int(round(p.centre_crop * k)), side - 2)
    W -= W % 2
    c0 = W // 2
    o = int(np.rint(geo)) - c0
    crop = img[o:o + W, o:o + W].astype(np.float64)
    crop = crop - crop.mean()
    sigma, search = p.centre_sigma * k, int(round(p.centre_search * k))
    yy, xx = np.mgrid[0:W, 0:W]
    js = range(-2 * search, 2 * search + 1)
    rho = np.zeros((len(js), len(js)))
    score = np.zeros_like(rho)
    for a, jy in enumerate(js):
        for b, jx in enumerate(js):
            cy, cx = c0 + jy / 2, c0 + jx / 2
            w = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / sigma ** 2)
            ry, rx = (2 * cy - yy).astype(int), (2 * cx - xx).astype(int)
            inside = (ry >= 0) & (ry < W) & (rx >= 0) & (rx < W)
            num = (w * crop * np.where(inside, crop[ry.clip(0, W - 1), rx.clip(0, W - 1)], 0.0)).sum()
            rho[a, b] = num / (w * crop ** 2).sum()
            score[a, b] = rho[a, b] - p.centre_prior * (jy ** 2 + jx ** 2) / (2 * search) ** 2
    a, b = np.unravel_index(score.argmax(), score.shape)
    n = len(js)
    dy = _parabola(score[a - 1, b], score[a, b], score[a + 1, b]) if 0 < a < n - 1 else 0.0
    dx = _parabola(score[a, b - 1], score[a, b], score[a, b + 1]) if 0 < b < n - 1 else 0.0
    found = np.sqrt((crop ** 2).mean()) >= p.min_contrast and rho[a, b] >= p.min_centre_rho
    centre = (o + c0 + (js[a] + dy) / 2, o + c0 + (js[b] + dx) / 2) if found else (geo, geo)
    return np.array(centre), float(rho[a, b]), found


def reference_panel(img, p):
    """Every descriptor of one panel, written plainly: loops, ``map_coordinates``, direct mirror sums."""
    side = img.shape[0]
    k = side / 64
    geo = (side - 1) / 2
    img = img.astype(np.float64)
    if p.dynamic_range > 0:  # below one count at a dose of dynamic_range: floored
        img = np.maximum(img, img.max() - 10 * np.log(p.dynamic_range))
    centre, rho, found = reference_centre(img, p)
    yy, xx = np.mgrid[0:side, 0:side].astype(float)
    d = centre - geo
    shifted = ndi.map_coordinates(img, [yy + d[0], xx + d[1]], order=1, mode="nearest")
    T = p.n_angles
    t = 2 * np.pi * np.arange(T) / T
    radii = np.linspace(p.r_min * k, min(p.r_max * k, geo - 1), p.n_radii)
    pol = np.array([ndi.map_coordinates(shifted, [geo + r * np.sin(t), geo + r * np.cos(t)], order=1) for r in radii])
    mean = pol.mean()
    s = np.sqrt(((pol - mean) ** 2).mean())
    radial = (pol.mean(1) - mean) / s
    # bright-field disk: the steepest fall of the fine central profile
    fine = np.arange(0.25, p.bf_max + 2.0, 0.25) * k
    t32 = 2 * np.pi * np.arange(32) / 32
    prof = np.array([ndi.map_coordinates(shifted, [geo + r * np.sin(t32), geo + r * np.cos(t32)], order=1).mean()
                     for r in fine])
    fall = np.diff(prof)
    cand = [i for i in range(len(fall)) if fine[i + 1] <= p.bf_max * k]
    i = min(cand, key=lambda q: fall[q])
    off = _parabola(-fall[i - 1], -fall[i], -fall[i + 1]) if 0 < i < len(fall) - 1 else 0.0
    r_bf = 0.5 * (fine[i] + fine[i + 1]) + off * (fine[1] - fine[0]) if fall[i] < 0 else fine[0]
    inside = prof[fine <= r_bf].mean() if (fine <= r_bf).any() else 0.0
    ring = (fine > r_bf) & (fine <= r_bf + 2 * k)
    contrast = inside - (prof[ring].mean() if ring.any() else 0.0)
    # bands
    r_ref = radii / k
    e = p.band_edges
    weights = [np.where((r_ref >= lo) & (r_ref < hi), r_ref, 0.0) for lo, hi in zip(e[:-1], e[1:])]
    bf = np.where(r_ref <= 0.9 * r_bf / k, r_ref, 0.0)
    bf[0] = max(bf[0], r_ref[0])
    weights += [bf, r_ref]
    spectra = [np.fft.rfft(pol[i]) for i in range(len(radii))]
    feats = list(radial)
    for w in weights:
        hb = np.zeros(T // 2 + 1)
        for i, F in enumerate(spectra):
            hb[1:] += w[i] * np.abs(F[1:]) ** 2
        mw = np.array([0.0] + [2.0] * (T // 2 - 1) + [1.0])
        eps = (p.flat_level * s) ** 2 * T ** 2 * w.sum()
        frac = mw * hb / ((mw * hb).sum() + eps)
        feats += [np.log10(max(frac[m], p.log_floor)) for m in range(1, p.n_harmonics + 1)]
        feats += [sum(frac[m] * np.cos(2 * np.pi * m / n) for m in range(T // 2 + 1)) for n in p.rotations]
        # mirror spectrum: sum over rings of sum_j f(j) f(2a - j), f the ring low-passed to mirror_harmonics
        num, den = np.zeros(T), eps / T
        for i, F in enumerate(spectra):
            lp = F.copy()
            lp[0] = 0
            lp[p.mirror_harmonics + 1:] = 0
            f = np.fft.irfft(lp, n=T)
            den += w[i] * (f ** 2).sum()
            for a in range(T):
                num[a] += w[i] * sum(f[j] * f[(a - j) % T] for j in range(T))
        M = num / den
        pk = [M[a] for a in range(T) if M[a] > M[a - 1] and M[a] >= M[(a + 1) % T]]
        top = sorted(pk, reverse=True)[: p.mirror_top]
        top = [min(max(v, 0.0), 1.0) for v in top] + [0.0] * (p.mirror_top - len(top))
        feats += top + [sum(v >= 0.5 for v in pk), sum(v >= 0.8 for v in pk)]
        feats += list(np.abs(np.fft.rfft(M))[1: p.mirror_orders + 1] / T)
    feats += [r_bf / k, contrast / s, 0.0 if found else 1.0]
    return np.array(feats)


def realistic_stack(class_index, seed):
    """A fixtures-style CBED stack, log-scaled to uint8 like a shard."""
    from fixtures import class_pattern

    from cbedtdc.preprocess import log_scale

    return np.round(log_scale(class_pattern(class_index, S, np.random.default_rng(seed)))).astype(np.uint8)


@pytest.mark.parametrize("p", [Y.SymmetryParams(), P0], ids=["floor", "no_floor"])
def test_vectorised_equals_per_sample_reference(p):
    stacks = np.stack([np.stack([pattern(1, centre=(31.8, 31.3)), pattern(3, friedel=0.7, centre=(31.2, 31.6)),
                                 pattern(6, mirror=0.0, friedel=1.0)]),
                       realistic_stack(0, 1), realistic_stack(3, 2)])
    f, _ = Y.describe(stacks, p)
    for b in range(len(stacks)):
        ref = np.concatenate([reference_panel(stacks[b, q], p) for q in range(3)])
        counts = cols(r"\.mir\.npk")
        np.testing.assert_allclose(f[b][~counts], ref[~counts], rtol=2e-3, atol=2e-3)
        assert np.abs(f[b][counts] - ref[counts]).max() <= 1.0  # a peak exactly at 0.5 / 0.8 may tip
        assert (f[b][counts] == ref[counts]).mean() > 0.97


def test_deterministic_and_independent_of_the_batch():
    stacks = np.stack([realistic_stack(k, k) for k in range(5)])
    a, ra = Y.describe(stacks)
    b, rb = Y.describe(stacks)
    np.testing.assert_array_equal(a, b)
    assert ra == rb
    parts = np.concatenate([Y.describe(stacks[i: i + 2])[0] for i in range(0, 5, 2)])
    np.testing.assert_allclose(parts, a, rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------------------------------------- bad input
def test_bad_panels_give_named_reasons_and_finite_features():
    good = realistic_stack(1, 5)
    rng = np.random.default_rng(0)
    noise = rng.integers(90, 110, size=(S, S)).astype(np.uint8)  # no pattern, no centre
    nan = good[2].astype(np.float32)
    nan[10, 10] = np.nan
    cases = [
        (np.stack([good[0], np.full((S, S), 7, np.uint8), good[2]]), 1, "panel 1: blank panel (constant 7)"),
        (np.stack([np.zeros((S, S), np.uint8), good[1], good[2]]), 0, "panel 0: all-zero panel"),
        (np.stack([good[0], good[1], noise]), 2, "panel 2: no visible centre (geometric centre used)"),
    ]
    stacks = np.stack([c[0] for c in cases] + [good]).astype(np.float32)
    nan_stack = np.stack([good[0], good[1], nan])[None]
    f, reasons = Y.describe(stacks)
    fn, rn = Y.describe(nan_stack)
    ref, r_ref = Y.describe(good[None])
    assert r_ref == [""] and reasons[-1] == ""
    assert rn == ["panel 2: non-finite values (NaN/inf read as 0)"]
    assert np.isfinite(f).all() and np.isfinite(fn).all()
    per = len(NAMES) // 3
    flag = [col(f"p{q}.centre.nocentre") for q in range(3)]
    for i, (_, panel, why) in enumerate(cases):
        assert reasons[i] == why
        assert f[i, flag[panel]] == 1.0 and sum(f[i, flag]) == 1.0
        others = [q for q in range(3) if q != panel]
        for q in others:  # the good panels are described as if alone
            np.testing.assert_allclose(f[i, q * per:(q + 1) * per], ref[0, q * per:(q + 1) * per], atol=1e-5)
    empty = Y.featureless(plan_for(S, Y.SymmetryParams()))
    np.testing.assert_array_equal(fn[0, 2 * per:3 * per], empty)  # a non-finite panel: nothing recorded
    np.testing.assert_array_equal(f[0, per:2 * per], empty)  # a blank panel: the values of a featureless one
    assert empty[-1] == 1.0 and set(np.unique(empty[cols(r"^p0\.b1-4\.h\d+$")[:per]])) == {np.log10(1e-4)}


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"expected \(B, 3, S, S\)"):
        Y.describe(np.zeros((2, 64, 64)))
    with pytest.raises(ValueError, match="at least 8 px"):
        Y.describe(np.zeros((1, 3, 6, 6)))


# ------------------------------------------------------------------------------------ the features file
def test_extract_to_file_streams_batches_and_is_rerunnable(tiny_shards, tmp_path):
    from cbedtdc.data import ShardDataset

    info = Y.extract_symmetry_to_file(tiny_shards, "train", tmp_path / "train.h5", batch_size=5, progress=False)
    fs = read_features(tmp_path / "train.h5", split="train")
    ds = ShardDataset(tiny_shards, "train")
    assert info["n"] == len(fs) == len(ds) == 18 and info["dim"] == len(NAMES) == fs.features.shape[1]
    assert fs.keys == ds.keys and fs.labels.tolist() == ds.labels.tolist()
    assert fs.source == "symmetry" and fs.model == f"symmetry/{Y.VERSION}"
    assert fs.model_sha256 == Y.params_sha256() and fs.model_meta["names"] == NAMES.tolist()
    assert fs.model_meta["image_size"] == 16 and np.isfinite(fs.features).all()
    direct, _ = Y.describe(np.stack([ds.image(i) for i in range(len(ds))]))
    np.testing.assert_allclose(fs.features, direct, rtol=1e-5, atol=1e-5)
    Y.extract_symmetry_to_file(tiny_shards, "train", tmp_path / "train.h5", batch_size=18, progress=False)
    np.testing.assert_allclose(read_features(tmp_path / "train.h5").features, fs.features, rtol=1e-5, atol=1e-5)
    assert [q.name for q in tmp_path.iterdir()] == ["train.h5"]


def test_cli_writes_the_file_and_names_bad_input(tiny_shards, tmp_path, caplog):
    import features as cli

    out = tmp_path / "dev.h5"
    assert cli.main(["--source", "symmetry", "--shards", str(tiny_shards), "--split", "dev", "--out", str(out),
                     "--batch-size", "4"]) == 0
    assert len(read_features(out, split="dev")) == 9
    assert cli.main(["--source", "symmetry", "--shards", str(tmp_path / "none"), "--split", "dev",
                     "--out", str(tmp_path / "x.h5")]) == 2
    assert "not found" in caplog.text and not (tmp_path / "x.h5").exists()
    # a source without a backbone takes no model, the cnn source needs one: one line each, nothing written
    assert cli.main(["--source", "symmetry", "--model", "best.pt", "--shards", str(tiny_shards), "--split", "dev",
                     "--out", str(tmp_path / "y.h5")]) == 2
    assert "reads no model" in caplog.text
    assert cli.main(["--source", "cnn", "--shards", str(tiny_shards), "--split", "dev",
                     "--out", str(tmp_path / "y.h5")]) == 2
    assert "needs --model" in caplog.text and not (tmp_path / "y.h5").exists()
    for action in cli.get_parser()._actions:
        if action.dest != "help":
            assert "default" in action.help or "required" in action.help, action.dest
