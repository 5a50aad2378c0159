"""synth.mode multislice (abTEM): the challenge layout read back with 0 quarantined, same seed -> same bytes, oriented
specimens of every crystal family (monoclinic, hexagonal [210], triclinic), the detector grid, skips, CPU and GPU."""

from __future__ import annotations

import hashlib
import logging

import h5py
import numpy as np
import pytest
from scipy.spatial import cKDTree

import cbedtdc.synth.multislice as ms
from cbedtdc.io import index_file
from cbedtdc.synth import (Optics, SynthConfig, class_sequence, prepare_panels, random_crystal, render_panel,
                           write_file, zone_axes)

pytest.importorskip("abtem")

SIZE = 24  # tiny patterns: a sample takes seconds


def _cfg(**kw):
    base = dict(classes=(14, 194), n_materials=20, energies_per_material=1, image_size=SIZE, mode="multislice",
                phonons=1, device="cpu")
    return SynthConfig(**{**base, **kw})


def _panels(sg, seed=0):
    c = random_crystal(sg, np.random.default_rng([seed, sg]))
    return c, prepare_panels(c, zone_axes(c), Optics(q_max=1.5, holz=False), [0.4] * 3)


@pytest.mark.slow
def test_written_file_reads_back_with_zero_quarantined_and_same_seed_gives_same_bytes(tmp_path):
    cfg = _cfg()
    a, b = (write_file(tmp_path / d / "batch_test_0.h5", cfg, 0, 2) for d in "ab")
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    index = index_file(a, expected_side=SIZE)  # the data stage's own reader and checks
    assert index["quarantine"] == [] and index["seen"] == 2
    seq = class_sequence(cfg, "test")
    for rec in index["samples"]:
        assert rec["warnings"] == "" and rec["space_group"] == seq[int(rec["group"].split("_")[1])]
    with h5py.File(a) as f:
        assert f.attrs["skipped_materials"] == ""
        stack = f["sample_0_0/cbed_stack"][()]
    assert stack.shape == (3, SIZE, SIZE) and stack.dtype == np.float32 and np.isfinite(stack).all()
    assert stack.min() >= 0 and stack.max() > 0


@pytest.mark.parametrize("sg", [14, 194, 2])  # monoclinic [010] [001] [100]; hexagonal [001] [100] [210]; triclinic
def test_specimen_is_the_crystal_oriented_along_each_zone_axis(sg):
    crystal, panels = _panels(sg)
    per_volume = len(crystal.frac) / crystal.volume
    for panel in panels:
        uvw = np.asarray(panel.axis.indices, float)
        repeat = np.linalg.norm(uvw @ crystal.cell)  # lattice period along the beam
        atoms = ms.specimen(crystal, panel, 30.0, 3 * repeat + 20.0)
        pos = atoms.positions
        assert len(pos) == pytest.approx(per_volume * 30.0 * 30.0 * (3 * repeat + 20.0), rel=0.08)
        assert cKDTree(pos).query(pos, k=2)[0][:, 1].min() > 0.9  # no atom twice (>= 1 A apart in the crystal)
        # the zone axis is z: shifting the lower atoms by one period along z lands on atoms again
        low = pos[(pos[:, 2] < 2 * repeat) & (pos[:, :2] > 2).all(axis=1) & (pos[:, :2] < 28).all(axis=1)]
        dist, _ = cKDTree(pos).query(low + [0.0, 0.0, repeat])
        assert dist.max() < 1e-6, (sg, panel.axis.indices)
        # the panel's x axis is e1: the crystal direction e1 is the lab x
        assert np.allclose(ms._rotation(panel.axis.direction, panel.e1, panel.e2, (0, 0)) @ panel.e1, [1, 0, 0])


@pytest.mark.parametrize("sg", [14, 194])
def test_monoclinic_and_hexagonal_axes_simulate_on_the_cpu(sg):
    crystal, panels = _panels(sg)
    assert ms.resolve_device("cpu") == "cpu"
    for panel in panels:
        img = ms.multislice_panel(crystal, panel, 0.5, 120.0, 30.0, SIZE, np.random.default_rng(1), phonons=1)
        assert img.shape == (SIZE, SIZE) and np.isfinite(img).all() and img.min() >= 0
        r_px = panel.semi_angle / ms.wavelength(120.0) / (2 * panel.q_max / SIZE)
        # intensity is conserved up to what leaves the field: at most the incident disk's area in pixels
        assert 0.3 * np.pi * r_px**2 < img.sum() <= 1.02 * np.pi * r_px**2
        c = (SIZE - 1) / 2
        yy, xx = np.mgrid[:SIZE, :SIZE]
        outside = np.hypot(xx - c, yy - c) > r_px + 1.5
        assert img[outside].sum() > 1e-3 * img.sum()  # diffracted disks, not a vacuum pattern


@pytest.mark.parametrize("sg, axes", [(2, (0, 1, 2)), (14, (0, 1, 2)), (194, (1, 2))])
def test_disks_sit_where_the_kinematic_renderer_puts_them(sg, axes):
    """Same frame, rotation, scale and pixel grid as mode kinematic: the multislice intensity is concentrated on
    the kinematic disks, and not on the disks of the transposed (x <-> y) pattern."""
    crystal = random_crystal(sg, np.random.default_rng([0, sg]))
    panels = prepare_panels(crystal, zone_axes(crystal), Optics(q_max=1.2, overlap=0.5, holz=False), [0.3] * 3)
    size, c = 40, 19.5
    yy, xx = np.mgrid[:size, :size]
    bright_field = np.hypot(xx - c, yy - c) < 3
    for a in axes:
        multi = ms.multislice_panel(crystal, panels[a], 0.5, 100.0, 60.0, size, np.random.default_rng(1), phonons=1)
        kin = render_panel(panels[a], 100.0, 60.0, size)

        def contrast(disks):
            on = (disks > 0.02) & ~bright_field
            return multi[on].mean() / multi[~on & ~bright_field].mean()

        assert contrast(kin) > 10 and contrast(kin) > 1.8 * contrast(kin.T), (sg, panels[a].axis.indices)


