"""Noise ceilings from repeated presentations: NSD's noise-ceiling signal-to-noise ratio.

This module owns the noise-ceiling estimator used to normalise encoding and decoding scores
(R² / NC). It follows the Natural Scenes Dataset (Allen et al., 2022, Nature Neuroscience 25:116-126,
"A massive 7T fMRI dataset to bridge cognitive neuroscience and artificial intelligence", Methods,
"Noise ceiling"): with betas z-scored per session, the noise variance is the variance across the
repeats of an image (ddof=1) averaged over images, ``v``; the signal variance is ``1 - v``;

    ncsnr = sqrt(max(1 - v, 0) / v)
    NC (%) = 100 * ncsnr² / (ncsnr² + 1 / n)

where ``n`` is the number of repeats averaged in the data the model is scored on. NC is the
percentage of variance a perfect model of the (noise-free) response could explain.

Nothing here is specific to fMRI: any trials x columns array with repeated stimuli (voxels, MEG
sensor-time points, model units with stochastic inputs) works.
"""

from __future__ import annotations

import numpy as np
import torch

from neurodecode.data.trials import zscore_sessions
from neurodecode.validation import InvalidInputError, check_array

ArrayLike = np.ndarray | torch.Tensor


def _group_rows(labels: np.ndarray) -> list[np.ndarray]:
    _, inverse = np.unique(labels, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    return np.split(order, bounds)


def ncsnr(
    data: ArrayLike,
    stimulus_ids: ArrayLike,
    sessions: ArrayLike | None = None,
    zscore: bool = True,
    column_batch: int = 4096,
) -> np.ndarray:
    """Noise-ceiling signal-to-noise ratio per column, from repeated presentations.

    Following NSD (Allen et al., 2022): ``v`` = mean over stimuli of the variance across repeats
    (ddof=1) of z-scored responses, ``ncsnr = sqrt(max(1 - v, 0) / v)``. Only stimuli with at
    least two repeats enter ``v``; every trial enters the z-scoring.

    Parameters
    ----------
    data : ndarray or Tensor, shape (n_trials, n_columns)
        Single-trial responses (e.g. betas, trials x voxels), finite.
    stimulus_ids : array-like, shape (n_trials,)
        Stimulus of each trial (ints or strings); repeats share an id.
    sessions : array-like, shape (n_trials,), optional
        Session of each trial; columns are z-scored within each session (NSD's practice). Without
        it, columns are z-scored over all trials.
    zscore : bool
        Set False when ``data`` is already z-scored (e.g. by the datamodule): the formula assumes
        unit total variance per column.
    column_batch : int
        Columns processed at a time (bounds memory on whole-brain data).

    Returns
    -------
    ndarray, shape (n_columns,)
        ncsnr (dimensionless, >= 0). ``inf`` for a column with no noise, 0 for a constant column.

    Raises
    ------
    InvalidInputError
        If shapes disagree, values are not finite, or no stimulus has two repeats.
    """
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    data = check_array("data", data, ndim=2, kind="biuf", finite=True)
    stimulus_ids = np.asarray(
        stimulus_ids.cpu().numpy() if isinstance(stimulus_ids, torch.Tensor) else stimulus_ids
    )
    if stimulus_ids.shape != (len(data),):
        raise InvalidInputError(
            f"stimulus_ids has shape {stimulus_ids.shape} but data has {len(data)} trials (rows); "
            f"expected ({len(data)},), one stimulus id per trial."
        )
    if sessions is not None:
        sessions = np.asarray(sessions)
        if sessions.shape != (len(data),):
            raise InvalidInputError(
                f"sessions has shape {sessions.shape} but data has {len(data)} trials (rows); "
                f"expected ({len(data)},), one session per trial."
            )
    groups = [rows for rows in _group_rows(stimulus_ids) if len(rows) >= 2]
    if not groups:
        raise InvalidInputError(
            "stimulus_ids has no stimulus shown at least twice; expected repeated presentations "
            "(NSD shows each image 3 times) to estimate the noise ceiling."
        )
    # stimuli with >= 2 repeats, their trials sorted so that each stimulus is one contiguous run
    order = np.concatenate(groups)
    counts = np.array([len(rows) for rows in groups], dtype=np.float64)[:, None]
    starts = np.concatenate([[0], np.cumsum([len(rows) for rows in groups])[:-1]])
    ratio = np.empty(data.shape[1])
    for first in range(0, data.shape[1], column_batch):  # bounded memory on whole-brain data
        cols = slice(first, first + column_batch)
        block = (
            zscore_sessions(data[:, cols], sessions, dtype=np.float64) if zscore else data[:, cols]
        )
        repeated = block[order].astype(np.float64)
        mean = np.add.reduceat(repeated, starts, axis=0) / counts
        deviation = repeated - np.repeat(mean, counts[:, 0].astype(int), axis=0)
        variance = np.add.reduceat(deviation**2, starts, axis=0) / (counts - 1)  # ddof=1
        noise_variance = variance.mean(0)
        signal_variance = np.maximum(1.0 - noise_variance, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio[cols] = np.sqrt(signal_variance / noise_variance)
        ratio[cols][np.ptp(data[:, cols], axis=0) == 0] = 0.0
    return ratio


def noise_ceiling(ncsnr: ArrayLike, n_repeats: int | ArrayLike) -> np.ndarray:
    """Noise ceiling (% explainable variance) for responses averaged over ``n_repeats`` trials.

    ``NC = 100 * ncsnr² / (ncsnr² + 1 / n)`` (Allen et al., 2022, NSD). Use ``n_repeats=1`` for
    single-trial data and 3 for NSD's repeat-averaged shared test images.

    Parameters
    ----------
    ncsnr : array-like, shape (n_columns,) or scalar
        From :func:`ncsnr`, >= 0 (``inf`` gives 100).
    n_repeats : int or array-like broadcastable to ``ncsnr``
        Number of trials averaged per stimulus in the evaluated data, >= 1.

    Returns
    -------
    ndarray, same shape as ``ncsnr``
        Noise ceiling in percent, in [0, 100].
    """
    if isinstance(ncsnr, torch.Tensor):
        ncsnr = ncsnr.detach().cpu().numpy()
    ncsnr = np.asarray(ncsnr, dtype=np.float64)
    if np.any(np.isnan(ncsnr)) or np.any(ncsnr < 0):
        raise InvalidInputError("ncsnr has NaN or negative values; expected values >= 0.")
    n = np.asarray(n_repeats, dtype=np.float64)
    if np.any(~np.isfinite(n)) or np.any(n < 1):
        raise InvalidInputError(f"n_repeats={n_repeats!r} is not valid; expected a count >= 1.")
    with np.errstate(divide="ignore"):
        # 100 / (1 + 1 / (n ncsnr²)) is the same formula, finite at ncsnr = 0 and inf
        return 100.0 / (1.0 + 1.0 / (n * ncsnr**2))
