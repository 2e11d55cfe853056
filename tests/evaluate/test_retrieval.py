"""N-way identification (MindEye protocol): hand-computed values, chance, ties, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from neurodecode.evaluate.retrieval import cosine_scores, n_way_identification, retrieval_metrics
from neurodecode.validation import InvalidInputError

# rows = brain trials, columns = images, correct pairs on the diagonal
HAND = np.array(
    [
        [0.9, 0.1, 0.2, 0.3],  # brain->image rank 0
        [0.5, 0.4, 0.6, 0.1],  # rank 2 (0.5 and 0.6 beat 0.4)
        [0.1, 0.2, 0.3, 0.7],  # rank 1
        [0.0, 0.3, 0.1, 0.9],  # rank 0
    ]
)
# image->brain ranks, per column: 0 (0.9 top), 0 (0.4 top), 1 (0.6 beats 0.3), 0 (0.9 top)


def test_hand_built_matrix_full_set():
    result = n_way_identification(HAND, n_way=4, n_draws=5, k=(1, 2))
    assert result["brain_to_image_top1"] == pytest.approx(2 / 4)
    assert result["brain_to_image_top2"] == pytest.approx(3 / 4)
    assert result["image_to_brain_top1"] == pytest.approx(3 / 4)
    assert result["image_to_brain_top2"] == pytest.approx(4 / 4)
    assert result["chance_top1"] == pytest.approx(1 / 4)
    assert result["n_way"] == 4 and result["n_draws"] == 5


def test_random_subsets_average_over_all_subsets():
    # exact expectation over the four 3-item subsets of HAND, enumerated by hand-written loops
    expected = []
    for subset in itertools.combinations(range(4), 3):
        block = HAND[np.ix_(subset, subset)]
        expected.append(np.mean([block[i, i] == block[i].max() for i in range(3)]))
    result = n_way_identification(HAND, n_way=3, n_draws=3000, k=1, seed=1)
    assert result["brain_to_image_top1"] == pytest.approx(np.mean(expected), abs=0.02)
    # the same seed draws the same subsets
    assert result == n_way_identification(HAND, n_way=3, n_draws=3000, k=1, seed=1)


def test_identity_scores_are_perfect_and_keys_follow_mindeye():
    result = n_way_identification(np.eye(350))
    for key in ("brain_to_image_top1", "image_to_brain_top1"):
        assert result[key] == 1.0
    for key in ("brain_to_image_top5", "image_to_brain_top5"):
        assert result[key] == 1.0
    assert result["n_way"] == 300 and result["n_draws"] == 30
    assert result["chance_top1"] == pytest.approx(1 / 300)


def test_random_scores_are_at_chance():
    scores = np.random.default_rng(0).normal(size=(400, 400))
    result = n_way_identification(scores, n_way=50, n_draws=200, k=(1, 5))
    for direction in ("brain_to_image", "image_to_brain"):
        assert result[f"{direction}_top1"] == pytest.approx(1 / 50, abs=0.01)
        assert result[f"{direction}_top5"] == pytest.approx(5 / 50, abs=0.02)


def test_ties_count_against_the_item():
    assert n_way_identification(np.ones((10, 10)), n_way=10)["brain_to_image_top1"] == 0.0
    scores = np.eye(3)
    scores[0, 1] = (
        1.0  # image 1 ties with the correct image 0 for trial 0 (and trial 0 for image 1)
    )
    result = n_way_identification(scores, n_way=3, k=(1, 2))
    assert result["brain_to_image_top1"] == pytest.approx(2 / 3)
    assert result["image_to_brain_top1"] == pytest.approx(2 / 3)
    assert result["brain_to_image_top2"] == 1.0


def test_cosine_scores_flatten_tokens_and_normalise():
    rng = np.random.default_rng(0)
    brain, image = rng.normal(size=(5, 3, 4)), rng.normal(size=(5, 3, 4))
    flat_b, flat_i = brain.reshape(5, -1), image.reshape(5, -1)
    expected = (flat_b / np.linalg.norm(flat_b, axis=1, keepdims=True)) @ (
        flat_i / np.linalg.norm(flat_i, axis=1, keepdims=True)
    ).T
    scores = cosine_scores(7.0 * brain, torch.as_tensor(image))  # scale does not matter
    assert scores.shape == (5, 5)
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_retrieval_metrics_rank_noisy_copies_first():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(320, 2, 16))
    brain = image + 0.3 * rng.normal(size=image.shape)
    result = retrieval_metrics(brain, image, n_way=300, n_draws=3)
    assert result["brain_to_image_top1"] > 0.95 and result["image_to_brain_top1"] > 0.95
    shuffled = retrieval_metrics(brain[rng.permutation(320)], image, n_way=300, n_draws=3)
    assert shuffled["brain_to_image_top1"] < 0.05


def test_errors_are_clear():
    with pytest.raises(InvalidInputError, match="N=100 items but n_way=300"):
        n_way_identification(np.eye(100))
    with pytest.raises(InvalidInputError, match="square"):
        n_way_identification(np.ones((300, 310)))
    with pytest.raises(InvalidInputError, match="NaN"):
        n_way_identification(np.full((4, 4), np.nan), n_way=4)
    with pytest.raises(InvalidInputError, match="k="):
        n_way_identification(np.eye(4), n_way=4, k=(1, 5))
    with pytest.raises(InvalidInputError, match="one brain embedding per image"):
        retrieval_metrics(np.ones((300, 8)), np.ones((301, 8)))
    with pytest.raises(InvalidInputError, match="same embedding shape"):
        cosine_scores(np.ones((5, 8)), np.ones((5, 9)))


def test_fused_identification_of_one_matrix_is_plain_identification():
    from neurodecode.evaluate.retrieval import fused_identification, n_way_identification

    scores = np.random.default_rng(0).normal(size=(40, 40)) + 0.8 * np.eye(40)
    # a per-row offset and a per-column scale change nothing once standardised per axis
    assert fused_identification([scores], 20, 5, seed=1) == n_way_identification(
        scores, 20, 5, seed=1
    )


def test_fused_identification_counts_decoders_on_other_scales_equally():
    from neurodecode.evaluate.retrieval import fused_identification, n_way_identification

    # Each decoder is sure where it is right (correct score 3, others 0) and unsure where it is
    # wrong (the correct candidate second by 0.1): a is right on items 0-1, b on items 2-3. b's
    # scores are 1000x larger and shifted, so a raw sum is b alone; standardised, each wins
    # where it is sure.
    unsure = np.array([[0.9, 1.0], [1.0, 0.9]])
    a = np.zeros((4, 4))
    a[[0, 1], [0, 1]] = 3.0
    a[2:, 2:] = unsure
    b = np.zeros((4, 4))
    b[[2, 3], [2, 3]] = 3.0
    b[:2, :2] = unsure
    b = 1000.0 * b + 50.0
    for single in (a, b, a + b):
        assert n_way_identification(single, 4, 1, k=1)["brain_to_image_top1"] == 0.5
    fused = fused_identification([a, b], 4, 1, k=1)
    assert fused["brain_to_image_top1"] == 1.0 and fused["image_to_brain_top1"] == 1.0


def test_fused_identification_refuses_mismatched_shapes():
    from neurodecode.evaluate.retrieval import fused_identification
    from neurodecode.validation import InvalidInputError

    with pytest.raises(InvalidInputError, match="one \\(N, N\\) shape"):
        fused_identification([np.eye(5), np.eye(6)], 5, 1)
    with pytest.raises(InvalidInputError, match="empty"):
        fused_identification([], 5, 1)
