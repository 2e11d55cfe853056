"""Paired significance tests for hit/miss outcomes of two methods on the same items."""

from __future__ import annotations

import numpy as np

from neurodecode.validation import InvalidInputError, check_option


def exact_mcnemar(
    first: np.ndarray, second: np.ndarray, alternative: str = "two-sided"
) -> dict[str, float | int]:
    """Exact McNemar test: a binomial test on the items only one of two methods gets right.

    Parameters
    ----------
    first, second : bool arrays, shape (n,)
        Hits of two methods on the same n items (e.g. test images retrieved at top-1, or paired
        samples judged to show a category).
    alternative : {"two-sided", "greater"}
        ``"greater"``: ``first`` hits more often than ``second``.

    Returns
    -------
    dict
        ``only_first``, ``only_second`` (discordant counts) and ``p_value`` (1.0 when no item
        is discordant).
    """
    from scipy.stats import binomtest

    check_option("alternative", alternative, ("two-sided", "greater"))
    a, b = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise InvalidInputError(
            f"first has shape {a.shape} and second {b.shape}; expected two (n,) arrays."
        )
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = only_a + only_b
    p = binomtest(only_a, n, 0.5, alternative=alternative).pvalue if n else 1.0
    return {"only_first": only_a, "only_second": only_b, "p_value": float(p)}
