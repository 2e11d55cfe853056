"""Retrieval figures: retrieval examples and simple brain-volume mosaics.

Functions take arrays, never paths to data, and write the figure to ``path`` when one is given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from neurodecode.evaluate.retrieval import cosine_scores


def plot_retrieval_examples(
    images: np.ndarray,
    brain_embeddings: np.ndarray,
    image_embeddings: np.ndarray,
    path: str | Path | None = None,
    n_rows: int = 6,
    n_retrieved: int = 5,
    seed: int = 0,
) -> Figure:
    """Test trials with the images their decoded embeddings retrieve.

    Parameters
    ----------
    images : ndarray, shape (N, H, W, 3), uint8
        The test stimuli, aligned with both embedding arrays.
    brain_embeddings, image_embeddings : ndarray, shape (N, ...)
        Decoded and true embeddings; ranked by cosine similarity.
    n_rows, n_retrieved : int
        Trials shown (drawn at random) and retrieved images per trial.

    Returns
    -------
    matplotlib.figure.Figure
        Column 0 is the seen image, then the top retrieved images (green frame = correct).
    """
    scores = cosine_scores(brain_embeddings, image_embeddings)
    rows = np.random.default_rng(seed).choice(
        len(images), size=min(n_rows, len(images)), replace=False
    )
    fig = Figure(figsize=(1.4 * (n_retrieved + 1), 1.4 * len(rows)))
    axes = fig.subplots(len(rows), n_retrieved + 1, squeeze=False)
    for r, i in enumerate(rows):
        order = np.argsort(-scores[i])[:n_retrieved]
        axes[r, 0].imshow(images[i])
        axes[r, 0].set_ylabel(f"trial {i}", fontsize=7)
        for c, j in enumerate(order, start=1):
            ax = axes[r, c]
            ax.imshow(images[j])
            if j == i:
                for spine in ax.spines.values():
                    spine.set_edgecolor("limegreen")
                    spine.set_linewidth(3)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("seen", fontsize=8)
    for c in range(1, n_retrieved + 1):
        axes[0, c].set_title(f"top-{c}", fontsize=8)
    fig.suptitle("Retrieval from brain activity (green = the image seen)", fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_volume_mosaic(
    volume: np.ndarray,
    path: str | Path | None = None,
    title: str = "",
    cmap: str = "viridis",
    n_slices: int = 8,
) -> Figure:
    """Axial slices of a (X, Y, Z) volume (NaN = transparent), for simulated grids without an
    anatomical template."""
    volume = np.asarray(volume, dtype=float)
    zs = np.linspace(0, volume.shape[2] - 1, n_slices).round().astype(int)
    fig = Figure(figsize=(1.6 * n_slices, 2.0))
    axes = fig.subplots(1, n_slices)
    finite = volume[np.isfinite(volume)]
    vmin, vmax = (finite.min(), finite.max()) if finite.size else (0, 1)
    for ax, z in zip(axes, zs):
        image = ax.imshow(volume[:, :, z].T, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_title(f"z={z}", fontsize=7)
        ax.axis("off")
    fig.colorbar(image, ax=axes, shrink=0.7)
    fig.suptitle(title, fontsize=9)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
