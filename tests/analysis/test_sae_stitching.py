import numpy as np
import pytest

from neurodecode.analysis.sae.stitching import classify_latents
from neurodecode.validation import InvalidInputError


def test_planted_novel_latents_are_found():
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.standard_normal((64, 64)))
    small = basis[:10] * rng.uniform(0.5, 2.0, size=(10, 1))  # scale must not matter
    # large = noisy copies of 6 small atoms + 8 directions orthogonal to all small atoms
    copies = basis[[0, 2, 3, 5, 7, 9]] + 0.05 * rng.standard_normal((6, 64))
    large = np.concatenate([copies, basis[20:28]])
    match = classify_latents(small, large, threshold=0.7)
    assert match.novel.tolist() == [False] * 6 + [True] * 8
    assert match.best_small[:6].tolist() == [0, 2, 3, 5, 7, 9]
    assert match.novel_fraction == pytest.approx(8 / 14)
    assert np.all(match.max_cosine[6:] < 0.1)


def test_bad_inputs():
    with pytest.raises(InvalidInputError, match="second"):
        classify_latents(np.ones((3, 4)), np.ones((3, 5)))
    with pytest.raises(InvalidInputError, match="threshold"):
        classify_latents(np.ones((3, 4)), np.ones((3, 4)), threshold=1.5)
    with pytest.raises(InvalidInputError, match="NaN"):
        classify_latents(np.full((3, 4), np.nan), np.ones((3, 4)))
