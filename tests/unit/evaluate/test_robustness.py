"""Robustness curves and the transfer table on hand-made stacks and stand-in models (no trained run needed)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from cbedtdc.cascade.plan import LevelPlan
from cbedtdc.cascade.routing import ArgmaxRule
from cbedtdc.classify import LoadedRun, predict_images
from cbedtdc.errors import InputError
from cbedtdc.evaluate.robustness import (ROBUSTNESS_FIELDS, choose_materials, read_raw_stacks, robustness_table,
                                         score_predictions)
from cbedtdc.evaluate.transfer import pair_renderings, transfer_file_plan, transfer_table
from cbedtdc.io import write_csv
from cbedtdc.metrics import balanced_accuracy, paired_difference

CLASSES = [14, 225, 194]
SIZE = 16


def brightness_model(name, threshold):
    """A stand-in variant: class by the mean grey level of panel 0 (perturbations move it, so predictions change)."""

    def probs(x):
        m = x[:, 0].float().mean(dim=(1, 2)).numpy()
        p = np.stack([m < threshold, (m >= threshold) & (m < threshold + 20), m >= threshold + 20], 1).astype(float)
        return [p + 1e-3]

    return LoadedRun("flat head", Path(name), LevelPlan([CLASSES]), probs, ArgmaxRule(), SIZE)


@pytest.fixture
def stacks():
    """12 raw stacks of 4 materials whose brightness follows their class, with a blank-able structure."""
    rng = np.random.default_rng(3)
    y = np.repeat([14, 225, 194, 14], 3)
    level = {14: 0.05, 225: 0.5, 194: 5.0}
    raw = np.stack([rng.uniform(0.5, 1.5, (3, SIZE, SIZE)).astype(np.float32) * level[c] for c in y])
    materials = np.repeat(["m0", "m1", "m2", "m3"], 3)
    return raw, y, materials


RUNS = {"flat": brightness_model("flat", 150), "tdc": brightness_model("tdc", 155)}  # grey 140, 163, 186
VARIANTS = {"flat": "flat/ce/cnn", "tdc": "tdc/shared"}
PERTURB = {"dose": [100, 1e6], "blank_panel": [0, 1], "q_scale": [0.95]}


def test_choose_materials_takes_whole_materials_by_seed():
    rows = [{"material": f"m{i // 3}", "i": i} for i in range(30)]
    a, b, c = choose_materials(rows, 4, 0), choose_materials(rows, 4, 0), choose_materials(rows, 4, 1)
    assert a == b and len(a) == 12 and len({r["material"] for r in a}) == 4
    assert {r["material"] for r in a} != {r["material"] for r in c}
    with pytest.raises(InputError, match="n_materials"):
        choose_materials(rows, 0, 0)


def test_robustness_table_is_reproducible_and_scores_every_model(tmp_path, stacks):
    raw, y, materials = stacks
    kw = dict(seed=7, n_boot=50)
    a = robustness_table(raw, y, materials, RUNS, VARIANTS, PERTURB, CLASSES, **kw)
    b = robustness_table(raw, y, materials, RUNS, VARIANTS, PERTURB, CLASSES, **kw)
    write_csv(tmp_path / "a.csv", a, ROBUSTNESS_FIELDS)
    write_csv(tmp_path / "b.csv", b, ROBUSTNESS_FIELDS)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    # a clean row per model, then one row per model, perturbation and strength
    assert [(r["perturbation"], r["model"]) for r in a[:2]] == [("clean", "flat"), ("clean", "tdc")]
    assert len(a) == 2 * (1 + 5)
    clean = {r["model"]: r["balanced_accuracy"] for r in a[:2]}
    for r in a:
        assert r["ratio_to_clean"] == pytest.approx(r["balanced_accuracy"] / clean[r["model"]])
        assert r["n"] == 12 and r["n_materials"] == 4 and r["lo"] <= r["hi"]
    # the near-clean dose keeps the clean score; the low dose draws other counts with another seed
    high = [r for r in a if r["perturbation"] == "dose" and r["strength"] == 1e6]
    assert all(r["ratio_to_clean"] == pytest.approx(1.0) for r in high)
    # the stand-ins read panel 0 only: blanking it costs accuracy, blanking panel 1 nothing
    blank = {(r["strength"], r["model"]): r["ratio_to_clean"] for r in a if r["perturbation"] == "blank_panel"}
    assert blank[(0, "flat")] < 1.0 and blank[(1, "flat")] == pytest.approx(1.0)
    c = robustness_table(raw, y, materials, RUNS, VARIANTS, {"dose": [100]}, CLASSES, seed=8, n_boot=50)
    assert c[:2] == a[:2]  # clean rows do not depend on the perturbation streams


def test_unknown_perturbation_is_named(stacks):
    raw, y, materials = stacks
    with pytest.raises(InputError, match="mistilt"):
        robustness_table(raw, y, materials, RUNS, VARIANTS, {"mistilt": [0.1]}, CLASSES, n_boot=0)


def test_predict_images_checks_the_side():
    with pytest.raises(InputError, match="16 px"):
        predict_images(RUNS, np.zeros((2, 3, 8, 8), np.uint8))


def test_paired_difference_is_on_the_same_materials(stacks):
    raw, y, materials = stacks
    dimmer = raw * 0.2  # "another rendering": every class looks darker
    rows = transfer_table(raw, {"multislice": dimmer}, y, materials, RUNS, VARIANTS, "kinematic", CLASSES,
                          n_boot=200, seed=0)
    assert [(r["mode"], r["model"]) for r in rows] == [("kinematic", "flat"), ("kinematic", "tdc"),
                                                       ("multislice", "flat"), ("multislice", "tdc")]
    for own, other in zip(rows[:2], rows[2:]):
        assert other["difference"] == pytest.approx(other["balanced_accuracy"] - own["balanced_accuracy"])
        assert other["difference_lo"] <= other["difference"] <= other["difference_hi"]
        assert "difference" not in own
    # the interval is the paired one: the same resamples for both renderings
    from cbedtdc.evaluate.robustness import preprocessed

    p_own = predict_images(RUNS, preprocessed(raw, SIZE))["flat"]
    p_other = predict_images(RUNS, preprocessed(dimmer, SIZE))["flat"]
    d = paired_difference(y, p_other, p_own, CLASSES, materials, n_boot=200, seed=0)
    assert [rows[2]["difference_lo"], rows[2]["difference_hi"]] == d["ci95"]
    assert d["difference"] == pytest.approx(balanced_accuracy(y, p_other, CLASSES) - balanced_accuracy(y, p_own,
                                                                                                        CLASSES))


def test_pairing_keeps_the_common_samples_and_refuses_other_runs():
    own = [{"material": f"synth-test-{i}", "energy_keV": "100.0", "space_group": str(c)}
           for i, c in enumerate([14, 225, 194])]
    own += [{"material": "synth-test-0", "energy_keV": "110.0", "space_group": "14"}]
    ms = [{"material": f"synth-test-{i}", "energy_keV": 100.0, "space_group": c} for i, c in [(2, 194), (0, 14)]]
    o, other = pair_renderings(own, {"multislice": ms}, CLASSES)
    assert [r["material"] for r in o] == [r["material"] for r in other["multislice"]] == ["synth-test-0",
                                                                                          "synth-test-2"]
    with pytest.raises(InputError, match="another run"):
        pair_renderings(own, {"multislice": [{**ms[0], "space_group": 225}]}, CLASSES)
    with pytest.raises(InputError, match="every rendering"):
        pair_renderings(own, {"multislice": []}, CLASSES)


def test_score_predictions_intervals_over_materials():
    s = score_predictions([14, 14, 225, 225], [14, 225, 225, 225], CLASSES, ["a", "a", "b", "b"], 100, 0)
    assert s["balanced_accuracy"] == pytest.approx(0.75) and s["lo"] <= 0.75 <= s["hi"]
    assert s["n_materials"] == 2


def test_read_raw_stacks_by_file_name_and_group(tmp_path):
    path = tmp_path / "batch_test_0.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("sample_0_0/cbed_stack", data=np.full((3, 4, 4), 2.0, np.float32))
    got = read_raw_stacks([{"file": "batch_test_0.h5", "group": "sample_0_0"}], [path])
    assert got.shape == (1, 3, 4, 4) and got.dtype == np.float32 and float(got.max()) == 2.0
    with pytest.raises(InputError, match="no raw file named batch_test_1.h5"):
        read_raw_stacks([{"file": "batch_test_1.h5", "group": "sample_0_0"}], [path])


def test_transfer_split_holds_the_run_test_materials(tmp_path):
    """The transfer files render the run's own first test materials: same ids, groups, cells, formulas."""
    from cbedtdc.synth import synthesize_file

    settings = dict(classes=CLASSES, split_materials=(12, 4, 4), image_size=24, energies_per_material=2, seed=3,
                    mistilt=0.1)
    own = synthesize_file(tmp_path / "own" / "batch_test_0.h5", 0, 4, mode="kinematic", **settings)
    plan = transfer_file_plan(3, 2, 4)
    assert plan == [(0, 2), (2, 1)]
    other = [synthesize_file(tmp_path / "bloch" / f"batch_test_{k}.h5", first, n, mode="bloch",
                             **{**settings, "energies_per_material": 1}) for k, (first, n) in enumerate(plan)]

    def attrs(path):
        with h5py.File(path) as f:
            return {g.attrs["material"].decode(): (g.attrs["space_group"], g.attrs["energy_keV"],
                                                   tuple(g.attrs["abc_angstrom"]), tuple(g.attrs["angles_degree"]),
                                                   g.attrs["formula"])
                    for g in f.values() if g.attrs["energy_keV"] == 100}

    own_attrs = attrs(own)
    with h5py.File(own) as f, h5py.File(other[0]) as g:  # the same sample, other physics
        assert not np.allclose(f["sample_0_0/cbed_stack"][()], g["sample_0_0/cbed_stack"][()])
    got = {k: v for p in other for k, v in attrs(p).items()}
    assert sorted(got) == ["synth-test-0", "synth-test-1", "synth-test-2"]
    assert all(got[m] == own_attrs[m] for m in got)


