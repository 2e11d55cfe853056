"""Noise ceiling (NSD): planted ncsnr recovered from simulated repeats, formula values, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodecode.evaluate.noise_ceiling import ncsnr, noise_ceiling
from neurodecode.validation import InvalidInputError

# NSD-like range. Below ~0.2 the estimator's spread with 20k stimuli (sd ~0.02, and max(1 - v, 0)
# clips negative signal variance) makes a +-0.05 bound flaky, so the planted values start at 0.2.
TRUE_NCSNR = np.array([0.2, 0.4, 0.7, 1.0, 1.5, 2.0])


def simulate_repeats(n_stimuli=20000, n_repeats=3, seed=0, offset=0.0, scale=1.0):
    """Trials x voxels: signal per stimulus with sd = ncsnr, noise per trial with sd 1."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n_stimuli, TRUE_NCSNR.size)) * TRUE_NCSNR
    stimulus_ids = np.repeat(np.arange(n_stimuli), n_repeats)
    noise = rng.normal(size=(stimulus_ids.size, TRUE_NCSNR.size))
    data = (signal[stimulus_ids] + noise) * scale + offset
    order = rng.permutation(stimulus_ids.size)  # trials in any order
    return data[order], stimulus_ids[order]


def test_recovers_planted_ncsnr_within_005():
    data, stimulus_ids = simulate_repeats()
    estimate = ncsnr(data, stimulus_ids)
    assert estimate.shape == (TRUE_NCSNR.size,)
    np.testing.assert_allclose(estimate, TRUE_NCSNR, atol=0.05)


def test_units_string_ids_and_singletons_do_not_matter():
    data, stimulus_ids = simulate_repeats(seed=1)
    reference = ncsnr(data, stimulus_ids)
    # a change of units and string ids give the same answer; so does processing column batches
    rescaled = ncsnr(torch.as_tensor(data * 300.0 + 7.0), stimulus_ids.astype(str), column_batch=4)
    np.testing.assert_allclose(rescaled, reference, rtol=1e-9)
    # stimuli seen once are ignored in v (they only join the z-scoring)
    rng = np.random.default_rng(2)
    extra = rng.normal(size=(50, TRUE_NCSNR.size)) * np.sqrt(1 + TRUE_NCSNR**2)
    with_singletons = ncsnr(
        np.vstack([data, extra]), np.concatenate([stimulus_ids, -1 - np.arange(50)])
    )
    np.testing.assert_allclose(with_singletons, TRUE_NCSNR, atol=0.05)


def test_session_zscoring_removes_session_offsets():
    data, stimulus_ids = simulate_repeats(seed=3)
    sessions = np.arange(len(data)) % 4
    shifted = data + np.array([0.0, 5.0, -3.0, 10.0])[sessions][:, None]  # session drifts
    np.testing.assert_allclose(
        ncsnr(shifted, stimulus_ids, sessions=sessions), TRUE_NCSNR, atol=0.05
    )
    assert (
        ncsnr(shifted, stimulus_ids)[-1] < 0.5
    )  # without session z-scoring: drift looks like noise


def test_noise_ceiling_formula():
    # NC = 100 ncsnr² / (ncsnr² + 1/n): ncsnr = 1, n = 1 -> 50 %; n = 3 -> 75 %
    np.testing.assert_allclose(noise_ceiling(np.array([1.0, 1.0]), 1), [50.0, 50.0])
    assert noise_ceiling(1.0, 3) == pytest.approx(75.0)
    assert noise_ceiling(0.5, 4) == pytest.approx(50.0)
    np.testing.assert_allclose(noise_ceiling(np.array([0.0, np.inf]), 3), [0.0, 100.0])
    np.testing.assert_allclose(
        noise_ceiling(np.array([2.0, 2.0]), np.array([1, 2])), [80.0, 100 * 8 / 9]
    )


def test_noise_free_and_constant_columns():
    stimulus_ids = np.repeat(np.arange(20), 2)
    signal = np.random.default_rng(4).normal(size=20)[stimulus_ids]
    data = np.stack([signal, np.full(40, 3.0)], axis=1)
    estimate = ncsnr(data, stimulus_ids)
    assert np.isinf(estimate[0]) and estimate[1] == 0.0
    np.testing.assert_allclose(noise_ceiling(estimate, 3), [100.0, 0.0])


def test_errors_are_clear():
    data, stimulus_ids = simulate_repeats(n_stimuli=10)
    with pytest.raises(InvalidInputError, match="stimulus_ids has shape"):
        ncsnr(data, stimulus_ids[:-1])
    with pytest.raises(InvalidInputError, match="at least twice"):
        ncsnr(data, np.arange(len(data)))
    with pytest.raises(InvalidInputError, match="data has 1 dimensions"):
        ncsnr(data[:, 0], stimulus_ids)
    with pytest.raises(InvalidInputError, match="sessions has shape"):
        ncsnr(data, stimulus_ids, sessions=np.zeros(3))
    with pytest.raises(InvalidInputError, match="n_repeats"):
        noise_ceiling(1.0, 0)
    with pytest.raises(InvalidInputError, match="ncsnr"):
        noise_ceiling(np.array([-0.1]), 3)
