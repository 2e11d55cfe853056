"""SAE latents as encoding models of cortex: banded ridge and variance partitioning.

For one layer of a network, two feature spaces of the same images are compared as voxel-wise
encoding models: the layer's *dense* activations and the *latents* of a sparse autoencoder
trained on them. Each voxel gets three held-out R² values (dense alone, SAE alone, both jointly
in a banded ridge) and the set-theoretic variance partition of the two spaces (Lescroart et al.
2015; the recipe of the Gallant lab's voxelwise tutorials, with himalaya's banded ridge, Dupré
la Tour et al. 2022):

    shared      = R²_dense + R²_sae - R²_joint
    unique_dense = R²_joint - R²_sae
    unique_sae   = R²_joint - R²_dense

and the product-measure split of the joint model's R² into the two bands' contributions
(:func:`split_r2`, which sums to the joint R² exactly).

This module holds:

- :func:`~neurodecode.analysis.encoding.fit_banded_ridge` (defined in
  :mod:`neurodecode.analysis.encoding`, importable from here): ridge with one regularisation per
  feature space ("band") and voxel, searched on a grid of relative band scales (a band scaled by
  ``s`` is penalised as if its alpha were ``alpha / s²``), each combination's alpha chosen by
  cross-validation; the result keeps every voxel's chosen band alphas.
- :func:`partition_variance`, :func:`split_r2`: the closed forms above, per voxel.
- :func:`encode_two_bands`: the whole protocol on a :class:`~neurodecode.data.trials.TrialSet`
  (train split -> repeat-averaged test split, NSD's noise ceiling as in
  :func:`~neurodecode.analysis.encoding.encode_trials`).
- :func:`roi_partition_summary`, :func:`roi_latent_weights`: pooled per-ROI numbers (sums of R²
  over sums of noise ceilings) and each ROI's mean encoding weight per latent.

Everything takes arrays; units are fractions of variance (never percent).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from neurodecode.analysis.encoding import (  # noqa: F401  (BandedRidge, fit_banded_ridge: re-exported)
    DEFAULT_BAND_SCALES,
    BandedRidge,
    VoxelEncoder,
    _numpy,
    concatenate_bands,
    estimate_noise_ceiling,
    fit_banded_ridge,
    fit_encoder,
    r2_score_columns,
)
from neurodecode.data.trials import TrialSet
from neurodecode.evaluate.noise_ceiling import noise_ceiling as nsd_noise_ceiling
from neurodecode.models.ridge import DEFAULT_ALPHAS
from neurodecode.validation import InvalidInputError

ArrayLike = np.ndarray | torch.Tensor


# --------------------------------------------------------------------------------------------
# partitions


def partition_variance(
    r2_a: ArrayLike, r2_b: ArrayLike, r2_joint: ArrayLike
) -> dict[str, np.ndarray]:
    """Set-theoretic variance partition of two feature spaces (per voxel, or pooled).

    Parameters
    ----------
    r2_a, r2_b, r2_joint : array, shape (n_voxels,)
        Held-out R² of the model on space A alone, on B alone, and on both jointly.

    Returns
    -------
    dict with ``shared`` (``r2_a + r2_b - r2_joint``), ``unique_a`` (``r2_joint - r2_b``) and
    ``unique_b`` (``r2_joint - r2_a``), each shape (n_voxels,); fractions of variance, negative
    where the joint model overfits.
    """
    a = _numpy("r2_a", r2_a, ndim=None).astype(np.float64)
    b = _numpy("r2_b", r2_b, ndim=None).astype(np.float64)
    joint = _numpy("r2_joint", r2_joint, ndim=None).astype(np.float64)
    if not a.shape == b.shape == joint.shape:
        raise InvalidInputError(
            f"r2_a, r2_b and r2_joint have shapes {a.shape}, {b.shape}, {joint.shape}; "
            "expected equal shapes."
        )
    return {"shared": a + b - joint, "unique_a": joint - b, "unique_b": joint - a}


def split_r2(y_true: ArrayLike, band_predictions: Mapping[str, ArrayLike]) -> dict[str, np.ndarray]:
    """Product-measure split of a joint linear model's R² into its bands' contributions.

    With ``y`` and every band's prediction ``p_b`` centred over samples and ``p = sum_b p_b``,
    ``R²_joint = (2 y·p - p·p) / y·y = sum_b (2 y·p_b - p_b·p) / y·y``; band ``b`` gets its term.

    Parameters
    ----------
    y_true : array, shape (n_samples, n_voxels)
    band_predictions : dict of str -> array, shape (n_samples, n_voxels)
        Each band's term of the joint prediction (:meth:`BandedRidge.predict_bands`).

    Returns
    -------
    dict of str -> ndarray, shape (n_voxels,)
        Contributions summing to the joint R² (of ``sum_b p_b`` plus the best constant).
    """
    y = _numpy("y_true", y_true).astype(np.float64)
    y = y - y.mean(0)
    preds = {}
    for name, p in band_predictions.items():
        p = _numpy(f"band_predictions[{name!r}]", p).astype(np.float64)
        if p.shape != y.shape:
            raise InvalidInputError(
                f"band_predictions[{name!r}] has shape {p.shape}; expected {y.shape} as y_true."
            )
        preds[name] = p - p.mean(0)
    if not preds:
        raise InvalidInputError("band_predictions is empty; expected at least one band.")
    total = sum(preds.values())
    ss = (y**2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            name: np.where(ss > 0, (2 * (y * p).sum(0) - (p * total).sum(0)) / ss, 0.0)
            for name, p in preds.items()
        }


# --------------------------------------------------------------------------------------------
# the protocol on trials


@dataclass
class TwoBandEncoding:
    """Held-out encoding scores of two feature spaces, alone and jointly, per voxel.

    Attributes
    ----------
    band_names : (str, str)
        The two spaces, e.g. ``("dense", "sae")``.
    r2 : dict of str -> ndarray, shape (n_voxels,)
        Held-out R² of each space alone (keyed by its name) and of the banded ``"joint"`` model.
    partition : dict of str -> ndarray, shape (n_voxels,)
        ``shared``, ``unique_<name>`` for both spaces (:func:`partition_variance`).
    split : dict of str -> ndarray, shape (n_voxels,)
        Each space's product-measure share of the joint R² (:func:`split_r2`).
    noise_ceiling, ncsnr : ndarray, shape (n_voxels,)
        NSD's ceiling (fraction) for the repeats averaged in the test responses, and its SNR.
    encoders : dict of str -> VoxelEncoder
        The single-space encoders.
    joint : BandedRidge
    """

    band_names: tuple[str, str]
    r2: dict[str, np.ndarray]
    partition: dict[str, np.ndarray]
    split: dict[str, np.ndarray]
    noise_ceiling: np.ndarray
    ncsnr: np.ndarray
    encoders: dict[str, VoxelEncoder]
    joint: BandedRidge

    def table(self) -> dict[str, np.ndarray]:
        """Per-voxel columns for a CSV table."""
        out = {"noise_ceiling": self.noise_ceiling, "ncsnr": self.ncsnr}
        out.update({f"r2_{k}": v for k, v in self.r2.items()})
        out.update(self.partition)
        out.update({f"split_{k}": v for k, v in self.split.items()})
        second = self.band_names[1]
        out[f"band_scale_{second}"] = self.joint.band_scales[:, 1]
        return out


def encode_two_bands(
    trials: TrialSet,
    bands: Mapping[str, Callable[[np.ndarray], np.ndarray]],
    n_repeats: int | None = None,
    train_on: str = "average",
    band_scales: ArrayLike = DEFAULT_BAND_SCALES,
    alphas: ArrayLike = DEFAULT_ALPHAS,
    n_folds: int = 5,
    device: torch.device | str | None = None,
) -> TwoBandEncoding:
    """Encode voxels from two feature spaces alone and jointly; partition held-out variance.

    Same protocol as :func:`~neurodecode.analysis.encoding.encode_trials`: fit on the ``train``
    split (repeat-averaged, or single trials with repeats kept in one fold), score on the
    repeat-averaged ``test`` split against NSD's noise ceiling.

    Parameters
    ----------
    trials : TrialSet
        fMRI trials (n_trials, n_voxels), z-scored per session, with repeats and a ``split``.
    bands : dict of two str -> callable
        ``ids (n,) -> (n, n_features)`` for each space (e.g. dense activations, SAE latents).
    n_repeats : int, optional
        Repeats averaged in the test responses, for the ceiling; default the median count.
    train_on : {"average", "trials"}
    band_scales, alphas, n_folds, device
        See :func:`fit_banded_ridge`.

    Returns
    -------
    TwoBandEncoding
    """
    if not isinstance(bands, Mapping) or len(bands) != 2:
        raise InvalidInputError(
            f"bands has {len(bands) if isinstance(bands, Mapping) else 'no'} entries; expected "
            "a dict of exactly two feature spaces (name -> ids -> features)."
        )
    if train_on not in ("average", "trials"):
        raise InvalidInputError(f"train_on={train_on!r}; expected 'average' or 'trials'.")
    splits = set(np.unique(trials.split))
    if not {"train", "test"} <= splits:
        raise InvalidInputError(
            f"trials have splits {sorted(splits)}; expected both 'train' and 'test' trials."
        )
    data = trials.data.reshape(len(trials), -1)
    snr, _ = estimate_noise_ceiling(data, trials.stimulus_id, sessions=trials.session)
    train = trials.select(trials.split == "train")
    test = trials.select(trials.split == "test").average_repeats()
    if n_repeats is None:
        n_repeats = int(np.median(test.repeat))
    nc = nsd_noise_ceiling(snr, n_repeats) / 100.0
    groups = None
    if train_on == "average":
        train = train.average_repeats()
    else:
        groups = train.stimulus_id
    y_train = train.data.reshape(len(train), -1).astype(np.float64)
    y_test = test.data.reshape(len(test), -1).astype(np.float64)
    names = tuple(bands)
    x_train = {n: np.asarray(fn(train.stimulus_id)) for n, fn in bands.items()}
    x_test = {n: np.asarray(fn(test.stimulus_id)) for n, fn in bands.items()}
    encoders, r2 = {}, {}
    for name in names:
        encoders[name] = fit_encoder(
            x_train[name], y_train, alphas=alphas, n_folds=n_folds, groups=groups, device=device
        )
        r2[name] = r2_score_columns(y_test, encoders[name].predict(x_test[name]))
    joint = fit_banded_ridge(
        x_train,
        y_train,
        band_scales=band_scales,
        alphas=alphas,
        n_folds=n_folds,
        groups=groups,
        device=device,
    )
    r2["joint"] = r2_score_columns(y_test, joint.predict(x_test))
    parts = partition_variance(r2[names[0]], r2[names[1]], r2["joint"])
    partition = {
        "shared": parts["shared"],
        f"unique_{names[0]}": parts["unique_a"],
        f"unique_{names[1]}": parts["unique_b"],
    }
    return TwoBandEncoding(
        band_names=names,
        r2=r2,
        partition=partition,
        split=split_r2(y_test, joint.predict_bands(x_test)),
        noise_ceiling=nc,
        ncsnr=snr,
        encoders=encoders,
        joint=joint,
    )


# --------------------------------------------------------------------------------------------
# per ROI


def _pooled(values: np.ndarray, nc: np.ndarray, keep: np.ndarray) -> float:
    total = nc[keep].sum()
    return float(values[keep].sum() / total) if total > 0 else float("nan")


def roi_partition_summary(
    result: TwoBandEncoding, roi: Sequence[str], rois: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """Noise-ceiling-normalised R² and partition per ROI, pooled as sum(value) / sum(NC).

    Parameters
    ----------
    result : TwoBandEncoding
    roi : sequence of str, shape (n_voxels,)
        ROI label of every voxel ("" for none).
    rois : sequence of str, optional
        ROIs to report (default every non-empty label, sorted); ``"all"`` is always added.

    Returns
    -------
    dict of ROI -> dict with ``n_voxels``, ``noise_ceiling`` (mean), ``r2_over_nc_<model>`` for
    both spaces and ``joint``, ``shared_over_nc``, ``unique_<name>_over_nc`` and
    ``split_<name>_over_nc``.
    """
    labels = np.asarray(roi).astype(str)
    nc = result.noise_ceiling
    if labels.shape != nc.shape:
        raise InvalidInputError(f"roi has {labels.size} labels; expected {nc.size}, one per voxel.")
    names = sorted(set(labels) - {""}) if rois is None else list(rois)
    out = {}
    for name in ["all", *names]:
        keep = np.ones_like(nc, bool) if name == "all" else labels == name
        if not keep.any():
            raise InvalidInputError(f"ROI {name!r} has no voxels.")
        row: dict[str, float] = {
            "n_voxels": int(keep.sum()),
            "noise_ceiling": float(nc[keep].mean()),
        }
        row.update({f"r2_over_nc_{k}": _pooled(v, nc, keep) for k, v in result.r2.items()})
        row.update({f"{k}_over_nc": _pooled(v, nc, keep) for k, v in result.partition.items()})
        row.update({f"split_{k}_over_nc": _pooled(v, nc, keep) for k, v in result.split.items()})
        out[name] = row
    return out


def roi_latent_weights(
    weights: ArrayLike, roi: Sequence[str], rois: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """Each ROI's mean encoding weight per feature (latent), over its voxels.

    Parameters
    ----------
    weights : array, shape (n_features, n_voxels)
        Encoder weights on standardised features (``VoxelEncoder.weights``; each column in
        response units per feature SD).
    roi : sequence of str, shape (n_voxels,)
    rois : sequence of str, optional
        Default every non-empty label, sorted.

    Returns
    -------
    names : list of str
    mean_weights : ndarray, shape (n_features, n_rois)
    """
    w = _numpy("weights", weights).astype(np.float64)
    labels = np.asarray(roi).astype(str)
    if labels.shape != (w.shape[1],):
        raise InvalidInputError(
            f"roi has {labels.size} labels; expected {w.shape[1]}, one per voxel (weight column)."
        )
    names = sorted(set(labels) - {""}) if rois is None else list(rois)
    columns = []
    for name in names:
        keep = labels == name
        if not keep.any():
            raise InvalidInputError(f"ROI {name!r} has no voxels.")
        columns.append(w[:, keep].mean(1))
    return names, np.stack(columns, axis=1) if columns else np.zeros((w.shape[0], 0))
