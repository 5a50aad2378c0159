"""The rendered robustness curves (mistilt, thickness): the run's own test materials rendered again by the generator
with one setting beyond the training's, and their rows of robustness.csv paired with the run's own rendering."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from cbedtdc.cascade.plan import LevelPlan
from cbedtdc.cascade.routing import ArgmaxRule
from cbedtdc.classify import LoadedRun
from cbedtdc.errors import InputError
from cbedtdc.evaluate.robustness import ROBUSTNESS_FIELDS, own_strengths, rendered_settings, rendered_table
from cbedtdc.io import read_csv, write_csv
from cbedtdc.synth import generate, synthesize_file

CLASSES = [14, 225, 194]
SETTINGS = dict(classes=CLASSES, split_materials=(6, 3, 3), image_size=24, energies_per_material=2, seed=3,
                mistilt=0.1, mode="kinematic")


def render(path, **override):
    return synthesize_file(path, 0, 2, **{**SETTINGS, **override})


def samples(path):
    with h5py.File(path) as f:
        return {name: (dict(g.attrs), g["cbed_stack"][()]) for name, g in f.items()}


def test_a_rendering_holds_the_same_materials_and_is_reproducible(tmp_path):
    own = samples(render(tmp_path / "own" / "batch_test_0.h5"))
    thick = samples(render(tmp_path / "t" / "batch_test_0.h5", thickness=(500.0, 700.0)))
    again = samples(render(tmp_path / "t2" / "batch_test_0.h5", thickness=(500.0, 700.0)))
    tilted = samples(render(tmp_path / "m" / "batch_test_0.h5", mistilt=0.4))
    assert sorted(own) == sorted(thick) == sorted(tilted) == ["sample_0_0", "sample_0_1", "sample_1_0", "sample_1_1"]
    for name, (attrs, stack) in own.items():
        for other in (thick, tilted):  # the same material, energy and geometry; another pattern
            assert {k: str(v) for k, v in other[name][0].items()} == {k: str(v) for k, v in attrs.items()}
            assert not np.array_equal(other[name][1], stack)
        assert np.array_equal(again[name][1], thick[name][1])  # the same seed: the same stacks


def test_the_default_settings_written_out_render_the_run_bytes(tmp_path):
    """thickness=None is the generator's 100-500 A: a normal run's files are unchanged by the option."""
    a = samples(render(tmp_path / "a" / "batch_test_0.h5"))
    b = samples(render(tmp_path / "b" / "batch_test_0.h5", thickness=generate.THICKNESS))
    assert all(np.array_equal(a[k][1], b[k][1]) for k in a)


def test_thickness_and_mistilt_are_the_same_draws_moved_as_documented(tmp_path, monkeypatch):
    """A sample's thickness keeps its place in the new range (the same uniform draw); its first panel's tilt scales
    with mistilt."""
    calls = []
    real = generate.render_panel

    def spy(panel, energy, thickness, size, tilt=(0.0, 0.0), **kw):
        calls.append((thickness, np.asarray(tilt, dtype=float)))
        return real(panel, energy, thickness, size, tilt=tilt, **kw)

    monkeypatch.setattr(generate, "render_panel", spy)
    runs = {}
    for name, override in [("own", {}), ("thick", {"thickness": (500.0, 700.0)}), ("tilt", {"mistilt": 0.4})]:
        calls.clear()
        render(tmp_path / name / "batch_test_0.h5", **override)
        runs[name] = list(calls)
    lo, hi = generate.THICKNESS
    assert len(runs["own"]) == len(runs["thick"]) == len(runs["tilt"]) == 2 * 2 * 3  # materials x energies x panels
    for k, ((t, tilt), (t2, tilt2), (t3, tilt3)) in enumerate(zip(runs["own"], runs["thick"], runs["tilt"])):
        assert lo <= t <= hi and 500.0 <= t2 <= 700.0 and t3 == t
        assert (t2 - 500.0) / 200.0 == pytest.approx((t - lo) / (hi - lo))
        if k % 3 == 0:  # a sample's first panel: the same normal draw (the detector noise then draws a varying amount)
            assert np.allclose(tilt2, tilt) and np.allclose(tilt3, 4 * tilt) and np.any(tilt != 0)
    with pytest.raises(InputError, match="thickness"):
        generate.SynthConfig(classes=(14,), thickness=(700.0, 500.0))


def test_rendered_settings_are_bins_above_the_training_range():
    got = rendered_settings({"n_materials": 8, "mistilt": [0.0, 0.3], "thickness": [600, 900]}, 0.1)
    assert got == {("mistilt", 0.0): {"mistilt": 0.0}, ("mistilt", 0.3): {"mistilt": 0.3},
                   ("thickness", 600): {"thickness": (500.0, 600)}, ("thickness", 900): {"thickness": (600, 900)}}
    assert own_strengths(0.1) == {"mistilt": 0.1, "thickness": 500.0}
    with pytest.raises(InputError, match="the run's own"):
        rendered_settings({"mistilt": [0.1]}, 0.1)
    with pytest.raises(InputError, match="must increase from above"):
        rendered_settings({"thickness": [900, 700]}, 0.1)
    with pytest.raises(InputError, match="must increase from above"):
        rendered_settings({"thickness": [400]}, 0.1)
    with pytest.raises(InputError, match="dose unknown"):
        rendered_settings({"dose": [1]}, 0.1)


def brightness_model(name, threshold):
    """A stand-in variant: class by the mean grey level of panel 0."""

    def probs(x):
        m = x[:, 0].float().mean(dim=(1, 2)).numpy()
        p = np.stack([m < threshold, (m >= threshold) & (m < threshold + 20), m >= threshold + 20], 1).astype(float)
        return [p + 1e-3]

    return LoadedRun("flat head", Path(name), LevelPlan([CLASSES]), probs, ArgmaxRule(), 16)


def test_rendered_rows_start_at_the_own_rendering_and_are_paired(tmp_path):
    rng = np.random.default_rng(3)
    y = np.repeat([14, 225, 194, 14], 2)
    level = {14: 0.05, 225: 0.5, 194: 5.0}
    own = np.stack([rng.uniform(0.5, 1.5, (3, 16, 16)).astype(np.float32) * level[c] for c in y])
    materials = np.repeat(["m0", "m1", "m2", "m3"], 2)
    runs = {"flat": brightness_model("flat", 150), "tdc": brightness_model("tdc", 155)}
    variants = {"flat": "flat/ce/cnn", "tdc": "tdc/shared"}
    raws = {("mistilt", 0.4): own * 0.2, ("thickness", 700.0): own.copy(), ("mistilt", 0.0): own.copy()}
    rows = rendered_table(own, raws, y, materials, runs, variants, CLASSES, own_strengths(0.1), n_boot=50)
    # by increasing strength, the run's own rendering (mistilt 0.1, thickness to 500 A) in its place
    assert [(r["perturbation"], r["strength"], r["model"]) for r in rows] == [
        (p, s, m) for p, s in [("mistilt", "0"), ("mistilt", "0.1"), ("mistilt", "0.4"), ("thickness", "500"),
                               ("thickness", "700")] for m in ("flat", "tdc")]
    by = {(r["perturbation"], r["strength"], r["model"]): r for r in rows}
    for model in runs:
        start, dim = by[("mistilt", "0.1", model)], by[("mistilt", "0.4", model)]
        assert start["ratio_to_clean"] == 1.0 and "difference" not in start
        assert dim["difference"] == pytest.approx(dim["balanced_accuracy"] - start["balanced_accuracy"])
        assert dim["difference"] < 0
        assert dim["difference_lo"] <= dim["difference"] <= dim["difference_hi"]
        assert dim["ratio_to_clean"] == pytest.approx(dim["balanced_accuracy"] / start["balanced_accuracy"])
        assert by[("thickness", "700", model)]["difference"] == 0.0  # the same stacks: no change
        assert dim["n"] == 8 and dim["n_materials"] == 4
    write_csv(tmp_path / "r.csv", rows, ROBUSTNESS_FIELDS)  # the table's columns hold every key
    assert [r["difference"] == "" for r in read_csv(tmp_path / "r.csv")][:4] == [False, False, True, True]
    # the figure: a panel per rendered perturbation, its dotted reference at the own rendering, not the clean row
    from cbedtdc.plots_robustness import robustness_figure

    clean = [{**r, "perturbation": "clean", "strength": "", "balanced_accuracy": 0.123} for r in rows[2:4]]
    write_csv(tmp_path / "all.csv", clean + rows, ROBUSTNESS_FIELDS)
    axes = robustness_figure(read_csv(tmp_path / "all.csv")).get_axes()
    assert [ax.get_title() for ax in axes] == ["mistilt", "thickness"]
    dotted = {round(float(line.get_ydata()[0]), 6) for line in axes[0].lines if line.get_linestyle() == ":"}
    assert dotted == {round(by[("mistilt", "0.1", m)]["balanced_accuracy"], 6) for m in runs}
    with pytest.raises(InputError, match="paired samples"):
        rendered_table(own, {("mistilt", 0.4): own[:3]}, y, materials, runs, variants, CLASSES, own_strengths(0.1),
                       n_boot=0)


def test_cli_reads_renderings_and_the_run_mistilt():
    from importlib import util

    from cbedtdc.config import schema_defaults
    from conftest import REPO

    spec = util.spec_from_file_location("cli_robustness", REPO / "workflow_scripts" / "robustness.py")
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = module.get_parser().parse_args(["--summary", "s", "--splits", "p", "--run-classes", "c", "--raw", "r",
                                           "--out", "o", "--rendered", "thickness=700=results/a=b.h5"])
    assert args.rendered == [("thickness", 700.0, "results/a=b.h5")]
    assert args.own_mistilt == schema_defaults("synth")["mistilt"]
    with pytest.raises(SystemExit):
        module.get_parser().parse_args(["--summary", "s", "--splits", "p", "--run-classes", "c", "--raw", "r",
                                        "--out", "o", "--rendered", "mistilt=x=f.h5"])
