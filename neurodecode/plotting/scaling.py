"""Data-scaling figure: identification accuracy against the amount of training data per subject.

Functions take arrays, never paths to data, and write the figure to ``path`` when one is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from neurodecode.validation import InvalidInputError

#: the two retrieval directions, as (metrics key, panel title)
DIRECTIONS = (
    ("brain_to_image_top1", "brain -> image"),
    ("image_to_brain_top1", "image -> brain"),
)


def plot_data_scaling(
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | Path | None = None,
    chance: float | None = None,
    xlabel: str = "training sessions",
    title: str | None = None,
) -> Figure:
    """Top-1 identification against training data, one line per decoder, one panel per direction.

    Parameters
    ----------
    curves : mapping
        Label -> ``{"sessions": (n,), "brain_to_image_top1": (n,), "image_to_brain_top1": (n,)}``
        (amounts of training data, e.g. sessions, and accuracies in [0, 1] at each). Labels
        containing ``"new subject"`` are drawn dashed.
    path : str or Path, optional
        Where to save the figure (format from the suffix).
    chance : float, optional
        Chance level (``1 / n_way``), drawn as a dotted line.
    xlabel, title : str
        Axis label and figure title.

    Returns
    -------
    matplotlib.figure.Figure
        Two panels sharing the y axis; the x axis is logarithmic.
    """
    if not curves:
        raise InvalidInputError("plot_data_scaling needs at least one curve.")
    checked = {}
    for label, curve in curves.items():
        missing = [k for k in ("sessions", *(d for d, _ in DIRECTIONS)) if k not in curve]
        if missing:
            raise InvalidInputError(f"curve {label!r} lacks {missing}.")
        x = np.asarray(curve["sessions"], dtype=float)
        ys = [np.asarray(curve[d], dtype=float) for d, _ in DIRECTIONS]
        if x.ndim != 1 or any(y.shape != x.shape for y in ys) or not len(x):
            raise InvalidInputError(
                f"curve {label!r}: sessions and both accuracies need the same length (n,) > 0; "
                f"got {x.shape}, {[y.shape for y in ys]}."
            )
        if np.any(x <= 0):
            raise InvalidInputError(f"curve {label!r}: sessions must be positive (log axis).")
        checked[label] = (x, ys)
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    ticks = np.unique(np.concatenate([x for x, _ in checked.values()]))
    for ax, (k, (_, name)) in zip(axes, enumerate(DIRECTIONS), strict=True):
        for label, (x, ys) in checked.items():
            style = "--" if "new subject" in label else "-"
            ax.plot(x, ys[k], style, marker="o", label=label)
        if chance is not None:
            ax.axhline(chance, color="grey", linestyle=":", label="chance")
        ax.set_xscale("log")
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1")
    axes[1].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
