"""The banded feature oracle (neurodecode.demo.ladder.banded_feature_oracle_predictions): one
penalty per block and voxel, so that a wide uninformative block cannot drown a narrow one."""

import numpy as np
import pytest

from neurodecode.validation import InvalidInputError


def _planted(n: int, seed: int = 0):
    """A narrow informative block, a wide block of noise features, and voxels driven by the
    narrow block only (three linearly, one nonlinearly)."""
    rng = np.random.default_rng(seed)
    narrow = rng.normal(size=(n, 4))
    wide = rng.normal(size=(n, 1000))
    weights = rng.normal(size=(4, 3))
    responses = np.column_stack([narrow @ weights, np.cos(2 * narrow[:, 0]) * narrow[:, 1]])
    return {"narrow": narrow, "wide": wide}, responses


def _r(predicted, truth):
    return np.array(
        [np.corrcoef(predicted[:, v], truth[:, v])[0, 1] for v in range(truth.shape[1])]
    )


def test_banded_oracle_recovers_what_one_penalty_loses_to_a_wide_noise_block():
    from neurodecode.demo.ladder import (
        banded_feature_oracle_predictions,
        feature_oracle_predictions,
    )

    blocks, responses = _planted(600)
    train = {k: v[:500] for k, v in blocks.items()}
    test = {k: v[500:] for k, v in blocks.items()}
    truth = responses[500:]

    banded, kernel_fraction = banded_feature_oracle_predictions(
        train, responses[:500], test, n_random_features=512
    )
    single, _ = feature_oracle_predictions(
        np.hstack(list(train.values())),
        responses[:500],
        np.hstack(list(test.values())),
        n_random_features=512,
    )
    r_banded, r_single = _r(banded, truth), _r(single, truth)
    # the linear voxels are recovered almost exactly; the nonlinear one through the kernel
    assert r_banded[:3].min() > 0.97 and r_banded[3] > 0.6
    assert kernel_fraction == 0.25
    # one penalty over 1,004 z-scored features lets the 1,000 noise features dominate
    assert r_single[:3].max() < 0.8 and r_single[3] < 0.3
    assert np.all(r_banded > r_single + 0.2)


def test_one_block_is_the_single_penalty_oracle_unchanged():
    from neurodecode.demo.ladder import (
        banded_feature_oracle_predictions,
        feature_oracle_predictions,
        space_predictions,
    )

    blocks, responses = _planted(200)
    x = blocks["narrow"].astype(np.float32)
    expected, share = feature_oracle_predictions(x[:150], responses[:150], x[150:], seed=3)
    got, got_share = banded_feature_oracle_predictions(
        {"only": x[:150]}, responses[:150], {"only": x[150:]}, seed=3
    )
    np.testing.assert_array_equal(got, expected)
    assert got_share == share
    # an array-valued target space (the demo's) takes the same path
    via_space, _ = space_predictions(
        lambda ids: x[ids], np.arange(150), responses[:150], np.arange(150, 200), seed=3
    )
    np.testing.assert_array_equal(via_space, expected)


def test_banded_oracle_rejects_blocks_that_differ_between_fit_and_candidates():
    from neurodecode.demo.ladder import banded_feature_oracle_predictions

    blocks, responses = _planted(50)
    with pytest.raises(InvalidInputError, match="differ"):
        banded_feature_oracle_predictions(blocks, responses, {"narrow": blocks["narrow"]})
