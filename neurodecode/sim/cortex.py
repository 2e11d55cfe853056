"""Cortical sources and the BOLD point-spread: what a simulated voxel samples.

The tuning of the simulated brain lives in *sources* — neural populations placed through
nsdgeneral about ``spacing`` voxels apart (a greedy Poisson-disk sample of the voxel grid, in
C order, so every voxel lies within ``spacing`` of a source). Each voxel sees the sources
around it through a Gaussian point-spread function (rows of the mixing matrix sum to 1):

    voxel response = sum_k M[v, k] source response_k

and so does the sources' trial-to-trial noise (see :mod:`neurodecode.sim.noise`). Neighbouring
voxels therefore share both signal and noise, as in real BOLD data, where the hemodynamic point
spread (about 2 mm FWHM for gradient-echo BOLD at 7 T, Shmuel et al. 2007, NeuroImage 35:539),
head-motion interpolation and physiological noise correlate neighbouring 1.8 mm voxels; the
information a decoder can pool grows with the number of sources, not of voxels.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
from scipy.spatial import cKDTree


def place_sources(ijk: np.ndarray, spacing: float) -> np.ndarray:
    """Indices (into ``ijk``) of the source voxels: no two closer than ``spacing``.

    Voxels are visited in their given order; a voxel becomes a source unless one already lies
    closer than ``spacing``. ``spacing <= 1`` makes every voxel a source.
    """
    if spacing <= 1:
        return np.arange(len(ijk))
    reach = int(np.ceil(spacing))
    grid = np.arange(-reach, reach + 1)
    offsets = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), axis=-1).reshape(-1, 3)
    offsets = offsets[(offsets**2).sum(axis=1) < spacing**2]
    lo = ijk.min(axis=0) - reach
    shape = ijk.max(axis=0) - lo + reach + 1
    blocked = np.zeros(tuple(shape), dtype=bool)
    local = ijk - lo
    chosen = []
    for index, point in enumerate(local):
        if blocked[tuple(point)]:
            continue
        chosen.append(index)
        near = point + offsets
        blocked[near[:, 0], near[:, 1], near[:, 2]] = True
    return np.asarray(chosen, dtype=np.int64)


def psf_mixing(
    voxel_ijk: np.ndarray, source_ijk: np.ndarray, sigma: float, spacing: float
) -> scipy.sparse.csr_matrix:
    """Gaussian point-spread weights of the sources in each voxel, rows summing to 1.

    Sources farther than ``max(2 sigma, spacing)`` voxels are left out (every voxel has a source
    within ``spacing``, see :func:`place_sources`). With ``sigma <= 0`` each voxel sees its
    nearest source only.

    Returns
    -------
    scipy.sparse.csr_matrix, shape (n_voxels, n_sources)
    """
    n_vox, n_src = len(voxel_ijk), len(source_ijk)
    sources = cKDTree(source_ijk.astype(np.float64))
    if sigma <= 0:
        _, nearest = sources.query(voxel_ijk.astype(np.float64))
        return scipy.sparse.csr_matrix(
            (np.ones(n_vox), (np.arange(n_vox), nearest)), shape=(n_vox, n_src)
        )
    radius = max(2 * sigma, spacing) + 1e-9
    voxels = cKDTree(voxel_ijk.astype(np.float64))
    distances = voxels.sparse_distance_matrix(sources, radius, output_type="coo_matrix")
    weights = scipy.sparse.csr_matrix(
        (np.exp(-(distances.data**2) / (2 * sigma**2)), (distances.row, distances.col)),
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
