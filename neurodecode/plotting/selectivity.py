"""Selectivity figures: heat maps of unit x ROI (or layer x ROI) alignment scores."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def plot_alignment(
    matrix: np.ndarray,
    row_names: Sequence[str],
    col_names: Sequence[str],
    path: str | Path | None = None,
    title: str = "",
):
    """Heat map of a rows x columns score matrix (units x ROIs, layers x ROIs)."""
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix, dtype=float)
    fig = Figure(figsize=(1.0 + 0.45 * len(col_names), 1.0 + 0.3 * len(row_names)))
    ax = fig.subplots()
    limit = np.nanmax(np.abs(matrix)) if matrix.size else 1.0
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(col_names)), col_names, rotation=60, fontsize=7, ha="right")
    ax.set_yticks(range(len(row_names)), [str(r) for r in row_names], fontsize=7)
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
