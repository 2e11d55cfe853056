"""Retrieval figures: retrieval examples and simple brain-volume mosaics.

Functions take arrays, never paths to data, and write the figure to ``path`` when one is given.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def plot_ladder(
    rows: Sequence[tuple[str, dict]],
    path: str | Path | None = None,
    title: str = "",
) -> Figure:
    """The ceiling ladder as paired horizontal bars: top-1 in both directions per rung.

    Parameters
    ----------
    rows : sequence of (name, rung)
        Top (the limit) to bottom (chance); each rung has ``brain_to_image_top1`` and
        ``image_to_brain_top1`` (fractions), e.g.
        :func:`neurodecode.demo.ladder.ladder_rows`.
    path : str or Path, optional
        PNG written if given.
    title : str
    """
    names = [name for name, _ in rows]
    b2i = np.array([r["brain_to_image_top1"] for _, r in rows])
    i2b = np.array([r["image_to_brain_top1"] for _, r in rows])
    fig = Figure(figsize=(6.4, 0.45 * len(rows) + 1.0))
    ax = fig.subplots()
    y = np.arange(len(rows))[::-1]
    ax.barh(y + 0.2, b2i, height=0.38, label="brain -> image", color="tab:blue")
    ax.barh(y - 0.2, i2b, height=0.38, label="image -> brain", color="tab:orange")
    for yy, a, b in zip(y, b2i, i2b):
        ax.text(a + 0.01, yy + 0.2, f"{a:.3f}", va="center", fontsize=7)
        ax.text(b + 0.01, yy - 0.2, f"{b:.3f}", va="center", fontsize=7)
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("top-1 identification accuracy")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
