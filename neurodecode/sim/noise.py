"""Trial-to-trial noise of the simulated fMRI brain: correlated across voxels, low rank + diagonal.

Real fMRI noise is not independent across voxels. Here the single-trial noise of voxel ``v`` is

    e_v = sum_k M[v, k] s_k z_k  +  sum_g G[v, g] w_g  +  d_v u_v

with ``z, w, u`` independent standard normals:

``neural``
    Every cortical source ``k`` (see :mod:`neurodecode.sim.cortex`) has its own trial-to-trial
    variability of SD ``s_k``, seen by the voxels through the same point-spread mixing ``M`` as
    its signal: spatially smooth noise that shares the signal's spatial structure, so pooling
    voxels cannot average it away (information-limiting in the sense of Moreno-Bote et al. 2014,
    Nature Neuroscience 17:1410).
``global``
    A few smooth whole-volume patterns ``G`` (a constant and linear gradients): global signal,
    as physiological noise and head motion produce.
``independent``
    Thermal noise of SD ``d_v``, independent across voxels.

So the covariance is ``F F^T + diag(d^2)`` with ``F = [M diag(s) | G]``: low rank (number of
sources plus a few) plus diagonal. Each voxel's total variance ``noise_sd^2`` sets its noise
ceiling exactly as before (NSD's formula only sees per-voxel variances).
:func:`whitened_quadratics` gives the Gaussian log-likelihood through the Woodbury identity
without ever forming the ``V x V`` covariance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse


@dataclass
class NoiseModel:
    """Single-trial noise of one subject's voxels (percent signal change).

    Attributes
    ----------
    mixing : scipy.sparse.csr_matrix, shape (n_voxels, n_sources)
        Point-spread weights of the sources in each voxel (rows sum to 1).
    source_sd : ndarray, shape (n_sources,)
        SD ``s`` of each source's neural noise.
    global_factors : ndarray, shape (n_voxels, n_global)
        Loadings ``G`` of the global noise factors.
    independent_sd : ndarray, shape (n_voxels,)
        SD ``d`` of each voxel's independent (thermal) noise.
    """

    mixing: scipy.sparse.csr_matrix
    source_sd: np.ndarray
    global_factors: np.ndarray
    independent_sd: np.ndarray

    @property
    def n_voxels(self) -> int:
        """Number of voxels."""
        return len(self.independent_sd)

    @property
    def factors(self) -> scipy.sparse.csr_matrix:
        """All shared factors ``F = [M diag(s) | G]``, sparse, shape (n_voxels, n_factors)."""
        neural = self.mixing @ scipy.sparse.diags(self.source_sd)
        return scipy.sparse.hstack(
            [neural, scipy.sparse.csr_matrix(self.global_factors)], format="csr"
        )

    @property
    def neural_var(self) -> np.ndarray:
        """Per-voxel variance of the neural (source) noise."""
        return np.asarray(self.mixing.multiply(self.mixing) @ self.source_sd**2).ravel()

    @property
    def total_sd(self) -> np.ndarray:
        """Total single-trial noise SD per voxel."""
        shared = self.neural_var + (self.global_factors**2).sum(axis=1)
        return np.sqrt(shared + self.independent_sd**2)

    def variance_shares(self) -> dict[str, np.ndarray]:
        """Fraction of each voxel's noise variance that is neural, global and independent."""
        total = self.total_sd**2
        return {
            "neural": self.neural_var / total,
            "global": (self.global_factors**2).sum(axis=1) / total,
            "independent": self.independent_sd**2 / total,
        }

    def scaled(self, factor: float) -> NoiseModel:
        """The same model with every noise SD multiplied by ``factor``."""
        return NoiseModel(
            self.mixing,
            self.source_sd * factor,
            self.global_factors * factor,
            self.independent_sd * factor,
        )

    def draw(self, n_trials: int, rng: np.random.Generator) -> np.ndarray:
        """Noise of ``n_trials`` trials, shape (n_trials, n_voxels).

        Drawn in a fixed order (sources, global factors, independent): part of a world's bytes.
        """
        sources = rng.normal(size=(n_trials, len(self.source_sd))) * self.source_sd
        noise = np.asarray(self.mixing @ sources.T).T
        noise += rng.normal(size=(n_trials, self.global_factors.shape[1])) @ self.global_factors.T
        noise += rng.normal(size=(n_trials, self.n_voxels)) * self.independent_sd
        return noise


def whitened_quadratics(
    observed: np.ndarray,
    candidates: np.ndarray,
    factors: np.ndarray | scipy.sparse.spmatrix,
    independent_var: np.ndarray,
) -> np.ndarray:
    """``-(y_i - mu_j)^T C^{-1} (y_i - mu_j)`` for every pair, with ``C = F F^T + diag(d2)``.

    Uses the Woodbury identity ``C^{-1} = D^{-1} - D^{-1} F (I + F^T D^{-1} F)^{-1} F^T D^{-1}``,
    so the cost is linear in the number of voxels.

    Parameters
    ----------
    observed : ndarray, shape (n_trials, n_voxels)
    candidates : ndarray, shape (n_candidates, n_voxels)
    factors : ndarray or sparse matrix, shape (n_voxels, n_factors)
        May have zero columns (independent noise only).
    independent_var : ndarray, shape (n_voxels,)
        The diagonal ``d2`` (must be positive).

    Returns
    -------
    ndarray, shape (n_trials, n_candidates)
        The log-likelihood up to a constant (higher = more likely).
    """
    w = 1.0 / independent_var
    y_w, m_w = observed * w, candidates * w
    quad_obs = (observed * y_w).sum(axis=1)
    quad_cand = (candidates * m_w).sum(axis=1)
    cross = y_w @ candidates.T
    if factors.shape[1]:
        if scipy.sparse.issparse(factors):
            weighted = scipy.sparse.diags(w) @ factors
            core = np.eye(factors.shape[1]) + (factors.T @ weighted).toarray()
            y_f = np.asarray(factors.T @ y_w.T).T
            m_f = np.asarray(factors.T @ m_w.T).T
        else:
            core = np.eye(factors.shape[1]) + (factors.T * w) @ factors
            y_f, m_f = y_w @ factors, m_w @ factors
        chol = np.linalg.cholesky(core)
        a = scipy.linalg.solve_triangular(chol, y_f.T, lower=True)  # (K, n_trials)
        b = scipy.linalg.solve_triangular(chol, m_f.T, lower=True)  # (K, n_candidates)
        quad_obs = quad_obs - (a**2).sum(axis=0)
        quad_cand = quad_cand - (b**2).sum(axis=0)
        cross = cross - a.T @ b
    return -(quad_obs[:, None] - 2 * cross + quad_cand[None, :])
