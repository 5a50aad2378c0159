"""A PNG gallery with one CBED stack (its three zone axes) per space group.

Works on any challenge-layout files (generated or real): the first sample found of each
requested class is shown on a log scale, train files first.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..io import STACK, atomic_path, parse_space_group, sample_order, to_text
from ..layout import SPLITS, split_of
from cbedtdc.errors import InputError

__all__ = ["find_examples", "gallery_figure", "plot_gallery"]

log = logging.getLogger(__name__)


def _split_rank(path: Path) -> tuple:
    try:
        return (SPLITS.index(split_of(path.name)), path.name)
    except ValueError:
        return (len(SPLITS), path.name)


def find_examples(paths, classes) -> dict[int, tuple[Path, str]]:
    """``{space_group: (file, group)}``: the first sample of each class in ``classes``.

    Files are scanned in split order (train, dev, test) and only attributes are read; the scan
    stops once every class has an example. Unreadable samples are skipped with a warning.
    """
    import h5py  # lazy

    wanted = {int(c) for c in classes}
    found: dict[int, tuple[Path, str]] = {}
    for path in sorted((Path(p) for p in paths), key=_split_rank):
        with h5py.File(path, "r") as f:
            for name in sorted(f.keys(), key=sample_order):
                try:
                    sg = parse_space_group(f[name].attrs.get("space_group"))
                except (ValueError, KeyError, OSError) as err:
                    log.warning("%s/%s: skipped (%s)", path.name, name, err)
                    continue
                if sg in wanted and sg not in found:
                    found[sg] = (path, name)
        if len(found) == len(wanted):
            break
    return found


def _display(panel: np.ndarray) -> np.ndarray:
    """Log scale with robust limits: the bright-field disk saturates, the background shows."""
    img = np.log10(np.maximum(panel.astype(np.float64), 0.0) + 1e-4)
    lo, hi = np.percentile(img, [1.0, 99.7])
    return np.clip((img - lo) / max(hi - lo, 1e-9), 0.0, 1.0)


def gallery_figure(paths, classes, classes_per_row: int = 4):
    """The gallery figure and the examples shown (see :func:`plot_gallery`)."""
    import h5py  # lazy
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = [int(c) for c in classes]
    examples = find_examples(paths, classes)
    missing = [c for c in classes if c not in examples]
    if missing:
        log.warning("gallery: no sample of space group(s) %s in the %d files", missing, len(paths))
    shown = [c for c in classes if c in examples]
    if not shown:
        raise InputError(f"gallery: none of the classes {classes} occurs in the given files")
    per_row = max(1, min(classes_per_row, len(shown)))
    rows = -(-len(shown) // per_row)
    # 1.6 in a panel: the 8 pt titles (space group, formula, zone axis) fit above their panel
    fig, axes = plt.subplots(rows, 3 * per_row, figsize=(3 * per_row * 1.6, rows * 2.1), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, sg in enumerate(shown):
        path, group = examples[sg]
        with h5py.File(path, "r") as f:
            stack = f[group][STACK][()]
            attrs = f[group].attrs
            formula = to_text(attrs.get("formula")) or ""
            z_dirs = np.asarray(attrs.get("z_dirs", np.zeros((1, 3, 3), int))).reshape(-1, 3)
        r, c0 = divmod(k, per_row)
        for p in range(min(3, len(stack))):
            ax = axes[r, 3 * c0 + p]
            ax.imshow(_display(stack[p]), cmap="inferno", interpolation="nearest")
            label = "[" + " ".join(str(int(v)) for v in z_dirs[p]) + "]" if p < len(z_dirs) else ""
            ax.set_title(f"SG {sg}  {formula[:14]}\n{label}" if p == 0 else f"\n{label}", fontsize=8,
                         loc="left" if p == 0 else "center")
    title = f"One stack per class ({len(shown)} classes; panels = 3 zone axes; log intensity)"
    if missing:
        title += f"\nno sample of: {', '.join(map(str, missing))}"
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig, examples


def plot_gallery(paths, classes, out, classes_per_row: int = 4, dpi: int = 100) -> dict[int, tuple[Path, str]]:
    """Write a PNG with one row segment of three panels per class; returns the examples shown.

    Classes without any sample are listed in the figure title and logged, never dropped silently.

    Parameters
    ----------
    paths : sequence of path-like
        Challenge-layout files.
    classes : sequence of int
        Space groups to show, in this order.
    out : path-like
        PNG to write (atomically).
    """
    import matplotlib.pyplot as plt

    fig, examples = gallery_figure(paths, classes, classes_per_row)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    log.info("gallery: %d classes -> %s", len(examples), out)
    return examples
