"""Voxel-wise encoding models: stimulus features -> voxel responses, scored against the noise ceiling.

This module owns the feature -> voxel direction of the project's linear models (the ridge solver
itself is :func:`neurodecode.models.ridge.solve_ridge_cv`, one cross-validated alpha per voxel):

- :func:`fit_encoder` fits a :class:`VoxelEncoder` (weights, intercept, per-voxel alpha) on any
  feature space (a FeatureStore layer, SAE latents, CLIP embeddings, or several spaces given as
  *bands*: each band is z-scored and scaled by ``1 / sqrt(n_band_features)`` so that no band wins
  by width alone; the per-band scale can be cross-validated with :func:`fit_banded_encoder`).
- :func:`score_encoder` scores predictions on held-out, repeat-averaged responses: R² and Pearson
  r per voxel and R² divided by the noise ceiling.
- :func:`estimate_noise_ceiling` is NSD's estimator on any repeated data, returned as a
  **fraction** (NC % / 100) for ``n`` averaged repeats (Allen et al., 2022, Nature Neuroscience
  25:116-126): ``ncsnr = sqrt(max(1 - v, 0) / v)`` with ``v`` the mean variance across repeats of
  z-scored responses, ``NC = ncsnr² / (ncsnr² + 1 / n)``.
- :func:`encode_trials` runs the whole protocol on a :class:`~neurodecode.data.trials.TrialSet`:
  train on the ``train`` split, test on the repeat-averaged ``test`` split (NSD's shared images).

Everything here consumes arrays (no paths). Units: R², r and NC are fractions of variance or
correlations in [-inf, 1]; noise ceilings are never in percent here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from neurodecode.data.trials import TrialSet
from neurodecode.evaluate.noise_ceiling import ncsnr as nsd_ncsnr
from neurodecode.evaluate.noise_ceiling import noise_ceiling as nsd_noise_ceiling
from neurodecode.models.ridge import DEFAULT_ALPHAS, solve_ridge_cv
from neurodecode.validation import InvalidInputError, check_array

ArrayLike = np.ndarray | torch.Tensor


def _numpy(name: str, array: ArrayLike, ndim: int | None = 2) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    return check_array(name, np.asarray(array), ndim=ndim, kind="biuf", finite=True)


# --------------------------------------------------------------------------------------------
# noise ceiling


def estimate_noise_ceiling(
    data: ArrayLike,
    stimulus_ids: ArrayLike,
    sessions: ArrayLike | None = None,
    n_repeats: int = 3,
    zscore: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """NSD's noise ceiling from repeated presentations, as a fraction of variance.

    Parameters
    ----------
    data : array, shape (n_trials, n_columns)
        Single-trial responses (voxels, sensors, units).
    stimulus_ids : array, shape (n_trials,)
        Repeats share an id; stimuli seen once are ignored by the estimate.
    sessions : array, shape (n_trials,), optional
        Z-score within sessions (NSD practice) instead of over all trials.
    n_repeats : int
        Repeats averaged in the data a model is scored on (3 for NSD's shared test images).
    zscore : bool
        False when ``data`` is already z-scored (e.g. by :func:`~neurodecode.data.nsd.read_nsd_betas`).

    Returns
    -------
    ncsnr : ndarray, shape (n_columns,)
        Noise-ceiling SNR (signal SD / noise SD), dimensionless.
    noise_ceiling : ndarray, shape (n_columns,)
        Fraction in [0, 1] of the variance of ``n_repeats``-averaged responses that the noise-free
        response explains.
    """
    snr = nsd_ncsnr(data, stimulus_ids, sessions=sessions, zscore=zscore)
    return snr, nsd_noise_ceiling(snr, n_repeats) / 100.0


# --------------------------------------------------------------------------------------------
# scores


def r2_score_columns(y_true: ArrayLike, y_pred: ArrayLike) -> np.ndarray:
    """Coefficient of determination per column (scikit-learn's ``r2_score``, raw values).

    Parameters
    ----------
    y_true, y_pred : array, shape (n_samples, n_columns)

    Returns
    -------
    ndarray, shape (n_columns,), float64
        ``1 - SS_res / SS_tot`` with ``SS_tot`` around the mean of ``y_true`` (0 for a constant
        column that is not predicted exactly).
    """
    y_true = _numpy("y_true", y_true).astype(np.float64)
    y_pred = _numpy("y_pred", y_pred).astype(np.float64)
    if y_true.shape != y_pred.shape:
        raise InvalidInputError(
            f"y_true has shape {y_true.shape} but y_pred has {y_pred.shape}; expected equal shapes."
        )
    ss_res = ((y_true - y_pred) ** 2).sum(0)
    ss_tot = ((y_true - y_true.mean(0)) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1.0 - ss_res / ss_tot
    return np.where(ss_tot > 0, r2, (ss_res <= 0).astype(np.float64))


def pearson_columns(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Pearson correlation per column of two (n_samples, n_columns) arrays (0 where constant)."""
    a = _numpy("a", a).astype(np.float64)
    b = _numpy("b", b).astype(np.float64)
    if a.shape != b.shape:
        raise InvalidInputError(f"a has shape {a.shape} but b has {b.shape}; expected equal.")
    a = a - a.mean(0)
    b = b - b.mean(0)
    denom = np.sqrt((a**2).sum(0) * (b**2).sum(0))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (a * b).sum(0) / denom
    return np.where(denom > 0, r, 0.0)


# --------------------------------------------------------------------------------------------
# encoder


@dataclass
class VoxelEncoder:
    """A fitted linear encoder ``response = standardise(features) @ weights + intercept``.

    Attributes
    ----------
    weights : ndarray, shape (n_features, n_voxels)
        Weights on the *standardised* features (the space BrainSCUBA projects; with
        ``feature_scale`` all ones they act on the raw features).
    intercept : ndarray, shape (n_voxels,)
    feature_mean, feature_scale : ndarray, shape (n_features,)
        Applied as ``(features - mean) / scale`` before the weights.
    alpha : ndarray, shape (n_voxels,)
        Ridge alpha chosen per voxel by cross-validation.
    cv_score : ndarray, shape (n_voxels,)
        Cross-validated R² on the training data at the chosen alpha.
    bands : dict of str -> (start, stop)
        Column ranges of the feature bands (one band ``"features"`` when fitted on one space).
    """

    weights: np.ndarray
    intercept: np.ndarray
    feature_mean: np.ndarray
    feature_scale: np.ndarray
    alpha: np.ndarray
    cv_score: np.ndarray
    bands: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_voxels(self) -> int:
        return int(self.weights.shape[1])

    def _check(self, features: ArrayLike) -> None:
        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise InvalidInputError(
                f"features have shape {tuple(features.shape)}; expected (n_samples, "
                f"{self.n_features}) as during fit."
            )

    def predict(self, features: ArrayLike) -> np.ndarray:
        """Predicted responses, shape (n_samples, n_voxels), float64."""
        x = _numpy("features", features)
        self._check(x)
        return ((x - self.feature_mean) / self.feature_scale) @ self.weights + self.intercept

    def predict_torch(
        self, features: torch.Tensor, voxels: ArrayLike | None = None
    ) -> torch.Tensor:
        """Differentiable prediction on a tensor (for guidance): (n, n_features) -> (n, n_vox).

        ``voxels`` (indices or a boolean mask over voxels) restricts the output columns.
        """
        self._check(features)
        cols = slice(None) if voxels is None else np.asarray(voxels)
        kw = {"device": features.device, "dtype": features.dtype}
        mean = torch.as_tensor(self.feature_mean, **kw)
        scale = torch.as_tensor(self.feature_scale, **kw)
        weights = torch.as_tensor(self.weights[:, cols], **kw)
        intercept = torch.as_tensor(self.intercept[cols], **kw)
        return ((features - mean) / scale) @ weights + intercept


def _standardisation(
    x: np.ndarray, bands: Mapping[str, tuple[int, int]], standardize: bool
) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(0)
    if not standardize:
        return mean, np.ones(x.shape[1])
    scale = x.std(0)
    scale[scale == 0] = 1.0
    for start, stop in bands.values():
        scale[start:stop] *= np.sqrt(stop - start)  # each band: unit total variance
    return mean, scale


def concatenate_bands(
    bands: Mapping[str, ArrayLike],
) -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
    """Stack feature spaces side by side.

    Parameters
    ----------
    bands : dict of str -> array, shape (n_samples, n_features_band)

    Returns
    -------
    features : ndarray, shape (n_samples, sum of band widths)
    columns : dict of str -> (start, stop)
    """
    if not bands:
        raise InvalidInputError("bands is empty; expected at least one feature space.")
    arrays, columns, start = [], {}, 0
    n = None
    for name, value in bands.items():
        arr = _numpy(f"band {name!r}", value)
        if n is not None and len(arr) != n:
            raise InvalidInputError(
                f"band {name!r} has {len(arr)} samples but the first band has {n}; expected equal."
            )
        n = len(arr)
        arrays.append(arr)
        columns[name] = (start, start + arr.shape[1])
        start += arr.shape[1]
    return np.hstack(arrays), columns


def fit_encoder(
    features: ArrayLike | Mapping[str, ArrayLike],
    responses: ArrayLike,
    alphas: ArrayLike = DEFAULT_ALPHAS,
    n_folds: int = 5,
    standardize: bool = True,
    groups: ArrayLike | None = None,
    device: torch.device | str | None = None,
    n_targets_batch: int | None = None,
) -> VoxelEncoder:
    """Fit a ridge encoder with one cross-validated alpha per voxel.

    Parameters
    ----------
    features : array, shape (n_samples, n_features), or dict of such arrays (bands)
        Stimulus features, one row per sample of ``responses``.
    responses : array, shape (n_samples, n_voxels)
        Training responses (single trials or repeat-averaged).
    alphas : array-like
        Ridge grid (default ``logspace(-2, 6, 17)``).
    n_folds : int
        Cross-validation folds (contiguous; pass ``groups`` to keep repeats together).
    standardize : bool
        Z-score features (and weight bands equally). False keeps raw features, centred only, as
        BrainSCUBA does for unit-norm CLIP embeddings.
    groups : array, shape (n_samples,), optional
        Stimulus ids: repeats of one stimulus never straddle a fold.
    device : torch device, optional
        Where the solver runs (default CPU).

    Returns
    -------
    VoxelEncoder
    """
    if isinstance(features, Mapping):
        x, bands = concatenate_bands(features)
    else:
        x = _numpy("features", features)
        bands = {"features": (0, x.shape[1])}
    y = _numpy("responses", responses)
    if len(x) != len(y):
        raise InvalidInputError(
            f"features have {len(x)} samples but responses have {len(y)}; expected one feature "
            "row per response row."
        )
    mean, scale = _standardisation(x, bands, standardize)
    xs = (x - mean) / scale
    solution = solve_ridge_cv(
        xs,
        y.astype(np.float64),
        alphas=alphas,
        n_folds=n_folds,
        groups=groups,
        device=device,
        dtype=torch.float64,
        n_targets_batch=n_targets_batch,
    )
    out = solution.to_numpy()
    return VoxelEncoder(
        weights=out["weights"],
        intercept=out["intercept"],
        feature_mean=mean,
        feature_scale=scale,
        alpha=out["alpha"],
        cv_score=out["cv_score"],
        bands=dict(bands),
    )


#: relative band scales searched by default (band alphas over a 4096-fold range around the first)
DEFAULT_BAND_SCALES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass
class BandedRidge:
    """A banded ridge encoder: one :class:`VoxelEncoder` over the stacked bands plus, per voxel,
    the band scales and band alphas it chose.

    Attributes
    ----------
    encoder : VoxelEncoder
        Weights act on the standardised stacked bands (the chosen scales folded in), so
        ``encoder.predict(concatenate_bands(bands)[0])`` predicts responses.
    band_names : list of str
    band_scales : ndarray, shape (n_voxels, n_bands)
        Chosen relative scale of every band (the first band's is 1).
    band_alphas : ndarray, shape (n_voxels, n_bands)
        Effective ridge penalty of every band on its standardised features,
        ``alpha / scale²`` (himalaya's per-band alphas).
    """

    encoder: VoxelEncoder
    band_names: list[str]
    band_scales: np.ndarray
    band_alphas: np.ndarray

    def predict(self, bands: Mapping[str, ArrayLike]) -> np.ndarray:
        """Joint prediction, (n_samples, n_voxels), from a dict of band arrays as during fit."""
        return self.encoder.predict(self._stack(bands))

    def predict_bands(self, bands: Mapping[str, ArrayLike]) -> dict[str, np.ndarray]:
        """Each band's share of the prediction (its columns' term, intercept excluded).

        Returns
        -------
        dict of str -> ndarray, shape (n_samples, n_voxels)
            Summed with the intercept they give :meth:`predict`.
        """
        x = self._stack(bands)
        enc = self.encoder
        xs = (x - enc.feature_mean) / enc.feature_scale
        return {
            name: xs[:, start:stop] @ enc.weights[start:stop]
            for name, (start, stop) in enc.bands.items()
        }

    def _stack(self, bands: Mapping[str, ArrayLike]) -> np.ndarray:
        if list(bands) != self.band_names:
            raise InvalidInputError(
                f"bands are {list(bands)}; expected {self.band_names}, in the order of the fit."
            )
        return concatenate_bands(bands)[0]


def fit_banded_ridge(
    bands: Mapping[str, ArrayLike],
    responses: ArrayLike,
    band_scales: ArrayLike = DEFAULT_BAND_SCALES,
    alphas: ArrayLike = DEFAULT_ALPHAS,
    n_folds: int = 5,
    groups: ArrayLike | None = None,
    device: torch.device | str | None = None,
) -> BandedRidge:
    """Banded ridge: a penalty per band and voxel, by grid search over relative band scales.

    Every band is z-scored and divided by ``sqrt(n_band_features)`` (unit total variance, as in
    :func:`~neurodecode.analysis.encoding.fit_encoder`), then scaled by ``s_b``; for every
    combination of scales (the first band's fixed to 1: only ratios matter) a ridge with one
    cross-validated alpha per voxel is fitted, and each voxel keeps the combination with the
    best cross-validated R². Scaling a band by ``s`` is penalising it by ``alpha / s²``; with one
    band this is plain ridge.

    Parameters
    ----------
    bands : dict of str -> array, shape (n_samples, n_features_band)
    responses : array, shape (n_samples, n_voxels)
    band_scales : array-like
        Candidate scales of every band after the first (positive).
    alphas : array-like
        Ridge grid searched for every combination.
    n_folds : int
        Cross-validation folds (contiguous; ``groups`` keeps repeats of a stimulus together).
    groups : array, shape (n_samples,), optional
    device : torch device, optional
        Where the solver runs (default CPU).

    Returns
    -------
    BandedRidge
    """
    if not isinstance(bands, Mapping):
        raise InvalidInputError(
            f"bands is a {type(bands).__name__}; expected a dict of band name -> array."
        )
    x, columns = concatenate_bands(bands)
    y = _numpy("responses", responses).astype(np.float64)
    if len(x) != len(y):
        raise InvalidInputError(
            f"bands have {len(x)} samples but responses have {len(y)}; expected one feature row "
            "per response row."
        )
    scales = np.asarray(band_scales, dtype=np.float64)
    if scales.ndim != 1 or scales.size == 0 or not np.all(np.isfinite(scales) & (scales > 0)):
        raise InvalidInputError(f"band_scales={band_scales!r}; expected positive values.")
    names = list(columns)
    mean, scale = _standardisation(x, columns, True)
    xs = (x - mean) / scale
    grids = np.meshgrid(*([np.ones(1)] + [scales] * (len(names) - 1)), indexing="ij")
    combos = np.stack([g.ravel() for g in grids], axis=1)  # (n_combos, n_bands)
    best: VoxelEncoder | None = None
    chosen = np.zeros((y.shape[1], len(names)))
    for combo in combos:
        factor = np.concatenate(
            [np.full(stop - start, s) for (start, stop), s in zip(columns.values(), combo)]
        )
        enc = fit_encoder(
            xs * factor,
            y,
            alphas=alphas,
            n_folds=n_folds,
            standardize=False,
            groups=groups,
            device=device,
        )
        weights = enc.weights * factor[:, None]  # acts on xs
        intercept = enc.intercept - enc.feature_mean @ enc.weights
        if best is None:
            best = VoxelEncoder(weights, intercept, mean, scale, enc.alpha, enc.cv_score, columns)
            chosen[:] = combo
            continue
        better = enc.cv_score > best.cv_score
        best.weights[:, better] = weights[:, better]
        best.intercept[better] = intercept[better]
        best.alpha[better] = enc.alpha[better]
        best.cv_score[better] = enc.cv_score[better]
        chosen[better] = combo
    return BandedRidge(
        encoder=best,
        band_names=names,
        band_scales=chosen,
        band_alphas=best.alpha[:, None] / chosen**2,
    )


def fit_banded_encoder(
    bands: Mapping[str, ArrayLike],
    responses: ArrayLike,
    band_scales: ArrayLike = (0.25, 1.0, 4.0),
    alphas: ArrayLike = DEFAULT_ALPHAS,
    n_folds: int = 5,
    groups: ArrayLike | None = None,
    device: torch.device | str | None = None,
) -> VoxelEncoder:
    """Banded ridge by grid search: every combination of per-band scales, best CV R² per voxel.

    :func:`fit_banded_ridge`'s encoder (a band scaled by ``s`` is penalised as if its alpha were
    ``alpha / s²``: himalaya's banded ridge, Dupré la Tour et al. 2022, searched on a grid
    instead of by random search; the first band's scale is fixed to 1).

    Parameters
    ----------
    bands : dict of str -> array, shape (n_samples, n_features_band)
    responses : array, shape (n_samples, n_voxels)
    band_scales : array-like
        Candidate relative scales for every band after the first.

    Returns
    -------
    VoxelEncoder
        Per voxel the weights of the best scale combination, folded back so that
        :meth:`VoxelEncoder.predict` applies to the stacked raw bands.
    """
    return fit_banded_ridge(
        bands, responses, band_scales, alphas=alphas, n_folds=n_folds, groups=groups, device=device
    ).encoder


@dataclass
class EncodingScores:
    """Held-out scores of an encoder, one value per voxel.

    Attributes
    ----------
    r2, pearson_r : ndarray, shape (n_voxels,)
        On the held-out (repeat-averaged) responses.
    noise_ceiling : ndarray, shape (n_voxels,)
        Fraction of variance explainable at the averaged number of repeats.
    r2_over_nc : ndarray, shape (n_voxels,)
        ``r2 / noise_ceiling`` (NaN where the ceiling is 0).
    ncsnr : ndarray, shape (n_voxels,)
    """

    r2: np.ndarray
    pearson_r: np.ndarray
    noise_ceiling: np.ndarray
    r2_over_nc: np.ndarray
    ncsnr: np.ndarray

    def table(self) -> dict[str, np.ndarray]:
        """Columns for a CSV table."""
        return {
            "r2": self.r2,
            "pearson_r": self.pearson_r,
            "noise_ceiling": self.noise_ceiling,
            "r2_over_nc": self.r2_over_nc,
            "ncsnr": self.ncsnr,
        }


def score_encoder(
    predicted: ArrayLike, measured: ArrayLike, noise_ceiling: ArrayLike, ncsnr: ArrayLike
) -> EncodingScores:
    """R², Pearson r and R²/NC of predictions against held-out repeat-averaged responses.

    Parameters
    ----------
    predicted, measured : array, shape (n_test, n_voxels)
    noise_ceiling : array, shape (n_voxels,)
        Fraction (not percent) for the number of repeats averaged in ``measured``.
    ncsnr : array, shape (n_voxels,)
    """
    r2 = r2_score_columns(measured, predicted)
    nc = _numpy("noise_ceiling", noise_ceiling, ndim=1).astype(np.float64)
    if nc.shape != r2.shape:
        raise InvalidInputError(
            f"noise_ceiling has shape {nc.shape}; expected ({r2.shape[0]},), one per voxel."
        )
    if np.nanmax(nc, initial=0.0) > 1.0:
        raise InvalidInputError(
            "noise_ceiling has values > 1; expected a fraction (divide NSD's percent by 100)."
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(nc > 0, r2 / nc, np.nan)
    return EncodingScores(
        r2=r2,
        pearson_r=pearson_columns(measured, predicted),
        noise_ceiling=nc,
        r2_over_nc=ratio,
        ncsnr=np.asarray(ncsnr, dtype=np.float64),
    )


def pooled_r2_over_nc(scores: EncodingScores, mask: np.ndarray | None = None) -> float:
    """Sum of R² over sum of NC (variance-weighted average ratio) over the selected voxels.

    Dividing sums, not averaging per-voxel ratios, keeps voxels with tiny ceilings (whose ratio is
    mostly noise) from dominating.
    """
    keep = np.ones_like(scores.r2, dtype=bool) if mask is None else np.asarray(mask, bool)
    total_nc = scores.noise_ceiling[keep].sum()
    return float(scores.r2[keep].sum() / total_nc) if total_nc > 0 else float("nan")


# --------------------------------------------------------------------------------------------
# the whole protocol on trials


@dataclass
class EncodingRun:
    """Encoder fitted on the train split and scored on the repeat-averaged test split."""

    encoder: VoxelEncoder
    scores: EncodingScores
    test_ids: np.ndarray
    test_predicted: np.ndarray
    test_measured: np.ndarray


FeatureLookup = (
    Callable[[np.ndarray], np.ndarray] | Mapping[str, Callable[[np.ndarray], np.ndarray]]
)


def _features_for(lookup: FeatureLookup, ids: np.ndarray) -> np.ndarray | dict[str, np.ndarray]:
    if isinstance(lookup, Mapping):
        return {name: np.asarray(fn(ids)) for name, fn in lookup.items()}
    return np.asarray(lookup(ids))


def encode_trials(
    trials: TrialSet,
    features: FeatureLookup,
    n_repeats: int | None = None,
    train_on: str = "average",
    alphas: ArrayLike = DEFAULT_ALPHAS,
    n_folds: int = 5,
    standardize: bool = True,
    device: torch.device | str | None = None,
) -> EncodingRun:
    """Fit on the ``train`` split, score on the repeat-averaged ``test`` split.

    Parameters
    ----------
    trials : TrialSet
        fMRI trials (n_trials, n_voxels), z-scored per session (as ``read_nsd_betas`` returns them)
        with repeats; its ``split`` marks the test (shared) images.
    features : callable or dict of callables
        ``ids (n,) -> (n, n_features)``: the feature rows of stimulus ids (e.g.
        ``FeatureStore.get``). A dict gives bands (see :func:`fit_encoder`).
    n_repeats : int, optional
        Repeats the test responses are averaged over, for the ceiling; default the median count.
    train_on : {"average", "trials"}
        Fit on repeat-averaged training images (faster, same linear information) or on single
        trials (MindEye-style; folds keep repeats together).

    Returns
    -------
    EncodingRun
    """
    if train_on not in ("average", "trials"):
        raise InvalidInputError(f"train_on={train_on!r}; expected 'average' or 'trials'.")
    data = trials.data.reshape(len(trials), -1)
    splits = set(np.unique(trials.split))
    if not {"train", "test"} <= splits:
        raise InvalidInputError(
            f"trials have splits {sorted(splits)}; expected both 'train' and 'test' trials."
        )
    snr, _ = estimate_noise_ceiling(data, trials.stimulus_id, sessions=trials.session)
    train = trials.select(trials.split == "train")
    test = trials.select(trials.split == "test").average_repeats()
    if n_repeats is None:
        n_repeats = int(np.median(test.repeat))
    nc = nsd_noise_ceiling(snr, n_repeats) / 100.0
    if train_on == "average":
        train = train.average_repeats()
        groups = None
    else:
        groups = train.stimulus_id
    encoder = fit_encoder(
        _features_for(features, train.stimulus_id),
        train.data.reshape(len(train), -1),
        alphas=alphas,
        n_folds=n_folds,
        standardize=standardize,
        groups=groups,
        device=device,
    )
    test_x = _features_for(features, test.stimulus_id)
    if isinstance(test_x, dict):
        test_x = concatenate_bands(test_x)[0]
    predicted = encoder.predict(test_x)
    measured = test.data.reshape(len(test), -1)
    return EncodingRun(
        encoder=encoder,
        scores=score_encoder(predicted, measured, nc, snr),
        test_ids=test.stimulus_id,
        test_predicted=predicted,
        test_measured=measured,
    )
