"""N-way retrieval (identification) between brain and image embeddings: MindEye's protocol.

This module owns the retrieval metrics every decoder is scored with (learned heads, the prior's
output, ridge baselines and the simulation's oracle alike). The protocol follows MindEye
(Scotti et al., 2023, NeurIPS, "Reconstructing the Mind's Eye"): embeddings are flattened and
L2-normalised, cosine similarities are computed between every brain trial (repeat-averaged) and
every test image, and top-1 accuracy is measured within random batches of 300 test items, averaged
over 30 draws, in both directions (brain -> image: "image retrieval"; image -> brain: "brain
retrieval").

Ties are scored pessimistically: a candidate whose score equals the correct one counts as ranked
above it, so a constant or degenerate score matrix never earns hits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from neurodecode.validation import InvalidInputError, check_array

ArrayLike = np.ndarray | torch.Tensor


def _to_numpy(array: ArrayLike) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _check_k(k: int | Sequence[int], n_way: int) -> tuple[int, ...]:
    ks = (k,) if isinstance(k, int | np.integer) else tuple(k)
    if not ks or any(not isinstance(x, int | np.integer) or x < 1 for x in ks):
        raise InvalidInputError(f"k={k!r} is not valid; expected positive integers, e.g. (1, 5).")
    if any(x > n_way for x in ks):
        raise InvalidInputError(f"k={k!r} is not valid; every k must be <= n_way={n_way}.")
    return tuple(int(x) for x in ks)


def n_way_identification(
    scores: ArrayLike,
    n_way: int = 300,
    n_draws: int = 30,
    k: int | Sequence[int] = (1, 5),
    seed: int = 0,
) -> dict[str, float]:
    """Top-k accuracy of n-way identification in both directions, averaged over random draws.

    Each draw picks ``n_way`` distinct items (without replacement); within the draw, the rank of
    the correct pair is the number of other candidates scoring at least as high (ties count
    against the item). Brain -> image ranks the correct image within row ``i`` of the draw;
    image -> brain ranks the correct trial within column ``j``. A hit at ``k`` means rank < k.

    Parameters
    ----------
    scores : ndarray or Tensor, shape (N, N)
        Similarity of brain trial ``i`` (row) with image ``j`` (column); the correct pairs are on
        the diagonal. Higher means more similar.
    n_way : int
        Items per draw (MindEye: 300). Requires ``N >= n_way``; with ``N == n_way`` every draw is
        the full set.
    n_draws : int
        Number of random draws averaged (MindEye: 30).
    k : int or sequence of int
        The top-k levels to report (each <= n_way).
    seed : int
        Seed of the draws (numpy ``default_rng``).

    Returns
    -------
    dict
        ``brain_to_image_top{k}`` and ``image_to_brain_top{k}`` for each ``k`` (fractions in
        [0, 1]), ``chance_top{k}`` (= k / n_way), ``n_way``, ``n_draws`` and ``n_items`` (N).

    Raises
    ------
    InvalidInputError
        If ``scores`` is not square and finite, ``N < n_way``, or ``k``/``n_draws`` are invalid.
    """
    scores = check_array("scores", _to_numpy(scores), ndim=2, kind="biuf", finite=True)
    n_items = scores.shape[0]
    if scores.shape[1] != n_items:
        raise InvalidInputError(
            f"scores has shape {scores.shape}; expected a square (N, N) matrix of brain trials "
            "(rows) by images (columns) with the correct pairs on the diagonal."
        )
    if not isinstance(n_way, int | np.integer) or n_way < 2:
        raise InvalidInputError(f"n_way={n_way!r} is not valid; expected an integer >= 2.")
    if n_items < n_way:
        raise InvalidInputError(
            f"scores has N={n_items} items but n_way={n_way}; expected at least n_way test items "
            "(MindEye draws 300 of its 982/1000 shared test images)."
        )
    if not isinstance(n_draws, int | np.integer) or n_draws < 1:
        raise InvalidInputError(f"n_draws={n_draws!r} is not valid; expected an integer >= 1.")
    ks = _check_k(k, int(n_way))

    rng = np.random.default_rng(seed)
    hits_b2i = np.zeros(len(ks))
    hits_i2b = np.zeros(len(ks))
    # with N == n_way every draw is the full set: score it once, it stands for all draws
    n_distinct = 1 if n_items == n_way else int(n_draws)
    for _ in range(n_distinct):
        if n_items == n_way:
            subset = np.arange(n_items)
        else:
            subset = rng.choice(n_items, size=n_way, replace=False)
        block = scores[np.ix_(subset, subset)]
        correct = np.diagonal(block)
        # rank = candidates scoring >= the correct one, minus the correct one itself
        rank_b2i = (block >= correct[:, None]).sum(1) - 1
        rank_i2b = (block >= correct[None, :]).sum(0) - 1
        for index, kk in enumerate(ks):
            hits_b2i[index] += np.mean(rank_b2i < kk)
            hits_i2b[index] += np.mean(rank_i2b < kk)

    result: dict[str, float] = {}
    for index, kk in enumerate(ks):
        result[f"brain_to_image_top{kk}"] = float(hits_b2i[index] / n_distinct)
        result[f"image_to_brain_top{kk}"] = float(hits_i2b[index] / n_distinct)
    for kk in ks:
        result[f"chance_top{kk}"] = kk / n_way
    if "chance_top1" not in result:
        result["chance_top1"] = 1.0 / n_way
    result["n_way"] = int(n_way)
    result["n_draws"] = int(n_draws)
    result["n_items"] = int(n_items)
    return result


def cosine_scores(brain_embeddings: ArrayLike, image_embeddings: ArrayLike) -> np.ndarray:
    """Cosine similarity of every brain embedding with every image embedding.

    Token-level embeddings (N, T, D) are flattened to (N, T*D) before L2 normalisation, as
    MindEye does for its 257 x 768 CLIP tokens.

    Parameters
    ----------
    brain_embeddings : ndarray or Tensor, shape (N, D) or (N, T, D)
        Decoded embeddings, one per (repeat-averaged) test trial.
    image_embeddings : ndarray or Tensor, shape (N, D) or (N, T, D)
        Target embeddings of the images, in the same order (row i pairs with row i).

    Returns
    -------
    ndarray, shape (N_brain, N_image), float32
        ``scores[i, j]`` = cosine(brain i, image j), in [-1, 1]. Zero vectors score 0.
    """
    brain = brain_embeddings if isinstance(brain_embeddings, torch.Tensor) else None
    image = image_embeddings if isinstance(image_embeddings, torch.Tensor) else None
    brain = brain if brain is not None else torch.from_numpy(np.asarray(brain_embeddings))
    image = image if image is not None else torch.from_numpy(np.asarray(image_embeddings))
    if brain.ndim < 2 or image.ndim < 2:
        raise InvalidInputError(
            f"brain_embeddings has shape {tuple(brain.shape)} and image_embeddings "
            f"{tuple(image.shape)}; expected (N, D) or (N, T, D) each."
        )
    if brain.shape[1:] != image.shape[1:]:
        raise InvalidInputError(
            f"brain_embeddings has shape {tuple(brain.shape)} but image_embeddings has "
            f"{tuple(image.shape)}; expected the same embedding shape after the first axis."
        )
    brain = brain.detach().reshape(brain.shape[0], -1).to(torch.float32)
    image = image.detach().reshape(image.shape[0], -1).to(device=brain.device, dtype=torch.float32)
    for name, tensor in (("brain_embeddings", brain), ("image_embeddings", image)):
        if not bool(torch.isfinite(tensor).all()):
            raise InvalidInputError(f"{name} has NaN/inf values; expected finite embeddings.")
    brain = torch.nn.functional.normalize(brain, dim=1)
    image = torch.nn.functional.normalize(image, dim=1)
    return (brain @ image.T).cpu().numpy()


def fused_identification(
    score_matrices: Sequence[ArrayLike],
    n_way: int = 300,
    n_draws: int = 30,
    k: int | Sequence[int] = (1, 5),
    seed: int = 0,
) -> dict[str, float]:
    """N-way identification of an equal-weight ensemble of several decoders' scores.

    Each decoder's (N, N) score matrix is standardised along the axis that is ranked (per row,
    over the candidate images, for brain -> image; per column, over the trials, for image ->
    brain) and the standardised matrices are summed, so that decoders whose scores live on other
    scales (cosines, log-likelihoods) count equally and no weight is fitted. With one matrix the
    result equals :func:`n_way_identification` (standardising along the ranked axis keeps every
    rank).

    Parameters
    ----------
    score_matrices : sequence of ndarray or Tensor, each shape (N, N)
        Similarities of brain trial ``i`` (row) with image ``j`` (column), correct pairs on the
        diagonal, higher is more similar; all in the same trial and candidate order.
    n_way, n_draws, k, seed
        As in :func:`n_way_identification`.

    Returns
    -------
    dict
        The keys of :func:`n_way_identification`.
    """
    if len(score_matrices) == 0:
        raise InvalidInputError("score_matrices is empty; expected at least one (N, N) matrix.")
    matrices = [
        check_array(f"score_matrices[{i}]", _to_numpy(s), ndim=2, kind="biuf", finite=True)
        for i, s in enumerate(score_matrices)
    ]
    shapes = {m.shape for m in matrices}
    if len(shapes) != 1:
        raise InvalidInputError(
            f"score_matrices have shapes {sorted(shapes)}; expected one (N, N) shape for all."
        )

    def standardised(axis: int) -> np.ndarray:
        total = np.zeros(matrices[0].shape)
        for m in matrices:
            m = m.astype(np.float64)
            sd = m.std(axis=axis, keepdims=True)
            total += (m - m.mean(axis=axis, keepdims=True)) / np.where(sd > 0, sd, 1.0)
        return total

    by_row = n_way_identification(standardised(1), n_way, n_draws, k, seed)
    by_column = n_way_identification(standardised(0), n_way, n_draws, k, seed)
    result = dict(by_row)
    result.update({key: v for key, v in by_column.items() if key.startswith("image_to_brain")})
    return result


def retrieval_metrics(
    brain_embeddings: ArrayLike,
    image_embeddings: ArrayLike,
    n_way: int = 300,
    n_draws: int = 30,
    seed: int = 0,
    k: int | Sequence[int] = (1, 5),
) -> dict[str, float]:
    """MindEye retrieval: :func:`cosine_scores` then :func:`n_way_identification`.

    Parameters
    ----------
    brain_embeddings, image_embeddings : ndarray or Tensor, shape (N, D) or (N, T, D)
        Paired embeddings (row i of each belongs to test image i); N >= n_way.
    n_way, n_draws, seed, k
        As in :func:`n_way_identification`.

    Returns
    -------
    dict
        The keys of :func:`n_way_identification`.
    """
    n_brain, n_image = len(brain_embeddings), len(image_embeddings)
    if n_brain != n_image:
        raise InvalidInputError(
            f"brain_embeddings has {n_brain} rows but image_embeddings has "
            f"{n_image}; expected one brain embedding per image, in the same order."
        )
    scores = cosine_scores(brain_embeddings, image_embeddings)
    return n_way_identification(scores, n_way=n_way, n_draws=n_draws, k=k, seed=seed)
