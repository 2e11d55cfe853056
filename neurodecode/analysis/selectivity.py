"""Selectivity: which network units (SAE latents, neurons) line up with which brain regions.

This module owns the comparisons between artificial features and cortical responses, all on
arrays indexed by stimulus (rows = the same images on both sides):

- :func:`roi_responses` averages voxel responses within each ROI;
- :func:`unit_roi_alignment` scores every unit against every ROI (Pearson correlation of the
  unit's activation with the ROI-mean response, or the standardised weight of a unit in a ridge
  encoder of the ROI), and :func:`top_units_per_roi` / :func:`top_rois_per_unit` read tables off
  it;
- :func:`unit_label_preference` says which stimulus label (category) a unit fires for;
- representational similarity: :func:`representational_dissimilarity`, :func:`rsa` (Spearman
  correlation of RDM upper triangles, Kriegeskorte et al. 2008) and :func:`linear_cka`
  (Kornblith et al. 2019), with :func:`layer_roi_similarity` for a layers x ROIs table;
- :func:`neurodecode.plotting.selectivity.plot_alignment` draws the units x ROIs matrix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.stats
import torch

from neurodecode.validation import InvalidInputError, check_array, check_option

ArrayLike = np.ndarray | torch.Tensor


def _rows(name: str, array: ArrayLike) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    return check_array(name, np.asarray(array), ndim=2, kind="biuf", finite=True).astype(np.float64)


def roi_responses(
    responses: ArrayLike, roi_labels: Sequence[str], rois: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """Mean response of the voxels of each ROI.

    Parameters
    ----------
    responses : array, shape (n_stimuli, n_voxels)
    roi_labels : sequence of str, length n_voxels
        ROI name per voxel (``""`` for none).
    rois : sequence of str, optional
        ROIs to return (default: every non-empty label, sorted).

    Returns
    -------
    names : list of str
    means : ndarray, shape (n_stimuli, n_rois)
    """
    data = _rows("responses", responses)
    labels = np.asarray(roi_labels).astype(str)
    if labels.shape != (data.shape[1],):
        raise InvalidInputError(
            f"roi_labels has shape {labels.shape}; expected ({data.shape[1]},), one per voxel."
        )
    names = sorted(set(labels) - {""}) if rois is None else list(rois)
    missing = [n for n in names if not np.any(labels == n)]
    if missing:
        raise InvalidInputError(
            f"ROIs {missing} have no voxels; present: {sorted(set(labels) - {''})}."
        )
    return names, np.column_stack([data[:, labels == n].mean(1) for n in names])


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = x.std(0)
    return (x - x.mean(0)) / np.where(sd > 0, sd, np.inf)


def unit_roi_alignment(
    units: ArrayLike, rois: ArrayLike, method: str = "correlation", alpha: float = 1.0
) -> np.ndarray:
    """Alignment of every unit with every ROI over the same stimuli.

    Parameters
    ----------
    units : array, shape (n_stimuli, n_units)
        Unit activations (SAE latents, neurons, embedding dimensions).
    rois : array, shape (n_stimuli, n_rois)
        ROI responses (e.g. from :func:`roi_responses`).
    method : {"correlation", "encoding"}
        ``correlation``: Pearson r of each unit with each ROI (0 for a unit that never varies).
        ``encoding``: weights of a ridge regression (penalty ``alpha``) of each z-scored ROI on
        all z-scored units, i.e. the unit's unique contribution given the others.

    Returns
    -------
    ndarray, shape (n_units, n_rois)
    """
    check_option("method", method, ("correlation", "encoding"))
    u = _rows("units", units)
    r = _rows("rois", rois)
    if len(u) != len(r):
        raise InvalidInputError(
            f"units have {len(u)} stimuli (rows) but rois have {len(r)}; expected the same images."
        )
    uz, rz = _zscore(u), _zscore(r)
    if method == "correlation":
        return uz.T @ rz / len(u)
    gram = uz.T @ uz + alpha * np.eye(u.shape[1])
    return np.linalg.solve(gram, uz.T @ rz)


@dataclass
class AlignmentRow:
    """One (ROI, unit) pair of an alignment table."""

    roi: str
    rank: int
    unit: int
    score: float
    preferred_label: str | None = None


def top_units_per_roi(
    alignment: np.ndarray,
    roi_names: Sequence[str],
    k: int = 5,
    unit_labels: Sequence[str] | None = None,
) -> list[AlignmentRow]:
    """The ``k`` units with the highest alignment for each ROI (positive direction).

    ``unit_labels`` (one per unit, e.g. from :func:`unit_label_preference`) fills
    ``preferred_label``.
    """
    alignment = np.asarray(alignment)
    if alignment.ndim != 2 or alignment.shape[1] != len(roi_names):
        raise InvalidInputError(
            f"alignment has shape {alignment.shape}; expected (n_units, {len(roi_names)})."
        )
    rows = []
    for j, roi in enumerate(roi_names):
        order = np.argsort(-alignment[:, j], kind="stable")[:k]
        for rank, unit in enumerate(order):
            label = None if unit_labels is None else str(unit_labels[unit])
            rows.append(AlignmentRow(roi, rank, int(unit), float(alignment[unit, j]), label))
    return rows


def top_rois_per_unit(
    alignment: np.ndarray, roi_names: Sequence[str], units: Sequence[int] | None = None
) -> dict[int, tuple[str, float]]:
    """For each unit (default all), the ROI it predicts best and the score."""
    alignment = np.asarray(alignment)
    units = range(alignment.shape[0]) if units is None else units
    best = alignment.argmax(1)
    return {int(u): (roi_names[best[u]], float(alignment[u, best[u]])) for u in units}


def unit_label_preference(
    units: ArrayLike, labels: Sequence[str], label_order: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Mean activation of every unit per stimulus label, and the label it prefers.

    Parameters
    ----------
    units : array, shape (n_stimuli, n_units)
    labels : sequence of str, length n_stimuli
        Ground-truth label per stimulus (e.g. the simulated category).
    label_order : sequence of str, optional
        Column order (default sorted labels).

    Returns
    -------
    names : list of str
    means : ndarray, shape (n_units, n_labels)
    preferred : ndarray of str, shape (n_units,)
        ``argmax`` of ``means`` per unit.
    """
    u = _rows("units", units)
    labels = np.asarray(labels).astype(str)
    if labels.shape != (len(u),):
        raise InvalidInputError(
            f"labels has shape {labels.shape}; expected ({len(u)},), one per stimulus."
        )
    names = sorted(set(labels)) if label_order is None else list(label_order)
    means = np.column_stack(
        [
            u[labels == n].mean(0) if np.any(labels == n) else np.full(u.shape[1], np.nan)
            for n in names
        ]
    )
    preferred = np.array(names)[np.nanargmax(np.nan_to_num(means, nan=-np.inf), axis=1)]
    return names, means, preferred