def test_robustness_figure_from_the_csv(tmp_path, stacks):
    """The report's figure is drawn from robustness.csv alone: a panel per perturbation, a curve per model."""
    from cbedtdc.io import read_csv
    from cbedtdc.plots_robustness import plot_robustness, robustness_figure

    raw, y, materials = stacks
    write_csv(tmp_path / "r.csv", robustness_table(raw, y, materials, RUNS, VARIANTS, PERTURB, CLASSES, n_boot=20),
              ROBUSTNESS_FIELDS)
    rows = read_csv(tmp_path / "r.csv")
    fig = robustness_figure(rows)
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["dose", "q scale", "blank panel"]
    assert axes[0].get_xscale() == "log" and len(axes[0].lines) >= 2
    plot_robustness(rows, tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InputError, match="no clean row"):
        robustness_figure([r for r in rows if r["perturbation"] != "clean"])


def test_robustness_figure_draws_a_point_outside_its_interval():
    """A 1-epoch default run at seed 0 scored a blanked panel 0.0625 with the interval [0.0666, 0.1]: the figure
    draws it (no bar below the point) instead of failing the run."""
    from cbedtdc.plots_robustness import robustness_figure

    row = dict(perturbation="blank_panel", strength="0", model="tdc", balanced_accuracy="0.0625", lo="0.0666", hi="0.1")
    clean = dict(row, perturbation="clean", strength="", balanced_accuracy="0.6", lo="0.5", hi="0.7")
    fig = robustness_figure([clean, row])
    assert [ax.get_title() for ax in fig.get_axes()] == ["blank panel"]


