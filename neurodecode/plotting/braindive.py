"""BrainDiVE figures: an ROI's guided samples above unguided ones, each labelled by the judge."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def plot_guided_vs_unguided(
    rows: Sequence[tuple[str, np.ndarray, Sequence[str]]],
    title: str,
    path: str | Path,
) -> Path:
    """One row of images per sample set, each titled with its label.

    Parameters
    ----------
    rows : sequence of (name, images uint8 (n, H, W, 3), labels (n,))
        E.g. the guided and the unguided samples of one ROI, best first; every row the same n.
    title : str
    path : str or Path
        PNG written (folder created).

    Returns
    -------
    Path
    """
    from matplotlib.figure import Figure

    n = len(rows[0][1])
    fig = Figure(figsize=(1.0 * n, 1.25 * len(rows)))
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (name, images, labels) in enumerate(rows):
        for ax, image, label in zip(axes[r], images, labels):
            ax.imshow(image)
            ax.set_title(str(label), fontsize=6)
            ax.axis("off")
        axes[r][0].text(
            -0.1,
            0.5,
            name,
            transform=axes[r][0].transAxes,
            fontsize=6,
            rotation=90,
            ha="right",
            va="center",
        )
    fig.suptitle(title, fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
