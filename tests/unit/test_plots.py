"""Every figure of the report, rendered from realistic tables: titled, labelled, readable, legends off the data."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures import make_sample, write_challenge_file

from cbedtdc import metrics, plots
from cbedtdc.classes import TOP20

LEVELS = [list(TOP20[:5]), list(TOP20[5:10]), list(TOP20[10:])]


def summary_20() -> dict:
    """A summary.json of a 20-class rest run; the TDC has no macro-F1 estimate (as evaluate writes it)."""
    ci = {"top1": [0.2, 0.3], "balanced_accuracy": [0.15, 0.25], "macro_f1": [0.1, 0.2]}
    flat = {"top1": 0.25, "balanced_accuracy": 0.2, "macro_f1": 0.15, "ci95": ci}
    tdc = {**flat, "mode": "rest", "levels": LEVELS, "estimated_top1": 0.4, "estimated_balanced_accuracy": 0.3,
           "estimated_ci95": {"top1": [0.35, 0.45]}}
    return {"flat_by_loss": {"ce": flat}, "flat": flat, "tdc": tdc, "classes": list(TOP20), "n_test": 450,
            "n_test_materials": 150, "chance": {"majority": 0.1, "prior": 0.06, "balanced": 0.05}}


def per_class_20() -> list[dict]:
    rows = []
    for k, lv in enumerate(LEVELS, start=1):
        for sg in lv:
            rows.append({"space_group": str(sg), "level": str(k), "n_train": "300", "n_test": "30",
                         "recall_flat_ce": "0.3", "recall_tdc": "0.35", "recall_tdc_estimated": "0.5"})
    return rows


def confusion_20(seed) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"true\\pred": str(t), **{str(p): str(int(rng.integers(0, 9))) for p in TOP20}, "other": "0"}
            for t in TOP20]


def levels_3() -> list[dict]:
    return [{"level": str(k), "kept": str(kept), "belongs": str(b), "own_total": str(own), "accuracy": "0.5",
             "oracle_accuracy": "0.6"}
            for k, kept, b, own in [(1, 300, 250, 280), (2, 100, 60, 110), (3, 50, 40, 60)]]


def hierarchy_by_model(n_boot: int = 50) -> dict:
    """``metrics.hierarchy_scores`` of a weaker flat and a stronger TDC on 200 samples of the top-20 classes."""
    rng = np.random.default_rng(0)
    y = rng.choice(TOP20, size=200)
    mats = np.arange(200) // 4
    out = {}
    for name, skill in [("flat (best on dev)", 0.3), ("TDC", 0.5)]:
        pred = np.where(rng.random(200) < skill, y, rng.choice(TOP20, size=200))
        out[name] = metrics.hierarchy_scores(y, pred, list(TOP20), materials=mats, n_boot=n_boot)
    return out


def reliability_by_model() -> dict:
    """Reliability bins of two models, each before (overconfident) and after temperature scaling."""
    rng = np.random.default_rng(1)
    out = {}
    for model in ("flat", "TDC"):
        conf = rng.uniform(0.3, 1.0, 500)
        probs = np.column_stack([conf, 1 - conf])
        readings = {}
        for reading, gap in [("before temperature scaling", 0.25), ("after temperature scaling", 0.0)]:
            y = np.where(rng.random(500) < conf - gap, 0, 1)
            readings[reading] = metrics.reliability_bins(probs, y, n_bins=10)
        out[model] = readings
    return out


def figures():
    return {
        "headline": lambda: plots.headline_figure(summary_20()),
        "recall": lambda: plots.recall_figure(per_class_20()),
        "confusion": lambda: plots.confusion_figure(confusion_20(0), confusion_20(1)),
        "routing": lambda: plots.routing_figure(levels_3()),
        "hierarchy": lambda: plots.hierarchy_figure(hierarchy_by_model()),
        "reliability": lambda: plots.reliability_figure(reliability_by_model()),
        "selective": lambda: plots.selective_figure(selective_by_model()),
    }


def selective_by_model():
    rng = np.random.default_rng(2)
    out = {}
    for model in ("flat", "TDC"):
        conf = rng.uniform(0.2, 1.0, 400)
        out[model] = metrics.selective_prediction(conf, (rng.random(400) < conf).astype(float))["curve"]
    return out


def data_axes(fig):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


@pytest.fixture(params=list(figures()))
def drawn(request):
    import matplotlib.pyplot as plt

    fig = figures()[request.param]()
    fig.canvas.draw()
    yield request.param, fig
    plt.close(fig)


def test_figure_has_title_and_axis_labels(drawn):
    name, fig = drawn
    suptitle = fig._suptitle.get_text() if fig._suptitle is not None else ""
    for ax in data_axes(fig):
        assert ax.get_title() or suptitle, f"{name}: an axes without a title"
        assert ax.get_xlabel() and ax.get_ylabel(), f"{name}: axis label missing"


def test_tick_labels_are_readable(drawn):
    name, fig = drawn
    for ax in fig.axes:
        for label in ax.get_xticklabels() + ax.get_yticklabels():
            if label.get_text():
                assert label.get_fontsize() >= 8, f"{name}: tick label {label.get_text()!r} at {label.get_fontsize()} pt"


def test_legend_does_not_cover_the_data(drawn):
    name, fig = drawn
    renderer = fig.canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in data_axes(fig):
            assert not box.overlaps(ax.get_window_extent(renderer)), f"{name}: legend over the axes {ax.get_title()!r}"
        for text in legend.get_texts():
            assert text.get_fontsize() >= 8


def test_headline_marks_a_missing_value_instead_of_a_zero_bar():
    fig = plots.headline_figure(summary_20())
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert len(heights) == 2 * 3 and min(heights) > 0, heights  # 2 models x 3 metrics; the estimate is no bar
    summary = summary_20()
    del summary["tdc"]["macro_f1"]
    ax = plots.headline_figure(summary).axes[0]
    assert [t.get_text() for t in ax.texts] == ["n/a"], "a metric the TDC lacks is marked, not a zero bar"
    labels = [h.get_label() for h in ax.get_legend_handles_labels()[0]] + ax.get_legend_handles_labels()[1]
    assert any("not a result" in lb for lb in labels), labels
    assert "Flat baseline vs TDC" in ax.get_title()


def test_headline_chance_lines_span_only_their_metric():
    fig = plots.headline_figure(summary_20())
    ax = fig.axes[0]
    ticks = dict(zip([t.get_text() for t in ax.get_xticklabels()], ax.get_xticks()))
    spans = {}
    for coll in (c for c in ax.collections if ":" in c.get_label()):  # "majority class (top-1): 0.10", ...
        (x0, y0), (x1, _) = coll.get_segments()[0]
        spans[round(y0, 2)] = (x0, x1)
    assert set(spans) == {0.1, 0.06, 0.05}
    for y, metric in [(0.1, "top-1"), (0.06, "top-1"), (0.05, "balanced accuracy")]:
        x0, x1 = spans[y]
        assert x0 < ticks[metric] < x1 and x1 - x0 < 1, (y, metric, spans[y])


def test_headline_table_gives_every_number_with_its_interval(tmp_path):
    out = tmp_path / "headline.csv"
    plots.headline_table(summary_20(), out)
    lines = out.read_text().splitlines()
    assert lines[0] == "model,top-1,balanced accuracy,macro-F1"
    assert lines[1] == "flat ce,0.250 [0.200–0.300],0.200 [0.150–0.250],0.150 [0.100–0.200]"
    assert lines[3] == f"\"{plots.ESTIMATE_LABEL}\",0.400 [0.350–0.450],0.300,n/a"


def test_gallery_titles_are_readable(tmp_path):
    import matplotlib.pyplot as plt

    from cbedtdc.synth.gallery import gallery_figure

    rng = np.random.default_rng(0)
    raw = write_challenge_file(tmp_path / "batch_train_0.h5",
                               [make_sample(f"sample_{k}_0", sg, f"mp-{sg}", class_index=k, rng=rng)
                                for k, sg in enumerate(TOP20[:6])])
    fig, examples = gallery_figure([raw], TOP20[:6])
    assert sorted(examples) == sorted(TOP20[:6])
    titles = [ax.title for ax in fig.axes if ax.get_title()] + [ax._left_title for ax in fig.axes if ax.get_title("left")]
    assert titles and all(t.get_fontsize() >= 8 for t in titles)
    assert fig._suptitle.get_fontsize() >= 10
    plt.close(fig)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    height, width, _ = matplotlib.image.imread(path).shape
    assert height > 200 and width > 300
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_hierarchy_figure_has_a_bar_per_model_and_level_with_intervals(tmp_path):
    from cbedtdc.crystallography import LEVELS

    scores = hierarchy_by_model()
    fig = plots.hierarchy_figure(scores)
    for ax, metric in zip(fig.axes, ("top1", "balanced_accuracy")):
        heights = [p.get_height() for p in ax.patches]
        assert len(heights) == 2 * len(LEVELS)
        assert heights[len(LEVELS):] == pytest.approx([scores["TDC"][lv][metric] for lv in LEVELS])
        assert len([c for c in ax.containers if getattr(c, "errorbar", None) is not None]) == 2
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        assert ticks[0] == "crystal\nsystem\n(7)" and ticks[-1] == "space\ngroup\n(20)"
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in fig.axes[0].get_xticklabels()]
    assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:])), "level names run into each other"
    legend = fig.legends[0].get_window_extent()
    for ax in fig.axes:
        assert not legend.overlaps(ax.xaxis.label.get_window_extent()), "legend over the axis label"
        assert not any(legend.overlaps(t.get_window_extent()) for t in ax.get_xticklabels())
    out = tmp_path / "hierarchy.png"
    plots.plot_hierarchy(scores, out)
    assert_png(out)


def test_hierarchy_figure_draws_without_intervals():
    fig = plots.hierarchy_figure(hierarchy_by_model(n_boot=0))
    assert all(c.errorbar is None for ax in fig.axes for c in ax.containers)


def test_reliability_figure_draws_the_diagonal_and_each_reading_with_its_ece(tmp_path):
    bins = reliability_by_model()
    fig = plots.reliability_figure(bins)
    assert [ax.get_title() for ax in fig.axes] == ["Calibration: flat", "Calibration: TDC"]
    for ax, model in zip(fig.axes, bins):
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        assert lines["perfect calibration"].get_xydata().tolist() == [[0, 0], [1, 1]]
        for reading, b in bins[model].items():
            label = f"{reading} (ECE {metrics.ece_from_bins(b):.3f})"
            assert len(lines[label].get_xdata()) == sum(1 for x in b if x["count"])
    out = tmp_path / "reliability.png"
    plots.plot_reliability(bins, out)
    assert_png(out)


def test_hierarchy_plot_rejects_bad_input_and_writes_nothing(tmp_path):
    good = hierarchy_by_model(n_boot=0)
    out = tmp_path / "h.png"
    with pytest.raises(ValueError, match=r"give \{model name: metrics.hierarchy_scores\(...\)\}"):
        plots.plot_hierarchy({}, out)
    with pytest.raises(ValueError, match=r"scores_by_model\['TDC'\] lacks the levels \['space_group'\]"):
        plots.plot_hierarchy({"TDC": {k: v for k, v in good["TDC"].items() if k != "space_group"}}, out)
    bad = {**good["TDC"], "laue_class": {"top1": 1.5, "balanced_accuracy": 0.2}}
    with pytest.raises(ValueError, match=r"\['laue_class'\]\['top1'\] = 1.5: give a fraction in \[0, 1\]"):
        plots.plot_hierarchy({"TDC": bad}, out)
    assert not out.exists()


def test_reliability_plot_rejects_bad_input_and_writes_nothing(tmp_path):
    bins = reliability_by_model()["flat"]["after temperature scaling"]
    out = tmp_path / "r.png"
    with pytest.raises(ValueError, match=r"bins_by_model\['flat'\] is a list: give \{reading: bins\}"):
        plots.plot_reliability({"flat": bins}, out)
    empty = [{**b, "count": 0, "confidence": None, "accuracy": None} for b in bins]
    with pytest.raises(ValueError, match=r"\['flat'\]\['after'\]: every bin is empty"):
        plots.plot_reliability({"flat": {"after": empty}}, out)
    with pytest.raises(ValueError, match="give the list of bin dicts of metrics.reliability_bins"):
        plots.plot_reliability({"flat": {"after": "bins.json"}}, out)
    assert not out.exists()


def test_selective_figure_draws_each_models_curve_and_rejects_bad_input():
    curves = selective_by_model()
    fig = plots.selective_figure(curves)
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    assert set(lines) == {"flat", "TDC"}
    assert lines["flat"].get_xydata()[:, 1].tolist() == [p["accuracy"] for p in curves["flat"]]
    with pytest.raises(ValueError, match="accuracy"):
        plots.selective_figure({"flat": [{"coverage": 0.5, "accuracy": 1.5}]})
