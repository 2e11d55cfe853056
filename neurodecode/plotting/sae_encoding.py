"""Figures of the SAE-encoding analysis: per-ROI variance partition of two feature spaces."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def plot_variance_partition(
    summary: Mapping[str, Mapping[str, float]],
    band_names: Sequence[str],
    path: str | Path | None = None,
    title: str = "",
):
    """Stacked bars per ROI: shared, unique A, unique B (over the noise ceiling); joint as dots.

    Positive parts stack upwards from 0 and negative parts (a joint model that overfits, or
    suppression) downwards, so the dot (their sum) need not sit on a bar's end.

    Parameters
    ----------
    summary : dict of ROI -> dict
        :func:`neurodecode.analysis.sae_encoding.roi_partition_summary` output.
    band_names : (str, str)
        The two spaces, in the order of the fit.
    """
    from matplotlib.figure import Figure

    a, b = band_names
    rois = list(summary)
    get = lambda key: np.array([summary[r][key] for r in rois], dtype=float)  # noqa: E731
    unique_a, shared, unique_b = (
        get(f"unique_{a}_over_nc"),
        get("shared_over_nc"),
        get(f"unique_{b}_over_nc"),
    )
    fig = Figure(figsize=(1.5 + 0.45 * len(rois), 3.6))
    ax = fig.subplots()
    x = np.arange(len(rois))
    above, below = np.zeros(len(rois)), np.zeros(len(rois))  # positive parts up, negative down
    for values, label, colour in (
        (shared, "shared", "0.6"),
        (unique_a, f"unique {a}", "tab:blue"),
        (unique_b, f"unique {b}", "tab:orange"),
    ):
        values = np.nan_to_num(values)
        bottom = np.where(values >= 0, above, below)
        ax.bar(x, values, bottom=bottom, color=colour, label=label, width=0.7)
        above = above + np.maximum(values, 0)
        below = below + np.minimum(values, 0)
    ax.plot(x, get("r2_over_nc_joint"), "k.", label="joint")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(x, rois, rotation=60, fontsize=7, ha="right")
    ax.set_ylabel("R² / noise ceiling", fontsize=8)
    ax.legend(fontsize=7, frameon=False)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
