"""Feature absorption and splitting, as SAEBench measures it (Chanin et al. 2024, "A is for
Absorption"; the absorption fraction of Karvonen et al. 2025, SAEBench).

Owns the metric and its use on a planted hierarchy. For one binary feature with a ground-truth
probe direction ``p`` (SAEBench: a first-letter probe on a language model; here the planted
parent direction of :func:`~neurodecode.analysis.sae.planted.make_planted_hierarchy`):

1. **Main (split) latents** (:func:`select_main_latents`): latents ranked by the difference of
   their mean activation on positive and negative rows; a logistic k-sparse probe on the top
   ``k`` latents for ``k = 1, 2, ...``; ``k`` grows while each step raises the probe's F1 by more
   than ``f1_jump`` (SAEBench's ``f1_jump_threshold``). More than one main latent is *feature
   splitting*.
2. On every true-positive row (feature present and ``x·p̂ > 0``), with latent ``j``'s probe
   projection ``z_j (d_j·p̂)`` (``d_j`` its raw-unit decoder row):

   - **absorption fraction**: 0 if the main latents' projection already reaches ``x·p̂`` or the
     top ``max_absorbing`` other latents with cosine(d_j, p) >= ``absorber_cosine`` and positive
     projection supply less than ``projection_share`` of ``x·p̂``; 1 if the main latents' projection
     is <= 0; otherwise ``A / (A + M)``, ``M`` the main projection and ``A`` the absorbers'
     projection capped at ``x·p̂ - M``.
   - **full absorption**: every main latent is silent, the top-projecting latent has cosine >=
     ``full_cosine`` with ``p`` and supplies at least ``projection_share`` of ``x·p̂``.

The scores are the means over true-positive rows. SAEBench's thresholds are the defaults
(0.1, 0.025, 0.4, 3 absorbers, F1 jump 0.03, k <= 10).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from torch import Tensor

from neurodecode.analysis.sae.core import SparseAutoencoder
from neurodecode.analysis.sae.planted import PlantedHierarchy
from neurodecode.analysis.sae.training import encode_rows
from neurodecode.validation import InvalidInputError


@dataclass
class AbsorptionResult:
    """Absorption of one feature by an SAE's latents.

    Attributes
    ----------
    mean_absorption_fraction : float
        Mean absorption fraction over true-positive rows, in [0, 1].
    full_absorption_rate : float
        Fraction of true-positive rows fully absorbed by a single latent.
    main_latents : list of int
        The feature's main (split) latents.
    n_true_positives : int
    absorption_fraction : ndarray, shape (n_true_positives,), float64
    full_absorption : ndarray, shape (n_true_positives,), bool
    """

    mean_absorption_fraction: float
    full_absorption_rate: float
    main_latents: list[int]
    n_true_positives: int
    absorption_fraction: np.ndarray
    full_absorption: np.ndarray

    @property
    def n_split_latents(self) -> int:
        """Number of main latents (> 1: the feature is split)."""
        return len(self.main_latents)


def _f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    tp = float((truth & predicted).sum())
    denominator = float(truth.sum() + predicted.sum())
    return 2 * tp / denominator if denominator else 0.0


def select_main_latents(
    latents: np.ndarray, labels: np.ndarray, max_k: int = 10, f1_jump: float = 0.03
) -> tuple[list[int], list[float]]:
    """The latents a k-sparse probe needs to detect a feature (SAEBench's split latents).

    Parameters
    ----------
    latents : array, shape (n, n_latents)
        Latent activations on rows with and without the feature.
    labels : array, shape (n,), bool
        Whether each row has the feature; both classes must occur.
    max_k : int
        Largest probe size tried.
    f1_jump : float
        ``k`` grows while F1(k) - F1(k - 1) > ``f1_jump``.

    Returns
    -------
    main : list of int
        Latents of the chosen probe, in ranking order.
    f1 : list of float
        F1 of the probe (fit and scored on the same rows) for k = 1..max_k.
    """
    z = np.asarray(latents, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if z.ndim != 2 or y.shape != (z.shape[0],):
        raise InvalidInputError(
            f"latents must be (n, n_latents) and labels (n,); got {z.shape} and {y.shape}."
        )
    if y.all() or not y.any():
        raise InvalidInputError("labels must contain both positive and negative rows.")
    if max_k < 1:
        raise InvalidInputError(f"max_k must be >= 1; got {max_k}.")
    ranking = np.argsort(-(z[y].mean(0) - z[~y].mean(0)), kind="stable")
    f1: list[float] = []
    chosen = 1
    for k in range(1, min(max_k, z.shape[1]) + 1):
        columns = z[:, ranking[:k]]
        if np.ptp(columns, axis=0).max() == 0:  # constant columns: nothing to fit
            predicted = np.zeros_like(y)
        else:
            probe = LogisticRegression(C=1e4, max_iter=1000)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                probe.fit(columns, y)
            predicted = probe.predict(columns).astype(bool)
        f1.append(_f1(y, predicted))
        if k > 1 and chosen == k - 1 and f1[-1] - f1[-2] > f1_jump:
            chosen = k
    return [int(j) for j in ranking[:chosen]], f1


def absorption_from_latents(
    latents: np.ndarray | Tensor,
    decoder: np.ndarray | Tensor,
    inputs: np.ndarray | Tensor,
    probe: np.ndarray | Tensor,
    labels: np.ndarray,
    main_latents: list[int] | None = None,
    absorber_cosine: float = 0.1,
    full_cosine: float = 0.025,
    projection_share: float = 0.4,
    max_absorbing: int = 3,
    max_k: int = 10,
    f1_jump: float = 0.03,
) -> AbsorptionResult:
    """The absorption metric of one feature from latent activations and decoder rows.

    Parameters
    ----------
    latents : array, shape (n, n_latents)
        Latent activations of the rows.
    decoder : array, shape (n_latents, d)
        Decoder rows in the units of ``inputs`` (an SAE's ``W_dec / output_scale``).
    inputs : array, shape (n, d)
        The activations the latents encode.
    probe : array, shape (d,)
        Ground-truth probe direction of the feature (any norm).
    labels : array, shape (n,), bool
        Whether each row has the feature.
    main_latents : list of int, optional
        Skip :func:`select_main_latents` and use these.
    absorber_cosine, full_cosine, projection_share, max_absorbing, max_k, f1_jump
        SAEBench's thresholds (see the module docstring).
    """
    z = _as64(latents)
    dec = _as64(decoder)
    x = _as64(inputs)
    p = _as64(probe).reshape(-1)
    y = np.asarray(labels, dtype=bool)
    if z.ndim != 2 or dec.ndim != 2 or x.ndim != 2 or z.shape[1] != dec.shape[0]:
        raise InvalidInputError(
            f"latents (n, n_latents), decoder (n_latents, d) and inputs (n, d) disagree: "
            f"{z.shape}, {dec.shape}, {x.shape}."
        )
    if x.shape != (z.shape[0], dec.shape[1]) or p.shape != (dec.shape[1],):
        raise InvalidInputError(
            f"inputs must be (n={z.shape[0]}, d={dec.shape[1]}) and probe (d,); got "
            f"{x.shape} and {p.shape}."
        )
    if y.shape != (z.shape[0],):
        raise InvalidInputError(f"labels must be ({z.shape[0]},); got {y.shape}.")
    norm = np.linalg.norm(p)
    if norm == 0 or not np.isfinite(norm):
        raise InvalidInputError("probe must be a finite, non-zero direction.")
    p = p / norm
    if main_latents is None:
        main_latents, _ = select_main_latents(z, y, max_k=max_k, f1_jump=f1_jump)
    main = np.zeros(z.shape[1], dtype=bool)
    main[np.asarray(main_latents, dtype=np.int64)] = True
    along = dec @ p  # (n_latents,) decoder component along the probe
    cosine = along / np.linalg.norm(dec, axis=1).clip(1e-12)
    act_projection = x @ p
    positives = np.flatnonzero(y & (act_projection > 0))
    fractions = np.zeros(len(positives))
    full = np.zeros(len(positives), dtype=bool)
    candidates = ~main & (cosine >= absorber_cosine)
    for n, row in enumerate(positives):
        projection = z[row] * along
        total = act_projection[row]
        main_projection = projection[main].sum()
        others = projection[candidates]
        others = np.sort(others[others > 0])[::-1][:max_absorbing]
        absorbers = others.sum()
        if main_projection >= total or absorbers / total < projection_share:
            fractions[n] = 0.0
        elif main_projection <= 0:
            fractions[n] = 1.0
        else:
            absorbed = min(absorbers, total - main_projection)
            fractions[n] = float(np.clip(absorbed / (absorbed + main_projection), 0.0, 1.0))
        top = int(np.argmax(projection))
        full[n] = bool(
            np.all(z[row, main] == 0)
            and cosine[top] >= full_cosine
            and projection[top] / total >= projection_share
        )
    count = len(positives)
    return AbsorptionResult(
        mean_absorption_fraction=float(fractions.mean()) if count else 0.0,
        full_absorption_rate=float(full.mean()) if count else 0.0,
        main_latents=[int(j) for j in main_latents],
        n_true_positives=int(count),
        absorption_fraction=fractions,
        full_absorption=full,
    )


def _as64(array: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(array, Tensor):
        array = array.detach().cpu().numpy()
    out = np.asarray(array, dtype=np.float64)
    if not np.isfinite(out).all():
        raise InvalidInputError("absorption inputs contain NaN or infinite values.")
    return out


def feature_absorption(
    sae: SparseAutoencoder,
    inputs: np.ndarray | Tensor,
    probe: np.ndarray | Tensor,
    labels: np.ndarray,
    **options: float,
) -> AbsorptionResult:
    """:func:`absorption_from_latents` for an SAE (latents by its inference rule).

    Parameters
    ----------
    sae : SparseAutoencoder
        Not a transcoder.
    inputs : array, shape (n, d_in)
        Raw activation rows.
    probe : array, shape (d_in,)
    labels : array, shape (n,), bool
    **options
        Thresholds of :func:`absorption_from_latents`.
    """
    if not isinstance(sae, SparseAutoencoder) or sae.transcoder:
        raise InvalidInputError("feature_absorption needs an SAE (not a transcoder).")
    x = torch.as_tensor(_as64(inputs), dtype=torch.float32)
    latents = encode_rows(sae, x)
    decoder = (sae.W_dec / sae.output_scale).detach().cpu()
    return absorption_from_latents(latents, decoder, x, probe, labels, **options)


def planted_absorption(
    hierarchy: PlantedHierarchy,
    sae: SparseAutoencoder | None = None,
    latents: np.ndarray | Tensor | None = None,
    decoder: np.ndarray | Tensor | None = None,
    **options: float,
) -> dict[str, float | list]:
    """Absorption of every planted parent (probe = the parent direction), averaged over parents.

    Give either ``sae`` or a (``latents``, ``decoder``) pair for ``hierarchy.inputs``.

    Returns
    -------
    dict
        ``mean_absorption_fraction``, ``full_absorption_rate`` and ``mean_split_latents``
        (means over parents), and ``per_parent`` (one dict per parent).
    """
    if (sae is None) == (latents is None or decoder is None):
        raise InvalidInputError("give either sae or both latents and decoder.")
    per_parent = []
    for parent in range(len(hierarchy.parents)):
        labels = hierarchy.parent_codes[:, parent] > 0
        probe = hierarchy.parents[parent]
        if sae is not None:
            result = feature_absorption(sae, hierarchy.inputs, probe, labels, **options)
        else:
            result = absorption_from_latents(
                latents, decoder, hierarchy.inputs, probe, labels, **options
            )
        per_parent.append(
            {
                "mean_absorption_fraction": result.mean_absorption_fraction,
                "full_absorption_rate": result.full_absorption_rate,
                "n_split_latents": result.n_split_latents,
                "n_true_positives": result.n_true_positives,
            }
        )
    return {
        "mean_absorption_fraction": float(
            np.mean([r["mean_absorption_fraction"] for r in per_parent])
        ),
        "full_absorption_rate": float(np.mean([r["full_absorption_rate"] for r in per_parent])),
        "mean_split_latents": float(np.mean([r["n_split_latents"] for r in per_parent])),
        "per_parent": per_parent,
    }
