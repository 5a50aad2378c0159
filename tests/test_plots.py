"""Every figure of the report, rendered from realistic tables: titled, labelled, readable, legends off the data."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures import make_sample, write_challenge_file

from cbedtdc import plots
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


def figures():
    return {
        "headline": lambda: plots.headline_figure(summary_20()),
        "recall": lambda: plots.recall_figure(per_class_20()),
        "confusion": lambda: plots.confusion_figure(confusion_20(0), confusion_20(1)),
        "routing": lambda: plots.routing_figure(levels_3()),
    }


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
    assert len(heights) == 3 * 3 - 1 and min(heights) > 0, heights  # 3 models x 3 metrics, no macro-F1 estimate
    assert [t.get_text() for t in ax.texts] == ["n/a"]
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
    assert lines[3] == "TDC estimated (perfect routing; paper style),0.400 [0.350–0.450],0.300,n/a"


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
