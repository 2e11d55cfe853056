"""The oracle: maximum-likelihood retrieval under the true simulated model.

It knows what no decoder can: every voxel's noise-free response to every candidate image, its noise
variance and the per-session drift. For an averaged test trial ``y`` (n repeats, drift removed) the
log-likelihood of candidate image ``j`` is ``-sum_v (y_v - mu_jv)^2 / (sigma_v^2 / n)``; the oracle
ranks candidates by it. Its n-way top-1 is the physical limit every decoder is reported against.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import scipy.special

from neurodecode.validation import InvalidInputError, check_file


def oracle_scores(observed: np.ndarray, responses: np.ndarray, noise_var: np.ndarray) -> np.ndarray:
    """Log-likelihood scores (up to a constant).

    Parameters
    ----------
    observed : ndarray, shape (n_trials, n_voxels)
        Drift-corrected, repeat-averaged responses, percent signal change.
    responses : ndarray, shape (n_candidates, n_voxels)
        Noise-free responses of the candidates.
    noise_var : ndarray, shape (n_voxels,)
        Variance of the averaged noise per voxel (single-trial variance / n repeats).

    Returns
    -------
    ndarray, shape (n_trials, n_candidates)
        Higher = more likely.
    """
    w = 1.0 / noise_var
    quad_obs = (observed**2 * w).sum(axis=1, keepdims=True)
    quad_cand = (responses**2 * w).sum(axis=1)[None, :]
    cross = (observed * w) @ responses.T
    return -(quad_obs - 2 * cross + quad_cand)


def oracle_test_data(root: str | Path, subject: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Averaged, drift-corrected test trials of one subject with the matching truth.

    Reads the written betas with :func:`neurodecode.data.nsd.read_nsd_betas` (percent signal
    change, nsdgeneral voxels) and removes the planted per-session drift.

    Returns
    -------
    observed : ndarray, shape (n_shared, n_voxels)
        Test trials averaged over repeats, in ``sharedix`` order.
    responses : ndarray, shape (n_shared, n_voxels)
        Noise-free responses to the same images.
    noise_var : ndarray, shape (n_voxels,)
        Noise variance of the average.
    """
    from neurodecode.data.nsd import read_design, read_nsd_betas

    root = Path(root)
    gt_path = check_file(root / "ground_truth.h5", "simulation ground truth")
    with h5py.File(gt_path, "r") as gt:
        g = gt[subject]
        ijk = g["voxel_ijk"][:]
        ids = g["stimulus_ids"][:]
        responses_all = g["responses"][:]
        noise_sd = g["noise_sd"][:]
        offset, gain = g["drift_offset"][:], g["drift_gain"][:]
    # the project's own NSD reader: same voxels (nsdgeneral = the simulated voxels), psc units
    trials = read_nsd_betas(root, subject, zscore=False, progress=False)
    if not np.array_equal(trials.info["voxel_ijk"], ijk):
        raise InvalidInputError(f"nsdgeneral of {subject} in {root} does not match {gt_path}.")
    test = trials.select(trials.split == "test")
    sessions = test.session - 1
    test.data = ((test.data - offset[sessions]) / gain[sessions][:, None]).astype(np.float32)
    averaged = test.average_repeats()
    shared = read_design(root).sharedix
    position = {int(i): k for k, i in enumerate(averaged.stimulus_id)}
    observed = averaged.data[[position[int(i)] for i in shared]]
    row_of = {int(i): r for r, i in enumerate(ids)}
    responses = responses_all[[row_of[int(i)] for i in shared]]
    n_rep = max(int(np.median(averaged.repeat)), 1)
    return observed, responses, noise_sd**2 / n_rep


def oracle_retrieval(
    root: str | Path, subject: str = "subj01", n_way: int = 300, n_draws: int = 30, seed: int = 0
) -> dict:
    """The oracle's n-way identification of averaged test trials (MindEye protocol).

    Candidates are ranked by their posterior probability given the trial (log-likelihood
    normalised over candidates), in both directions. ``n_way`` is capped at the number of shared images. Returns the keys of
    :func:`neurodecode.evaluate.retrieval.n_way_identification`.
    """
    from neurodecode.evaluate.retrieval import n_way_identification

    observed, responses, noise_var = oracle_test_data(root, subject)
    scores = oracle_scores(observed, responses, noise_var)
    # rank by the posterior P(image j | trial i) (flat prior): rows are unchanged, and columns
    # (image -> brain) compare probabilities rather than likelihoods of different data
    scores = scores - scipy.special.logsumexp(scores, axis=1, keepdims=True)
    return n_way_identification(scores, n_way=min(n_way, len(scores)), n_draws=n_draws, seed=seed)
