"""Exact McNemar test against hand-computed binomial tails."""

import numpy as np
import pytest

from neurodecode.evaluate.significance import exact_mcnemar
from neurodecode.validation import InvalidInputError


def test_exact_mcnemar_by_hand():
    first = np.array([True, True, True, False, True, False])
    second = np.array([False, False, True, False, False, True])
    # discordant: 3 only first, 1 only second; one-sided P(X >= 3 | n=4) = 5/16
    out = exact_mcnemar(first, second, alternative="greater")
    assert (out["only_first"], out["only_second"]) == (3, 1)
    assert out["p_value"] == pytest.approx(5 / 16)
    assert exact_mcnemar(first, second)["p_value"] == pytest.approx(10 / 16)  # two-sided
    assert exact_mcnemar(first, first)["p_value"] == 1.0  # nothing discordant
    with pytest.raises(InvalidInputError, match="two \\(n,\\) arrays"):
        exact_mcnemar(first, second[:3])
    with pytest.raises(InvalidInputError, match="alternative"):
        exact_mcnemar(first, second, alternative="less")
