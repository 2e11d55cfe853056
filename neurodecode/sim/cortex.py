"""Cortical sources and the BOLD point-spread: what a simulated voxel samples.

The tuning of the simulated brain lives in *sources* — neural populations placed through
nsdgeneral about ``spacing`` voxels apart (a greedy Poisson-disk sample of the voxel grid, in
C order, within each ROI and the unlabelled rest, so every voxel lies within ``spacing`` of a
source of its own region). Each voxel sees the sources of its region around it through a
Gaussian point-spread function (rows of the mixing matrix sum to 1):

    voxel response = sum_k M[v, k] source response_k

and so does the sources' trial-to-trial noise (see :mod:`neurodecode.sim.noise`). Neighbouring
voxels therefore share both signal and noise, as in real BOLD data, where the hemodynamic point
spread (about 2 mm FWHM for gradient-echo BOLD at 7 T, Shmuel et al. 2007, NeuroImage 35:539),
head-motion interpolation and physiological noise correlate neighbouring 1.8 mm voxels; the
information a decoder can pool grows with the number of sources, not of voxels. Keeping the
mixing within regions keeps the localiser ROIs (defined on measured data, so dominated by their
selective population) free of their neighbours' tuning.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
from scipy.spatial import cKDTree


def _poisson_disk(ijk: np.ndarray, spacing: float) -> np.ndarray:
    """Greedy Poisson-disk sample of ``ijk`` in the given order (indices)."""
    reach = int(np.ceil(spacing))
    grid = np.arange(-reach, reach + 1)
    offsets = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), axis=-1).reshape(-1, 3)
    offsets = offsets[(offsets**2).sum(axis=1) < spacing**2]
    lo = ijk.min(axis=0) - reach
    shape = ijk.max(axis=0) - lo + reach + 1
    blocked = np.zeros(tuple(shape), dtype=bool)
    chosen = []
    for index, point in enumerate(ijk - lo):
        if blocked[tuple(point)]:
            continue
        chosen.append(index)
        near = point + offsets
        blocked[near[:, 0], near[:, 1], near[:, 2]] = True
    return np.asarray(chosen, dtype=np.int64)


def _region_groups(n: int, regions: np.ndarray | None) -> list[np.ndarray]:
    if regions is None:
        return [np.arange(n)]
    return [np.flatnonzero(regions == r) for r in np.unique(regions)]


def place_sources(ijk: np.ndarray, spacing: float, regions: np.ndarray | None = None) -> np.ndarray:
    """Indices (into ``ijk``, ascending) of the source voxels: no two closer than ``spacing``.

    Within each region (e.g. ROI label; all voxels when ``regions`` is None), voxels are visited
    in their given order and a voxel becomes a source unless one of its region already lies
    closer than ``spacing``; so every voxel has a source of its own region within ``spacing``.
    ``spacing <= 1`` makes every voxel a source.
    """
    if spacing <= 1:
        return np.arange(len(ijk))
    chosen = [g[_poisson_disk(ijk[g], spacing)] for g in _region_groups(len(ijk), regions)]
    return np.sort(np.concatenate(chosen))


def psf_support(sigma: float, spacing: float) -> float:
    """Farthest distance (voxels) at which a voxel sees a source (0: each voxel is one source)."""
    if sigma > 0:
        return max(2 * sigma, spacing)
    return spacing if spacing > 1 else 0.0


def _mixing_block(voxel_ijk: np.ndarray, source_ijk: np.ndarray, sigma: float, spacing: float):
    n_vox = len(voxel_ijk)
    sources = cKDTree(source_ijk.astype(np.float64))
    if sigma <= 0:
        _, nearest = sources.query(voxel_ijk.astype(np.float64))
        return np.arange(n_vox), np.asarray(nearest), np.ones(n_vox)
    voxels = cKDTree(voxel_ijk.astype(np.float64))
    radius = psf_support(sigma, spacing) + 1e-9
    d = voxels.sparse_distance_matrix(sources, radius, output_type="coo_matrix")
    return d.row, d.col, np.exp(-(d.data**2) / (2 * sigma**2))


def psf_mixing(
    voxel_ijk: np.ndarray,
    source_ijk: np.ndarray,
    sigma: float,
    spacing: float,
    voxel_regions: np.ndarray | None = None,
    source_regions: np.ndarray | None = None,
) -> scipy.sparse.csr_matrix:
    """Gaussian point-spread weights of the sources in each voxel, rows summing to 1.

    A voxel sees the sources of its own region (all sources when no regions are given) within
    :func:`psf_support` voxels; every voxel has one within ``spacing`` (see
    :func:`place_sources`). With ``sigma <= 0`` each voxel sees its nearest source only.

    Returns
    -------
    scipy.sparse.csr_matrix, shape (n_voxels, n_sources)
    """
    n_vox, n_src = len(voxel_ijk), len(source_ijk)
    rows, cols, vals = [], [], []
    if voxel_regions is None or source_regions is None:
        pairs = [(np.arange(n_vox), np.arange(n_src))]
    else:
        pairs = [
            (np.flatnonzero(voxel_regions == r), np.flatnonzero(source_regions == r))
            for r in np.unique(voxel_regions)
        ]
    for v_index, s_index in pairs:
        r, c, w = _mixing_block(voxel_ijk[v_index], source_ijk[s_index], sigma, spacing)
        rows.append(v_index[r])
        cols.append(s_index[c])
        vals.append(w)
    weights = scipy.sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_vox, n_src),
    )
    weights.sort_indices()
    row_sum = np.asarray(weights.sum(axis=1)).ravel()
    return scipy.sparse.csr_matrix(scipy.sparse.diags(1.0 / row_sum) @ weights)


def patch_field(
    positions: np.ndarray, n_blobs: int, radius: float, rng: np.random.Generator
) -> np.ndarray:
    """A smooth random field at ``positions``: a sum of ``n_blobs`` signed Gaussian blobs of SD
    ``radius`` centred on random positions (for properties that come in cortical patches)."""
    if len(positions) == 0:
        return np.zeros(0)
    centres = positions[rng.integers(len(positions), size=n_blobs)].astype(np.float64)
    signs = rng.choice([-1.0, 1.0], size=n_blobs)
    d2 = ((positions[:, None, :] - centres[None]) ** 2).sum(axis=2)
    return (np.exp(-d2 / (2 * radius**2)) * signs).sum(axis=1)
