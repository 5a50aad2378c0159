"""The ``symmetry`` descriptors under the perturbations of a real detector (cbedtdc.perturb): shot noise moves them
less with the dynamic-range floor than without, and a blank panel changes nothing but its own columns, which read
as a featureless panel (docs/robustness.md, the diagnosis)."""

from __future__ import annotations

import numpy as np
import pytest

from cbedtdc.features import symmetry as Y
from cbedtdc.features.symmetry.plan import plan_for
from cbedtdc.perturb import blank_panel, dose
from cbedtdc.preprocess import preprocess_stack

S = 64
NO_FLOOR = Y.SymmetryParams(dynamic_range=0)


def raw_stacks(n=6, seed=0):
    """Fixtures-style raw stacks (intensities, not yet log-scaled), of several classes, on a diffuse background at
    ~3e-4 of the brightest pixel as in generated and real CBED (thermal diffuse scattering): at a dose of 10^3 its
    pixels hold 0 or 1 electrons."""
    from fixtures import class_pattern

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:S, 0:S] - (S - 1) / 2
    diffuse = np.exp(-(yy ** 2 + xx ** 2) / (2 * (0.4 * S) ** 2))
    out = []
    for k in range(n):
        s = class_pattern(k % 3, S, rng)
        out.append((s + 3e-4 * s.max() * diffuse * rng.lognormal(0.0, 0.3, size=s.shape)).astype(np.float32))
    return out


def shards(raw):
    return np.stack([preprocess_stack(np.asarray(s, np.float32), S) for s in raw])


@pytest.mark.parametrize("electrons", [1e3, 1e4])
def test_shot_noise_moves_the_descriptors_less_with_the_floor(electrons):
    raw = raw_stacks()
    rng = np.random.default_rng(1)
    noisy = shards([dose(s, electrons, rng) for s in raw])
    clean = shards(raw)

    def moved(params):
        f0, _ = Y.describe(clean, params)
        f1, _ = Y.describe(noisy, params)
        spread = f0.std(0) + 1e-3  # the clean stacks' own spread sets the scale of every column
        return np.median(np.abs(f1 - f0) / spread)

    assert moved(Y.SymmetryParams()) < 0.7 * moved(NO_FLOOR)


def test_a_blank_panel_changes_only_its_own_columns():
    raw = raw_stacks(3)
    f0, r0 = Y.describe(shards(raw))
    per = f0.shape[1] // 3
    empty = Y.featureless(plan_for(S, Y.SymmetryParams()))
    for panel in range(3):
        f, reasons = Y.describe(shards([blank_panel(s, panel) for s in raw]))
        for q in range(3):
            cols = slice(q * per, (q + 1) * per)
            if q == panel:
                assert (f[:, cols] == empty).all()
            else:
                np.testing.assert_array_equal(f[:, cols], f0[:, cols])
        assert all(r == f"panel {panel}: all-zero panel" for r in reasons) and r0 == [""] * 3
