"""The oracle: maximum-likelihood retrieval under the true simulated model.

It knows what no decoder can: every voxel's noise-free response to every candidate image, the
full noise covariance and the per-session drift. For a repeat-averaged test trial ``y`` (``n``
repeats, drift removed) the noise is Gaussian with covariance ``C / n``, ``C = F F^T + diag(d^2)``
(point-spread neural noise and global factors ``F``, thermal noise ``d``; see
:mod:`neurodecode.sim.noise`), and the log-likelihood of candidate image ``j`` is
``-(y - mu_j)^T (C / n)^{-1} (y - mu_j)`` (up to a constant), computed with the Woodbury identity.
The oracle ranks candidates by it; its n-way top-1 is the physical limit every decoder is
reported against.

This module scores arrays: the truth comes from :mod:`neurodecode.sim.ground_truth` and the
observed betas from the caller (:func:`oracle_test_data`); reading a written world's betas and
scoring the identification is :func:`neurodecode.demo.ladder.oracle_retrieval`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.special

from neurodecode.sim.ground_truth import SubjectTruth
from neurodecode.sim.noise import NoiseModel, whitened_quadratics
from neurodecode.validation import InvalidInputError, check_array


def oracle_scores(
    observed: np.ndarray,
    responses: np.ndarray,
    noise: NoiseModel | np.ndarray,
    n_repeats: int = 1,
) -> np.ndarray:
    """Log-likelihood scores (up to a constant) of every candidate for every trial.

    Parameters
    ----------
    observed : ndarray, shape (n_trials, n_voxels)
        Drift-corrected, repeat-averaged responses, percent signal change.
    responses : ndarray, shape (n_candidates, n_voxels)
        Noise-free responses of the candidates.
    noise : NoiseModel or ndarray
        The single-trial noise model; or, for independent noise, the per-voxel variance of the
        *averaged* noise, shape (n_voxels,) (then ``n_repeats`` is ignored).
    n_repeats : int
        Trials averaged in ``observed`` (the single-trial covariance is divided by it).

    Returns
    -------
    ndarray, shape (n_trials, n_candidates)
        Higher = more likely.
    """
    if isinstance(noise, NoiseModel):
        factors = noise.factors / np.sqrt(n_repeats)
        independent_var = noise.independent_sd**2 / n_repeats
    else:
        independent_var = np.asarray(noise, dtype=np.float64)
        factors = np.zeros((len(independent_var), 0))
    return whitened_quadratics(
        np.asarray(observed, np.float64),
        np.asarray(responses, np.float64),
        factors,
        independent_var,
    )


def posterior_scores(scores: np.ndarray) -> np.ndarray:
    """Log posterior of each candidate given each trial (flat prior): rows normalised.

    Ranking by it leaves brain -> image unchanged, and makes image -> brain compare
    probabilities rather than likelihoods of different data.
    """
    return scores - scipy.special.logsumexp(scores, axis=1, keepdims=True)


def remove_drift(data: np.ndarray, sessions: np.ndarray, truth: SubjectTruth) -> np.ndarray:
    """Undo the planted per-session drift of single trials: ``(beta - offset) / gain``.

    Parameters
    ----------
    data : ndarray, shape (n_trials, n_voxels)
        Betas in percent signal change, voxels in ``truth.voxel_ijk`` order.
    sessions : ndarray, shape (n_trials,)
        1-based session of each trial.
    """
    index = np.asarray(sessions) - 1
    return (data - truth.drift_offset[index]) / truth.drift_gain[index][:, None]


@dataclass
class OracleTestData:
    """Repeat-averaged test trials of one subject with the truth the oracle needs.

    Attributes
    ----------
    observed : ndarray, shape (n_shared, n_voxels)
        Drift-corrected test trials averaged over repeats, in ``sharedix`` order.
    responses : ndarray, shape (n_shared, n_voxels)
        Noise-free responses to the same images.
    noise : NoiseModel
        Single-trial noise model.
    n_repeats : int
        Trials averaged per image.
    """

    observed: np.ndarray
    responses: np.ndarray
    noise: NoiseModel
    n_repeats: int

    def scores(self) -> np.ndarray:
        """:func:`oracle_scores` of the averaged trials against every shared image."""
        return oracle_scores(self.observed, self.responses, self.noise, self.n_repeats)


def oracle_test_data(
    truth: SubjectTruth,
    sharedix: np.ndarray,
    data: np.ndarray,
    stimulus_ids: np.ndarray,
    sessions: np.ndarray,
) -> OracleTestData:
    """Average a subject's test trials (drift removed) and pair them with the truth.

    Parameters
    ----------
    truth : SubjectTruth
        From :func:`neurodecode.sim.ground_truth.read_subject_truth` (with responses).
    sharedix : ndarray, shape (n_shared,)
        The shared images' 73k ids (:attr:`WorldTruth.sharedix`): the candidates, in this order.
    data : ndarray, shape (n_trials, n_voxels)
        Single-trial betas of the shared images in percent signal change (not z-scored), voxels
        in ``truth.voxel_ijk`` order.
    stimulus_ids, sessions : ndarray, shape (n_trials,)
        73k id and 1-based session of each trial.
    """
    data = check_array("data", np.asarray(data), ndim=2, kind="f")
    if data.shape[1] != len(truth.voxel_ijk):
        raise InvalidInputError(
            f"data has {data.shape[1]} voxels; {truth.subject}'s ground truth has "
            f"{len(truth.voxel_ijk)}."
        )
    clean = remove_drift(data.astype(np.float64), sessions, truth)
    ids = np.asarray(stimulus_ids, dtype=np.int64)
    observed = np.empty((len(sharedix), data.shape[1]))
    counts = np.zeros(len(sharedix), dtype=np.int64)
    for k, image in enumerate(np.asarray(sharedix, dtype=np.int64)):
        rows = ids == image
        counts[k] = rows.sum()
        if not counts[k]:
            raise InvalidInputError(f"no test trial of shared image {image} in the data.")
        observed[k] = clean[rows].mean(axis=0)
    n_rep = max(int(np.median(counts)), 1)
    return OracleTestData(observed, truth.responses_to(sharedix), truth.noise, n_rep)
