"""The ceiling ladder: every decoding number placed between chance and the physical limit.

On the same repeat-averaged test trials of one subject, in the same candidate order (the shared
images, ``sharedix``), with the same n-way protocol (MindEye's: random batches of ``n_way``
candidates, both directions, 30 draws):

``oracle``
    Maximum likelihood under the true simulated model (true noise-free responses of every
    candidate, true noise covariance, drift removed): the physical limit.
``feature_oracle.<space>``
    *Sim-only diagnostic.* The true noise-free responses of the training images regressed on a
    target space's features (per voxel the better, by cross-validation on the training images, of
    a linear and a Gaussian-kernel ridge: :func:`feature_oracle_predictions`; for a space made of
    several blocks one penalty per block and voxel: :func:`banded_feature_oracle_predictions`),
    the candidates' predicted responses projected on the signal subspace (the span of the
    training images' centred noise-free responses, :func:`signal_projection`) and scored with the
    true noise: an estimate of the best any decoder working through that space can do, so that a
    method's loss is told apart from its target space's. Without the projection the prediction
    errors that leave the signal subspace are judged against the small independent noise alone,
    and the rung fell below trained decoders (pooled+rectified8: 0.25 vs 0.46 for ours); the
    projection lifted every space on validation images (``benchmarks/bench_feature_oracle_gap``).
``encoding_identification``
    Kay et al. (2008): a voxel-wise ridge encoding model from the target features to the
    single training trials, per-voxel noise from its residuals, candidates ranked by likelihood
    (:class:`neurodecode.models.encoding_identification.EncodingIdentification`).
``ridge``
    Ridge from voxels to the target features, candidates ranked by cosine.
``ours``
    The trained decoder's brain embeddings, candidates ranked by cosine.
``ours_plus_encoding_identification``
    An ensemble with no fitted weight: ``ours``'s cosines and the encoding identification's
    log-likelihoods, each standardised along the ranked axis, summed
    (:func:`neurodecode.evaluate.retrieval.fused_identification`). A discriminative and a
    generative decoder err on different trials; the sum shows what the two together hold.
``chance``
    ``1 / n_way``.

Each rung is ``{"brain_to_image_top1", "image_to_brain_top1", ...}``
(:func:`neurodecode.evaluate.retrieval.n_way_identification`'s keys).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from neurodecode.sim.ground_truth import read_ground_truth, read_subject_truth
from neurodecode.sim.oracle import OracleTestData, oracle_test_data, posterior_scores
from neurodecode.validation import InvalidInputError

#: rung order, top (the limit) to bottom
RUNGS = (
    "oracle",
    "feature_oracle",
    "encoding_identification",
    "ridge",
    "ours",
    "ours_plus_encoding_identification",
    "chance",
)
N_DRAWS = 30


def shared_order(stimulus_ids: np.ndarray, sharedix: np.ndarray) -> np.ndarray:
    """Row permutation putting test items in ``sharedix`` order: ``ids[perm] == sharedix``."""
    position = {int(i): k for k, i in enumerate(stimulus_ids)}
    missing = [int(i) for i in sharedix if int(i) not in position]
    if missing:
        raise InvalidInputError(
            f"{len(missing)} shared images have no averaged test trial (first: {missing[:5]})."
        )
    return np.array([position[int(i)] for i in sharedix])


def _top(metrics: dict) -> dict:
    keep = ("brain_to_image_top1", "image_to_brain_top1", "brain_to_image_top5", "n_way")
    return {k: float(metrics[k]) if k != "n_way" else int(metrics[k]) for k in keep if k in metrics}


def oracle_rungs(
    root: str | Path,
    subject: str,
    target_spaces: dict[str, Callable[[np.ndarray], np.ndarray]],
    train_ids: np.ndarray,
    n_way: int = 300,
    seed: int = 0,
) -> dict:
    """The oracle and one feature oracle per target space, on a simulated world's test trials.

    Parameters
    ----------
    root : path
        A world written by :func:`neurodecode.sim.fmri.simulate_fmri` (it has
        ``ground_truth.h5``).
    subject : str
    target_spaces : dict
        Name -> ``features_of(stimulus_ids) -> (n, ...)``: the features a decoder targets
        (flattened per image); or ``-> {block: (n, ...)}`` for a space made of blocks, whose
        feature oracle is banded (:func:`space_predictions`).
    train_ids : ndarray
        The training images the feature oracles are regressed on (the decoders' own).
    n_way, seed
        Identification protocol.

    Returns
    -------
    dict
        ``{"oracle": {...}, "feature_oracle": {space: {...}}}``.
    """
    from neurodecode.sim.oracle import oracle_scores

    test = read_oracle_test_data(root, subject)
    n_way = min(n_way, len(test.observed))

    def identify(scores: np.ndarray) -> dict:
        return _top(oracle_identification(scores, n_way=n_way, n_draws=N_DRAWS, seed=seed))

    truth = read_subject_truth(root, subject)
    world_ids = np.asarray(read_ground_truth(root).sharedix)
    train_ids = np.unique(np.asarray(train_ids))
    clean_train = truth.responses_to(train_ids)
    feature_oracles = {}
    for name, features_of in target_spaces.items():
        predicted, kernel_share = space_predictions(
            features_of, train_ids, clean_train, world_ids, seed
        )
        predicted, _ = signal_projection(clean_train, predicted)
        feature_oracles[name] = identify(
            oracle_scores(test.observed, predicted, test.noise, test.n_repeats)
        )
        feature_oracles[name]["kernel_voxel_fraction"] = kernel_share
    return {"oracle": identify(test.scores()), "feature_oracle": feature_oracles}


def signal_projection(
    clean_fit: np.ndarray, predicted: np.ndarray, tol: float = 1e-6
) -> tuple[np.ndarray, int]:
    """Predicted responses projected on the signal subspace of the fit images.

    The subspace is the span of the fit images' centred noise-free responses (every image's
    noise-free response lies in it, up to the fit images' coverage), through their mean.

    Parameters
    ----------
    clean_fit : ndarray, shape (n_fit, n_voxels)
        Noise-free responses of the images the predictions were regressed on.
    predicted : ndarray, shape (n, n_voxels)
        Predicted responses of other images.
    tol : float
        Singular values below ``tol`` times the largest are left out of the span.

    Returns
    -------
    projected : ndarray, shape (n, n_voxels)
    rank : int
        The subspace's dimension.
    """
    clean_fit = np.asarray(clean_fit, dtype=np.float64)
    mean = clean_fit.mean(0)
    _, singular, vt = np.linalg.svd(clean_fit - mean, full_matrices=False)
    basis = vt[: int((singular > tol * singular[0]).sum())]
    return mean + ((np.asarray(predicted) - mean) @ basis.T) @ basis, len(basis)


#: Random Fourier features of the feature oracle's kernel encoder, and its bandwidths (multiples
#: of the median distance between standardised training features).
N_RANDOM_FEATURES = 2048
KERNEL_BANDWIDTHS = (1.0, 2.0)


def feature_oracle_predictions(
    x_train: np.ndarray,
    clean_train: np.ndarray,
    x_test: np.ndarray,
    seed: int = 0,
    n_random_features: int = N_RANDOM_FEATURES,
    bandwidths: tuple[float, ...] = KERNEL_BANDWIDTHS,
) -> tuple[np.ndarray, float]:
    """The feature oracle's encoder: the best predictor of the true responses from a target space.

    A linear ridge alone is no bound on a nonlinear decoder (an MLP can beat it), so each voxel
    gets the better, by its cross-validated R² over the *training* images, of a voxel-wise linear
    ridge and of Gaussian-kernel ridges (random Fourier features of the standardised features, one
    per bandwidth). No test image takes part in the choice.

    Parameters
    ----------
    x_train : ndarray, shape (n_train, n_features)
        Target features of the training images.
    clean_train : ndarray, shape (n_train, V)
        Their true noise-free responses (percent signal change).
    x_test : ndarray, shape (n_test, n_features)
        Target features of the candidates.

    Returns
    -------
    predicted : ndarray, shape (n_test, V), float64
    kernel_fraction : float
        Fraction of voxels for which a kernel encoder won.
    """
    from neurodecode.models.ridge import RidgeRegression

    x_train = np.asarray(x_train, dtype=np.float32)
    x_test = np.asarray(x_test, dtype=np.float32)
    mean, sd = x_train.mean(0), x_train.std(0) + 1e-6
    z_train, z_test = (x_train - mean) / sd, (x_test - mean) / sd
    rng = np.random.default_rng(seed)
    sample = z_train[rng.choice(len(z_train), size=min(len(z_train), 500), replace=False)]
    median = _median_distance(sample)

    linear = RidgeRegression().fit(z_train, clean_train)
    best_score = np.asarray(linear.cv_score_, dtype=np.float64)
    predicted = np.asarray(linear.predict(z_test), dtype=np.float64)
    kernel_won = np.zeros(len(best_score), dtype=bool)
    for bandwidth in bandwidths:
        w = rng.normal(size=(z_train.shape[1], n_random_features)) / (bandwidth * median)
        b = rng.uniform(0, 2 * np.pi, size=n_random_features)

        def expand(z: np.ndarray, w: np.ndarray = w, b: np.ndarray = b) -> np.ndarray:
            return np.cos(z @ w + b).astype(np.float32)

        kernel = RidgeRegression().fit(expand(z_train), clean_train)
        score = np.asarray(kernel.cv_score_, dtype=np.float64)
        better = score > best_score
        if better.any():
            predicted[:, better] = np.asarray(kernel.predict(expand(z_test)))[:, better]
            best_score[better] = score[better]
            kernel_won |= better
    return predicted, float(kernel_won.mean())


def _median_distance(sample: np.ndarray) -> float:
    """Median Euclidean distance between distinct rows, through the Gram matrix (memory
    ``n^2``, not ``n^2 x features``)."""
    x = np.asarray(sample, dtype=np.float64)
    square = (x**2).sum(1)
    d2 = np.maximum(square[:, None] + square[None] - 2 * x @ x.T, 0.0)
    return float(np.median(np.sqrt(d2[np.triu_indices(len(x), 1)])))


#: Relative block scales the banded feature oracle searches (block penalties over a 625-fold
#: range around the first block's), and its ridge grid: wider than the default downwards, since
#: the banded ridge gives every block unit total variance (its alphas act on a Gram matrix
#: ``n_features`` times smaller than a plain ridge's on z-scored features).
BAND_SCALES = (0.2, 1.0, 5.0)
BANDED_ALPHAS = np.logspace(-6, 6, 25)


def space_predictions(
    features_of: Callable[[np.ndarray], np.ndarray | Mapping[str, np.ndarray]],
    fit_ids: np.ndarray,
    clean_fit: np.ndarray,
    candidate_ids: np.ndarray,
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """A target space's feature-oracle predictions of the candidates' responses.

    ``features_of(ids)`` returns an array ``(n, ...)`` (one block: :func:`feature_oracle_predictions`)
    or a dict of blocks ``{name: (n, ...)}`` (several: :func:`banded_feature_oracle_predictions`),
    each flattened per image.

    Returns
    -------
    predicted : ndarray, shape (len(candidate_ids), V)
    kernel_fraction : float
    """

    def blocks(ids: np.ndarray) -> dict[str, np.ndarray]:
        value = features_of(ids)
        if not isinstance(value, Mapping):
            value = {"features": value}
        return {k: np.asarray(v).reshape(len(ids), -1) for k, v in value.items()}

    return banded_feature_oracle_predictions(
        blocks(fit_ids), clean_fit, blocks(candidate_ids), seed
    )


def banded_feature_oracle_predictions(
    blocks_train: Mapping[str, np.ndarray],
    clean_train: np.ndarray,
    blocks_test: Mapping[str, np.ndarray],
    seed: int = 0,
    n_random_features: int = N_RANDOM_FEATURES,
    bandwidths: tuple[float, ...] = KERNEL_BANDWIDTHS,
    band_scales: tuple[float, ...] = BAND_SCALES,
) -> tuple[np.ndarray, float]:
    """The feature oracle's encoder for a space made of blocks: one penalty per block and voxel.

    One z-scoring and one penalty over all features let a wide block (a 768-d low-level map)
    drown a narrow one (a 128-d embedding). Here every block has its own penalty, per voxel
    (:func:`neurodecode.analysis.encoding.fit_banded_ridge`: each block at unit total variance,
    relative block scales ``band_scales`` searched, the first block's fixed), for two kinds of
    encoder: linear in the blocks, and an additive Gaussian kernel (random Fourier features of
    each z-scored block, bandwidth a multiple of that block's median feature distance, the
    blocks' expansions as the bands), one per bandwidth. Each voxel keeps the encoder with the
    best cross-validated R² over the *training* images; no test image takes part. With one
    block this is :func:`feature_oracle_predictions`, unchanged.

    Parameters
    ----------
    blocks_train : dict of str -> ndarray, shape (n_train, n_features_block)
        Every block's features of the training images.
    clean_train : ndarray, shape (n_train, V)
        Their true noise-free responses (percent signal change).
    blocks_test : dict of str -> ndarray, shape (n_test, n_features_block)
        The same blocks, in the same order, for the candidates.
    n_random_features : int
        Random Fourier features per block.

    Returns
    -------
    predicted : ndarray, shape (n_test, V), float64
    kernel_fraction : float
        Fraction of voxels for which a kernel encoder won.
    """
    from neurodecode.analysis.encoding import fit_banded_ridge

    names = list(blocks_train)
    if not names or list(blocks_test) != names:
        raise InvalidInputError(
            f"training blocks {names} and candidate blocks {list(blocks_test)} differ; expected "
            "the same non-empty blocks in the same order."
        )
    if len(names) == 1:
        (name,) = names
        return feature_oracle_predictions(
            blocks_train[name], clean_train, blocks_test[name], seed, n_random_features, bandwidths
        )
    train = {k: np.asarray(blocks_train[k], dtype=np.float64) for k in names}
    test = {k: np.asarray(blocks_test[k], dtype=np.float64) for k in names}

    def fit(bands_train: dict, bands_test: dict) -> tuple[np.ndarray, np.ndarray]:
        banded = fit_banded_ridge(bands_train, clean_train, band_scales, alphas=BANDED_ALPHAS)
        return np.asarray(banded.encoder.cv_score, np.float64), banded.predict(bands_test)

    best_score, predicted = fit(train, test)
    kernel_won = np.zeros(len(best_score), dtype=bool)
    rng = np.random.default_rng(seed)
    z_train, z_test, medians = {}, {}, {}
    for k in names:
        mean, sd = train[k].mean(0), train[k].std(0) + 1e-6
        z_train[k], z_test[k] = (train[k] - mean) / sd, (test[k] - mean) / sd
        sample = rng.choice(len(z_train[k]), size=min(len(z_train[k]), 500), replace=False)
        medians[k] = _median_distance(z_train[k][sample])
    for bandwidth in bandwidths:
        expanded_train, expanded_test = {}, {}
        for k in names:
            w = rng.normal(size=(z_train[k].shape[1], n_random_features))
            w /= bandwidth * medians[k]
            b = rng.uniform(0, 2 * np.pi, size=n_random_features)
            expanded_train[k] = np.cos(z_train[k] @ w + b)
            expanded_test[k] = np.cos(z_test[k] @ w + b)
        score, kernel_predicted = fit(expanded_train, expanded_test)
        better = score > best_score
        predicted[:, better] = kernel_predicted[:, better]
        best_score[better] = score[better]
        kernel_won |= better
    return predicted, float(kernel_won.mean())


def validation_split(
    train_ids: np.ndarray, validation_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split training images (not trials) into fit and validation images, seeded.

    Returns
    -------
    fit_ids, validation_ids : ndarray
        Disjoint, sorted, together the unique ``train_ids``.
    """
    ids = np.unique(np.asarray(train_ids))
    if not 0 < validation_fraction < 1:
        raise InvalidInputError(
            f"validation_fraction must be in (0, 1); got {validation_fraction}."
        )
    n_val = round(validation_fraction * len(ids))
    if n_val < 2 or len(ids) - n_val < 2:
        raise InvalidInputError(
            f"{len(ids)} training images cannot give a validation split of fraction "
            f"{validation_fraction} (each side needs >= 2 images)."
        )
    chosen = np.random.default_rng(seed).permutation(len(ids))[:n_val]
    is_val = np.zeros(len(ids), dtype=bool)
    is_val[chosen] = True
    return ids[~is_val], ids[is_val]


def validation_feature_oracles(
    root: str | Path,
    subject: str,
    target_spaces: dict[str, Callable[[np.ndarray], np.ndarray]],
    train_ids: np.ndarray,
    validation_fraction: float = 0.2,
    n_way: int = 300,
    seed: int = 0,
) -> dict:
    """The oracle and each target space's feature oracle on *validation* trials: for choosing a
    target space without looking at the test trials.

    The training images are split (:func:`validation_split`); the feature oracles' encoders
    (:func:`feature_oracle_predictions`) are regressed on the true noise-free responses of the
    fit images only, and the candidates are the validation images, scored against their own
    repeat-averaged, drift-removed training trials with the true noise, in the protocol of
    :func:`oracle_rungs`. No shared (test) image or trial takes part.

    Parameters
    ----------
    root, subject, target_spaces, train_ids, n_way, seed
        As :func:`oracle_rungs` (``n_way`` is capped at the number of validation images).
    validation_fraction : float
        Share of the training images held out as validation candidates.

    Returns
    -------
    dict
        ``{"oracle": {...}, "feature_oracle": {space: {...}}, "n_fit_images": int,
        "n_validation_images": int}``; each rung as :func:`oracle_rungs`'s.
    """
    from neurodecode.data.nsd import read_nsd_betas
    from neurodecode.sim.oracle import oracle_scores

    fit_ids, val_ids = validation_split(train_ids, validation_fraction, seed)
    truth = read_subject_truth(root, subject)
    trials = read_nsd_betas(root, subject, zscore=False, progress=False)
    if not np.array_equal(trials.info["voxel_ijk"], truth.voxel_ijk):
        raise InvalidInputError(f"nsdgeneral of {subject} in {root} does not match its truth.")
    rows = np.isin(trials.stimulus_id, val_ids) & (trials.split == "train")
    val = oracle_test_data(
        truth, val_ids, trials.data[rows], trials.stimulus_id[rows], trials.session[rows]
    )
    del trials
    n_way = min(n_way, len(val_ids))

    def identify(scores: np.ndarray) -> dict:
        return _top(oracle_identification(scores, n_way=n_way, n_draws=N_DRAWS, seed=seed))

    clean_fit = truth.responses_to(fit_ids)
    feature_oracles = {}
    for name, features_of in target_spaces.items():
        predicted, kernel_share = space_predictions(features_of, fit_ids, clean_fit, val_ids, seed)
        predicted, _ = signal_projection(clean_fit, predicted)
        feature_oracles[name] = identify(
            oracle_scores(val.observed, predicted, val.noise, val.n_repeats)
        )
        feature_oracles[name]["kernel_voxel_fraction"] = kernel_share
    return {
        "oracle": identify(val.scores()),
        "feature_oracle": feature_oracles,
        "n_fit_images": len(fit_ids),
        "n_validation_images": len(val_ids),
    }


def decoder_rungs(
    datamodule,
    brain_embeddings: np.ndarray,
    sharedix: np.ndarray,
    n_way: int = 300,
    seed: int = 0,
) -> dict:
    """Encoding identification, ridge, ours and chance on the datamodule's eval subject.

    Parameters
    ----------
    datamodule : NSDDataModule
        Set up; its training trials of the eval subject fit the baselines, its averaged test
        trials are scored.
    brain_embeddings : ndarray, shape (n_test, ...)
        The trained decoder's output for ``datamodule.test_trials``, in that order.
    sharedix : ndarray
        The candidate order (the shared images).
    """
    from neurodecode.evaluate.retrieval import (
        cosine_scores,
        fused_identification,
        n_way_identification,
    )
    from neurodecode.models.encoding_identification import EncodingIdentification
    from neurodecode.models.ridge import RidgeRegression

    test, targets = datamodule.test_trials, datamodule.test_targets
    perm = shared_order(test.stimulus_id, sharedix)
    brain, targets = test.data[perm], targets[perm].reshape(len(perm), -1)
    n_way = min(n_way, len(perm))
    k = datamodule.eval_index
    train = datamodule.train_set.trials[k]
    train_targets = datamodule.train_set.targets[k].reshape(len(train), -1)
    subject = datamodule.eval_subject
    geometry = {"n_voxels": {subject: int(brain.shape[1])}, "target_shape": [targets.shape[1]]}
    encoder = EncodingIdentification(geometry, noise="diagonal", residuals="train")
    encoder.fit(train_targets, train.data, groups=np.asarray(train.stimulus_id))
    n_repeats = float(np.median(test.repeat)) if len(test) else 1.0
    # repeats of one image stay in one CV fold, as for the encoding model: otherwise the penalty
    # is chosen on images the fold has already seen and comes out too small
    ridge = RidgeRegression().fit(
        train.data, datamodule.train_set.targets[k], groups=np.asarray(train.stimulus_id)
    )
    ridge_out = np.asarray(ridge.predict(brain)).reshape(len(perm), -1)
    ours = np.asarray(brain_embeddings)[perm].reshape(len(perm), -1)
    likelihoods = np.asarray(encoder.identify(brain, targets, n_repeats))
    ours_scores = cosine_scores(ours, targets)
    return {
        "encoding_identification": _top(
            n_way_identification(likelihoods, n_way, N_DRAWS, seed=seed)
        ),
        "ridge": _top(
            n_way_identification(cosine_scores(ridge_out, targets), n_way, N_DRAWS, seed=seed)
        ),
        "ours": _top(n_way_identification(ours_scores, n_way, N_DRAWS, seed=seed)),
        "ours_plus_encoding_identification": _top(
            fused_identification([ours_scores, likelihoods], n_way, N_DRAWS, seed=seed)
        ),
        "chance": {
            "brain_to_image_top1": 1.0 / n_way,
            "image_to_brain_top1": 1.0 / n_way,
            "brain_to_image_top5": min(5, n_way) / n_way,
            "n_way": n_way,
        },
    }


def ladder_rows(ladder: dict) -> list[tuple[str, dict]]:
    """``(name, rung)`` pairs top to bottom, feature oracles as ``feature_oracle (<space>)``."""
    rows = []
    for name in RUNGS:
        if name == "feature_oracle":
            rows += [(f"feature_oracle ({s})", r) for s, r in ladder.get(name, {}).items()]
        elif name in ladder:
            rows.append((name, ladder[name]))
    return rows


def read_oracle_test_data(root: str | Path, subject: str) -> OracleTestData:
    """Convenience: :func:`oracle_test_data` of a written world, its test betas read with the
    project's NSD reader (:func:`neurodecode.data.nsd.read_nsd_betas`, percent signal change)."""
    from neurodecode.data.nsd import read_nsd_betas

    world = read_ground_truth(root)
    truth = read_subject_truth(root, subject)
    trials = read_nsd_betas(root, subject, zscore=False, progress=False)
    if not np.array_equal(trials.info["voxel_ijk"], truth.voxel_ijk):
        raise InvalidInputError(f"nsdgeneral of {subject} in {root} does not match {world.path}.")
    test = trials.split == "test"
    return oracle_test_data(
        truth, world.sharedix, trials.data[test], trials.stimulus_id[test], trials.session[test]
    )


def oracle_identification(
    scores: np.ndarray, n_way: int = 300, n_draws: int = 30, seed: int = 0
) -> dict:
    """n-way identification (MindEye protocol) from oracle log-likelihood scores, both directions,
    candidates ranked by posterior. ``n_way`` is capped at the number of candidates."""
    from neurodecode.evaluate.retrieval import n_way_identification

    return n_way_identification(
        posterior_scores(scores), n_way=min(n_way, len(scores)), n_draws=n_draws, seed=seed
    )


def oracle_retrieval(
    root: str | Path, subject: str = "subj01", n_way: int = 300, n_draws: int = 30, seed: int = 0
) -> dict:
    """The oracle's n-way identification of a written world's averaged test trials.

    Candidates are ranked by their posterior probability given the trial (log-likelihood
    normalised over candidates), in both directions. ``n_way`` is capped at the number of shared
    images. Returns the keys of :func:`neurodecode.evaluate.retrieval.n_way_identification`.
    """
    data = read_oracle_test_data(root, subject)
    return oracle_identification(data.scores(), n_way=n_way, n_draws=n_draws, seed=seed)
