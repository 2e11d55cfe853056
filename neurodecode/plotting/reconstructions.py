"""Reconstruction figures: one row per trial, columns stimulus | low-level | reconstruction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from neurodecode.validation import InvalidInputError


def _as_hwc(images, name: str) -> np.ndarray:
    """(N, H, W, 3) float in [0, 1] from uint8 (N, H, W, 3) or float (N, 3, H, W)."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    images = np.asarray(images)
    if images.ndim != 4:
        raise InvalidInputError(f"{name} has shape {images.shape}; expected 4-D images.")
    if images.dtype == np.uint8:
        if images.shape[-1] != 3:
            raise InvalidInputError(f"{name} has shape {images.shape}; expected (N, H, W, 3).")
        return images.astype(np.float32) / 255.0
    if images.shape[1] != 3:
        raise InvalidInputError(f"{name} has shape {images.shape}; expected (N, 3, H, W) floats.")
    return np.clip(images.transpose(0, 2, 3, 1), 0.0, 1.0)


def plot_reconstructions(
    stimuli,
    lowlevel,
    recons,
    path: str | Path,
    n_rows: int = 8,
    titles: tuple[str, str, str] = ("stimulus", "low-level", "reconstruction"),
    extra_columns: dict | None = None,
) -> Path:
    """Save a grid of test stimuli beside their low-level and final reconstructions.

    Parameters
    ----------
    stimuli : (N, H, W, 3) uint8 or (N, 3, H, W) floats in [0, 1]
    lowlevel : same forms, or None
        Blurry low-level images; the column is left out when None.
    recons : same forms
        Final reconstructions.
    path : path
        Output file (format from the suffix, e.g. ``.png``, ``.pdf``).
    n_rows : int
        Trials shown (the first ``n_rows``).
    titles : tuple of str
        Column titles.
    extra_columns : dict, optional
        Title -> images (same forms and trial order), shown after the reconstructions (e.g. the
        generator's output from the true embeddings, the ceiling of the reconstruction).

    Returns
    -------
    Path
        ``path``.
    """
    from matplotlib.figure import Figure

    columns = [_as_hwc(stimuli, "stimuli")]
    names = [titles[0]]
    if lowlevel is not None:
        columns.append(_as_hwc(lowlevel, "lowlevel"))
        names.append(titles[1])
    columns.append(_as_hwc(recons, "recons"))
    names.append(titles[2])
    for title, images in (extra_columns or {}).items():
        columns.append(_as_hwc(images, str(title)))
        names.append(str(title))
    n = min(len(c) for c in columns)
    if n == 0 or any(len(c) != len(columns[0]) for c in columns):
        raise InvalidInputError(
            f"the columns {names} have {[len(c) for c in columns]} images; expected the "
            "same non-zero number, in trial order."
        )
    rows = min(n, n_rows)
    fig = Figure(figsize=(1.6 * len(columns), 1.6 * rows))
    axes = fig.subplots(rows, len(columns), squeeze=False)
    for r in range(rows):
        for c, images in enumerate(columns):
            ax = axes[r, c]
            ax.imshow(images[r], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(names[c], fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
