"""The robustness figure of the report: balanced accuracy against the strength of each test-time perturbation
(:mod:`cbedtdc.perturb`, :mod:`cbedtdc.evaluate.robustness`), one curve per model. Pure: reads rows, draws with the
figure helpers of :mod:`cbedtdc.plots`."""

from __future__ import annotations

import numpy as np

from cbedtdc.errors import InputError
from cbedtdc.plots import TICK_PT, _legend_below, _plt, _save

__all__ = ["robustness_figure", "plot_robustness"]

_STRENGTH_UNITS = {"dose": "electrons per bright-field pixel", "centre_offset": "shift / field of view",
                   "q_scale": "magnification (camera-length error)", "blur": "sigma / field of view",
                   "blank_panel": "blank panel", "mistilt": "beam mistilt s.d. / disk radius",
                   "thickness": "thickness bin upper edge [A]"}


def robustness_figure(rows: list[dict]):
    """One panel per perturbation of ``robustness.csv`` (:mod:`cbedtdc.evaluate.robustness`): balanced accuracy
    against strength with its interval, one curve per model, the model's clean score dotted. The rendered
    perturbations' curves (mistilt, thickness) hold the run's own rendering of their samples, dotted."""
    plt = _plt()
    clean = {r["model"]: float(r["balanced_accuracy"]) for r in rows if r["perturbation"] == "clean"}
    names = list(dict.fromkeys(r["perturbation"] for r in rows if r["perturbation"] != "clean"))
    if not clean or not names:
        raise InputError("robustness.csv has no clean row or no perturbation: rerun rule robustness")
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.0), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names):
        for i, model in enumerate(clean):
            pts = [r for r in rows if r["perturbation"] == name and r["model"] == model]
            x = np.array([float(r["strength"]) for r in pts])
            y, lo, hi = (np.array([float(r[k]) for r in pts]) for k in ("balanced_accuracy", "lo", "hi"))
            # a percentile interval need not hold its point estimate (a skewed bootstrap at near-chance scores): that
            # side's bar is then empty, not negative
            yerr = np.clip(np.nan_to_num([y - lo, hi - y]), 0.0, None)
            ax.errorbar(x, y, yerr=yerr, marker="o", ms=3, capsize=2, color=f"C{i}", label=model)
            # a rendered perturbation (rows with a paired difference) is scored on other samples: its curve holds the
            # run's own rendering of them (the row without a difference), the reference drawn dotted
            own = [float(r["balanced_accuracy"]) for r in pts if r.get("difference") in (None, "")]
            rendered = len(own) < len(pts)
            ax.axhline(own[0] if rendered and own else clean[model], color=f"C{i}", ls=":", lw=0.8)
        ax.set_xscale("log" if name == "dose" else "linear")
        if name == "blank_panel":
            ax.set_xticks(sorted({int(float(r["strength"])) for r in rows if r["perturbation"] == name}))
        ax.set_xlabel(_STRENGTH_UNITS.get(name, "strength"), fontsize=TICK_PT + 1)
        ax.set_title(name.replace("_", " "), fontsize=TICK_PT + 2)
        ax.tick_params(labelsize=TICK_PT)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("balanced accuracy (dotted: clean)", fontsize=TICK_PT + 1)
    fig.tight_layout()  # the x labels inside the figure, the legend below it
    _legend_below(fig, axes[0], ncol=len(clean))
    return fig


def plot_robustness(rows: list[dict], out) -> None:
    """Write :func:`robustness_figure` to ``out`` (PNG)."""
    _save(robustness_figure(rows), out)
