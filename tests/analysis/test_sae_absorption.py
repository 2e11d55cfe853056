"""Feature absorption on a planted hierarchy: a planted absorption case is found, a clean
dictionary scores 0."""

import numpy as np
import pytest

from neurodecode.analysis.sae.absorption import (
    absorption_from_latents,
    planted_absorption,
    select_main_latents,
)
from neurodecode.analysis.sae.planted import make_planted_hierarchy
from neurodecode.validation import InvalidInputError

PER_PARENT = 12
ABSORBED = [0, 1, 2]  # children of parent 0 whose latents absorb the parent


def _hierarchy():
    return make_planted_hierarchy(
        6000, d=64, n_parents=4, children_per_parent=PER_PARENT, n_active=2, seed=0
    )


def _clean(h):
    """The planted dictionary itself: one latent per parent and per child, exact codes."""
    return np.concatenate([h.parent_codes, h.child_codes], 1), np.concatenate(
        [h.parents, h.children]
    )


def _absorbing(h):
    """Parent 0's latent goes silent when one of its ABSORBED children is present; those
    children's latents decode (parent + child) / sqrt(2) instead."""
    latents, decoder = _clean(h)
    latents, decoder = latents.copy(), decoder.copy()
    n_parents = len(h.parents)
    absorbed_rows = np.zeros(len(latents), dtype=bool)
    for c in ABSORBED:
        column = n_parents + c
        present = h.child_codes[:, c] > 0
        absorbed_rows |= present
        u = (h.parents[0] + h.children[c]) / np.sqrt(2)
        decoder[column] = u
        latents[present, column] = h.inputs[present] @ u
    latents[absorbed_rows, 0] = 0.0
    return latents, decoder, absorbed_rows


def test_planted_hierarchy_children_imply_parents_and_are_orthonormal():
    h = _hierarchy()
    parent_of_child = h.child_parent()
    rows, children = np.nonzero(h.child_codes)
    assert np.all(h.parent_codes[rows, parent_of_child[children]] > 0)
    directions = np.concatenate([h.parents, h.children])
    assert np.allclose(directions @ directions.T, np.eye(len(directions)), atol=1e-5)
    with pytest.raises(InvalidInputError, match="fit orthogonally"):
        make_planted_hierarchy(10, d=8, n_parents=4, children_per_parent=4)


def test_clean_dictionary_scores_zero():
    h = _hierarchy()
    latents, decoder = _clean(h)
    scores = planted_absorption(h, latents=latents, decoder=decoder)
    assert scores["mean_absorption_fraction"] == 0.0
    assert scores["full_absorption_rate"] == 0.0
    assert scores["mean_split_latents"] == 1.0


def test_planted_absorption_is_detected_row_for_row():
    h = _hierarchy()
    latents, decoder, absorbed_rows = _absorbing(h)
    labels = h.parent_codes[:, 0] > 0
    result = absorption_from_latents(latents, decoder, h.inputs, h.parents[0], labels)
    assert result.main_latents == [0]  # the rare absorbing children do not join the probe
    assert result.n_true_positives == int(labels.sum())
    expected = absorbed_rows[labels]  # exactly the rows holding an absorbed child
    assert np.array_equal(result.absorption_fraction, expected.astype(float))
    assert np.array_equal(result.full_absorption, expected)
    assert result.mean_absorption_fraction == pytest.approx(expected.mean())
    assert 0.05 < expected.mean() < 0.25
    # the other parents are untouched
    scores = planted_absorption(h, latents=latents, decoder=decoder)
    assert [p["mean_absorption_fraction"] for p in scores["per_parent"][1:]] == [0.0] * 3


def test_split_latents_are_found():
    rng = np.random.default_rng(0)
    labels = rng.random(2000) < 0.5
    # the feature is carried by two latents, each on half of the positive rows
    half = rng.random(2000) < 0.5
    latents = np.zeros((2000, 5))
    latents[labels & half, 3] = 1.0
    latents[labels & ~half, 1] = 1.0
    latents[:, 4] = rng.random(2000)  # noise
    main, f1 = select_main_latents(latents, labels)
    assert sorted(main) == [1, 3]
    assert f1[1] == pytest.approx(1.0)
    with pytest.raises(InvalidInputError, match="both"):
        select_main_latents(latents, np.ones(2000, dtype=bool))