def test_cli_defaults_are_the_schema_defaults():
    from importlib import util

    from cbedtdc.config import schema_defaults
    from conftest import REPO

    got = {}
    for script in ("robustness.py", "transfer.py"):
        spec = util.spec_from_file_location(f"cli_{script[:-3]}", REPO / "workflow_scripts" / script)
        module = util.module_from_spec(spec)
        spec.loader.exec_module(module)
        got[script] = {a.dest: a.default for a in module.get_parser()._actions}
    d = schema_defaults()
    assert got["robustness.py"]["perturbations"] == d["robustness"]["perturbations"]
    assert got["robustness.py"]["n_materials"] == d["robustness"]["n_materials"]
    assert got["transfer.py"]["own_mode"] == d["synth"]["mode"]
    assert got["robustness.py"]["bootstrap"] == got["transfer.py"]["bootstrap"] == d["evaluate"]["bootstrap"]


def test_variants_sharing_a_cache_compute_a_source_once_per_batch():
    """predict_images hands every variant the same batch tensor, so a FeatureCache shared by them computes a feature
    block once per batch (the headline head and the TDC on the same backbone)."""
    from cbedtdc.classify import FeatureCache

    cache, calls = FeatureCache(), []
    record = {"source": "cnn", "model": "results/flat/ce/best.pt", "model_sha256": "ab", "image_size": SIZE}

    def model(name, path):
        def probs(x):
            block = cache.get({**record, "path": path}, x, lambda: calls.append(1) or x[:, 0].float().mean((1, 2)))
            return [np.stack([block.numpy() < 150, block.numpy() >= 150, np.zeros(len(x), bool)], 1) + 1e-3]

        return LoadedRun("flat head", Path(name), LevelPlan([CLASSES]), probs, ArgmaxRule(), SIZE)

    runs = {"a": model("a", "train.h5"), "b": model("b", "dev.h5")}
    images = np.full((5, 3, SIZE, SIZE), 160, np.uint8)
    out = predict_images(runs, images, batch_size=2)
    assert len(calls) == 3  # 3 batches, not 6
    assert out["a"].tolist() == out["b"].tolist() == [225] * 5
