"""Test-time perturbations of raw stacks: applied as documented, reproducible for a seed."""

from __future__ import annotations

import numpy as np
import pytest

from cbedtdc.perturb import PERTURBATIONS, perturb


def stack(seed=0, side=32):
    """A bright central disk and a few weaker spots on a dim background, three panels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side] - (side - 1) / 2
    s = np.full((3, side, side), 1e-4, np.float32)
    s[:, np.hypot(yy, xx) < side / 10] = 1.0
    for p in range(3):
        r, c = rng.integers(4, side - 4, 2)
        s[p, r - 1:r + 2, c - 1:c + 2] += 0.1
    return s


@pytest.mark.parametrize("name,strength", [("dose", 100.0), ("centre_offset", 0.05), ("q_scale", 1.05),
                                           ("blur", 0.02), ("blank_panel", 2)])
def test_same_seed_same_result_and_shape_kept(name, strength):
    s = stack()
    a = perturb(s, name, strength, np.random.default_rng(7))
    b = perturb(s, name, strength, np.random.default_rng(7))
    assert a.shape == s.shape and a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.array_equal(a, s)


def test_dose_noise_shrinks_with_dose_and_keeps_the_scale():
    s = stack()
    err = [np.abs(perturb(s, "dose", d, np.random.default_rng(0)) - s)[:, 16, 16].mean() for d in (1e2, 1e4, 1e6)]
    assert err[0] > err[1] > err[2]
    high = perturb(s, "dose", 1e6, np.random.default_rng(0))
    assert high.max() == pytest.approx(s.max(), rel=0.01)
    assert np.all(perturb(s, "dose", 1e2, np.random.default_rng(0)) >= 0)


def test_centre_offset_moves_the_disk_by_the_fraction():
    s = stack()
    out = perturb(s, "centre_offset", 0.1, np.random.default_rng(3))
    for p in range(3):
        w0, w1 = s[p] * (s[p] > 0.5), out[p] * (out[p] > 0.5)
        c0 = np.array(np.nonzero(w0)).mean(axis=1)
        c1 = (np.array(np.nonzero(w1)) * w1[w1 > 0]).sum(axis=1) / w1[w1 > 0].sum()
        assert np.hypot(*(c1 - c0)) == pytest.approx(0.1 * 32, abs=0.6)


def test_q_scale_grows_the_disk_and_blank_panel_blanks_one():
    s = stack()
    big = perturb(s, "q_scale", 1.3, np.random.default_rng(0))
    assert (big[0] > 0.5).sum() > 1.4 * (s[0] > 0.5).sum()
    blank = perturb(s, "blank_panel", 1, np.random.default_rng(0))
    assert blank[1].max() == 0 and np.array_equal(blank[[0, 2]], s[[0, 2]])


def test_unknown_perturbation_and_bad_strength_are_named():
    with pytest.raises(ValueError, match="must be one of"):
        perturb(stack(), "defocus", 1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="dose"):
        perturb(stack(), "dose", 0, np.random.default_rng(0))
    assert set(PERTURBATIONS) == {"dose", "centre_offset", "q_scale", "blur", "blank_panel"}