# --------------------------------------------------------------------------------------------
# representational similarity


def representational_dissimilarity(x: ArrayLike, metric: str = "correlation") -> np.ndarray:
    """Representational dissimilarity matrix (RDM) over stimuli.

    Parameters
    ----------
    x : array, shape (n_stimuli, n_features)
    metric : {"correlation", "euclidean"}
        ``1 - Pearson r`` between stimulus patterns, or Euclidean distance.

    Returns
    -------
    ndarray, shape (n_stimuli, n_stimuli), zero diagonal
    """
    check_option("metric", metric, ("correlation", "euclidean"))
    x = _rows("x", x)
    if metric == "correlation":
        xc = x - x.mean(1, keepdims=True)
        norm = np.linalg.norm(xc, axis=1, keepdims=True)
        xc = xc / np.where(norm > 0, norm, np.inf)
        rdm = 1.0 - xc @ xc.T
    else:
        sq = (x**2).sum(1)
        rdm = np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * x @ x.T, 0.0))
    np.fill_diagonal(rdm, 0.0)
    return rdm


def rsa(rdm_a: np.ndarray, rdm_b: np.ndarray) -> float:
    """Spearman correlation of the upper triangles of two RDMs of the same stimuli."""
    a, b = np.asarray(rdm_a), np.asarray(rdm_b)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise InvalidInputError(
            f"RDMs have shapes {a.shape} and {b.shape}; expected two equal square matrices."
        )
    iu = np.triu_indices(len(a), k=1)
    return float(scipy.stats.spearmanr(a[iu], b[iu]).statistic)


def linear_cka(x: ArrayLike, y: ArrayLike) -> float:
    """Linear centred kernel alignment between two representations of the same stimuli.

    ``CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` (Kornblith et al. 2019), in [0, 1];
    invariant to rotations and isotropic scaling of either side.
    """
    xa, ya = _rows("x", x), _rows("y", y)
    if len(xa) != len(ya):
        raise InvalidInputError(
            f"x has {len(xa)} stimuli but y has {len(ya)}; expected the same stimuli (rows)."
        )
    xc, yc = xa - xa.mean(0), ya - ya.mean(0)
    cross = np.linalg.norm(yc.T @ xc) ** 2
    denom = np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    return float(cross / denom) if denom > 0 else 0.0


def layer_roi_similarity(
    layers: Mapping[str, ArrayLike], rois: Mapping[str, ArrayLike], measure: str = "cka"
) -> tuple[list[str], list[str], np.ndarray]:
    """Similarity of every network layer with every ROI (rows: layers, columns: ROIs).

    Parameters
    ----------
    layers : dict of str -> array, shape (n_stimuli, n_features)
    rois : dict of str -> array, shape (n_stimuli, n_voxels)
    measure : {"cka", "rsa"}
        Linear CKA, or RSA with correlation-distance RDMs.
    """
    check_option("measure", measure, ("cka", "rsa"))
    layer_names, roi_names = list(layers), list(rois)
    table = np.empty((len(layer_names), len(roi_names)))
    if measure == "rsa":
        layer_rdms = [representational_dissimilarity(layers[n]) for n in layer_names]
        roi_rdms = [representational_dissimilarity(rois[n]) for n in roi_names]
        for i, a in enumerate(layer_rdms):
            for j, b in enumerate(roi_rdms):
                table[i, j] = rsa(a, b)
    else:
        for i, ln in enumerate(layer_names):
            for j, rn in enumerate(roi_names):
                table[i, j] = linear_cka(layers[ln], rois[rn])
    return layer_names, roi_names, table
