"""Built-in CBED generator: crystals, physics, symmetry, absences, plan, files, CLI."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import spglib
from scipy.ndimage import rotate

from cbedtdc.io import index_file
from cbedtdc.synth import (CrystalError, Optics, SynthConfig, class_sequence, crystal_family, make_material,
                           materials_per_class, prepare_panels, random_crystal, render_panel, write_file,
                           zone_axes)
from cbedtdc.synth.scattering import structure_factors
from conftest import REPO

ALL = range(1, 231)


def _crystal(sg, seed=0):
    return random_crystal(sg, np.random.default_rng([seed, sg]))


@pytest.fixture(scope="module")
def crystals():
    """One verified crystal per space group (also the 'all 230 groups' check)."""
    return {sg: _crystal(sg) for sg in ALL}


def _zolz_image(crystal, size, q_max=1.5, axis=0, angle=0.3):
    """Noise-free, HOLZ-free pattern on an odd grid (the optic axis is a pixel centre)."""
    panels = prepare_panels(crystal, zone_axes(crystal), Optics(q_max=q_max, holz=False), [angle] * 3)
    return render_panel(panels[axis], 100.0, 200.0, size)


def _rot_corr(img, degrees):
    """Pearson correlation of I^0.25 with its rotated copy inside a centred disk of radius 0.45 S."""
    a = img**0.25
    b = np.rot90(a, degrees // 90) if degrees % 90 == 0 else rotate(a, degrees, reshape=False, order=1)
    s = img.shape[0]
    yy, xx = np.mgrid[:s, :s]
    inside = np.hypot(xx - (s - 1) / 2, yy - (s - 1) / 2) < 0.45 * s
    return float(np.corrcoef(a[inside], b[inside])[0, 1])


# --------------------------------------------------------------------------- crystals
@pytest.mark.slow
def test_every_space_group_gives_a_crystal_spglib_confirms_at_both_tolerances(crystals):
    for sg, c in crystals.items():
        assert c.space_group == sg
        for symprec in (1e-3, 0.1):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # spglib's legacy error handling
                ds = spglib.get_symmetry_dataset((c.cell, c.frac, c.numbers), symprec=symprec)
            assert ds is not None and ds.number == sg, (sg, symprec)
        assert 10.0 * len(c.frac) * 0.999 <= c.volume <= 25.0 * len(c.frac) * 1.001
        assert c.abc.min() >= 2.5
        assert c.formula and all(ch.isalnum() or ch == " " for ch in c.formula)


@pytest.mark.slow
def test_lattice_metric_follows_the_crystal_family(crystals):
    for sg, c in crystals.items():
        a, b, cc = c.abc
        al, be, ga = c.angles
        fam = crystal_family(sg)
        if fam in ("tetragonal", "hexagonal", "trigonal", "cubic"):
            assert a == pytest.approx(b)
        if fam == "cubic":
            assert a == pytest.approx(cc) and np.allclose(c.angles, 90)
        if fam in ("hexagonal", "trigonal"):
            assert ga == pytest.approx(120)
        if fam == "monoclinic":
            assert al == pytest.approx(90) and ga == pytest.approx(90) and 95 <= be <= 120


def test_bounded_retries_fail_with_a_clear_error():
    with pytest.raises(CrystalError, match="space group 62: no crystal verified by spglib in 0 attempts"):
        random_crystal(62, np.random.default_rng(0), max_attempts=0)
    with pytest.raises(ValueError, match="space group 231: must be in 1..230"):
        random_crystal(231, np.random.default_rng(0))


# --------------------------------------------------------------------------- physics
@pytest.mark.slow
def test_pattern_symmetry_follows_the_space_group(crystals):
    size = 63
    for sg, c in crystals.items():
        img = _zolz_image(c, size)
        assert img.max() > 0
        assert _rot_corr(img, 180) >= 0.999, f"SG {sg}: Friedel 2-fold broken"
        fam = crystal_family(sg)
        if fam == "tetragonal" or sg >= 221:  # 4/m, 4/mmm, m-3m: 4-fold along [001]
            assert _rot_corr(img, 90) >= 0.99, f"SG {sg}: [001] not 4-fold"


@pytest.mark.slow
def test_hexagonal_and_trigonal_001_patterns_are_6_fold(crystals):
    for sg in range(143, 195):
        img = _zolz_image(crystals[sg], 255, q_max=1.2)
        assert _rot_corr(img, 60) >= 0.97, f"SG {sg}: [001] not 6-fold"


@pytest.mark.slow
def test_triclinic_pattern_is_not_4_fold_nor_6_fold(crystals):
    for sg in (1, 2):
        img = _zolz_image(crystals[sg], 127)
        assert _rot_corr(img, 90) < 0.9
        assert _rot_corr(img, 60) < 0.9
    # and an orthorhombic cell is not 4-fold along [001] either
    assert _rot_corr(_zolz_image(crystals[62], 127), 90) < 0.95


def test_holz_breaks_the_zolz_6_fold_of_cubic_111_down_to_3_fold():
    rng = np.random.default_rng(3)
    c = random_crystal(221, rng)
    big = type(c)(221, c.cell * (7.5 / c.abc[0]), c.frac, c.species, c.symbols)  # a = 7.5 A: FOLZ ring in view
    axis = zone_axes(big)[2]
    assert axis.indices == (1, 1, 1)
    out = {}
    for holz in (False, True):
        p = prepare_panels(big, [axis], Optics(q_max=2.6, overlap=0.4, holz=holz), [0.0], energies_kev=(150.0,))[0]
        out[holz] = render_panel(p, 150.0, 300.0, 255)
        if holz:
            assert not p.zolz.all()  # reflections of higher Laue zones present
    assert _rot_corr(out[False], 60) > 0.97 and _rot_corr(out[False], 180) > 0.999
    assert _rot_corr(out[True], 120) > 0.97  # 3-fold kept (3m whole-pattern symmetry)
    assert _rot_corr(out[True], 120) > _rot_corr(out[True], 60) + 0.02  # 6-fold lost
    assert _rot_corr(out[True], 180) < 0.99  # Friedel 2-fold lost once HOLZ is seen


@pytest.mark.slow
def test_rocking_fringes_inside_disks_depend_on_thickness(crystals):
    c = crystals[225]
    p = prepare_panels(c, zone_axes(c), Optics(holz=False), [0.0] * 3)[0]
    thin, thick = (render_panel(p, 100.0, t, 127) for t in (100.0, 400.0))
    assert not np.allclose(thin, thick)
    assert 0 < thick.max() <= 1.0 + 1e-9  # two-beam saturation: no beam brighter than the incident one


@pytest.mark.slow
def test_bloch_mode_breaks_friedel_only_for_non_centrosymmetric_crystals(crystals):
    def r180(sg, axis, mode):
        c = crystals[sg]
        p = prepare_panels(c, zone_axes(c), Optics(q_max=1.2, holz=False), [0.2] * 3, mode=mode)[axis]
        return _rot_corr(render_panel(p, 100.0, 300.0, 63, mode=mode), 180)

    for sg in (2, 12, 194, 225):  # centrosymmetric: I(g, tau) = I(-g, -tau) also dynamically
        for axis in range(3):
            assert r180(sg, axis, "bloch") >= 0.999, (sg, axis)
    for sg, axis in ((1, 0), (186, 2), (8, 0)):  # polar projections: Friedel's law fails
        assert r180(sg, axis, "kinematic") >= 0.999
        assert r180(sg, axis, "bloch") < 0.99, (sg, axis)


@pytest.mark.slow
def test_bloch_mode_needs_prepared_beams_and_keeps_the_beam_set_centrosymmetric(crystals):
    c = crystals[14]
    kin = prepare_panels(c, zone_axes(c), Optics(), [0.0] * 3)[0]
    with pytest.raises(ValueError, match="needs panels prepared with prepare_panels"):
        render_panel(kin, 100.0, 200.0, 33, mode="bloch")
    with pytest.raises(ValueError, match="render mode 'multislice'"):
        render_panel(kin, 100.0, 200.0, 33, mode="multislice")
    beams = prepare_panels(c, zone_axes(c), Optics(), [0.0] * 3, mode="bloch", max_beams=20)[0].bloch
    assert len(beams.g2) <= 20 and beams.g2[0] == 0
    pts = {(round(x, 9), round(y, 9)) for x, y in zip(beams.gx, beams.gy)}
    assert all((round(-x, 9) + 0.0, round(-y, 9) + 0.0) in pts for x, y in pts)
    assert np.allclose(beams.u, beams.u.conj().T)  # Hermitian structure matrix (no absorption)


def test_systematic_absences():
    # F-centred: h, k, l unmixed; I-centred: h + k + l even; Pnma: 0kl k+l=2n, hk0 h=2n, h00/0k0/00l even
    cases = {
        225: ([[1, 0, 0], [1, 1, 0], [2, 1, 0], [0, 0, 1]], [[1, 1, 1], [2, 0, 0], [2, 2, 0]]),
        227: ([[1, 0, 0], [1, 1, 0], [2, 0, 0], [4, 2, 0]], [[1, 1, 1], [2, 2, 0], [3, 1, 1]]),
        229: ([[1, 0, 0], [1, 1, 1], [2, 1, 0]], [[1, 1, 0], [2, 0, 0], [2, 1, 1]]),
        62: ([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 2], [1, 1, 0], [3, 0, 0]],
             [[2, 0, 0], [0, 2, 0], [0, 1, 1], [1, 1, 1], [2, 1, 0], [1, 0, 1], [1, 2, 1]]),
        14: ([[0, 1, 0], [0, 3, 0], [1, 0, 1], [0, 0, 1]], [[0, 2, 0], [1, 1, 0], [1, 0, 2], [1, 1, 1]]),
    }
    for sg, (forbidden, allowed) in cases.items():
        for seed in range(3):
            c = _crystal(sg, seed)
            for hkl_set, absent in ((forbidden, True), (allowed, False)):
                hkl = np.array(hkl_set)
                g = np.linalg.norm(hkl @ c.recip, axis=1)
                f = np.abs(structure_factors(hkl, c.frac, c.species, c.symbols, g, 0.5))
                if absent:
                    assert f.max() < 1e-8, (sg, seed, hkl_set, f)
                else:
                    assert f.max() > 1e-3, (sg, seed, hkl_set, f)  # not everything is extinct


@pytest.mark.slow
def test_extinct_reflections_never_reach_the_renderer(crystals):
    c = crystals[225]
    p = prepare_panels(c, zone_axes(c), Optics(holz=True), [0.0] * 3)[0]
    assert (p.f_abs > 1e-8).all()
    # F-centred [001] ZOLZ: only h, k both even remain -> shortest allowed g = 2/a
    assert p.d_hkl == pytest.approx(c.abc[0] / 2)


@pytest.mark.slow
def test_namsa_policy_picks_three_strong_non_parallel_planes(crystals):
    for sg in (2, 14, 62, 166, 225):
        axes = zone_axes(crystals[sg], "namsa")
        assert len(axes) == 3
        for z in axes:
            assert 1.0 < z.d_hkl < 5.0
        dirs = np.array([z.direction for z in axes])
        off = np.abs(dirs @ dirs.T)[~np.eye(3, dtype=bool)]
        assert (off < 0.999).all() or len({z.indices for z in axes}) == 1
    with pytest.raises(ValueError, match="synth.zone_axes='bad'"):
        zone_axes(crystals[2], "bad")


# --------------------------------------------------------------------------- plan
def test_materials_per_class_follow_frequency_and_floor():
    top = [14, 225, 1, 2, 62]
    real = materials_per_class(top, 100, "real", floor=2)
    assert sum(real.values()) == 100 and min(real.values()) >= 2
    assert real[14] > real[62]  # 11,764 vs fewer real training samples
    bal = materials_per_class(top, 100, "balanced", floor=0)
    assert set(bal.values()) == {20}
    absent = materials_per_class([14, 28], 50, "real", floor=3)  # 28 never occurs in the real data
    assert absent == {14: 47, 28: 3}
    tiny = materials_per_class(list(range(1, 231)), 11, "real", floor=5)  # fewer materials than classes
    assert sum(tiny.values()) == 11


def test_class_plan_is_deterministic_and_seed_dependent():
    cfg = SynthConfig(classes=(14, 225, 1, 2), n_materials=200, floor=1)
    seq = class_sequence(cfg, "train")
    assert len(seq) == cfg.split_counts["train"] == 158
    assert (seq == class_sequence(cfg, "train")).all()
    other = class_sequence(SynthConfig(classes=(14, 225, 1, 2), n_materials=200, floor=1, seed=1), "train")
    assert sorted(seq) == sorted(other) and (seq != other).any()
    assert set(class_sequence(cfg, "test")) == {14, 225, 1, 2}


def test_bad_settings_are_rejected_with_the_key_name():
    with pytest.raises(ValueError, match="synth.frequency='zipf'"):
        SynthConfig(classes=(1, 2), frequency="zipf")
    with pytest.raises(ValueError, match="synth.energies_per_material=11"):
        SynthConfig(classes=(1, 2), energies_per_material=11)


# --------------------------------------------------------------------------- files
@pytest.fixture(scope="module")
def tiny_cfg():
    return SynthConfig(classes=(14, 225, 194), n_materials=40, energies_per_material=2, image_size=33)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_same_seed_same_bytes_different_seed_different_crystals(tmp_path, tiny_cfg):
    a, b, c = (tmp_path / d / "batch_dev_0.h5" for d in "abc")
    write_file(a, tiny_cfg, 0, 3)
    write_file(b, tiny_cfg, 0, 3)
    assert _digest(a) == _digest(b)
    write_file(c, SynthConfig(**{**tiny_cfg.__dict__, "seed": 5, "split_counts": None}), 0, 3)
    with h5py.File(a) as fa, h5py.File(c) as fc:
        cells_a = [tuple(fa[f"sample_{i}_0"].attrs["abc_angstrom"]) for i in range(3)]
        cells_c = [tuple(fc[f"sample_{i}_0"].attrs["abc_angstrom"]) for i in range(3)]
    assert cells_a != cells_c


def test_files_are_independent_of_how_materials_are_cut_into_files(tmp_path, tiny_cfg):
    whole, part = tmp_path / "w" / "batch_train_0.h5", tmp_path / "p" / "batch_train_1.h5"
    write_file(whole, tiny_cfg, 0, 4)
    write_file(part, tiny_cfg, 2, 2)
    with h5py.File(whole) as fw, h5py.File(part) as fp:
        for j in range(2):
            gw, gp = fw[f"sample_2_{j}"], fp[f"sample_0_{j}"]
            assert np.array_equal(gw["cbed_stack"][()], gp["cbed_stack"][()])
            assert gw.attrs["material"] == gp.attrs["material"] == b"synth-train-2"
            assert gw.attrs["space_group"] == gp.attrs["space_group"]


def test_written_file_reads_back_like_a_challenge_file(tmp_path, tiny_cfg):
    path = write_file(tmp_path / "batch_test_0.h5", tiny_cfg, 0, 3)
    index = index_file(path, expected_side=33)  # the data stage's own reader
    assert index["quarantine"] == [] and index["seen"] == 6
    seq = class_sequence(tiny_cfg, "test")
    for rec in index["samples"]:
        i, j = (int(x) for x in rec["group"].split("_")[1:])
        assert rec["warnings"] == ""
        assert rec["space_group"] == seq[i]
        assert rec["material"] == f"synth-test-{i}"
        assert rec["energy_keV"] == 100 + 10 * j
        assert rec["split"] == "test"
    with h5py.File(path) as f:
        assert sorted(f.keys()) == [f"sample_{i}_{j}" for i in range(3) for j in range(2)]
        g = f["sample_1_1"]
        stack = g["cbed_stack"]
        assert stack.shape == (3, 33, 33) and stack.dtype == np.float32
        assert np.isfinite(stack[()]).all() and stack[()].min() >= 0
        at = g.attrs
        assert isinstance(at["space_group"], np.bytes_) and int(at["space_group"]) in (14, 225, 194)
        assert isinstance(at["material"], np.bytes_)
        assert isinstance(at["energy_keV"], np.int64) and at["energy_keV"] == 110
        assert at["z_dirs"].shape == (1, 3, 3) and at["z_dirs"].dtype == np.int64
        assert at["y_dirs"].shape == (1, 3, 3) and at["y_dirs"].dtype == np.float64
        assert np.allclose(np.linalg.norm(at["y_dirs"][0], axis=1), 1.0)
        for key in ("semi_angles_rad", "d_hkls_angstrom", "abc_angstrom", "angles_degree"):
            assert at[key].shape == (3,) and at[key].dtype == np.float64 and (at[key] > 0).all()
        assert (at["semi_angles_rad"] < 0.05).all()  # mrad range, like the challenge
        assert isinstance(at["formula"], str)


def test_interrupted_write_leaves_no_file(tmp_path, tiny_cfg, monkeypatch):
    import cbedtdc.synth.generate as gen

    real = gen.render_sample
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(gen, "render_sample", failing)
    with pytest.raises(KeyboardInterrupt):
        write_file(tmp_path / "batch_train_0.h5", tiny_cfg, 0, 3)
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_materials_outside_the_split(tmp_path, tiny_cfg):
    with pytest.raises(ValueError, match="batch_dev_0.h5: materials 2..5 outside the 4 materials of split 'dev'"):
        write_file(tmp_path / "batch_dev_0.h5", tiny_cfg, 2, 4)
    with pytest.raises(ValueError, match="not a challenge file name"):
        write_file(tmp_path / "train.h5", tiny_cfg, 0, 1)


def test_noise_changes_the_pattern_and_material_keeps_its_class(tiny_cfg):
    from cbedtdc.synth import render_sample

    clean_cfg = SynthConfig(**{**tiny_cfg.__dict__, "noise": False, "split_counts": None})
    m = make_material(tiny_cfg, "train", 0)
    noisy, attrs = render_sample(tiny_cfg, m, 0)
    clean, _ = render_sample(clean_cfg, m, 0)
    assert not np.allclose(noisy, clean)
    assert int(attrs["space_group"]) == class_sequence(tiny_cfg, "train")[0]


# --------------------------------------------------------------------------- CLIs, gallery, doctests
def _script(name):
    """Load workflow_scripts/<name>.py by path (works from any working directory)."""
    path = REPO / "workflow_scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_cli_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_synthesize_and_gallery_clis(tmp_path):
    synth, gallery = (_script(name) for name in ("synthesize", "gallery"))
    out = tmp_path / "raw" / "batch_train_0.h5"
    args = ["--out", str(out), "--file-materials", "3", "--n-materials", "30", "--classes", "225,2",
            "--energies", "1", "--image-size", "17", "--no-noise", "--no-progress"]
    assert synth.main(args) == 0 and out.exists()
    dyn = tmp_path / "raw" / "batch_test_0.h5"
    assert synth.main(["--out", str(dyn)] + args[2:] + ["--mode", "bloch"]) == 0
    with h5py.File(out) as fk, h5py.File(dyn) as fd:
        assert fk["sample_0_0"].attrs["formula"] != "" and fd["sample_0_0/cbed_stack"].shape == (3, 17, 17)
    assert synth.main(["--out", str(tmp_path / "x.h5"), "--file-materials", "1"]) == 2
    assert synth.main(args[:2] + ["--file-materials", "99", "--n-materials", "30"]) == 2
    custom = tmp_path / "raw" / "batch_dev_1.h5"  # explicit materials per split
    assert synth.main(["--out", str(custom), "--first-material", "5", "--file-materials", "2",
                       "--split-materials", "10", "7", "3", "--classes", "225,2", "--energies", "1",
                       "--image-size", "17", "--no-progress"]) == 0
    with h5py.File(custom) as f:
        assert f["sample_1_0"].attrs["material"] == b"synth-dev-6"
    assert synth.main(["--out", str(custom), "--first-material", "6", "--file-materials", "2",
                       "--split-materials", "10", "7", "3", "--no-progress"]) == 2
    png = tmp_path / "plots" / "gallery.png"
    assert gallery.main(["--raw", str(out), "--out", str(png), "--classes", "225,2,14"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert gallery.main(["--raw", str(out), "--out", str(tmp_path / "g2.png"), "--classes", "99,100"]) == 2