def test_mistilt_excites_the_disks_as_the_kinematic_renderer_does():
    """The mistilt tau [1/A] has the renderer's sign: the multislice pattern follows the kinematic one at +tau."""
    crystal = random_crystal(225, np.random.default_rng([0, 225]))
    panel = prepare_panels(crystal, zone_axes(crystal), Optics(q_max=1.2, overlap=0.5, holz=False), [0.3] * 3)[0]
    r = panel.semi_angle / ms.wavelength(100.0)
    for tilt in ((1.5 * r, 0.0), (-r, r)):
        multi = ms.multislice_panel(crystal, panel, 0.3, 100.0, 150.0, 48, np.random.default_rng(1), tilt=tilt,
                                    phonons=1)
        same, opposite = (render_panel(panel, 100.0, 150.0, 48, tilt=(s * tilt[0], s * tilt[1])) for s in (1, -1))
        on = (same + opposite) > 0

        def corr(kin):
            return np.corrcoef(np.log(multi[on] + 1e-6), np.log(kin[on] + 1e-6))[0, 1]

        assert corr(same) > corr(opposite) + 0.05, tilt


def test_detector_grid_puts_the_optic_axis_at_the_centre_pixel_and_the_beam_at_one():
    n, size, dq, radius = 120, 24, 0.1, 0.2  # a plane wave: all intensity in the zero beam
    waves = np.ones((1, n, n), complex)
    img = ms._detector_grid(waves, float(n * n), size, radius, dq)
    assert np.allclose(img, img[::-1, ::-1])  # centred on (S - 1) / 2 (S even: a pixel corner)
    c = (size - 1) / 2
    yy, xx = np.mgrid[:size, :size]
    assert np.sum(img * xx) / img.sum() == pytest.approx(c) and np.sum(img * yy) / img.sum() == pytest.approx(c)
    # a plane wave's intensity, spread over the disk area, is 1 per pixel (less the sinc^2 tails of the half-pixel
    # offset zero beam that fall outside the field)
    assert img.sum() == pytest.approx(np.pi * radius**2 / dq**2, rel=0.03)


def test_a_material_that_cannot_be_simulated_is_logged_and_recorded_not_dropped(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(ms, "MAX_ATOMS", 10)
    with caplog.at_level(logging.WARNING):
        path = write_file(tmp_path / "batch_dev_0.h5", _cfg(), 0, 2)
    with h5py.File(path) as f:
        assert list(f.keys()) == []
        lines = f.attrs["skipped_materials"].splitlines()
    assert len(lines) == 2 and lines[0].startswith("synth-dev-0 (space group ")
    assert "atoms (> 10): lower synth.image_size" in lines[0]
    assert "not simulated, skipped: synth-dev-1" in caplog.text
    # a file with nothing simulated reaches the data stage as a quarantined file, never as a silent gap
    assert index_file(path)["quarantine"] == [{"file": "batch_dev_0.h5", "group": "", "reason": "no sample groups"}]


def test_bad_multislice_settings_name_the_key():
    with pytest.raises(ValueError, match="synth.device='tpu': must be one of auto, cpu, gpu"):
        _cfg(device="tpu")
    with pytest.raises(ValueError, match="synth.phonons=0: must be at least 1"):
        _cfg(phonons=0)
    with pytest.raises(ValueError, match="synth.slice_thickness=20.0"):
        _cfg(slice_thickness=20.0)


def test_gpu_setting_without_a_gpu_is_a_clear_error():
    if ms._has_gpu():
        pytest.skip("a GPU is visible here")
    with pytest.raises(ValueError, match="synth.device=gpu: no GPU visible to CuPy"):
        ms.resolve_device("gpu")
    assert ms.resolve_device("auto") == "cpu"


def test_gpu_path_matches_the_cpu_path():
    if not ms._has_gpu():
        pytest.skip("no CuPy or no GPU visible")
    crystal, panels = _panels(194)
    cpu, gpu = (ms.multislice_panel(crystal, panels[2], 0.5, 150.0, 60.0, SIZE, np.random.default_rng(2),
                                    phonons=2, device=d) for d in ("cpu", "gpu"))
    assert np.corrcoef(cpu.ravel(), gpu.ravel())[0, 1] > 0.999
    assert gpu.sum() == pytest.approx(cpu.sum(), rel=1e-3)


def test_synthesize_cli_multislice_mode(tmp_path):
    from test_synth import _script

    synth = _script("synthesize")
    out = tmp_path / "raw" / "batch_train_0.h5"
    args = ["--out", str(out), "--file-materials", "1", "--n-materials", "30", "--classes", "225,2", "--energies",
            "1", "--image-size", "17", "--mode", "multislice", "--phonons", "1", "--no-progress"]
    assert synth.main(args + ["--device", "cpu"]) == 0
    assert index_file(out, expected_side=17)["quarantine"] == []
    if not ms._has_gpu():  # a GPU asked for where there is none: exit code 2, no file
        bad = tmp_path / "raw" / "batch_dev_0.h5"
        assert synth.main(["--out", str(bad)] + args[2:] + ["--device", "gpu"]) == 2 and not bad.exists()
