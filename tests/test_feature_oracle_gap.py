"""The scorings of benchmarks/bench_feature_oracle_gap.py: the error-aware likelihood reduces to
the true-noise one without prediction error, and the signal-subspace projection keeps what lies in
the span of the training responses and drops what does not (the ladder's feature oracle,
neurodecode.demo.ladder, scores the projected predictions)."""

from __future__ import annotations

import numpy as np
import scipy.sparse

from benchmarks.bench_feature_oracle_gap import error_aware_scores, true_scores
from neurodecode.demo.ladder import signal_projection
from neurodecode.sim.noise import NoiseModel


def _noise(rng: np.random.Generator, v: int = 30, k: int = 4) -> NoiseModel:
    mixing = scipy.sparse.csr_matrix(np.abs(rng.normal(size=(v, k))))
    return NoiseModel(mixing, np.ones(k), 0.1 * rng.normal(size=(v, 1)), 0.3 * np.ones(v))


def test_error_aware_equals_true_noise_without_error_and_flattens_with_it():
    rng = np.random.default_rng(0)
    noise = _noise(rng)
    observed, predicted = rng.normal(size=(5, 30)), rng.normal(size=(6, 30))
    exact = true_scores(observed, predicted, noise, 3)
    tiny = 1e-7 * rng.normal(size=(20, 30))
    np.testing.assert_allclose(
        error_aware_scores(observed, predicted, noise, 3, tiny, 0), exact, rtol=1e-4
    )
    large = rng.normal(size=(20, 30))
    aware = error_aware_scores(observed, predicted, noise, 3, large, 4)
    assert np.abs(aware).mean() < np.abs(exact).mean()  # more variance: smaller quadratic forms


def test_signal_projection_keeps_the_span_and_drops_the_rest():
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(3, 12))
    clean = rng.normal(size=(40, 3)) @ basis + 2.0
    inside = rng.normal(size=(5, 3)) @ basis + 2.0
    projected, rank = signal_projection(clean, inside)
    assert rank == 3
    np.testing.assert_allclose(projected, inside, atol=1e-8)
    outside = rng.normal(size=(5, 12))
    outside -= (outside @ np.linalg.pinv(basis)) @ basis  # orthogonal to the span
    projected, _ = signal_projection(clean, clean.mean(0) + outside)
    np.testing.assert_allclose(projected, np.broadcast_to(clean.mean(0), (5, 12)), atol=1e-8)
