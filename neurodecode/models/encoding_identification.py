"""Encoding-model identification (Kay et al. 2008; Naselaris et al. 2009) as a decoder.

Owns :class:`EncodingIdentification` (a torch module: voxel-wise linear encoding model plus a
Gaussian noise model, fitted in closed form) and :class:`EncodingIdentificationModule` (its
LightningModule, so that ``neurodecode fit -c experiments/sim_encoding_identification.yaml``
fits it from the datamodule's training trials and reports n-way identification).

Model
-----
For stimulus features ``x`` (any feature space, e.g. a CLIP image embedding) the predicted response
of every voxel is ``mu(x) = ((x - m) / s) @ W + b`` (features standardised with the training
mean ``m`` and standard deviation ``s``; ``W`` and ``b`` from ridge regression with one
cross-validated alpha per voxel, :func:`neurodecode.models.ridge.solve_ridge_cv`). A measured
pattern ``y`` averaged over ``n`` repeats is modelled as ``y ~ N(mu(x), Sigma / n)`` where
``Sigma`` is the single-trial residual covariance, and a candidate image ``j`` scores its
log-likelihood ``-(n / 2) (y - mu_j)^T Sigma^-1 (y - mu_j)`` (up to a constant shared by every trial
and candidate). With the true ``mu`` and the true noise this is the oracle decoder.

Noise models (``noise=``)
-------------------------
``"diagonal"``
    ``Sigma = diag(sd^2)``, one variance per voxel. Memory ``O(V)``.
``"shrinkage"``
    Ledoit-Wolf shrinkage of the residual correlation matrix toward the identity, i.e. of the
    covariance toward its diagonal: ``Sigma = D ((1 - delta) C + delta I) D`` with ``D = diag(sd)``,
    ``C`` the sample correlation of the residuals and ``delta`` the closed-form Ledoit & Wolf (2004)
    intensity computed on the standardised residuals (the formula of
    ``sklearn.covariance.ledoit_wolf_shrinkage``). Only the ``noise_rank`` leading eigenvectors of
    ``C`` are kept; the remaining eigenvalues are replaced by their mean (trace preserved, as in
    probabilistic PCA), so ``Sigma^-1`` is applied through a ``(V, noise_rank)`` basis and never
    stored as a ``V x V`` matrix. When ``noise_rank`` covers the rank of ``C`` the model is exact.

    Cost of the fit: one Gram matrix of the standardised residuals on their smaller side,
    ``r = min(n_train, V)``, in float64 (``8 r^2`` bytes: 0.5 GB for ``r = 8000``), its full
    eigendecomposition (``O(r^3)``) and ``O(n_train V r)`` products; the stored basis is
    ``4 V noise_rank`` bytes (60 MB for 15,000 voxels and rank 1,000). For very large ``V`` and
    ``n_train`` pick ``noise="diagonal"``.

Residuals (``residuals=``)
--------------------------
``"cv"``: out-of-fold residuals, each fold predicted by a model (alphas included) fitted without
it, on the same folds as the alpha search; an honest estimate of the error on new images (model
error plus noise), at ``n_folds + 1`` times the cost of the ridge fit. ``"train"``: residuals of the
final fit on its own training trials (cheaper, smaller than the error on new images).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from torch import Tensor, nn

from neurodecode.models.base import parse_fmri_geometry
from neurodecode.models.ridge import DEFAULT_ALPHA_GRID, _fold_indices, solve_ridge_cv
from neurodecode.pretrained import PretrainedMixin
from neurodecode.validation import InvalidInputError, check_option

__all__ = [
    "EncodingIdentification",
    "EncodingIdentificationModule",
    "EncodingNotFittedError",
    "ledoit_wolf_intensity",
]

ArrayLike = np.ndarray | Tensor

NOISE_MODELS = ("diagonal", "shrinkage")
RESIDUALS = ("cv", "train")


class EncodingNotFittedError(InvalidInputError, NotFittedError):
    """Scoring or predicting with an encoding model that has not been fitted (also
    scikit-learn's ``NotFittedError``)."""


def _as_tensor(
    name: str,
    value: ArrayLike,
    n_cols: int | None,
    what: str,
    device: torch.device,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """A finite 2-D float tensor ``(n, n_cols)`` on ``device``, or one clear error naming ``name``."""
    if isinstance(value, Tensor):
        tensor = value.detach()
    else:
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise InvalidInputError(
                f"{name} has dtype {array.dtype}; expected a numeric array {what}."
            )
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.ndim != 2 or (n_cols is not None and tensor.shape[1] != n_cols):
        expected = f"(n, {n_cols})" if n_cols is not None else "(n, n_columns)"
        raise InvalidInputError(
            f"{name} has shape {tuple(tensor.shape)}; expected {expected} {what}."
        )
    if tensor.shape[0] == 0:
        raise InvalidInputError(f"{name} has no rows; expected at least one {what}.")
    tensor = tensor.to(device=device, dtype=dtype)
    bad = ~torch.isfinite(tensor)
    if bool(bad.any()):
        rows = torch.unique(torch.nonzero(bad)[:, 0])[:5].tolist()
        raise InvalidInputError(
            f"{name} has {int(bad.sum())} NaN/inf values (first rows: {rows}); expected finite "
            "values."
        )
    return tensor


def _like_input(result: Tensor, reference: ArrayLike) -> ArrayLike:
    """``result`` as numpy when ``reference`` was numpy, else as a tensor."""
    return result if isinstance(reference, Tensor) else result.cpu().numpy()


def ledoit_wolf_intensity(z: Tensor, frobenius_sq: Tensor | None = None) -> float:
    """Ledoit & Wolf's (2004) closed-form shrinkage intensity of ``S = z^T z / n`` toward ``mu I``.

    The formula of ``sklearn.covariance.ledoit_wolf_shrinkage`` (``assume_centered=True``), written
    so that no ``p x p`` matrix is needed when ``||S||_F^2`` is given.

    Parameters
    ----------
    z : Tensor, shape (n, p)
        Centred samples (here: standardised residuals, so that ``mu = 1``).
    frobenius_sq : Tensor, optional
        ``||z^T z||_F^2 / n^2`` if already known (e.g. from the eigenvalues of the Gram matrix);
        computed from the smaller Gram matrix otherwise.

    Returns
    -------
    float
        Intensity ``delta`` in [0, 1]: the estimate is ``(1 - delta) S + delta mu I``.
    """
    n, p = z.shape
    if frobenius_sq is None:
        gram = z @ z.T if n <= p else z.T @ z
        frobenius_sq = (gram**2).sum() / n**2
    mu = (z**2).sum() / (n * p)
    # sum over (i, j) of (sum_k z_ki^2 z_kj^2) = sum_k ||z_k||^4
    beta_sum = ((z**2).sum(1) ** 2).sum()
    beta = (beta_sum / n - frobenius_sq) / (n * p)
    delta = (frobenius_sq - 2 * mu * (z**2).sum() / n + p * mu**2) / p
    beta = torch.minimum(beta, delta)
    if float(delta) <= 0:
        return 0.0
    return float((beta / delta).clamp(0.0, 1.0))


class EncodingIdentification(PretrainedMixin, nn.Module):
    """Voxel-wise encoding model + Gaussian noise model; identifies stimuli by likelihood.

    Parameters
    ----------
    geometry : dict
        ``{"n_voxels": {subject: V}, "target_shape": [D] or [T, D]}`` with one subject: ``V``
        voxels and ``d = prod(target_shape)`` stimulus features (token-level features are
        flattened).
    noise : {"diagonal", "shrinkage"}
        Noise model (see the module docstring).
    noise_rank : int
        Leading eigenvectors of the residual correlation kept by ``noise="shrinkage"`` (capped at
        ``V``); unused by ``"diagonal"``.
    alphas : sequence of float
        Ridge grid searched per voxel (default ``np.logspace(-2, 6, 17)``).
    n_folds : int
        Cross-validation folds of the alpha search (and of ``residuals="cv"``).
    residuals : {"cv", "train"}
        Which residuals estimate the noise (see the module docstring).

    Attributes (buffers, float32)
    -----------------------------
    weights : (d, V)
        Ridge weights on standardised features; ``intercept`` : (V,).
    feature_mean, feature_scale : (d,)
        Training statistics of the features.
    alpha, cv_score : (V,)
        Chosen ridge alpha and cross-validated R² per voxel (0 when built by :meth:`from_arrays`).
    noise_sd : (V,)
        Single-trial residual standard deviation per voxel (brain units).
    noise_basis : (V, k), noise_eigenvalues : (k,), noise_tail : ()
        Shrunk correlation ``= B diag(l) B^T + tail (I - B B^T)``; ``k = 0`` and ``tail = 1``
        for the diagonal model.
    shrinkage : ()
        Ledoit-Wolf intensity (1 for the diagonal model).
    """

    def __init__(
        self,
        geometry: dict | None = None,
        noise: str = "diagonal",
        noise_rank: int = 1024,
        alphas: Sequence[float] = DEFAULT_ALPHA_GRID,
        n_folds: int = 5,
        residuals: str = "cv",
    ) -> None:
        super().__init__()
        geo = parse_fmri_geometry(geometry, "EncodingIdentification")
        if len(geo.n_voxels) != 1:
            raise InvalidInputError(
                f"EncodingIdentification models one subject; geometry has {geo.subjects}. Use "
                "EncodingIdentificationModule for several subjects (one model each)."
            )
        check_option("noise", noise, NOISE_MODELS)
        check_option("residuals", residuals, RESIDUALS)
        if isinstance(noise_rank, bool) or not isinstance(noise_rank, int) or noise_rank < 1:
            raise InvalidInputError(f"noise_rank={noise_rank!r}; expected a positive int.")
        if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
            raise InvalidInputError(f"n_folds={n_folds!r}; expected an int >= 2.")
        alphas = [float(a) for a in np.atleast_1d(np.asarray(alphas, dtype=np.float64))]
        if not alphas or not all(math.isfinite(a) and a > 0 for a in alphas):
            raise InvalidInputError(
                f"alphas={alphas!r}; expected a non-empty list of positive finite values."
            )
        self.hparams: dict[str, Any] = {
            "geometry": geo.to_dict(),
            "noise": noise,
            "noise_rank": int(noise_rank),
            "alphas": alphas,
            "n_folds": int(n_folds),
            "residuals": residuals,
        }
        self.subject = geo.subjects[0]
        self.n_voxels = geo.n_voxels[self.subject]
        self.n_features = geo.target_dim
        d, v = self.n_features, self.n_voxels
        k = min(int(noise_rank), v) if noise == "shrinkage" else 0
        buffers = {
            "weights": torch.zeros(d, v),
            "intercept": torch.zeros(v),
            "feature_mean": torch.zeros(d),
            "feature_scale": torch.ones(d),
            "alpha": torch.zeros(v),
            "cv_score": torch.zeros(v),
            "noise_sd": torch.ones(v),
            "noise_basis": torch.zeros(v, k),
            "noise_eigenvalues": torch.ones(k),
            "noise_tail": torch.ones(()),
            "shrinkage": torch.ones(()),
            "fitted": torch.zeros((), dtype=torch.bool),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        weights: ArrayLike,
        intercept: ArrayLike,
        noise_var: ArrayLike,
        subject: str = "subj01",
    ) -> EncodingIdentification:
        """A fitted diagonal-noise model from known parameters (e.g. a simulation's truth).

        Parameters
        ----------
        weights : ndarray or Tensor, shape (d, V)
            Weights on the raw features: ``mu(x) = x @ weights + intercept``.
        intercept : ndarray or Tensor, shape (V,)
        noise_var : ndarray or Tensor, shape (V,)
            Single-trial noise variance per voxel (brain units squared), positive.
        subject : str
            Subject name recorded in the geometry.

        Returns
        -------
        EncodingIdentification
            With ``feature_mean = 0`` and ``feature_scale = 1``.
        """
        w = _as_tensor("weights", weights, None, "(d features, V voxels)", torch.device("cpu"))
        d, v = w.shape
        b = _as_tensor(
            "intercept", _row(intercept), v, "(one value per voxel)", torch.device("cpu")
        )
        var = _as_tensor(
            "noise_var", _row(noise_var), v, "(one variance per voxel)", torch.device("cpu")
        )
        if bool((var <= 0).any()):
            raise InvalidInputError("noise_var has values <= 0; expected positive variances.")
        model = cls({"n_voxels": {subject: v}, "target_shape": [d]})
        with torch.no_grad():
            model.weights.copy_(w)
            model.intercept.copy_(b[0])
            model.noise_sd.copy_(var[0].sqrt())
            model.fitted.fill_(True)
        return model

    # ------------------------------------------------------------------ fitting
    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`from_arrays`) has set the parameters."""
        return bool(self.fitted)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise EncodingNotFittedError(
                "This EncodingIdentification is not fitted yet; call fit(features, brain) (or "
                "build it with EncodingIdentification.from_arrays) before predicting or scoring."
            )

    @torch.no_grad()
    def fit(
        self,
        features: ArrayLike,
        brain: ArrayLike,
        groups: ArrayLike | None = None,
        noise_var: ArrayLike | None = None,
    ) -> EncodingIdentification:
        """Fit the encoding model and the noise model on single training trials.

        Parameters
        ----------
        features : ndarray or Tensor, shape (n_train, d)
            Features of each trial's stimulus (rows repeat for repeated stimuli).
        brain : ndarray or Tensor, shape (n_train, V)
            Single-trial responses (e.g. session-z-scored betas).
        groups : array-like, shape (n_train,), optional
            Stimulus id of each trial: repeats of one stimulus stay in one cross-validation fold.
        noise_var : array-like, shape (V,), optional
            Known single-trial noise variance per voxel: used instead of estimating the noise
            from residuals (a simulation's truth; requires ``noise="diagonal"``).

        Returns
        -------
        EncodingIdentification
            ``self``, fitted (buffers on their device, float32).
        """
        hp = self.hparams
        device = self.weights.device
        x = _as_tensor("features", features, self.n_features, "(one row per trial)", device)
        y = _as_tensor("brain", brain, self.n_voxels, "(trials x voxels)", device)
        if x.shape[0] != y.shape[0]:
            raise InvalidInputError(
                f"features has {x.shape[0]} rows but brain has {y.shape[0]}; expected one "
                "feature row per trial."
            )
        n = x.shape[0]
        if n < 2 * hp["n_folds"]:
            raise InvalidInputError(
                f"fit got {n} trials; expected at least 2 * n_folds = {2 * hp['n_folds']}."
            )
        if groups is not None:
            groups = np.asarray(groups.cpu() if isinstance(groups, Tensor) else groups)
            if groups.shape != (n,):
                raise InvalidInputError(
                    f"groups has shape {groups.shape}; expected ({n},), one stimulus id per trial."
                )
        known_var = None
        if noise_var is not None:
            if hp["noise"] != "diagonal":
                raise InvalidInputError(
                    "noise_var (a known diagonal noise) needs noise='diagonal'; got "
                    f"noise={hp['noise']!r}."
                )
            known_var = _as_tensor(
                "noise_var", _row(noise_var), self.n_voxels, "(one variance per voxel)", device
            )[0]
            if bool((known_var <= 0).any()):
                raise InvalidInputError("noise_var has values <= 0; expected positive variances.")

        mean = x.mean(0)
        scale = x.std(0, unbiased=False)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        xs = (x - mean) / scale
        # the ridge runs in float32 (as the project's other linear models); noise in float64
        xs32, y32 = xs.float(), y.float()
        solution = solve_ridge_cv(
            xs32, y32, alphas=hp["alphas"], n_folds=hp["n_folds"], groups=groups
        )
        if known_var is not None:
            sd = known_var.sqrt()
        else:
            residual = self._residuals(xs32, y32, groups, solution).double()
            residual = residual - residual.mean(0)
            sd = residual.pow(2).mean(0).sqrt()
            sd = torch.where(sd > 0, sd, torch.ones_like(sd))
            if hp["noise"] == "shrinkage":
                self._fit_shrinkage(residual / sd)
        self.weights.copy_(solution.weights)
        self.intercept.copy_(solution.intercept)
        self.feature_mean.copy_(mean)
        self.feature_scale.copy_(scale)
        self.alpha.copy_(solution.alpha)
        self.cv_score.copy_(solution.cv_score)
        self.noise_sd.copy_(sd)
        self.fitted.fill_(True)
        return self

    def _residuals(self, xs: Tensor, y: Tensor, groups: np.ndarray | None, solution: Any) -> Tensor:
        """Single-trial residuals: out-of-fold (``residuals="cv"``) or of the final fit."""
        hp = self.hparams
        if hp["residuals"] == "train":
            return y - (xs @ solution.weights + solution.intercept)
        residual = torch.empty_like(y)
        for train, val in _fold_indices(len(y), hp["n_folds"], groups):
            train_t = torch.as_tensor(train, device=y.device)
            val_t = torch.as_tensor(val, device=y.device)
            inner_groups = None if groups is None else groups[train]
            fold = solve_ridge_cv(
                xs[train_t],
                y[train_t],
                alphas=hp["alphas"],
                n_folds=min(hp["n_folds"], len(train) // 2),
                groups=inner_groups,
            )
            residual[val_t] = y[val_t] - fold.predict(xs[val_t])
        return residual

    def _fit_shrinkage(self, z: Tensor) -> None:
        """Ledoit-Wolf shrunk correlation of standardised residuals ``z`` (n, V), low-rank form."""
        n, v = z.shape
        k = self.noise_basis.shape[1]
        # eigenvalues/vectors of S = z^T z / n through the smaller Gram matrix
        if v <= n:
            eigenvalues, vectors = torch.linalg.eigh(z.T @ z / n)
        else:
            eigenvalues, left = torch.linalg.eigh(z @ z.T / n)
        eigenvalues = eigenvalues.clamp_min(0).flip(0)
        frobenius_sq = (eigenvalues**2).sum()
        delta = ledoit_wolf_intensity(z, frobenius_sq)
        keep = min(k, int((eigenvalues > eigenvalues[0] * 1e-10).sum()))
        if v <= n:
            basis = vectors.flip(1)[:, :keep]
        else:
            top = left.flip(1)[:, :keep]
            basis = (z.T @ top) / (n * eigenvalues[:keep]).sqrt()
        trace = float(eigenvalues.sum())  # = V (standardised), up to rounding
        rest = v - keep
        tail_mean = max(trace - float(eigenvalues[:keep].sum()), 0.0) / rest if rest else 0.0
        tail = (1 - delta) * tail_mean + delta
        self.noise_basis.zero_()
        self.noise_basis[:, :keep] = basis
        self.noise_eigenvalues.fill_(tail)  # padded columns (zero basis) contribute nothing
        self.noise_eigenvalues[:keep] = (1 - delta) * eigenvalues[:keep] + delta
        self.noise_tail.fill_(tail if rest else 1.0)
        self.shrinkage.fill_(delta)

    # ------------------------------------------------------------------ prediction and scoring
    @property
    def noise_var(self) -> Tensor:
        """(V,) single-trial noise variance per voxel (the diagonal of ``Sigma``)."""
        return self.noise_sd.pow(2)

    @torch.no_grad()
    def predict(self, features: ArrayLike) -> ArrayLike:
        """Predicted (noise-free) responses to stimuli.

        Parameters
        ----------
        features : ndarray or Tensor, shape (n, d)

        Returns
        -------
        ndarray or Tensor (as given), shape (n, V), float32
            In the units of the training brain data.
        """
        self._check_fitted()
        x = _as_tensor(
            "features", features, self.n_features, "(one row per stimulus)", self.weights.device
        )
        return _like_input(self._predict(x).float(), features)

    def _predict(self, x: Tensor) -> Tensor:
        w = self.weights.double()
        return ((x - self.feature_mean.double()) / self.feature_scale.double()) @ w + (
            self.intercept.double()
        )

    def _mahalanobis(self, u_obs: Tensor, u_cand: Tensor) -> Tensor:
        """(m, c) squared Mahalanobis distances between whitened-by-sd rows under the shrunk
        correlation: ``||u||^2 / tail + sum_k (1 / l_k - 1 / tail) (u . b_k)^2``."""
        tail = self.noise_tail.double()
        dist = (
            (u_obs**2).sum(1, keepdim=True) - 2 * u_obs @ u_cand.T + (u_cand**2).sum(1)[None, :]
        ) / tail
        if self.noise_basis.shape[1]:
            basis = self.noise_basis.double()
            weight = 1.0 / self.noise_eigenvalues.double() - 1.0 / tail  # (k,)
            a_obs, a_cand = u_obs @ basis, u_cand @ basis
            dist = dist + (
                (a_obs**2 * weight).sum(1, keepdim=True)
                - 2 * (a_obs * weight) @ a_cand.T
                + (a_cand**2 * weight).sum(1)[None, :]
            )
        return dist

    @torch.no_grad()
    def log_likelihood(
        self, brain: ArrayLike, candidate_features: ArrayLike, n_repeats: float = 1
    ) -> ArrayLike:
        """Gaussian log-likelihood of each measured pattern under each candidate stimulus.

        Parameters
        ----------
        brain : ndarray or Tensor, shape (n_trials, V)
            Measured patterns, each the mean of ``n_repeats`` trials (same units and
            preprocessing as the training brain data).
        candidate_features : ndarray or Tensor, shape (n_candidates, d)
            Features of the candidate stimuli.
        n_repeats : float
            Repeats averaged in each pattern: the noise covariance is divided by it.

        Returns
        -------
        ndarray or Tensor (as ``brain``), shape (n_trials, n_candidates), float64
            ``-(n_repeats / 2) (y - mu_j)^T Sigma^-1 (y - mu_j)``: the log-likelihood up to a
            constant that is the same for every trial and candidate. Higher = more likely.
        """
        self._check_fitted()
        device = self.weights.device
        y = _as_tensor("brain", brain, self.n_voxels, "(trials x voxels of this model)", device)
        x = _as_tensor(
            "candidate_features",
            candidate_features,
            self.n_features,
            "(one row per candidate stimulus)",
            device,
        )
        if isinstance(n_repeats, bool) or not (
            isinstance(n_repeats, int | float) and n_repeats > 0 and math.isfinite(n_repeats)
        ):
            raise InvalidInputError(f"n_repeats={n_repeats!r}; expected a positive number.")
        sd = self.noise_sd.double()
        dist = self._mahalanobis(y / sd, self._predict(x) / sd)
        return _like_input(-0.5 * float(n_repeats) * dist, brain)

    @torch.no_grad()
    def identify(
        self, brain: ArrayLike, candidate_features: ArrayLike, n_repeats: float = 1
    ) -> ArrayLike:
        """Posterior log-probability of each candidate given each pattern (flat prior).

        The log-likelihood normalised over candidates per row (logsumexp), as
        :func:`neurodecode.demo.ladder.oracle_retrieval` scores the oracle: rows rank candidates
        as the likelihood does, and columns compare probabilities, so the matrix serves
        :func:`neurodecode.evaluate.retrieval.n_way_identification` in both directions (pattern
        ``i`` of stimulus ``i`` on the diagonal).

        Parameters
        ----------
        brain, candidate_features, n_repeats
            As in :meth:`log_likelihood`.

        Returns
        -------
        ndarray or Tensor (as ``brain``), shape (n_trials, n_candidates), float64
            ``log p(candidate j | pattern i)``; each row's exponentials sum to 1.
        """
        ll = self.log_likelihood(brain, candidate_features, n_repeats)
        ll_t = torch.as_tensor(ll)
        posterior = ll_t - torch.logsumexp(ll_t, dim=1, keepdim=True)
        return _like_input(posterior, brain)

    def identification_metrics(
        self,
        brain: ArrayLike,
        features: ArrayLike,
        n_repeats: float = 1,
        n_way: int = 300,
        n_draws: int = 30,
        k: int | Sequence[int] = (1, 5),
        seed: int = 0,
    ) -> dict[str, float]:
        """N-way identification of patterns among their own stimuli (MindEye protocol).

        Parameters
        ----------
        brain : ndarray or Tensor, shape (N, V)
            Pattern ``i`` was evoked by stimulus ``i``.
        features : ndarray or Tensor, shape (N, d)
            The stimuli's features, in the same order (they are also the candidates).
        n_repeats : float
            As in :meth:`log_likelihood`.
        n_way, n_draws, k, seed
            As in :func:`neurodecode.evaluate.retrieval.n_way_identification` (``n_way`` is
            capped at ``N``).

        Returns
        -------
        dict
            The keys of :func:`~neurodecode.evaluate.retrieval.n_way_identification`.
        """
        from neurodecode.evaluate.retrieval import n_way_identification

        n = len(brain)
        if len(features) != n:
            raise InvalidInputError(
                f"brain has {n} rows but features has {len(features)}; expected one stimulus "
                "per pattern, in the same order."
            )
        scores = torch.as_tensor(self.identify(brain, features, n_repeats)).cpu().numpy()
        return n_way_identification(scores, n_way=min(n_way, n), n_draws=n_draws, k=k, seed=seed)


def _row(value: ArrayLike) -> ArrayLike:
    """A 1-D array as one row (1, n), so that it goes through the 2-D checks."""
    if isinstance(value, Tensor):
        return value.reshape(1, -1) if value.ndim == 1 else value
    array = np.asarray(value)
    return array.reshape(1, -1) if array.ndim == 1 else array


class EncodingIdentificationModule(PretrainedMixin, L.LightningModule):
    """LightningCLI route to :class:`EncodingIdentification`: one closed-form fit per subject.

    The training epoch collects the datamodule's training batches (single trials; ``brain``
    (B, V_s), ``target`` (B, *target_shape) the stimulus features, ``subject``, ``stimulus_id``)
    and, at its last batch, fits one :class:`EncodingIdentification` per subject that has
    trials (repeats of a stimulus kept in one cross-validation fold), then counts one
    (no-op) optimiser step so that Lightning's checkpointing sees progress. Run it with
    ``trainer.max_epochs: 1``; later epochs, and runs resumed from a fitted checkpoint, do
    nothing. The datamodule's training loader drops each subject's last incomplete batch: a
    ``batch_size`` that divides the training trials uses all of them.

    Validation and test trials (repeat-averaged, ``eval_repeats`` repeats each) are identified
    among the stimuli of the same split by :meth:`EncodingIdentification.identify`, N-way top-1
    (and top-5) in both directions, logged under the names
    :class:`~neurodecode.models.retrieval.RetrievalModule` uses: ``val/top1_brain_to_image``,
    ``val/top1_image_to_brain``, ``test/{subject}/brain_to_image_top1``, ... and their means
    over subjects ``test/brain_to_image_top1``, ...

    Parameters
    ----------
    geometry : dict
        ``{"n_voxels": {subject: V_s}, "target_shape": [D] or [T, D]}`` (from the datamodule).
    noise, noise_rank, alphas, n_folds, residuals
        As in :class:`EncodingIdentification`.
    eval_repeats : float
        Repeats averaged in each validation/test trial (NSD and the simulated world: 3).
    test_n_way, test_n_draws : int
        Identification protocol of validation and test (MindEye: 300-way, 30 draws; N-way when
        fewer items).
    """

    def __init__(
        self,
        geometry: dict | None = None,
        noise: str = "diagonal",
        noise_rank: int = 1024,
        alphas: Sequence[float] = DEFAULT_ALPHA_GRID,
        n_folds: int = 5,
        residuals: str = "cv",
        eval_repeats: float = 3,
        test_n_way: int = 300,
        test_n_draws: int = 30,
    ) -> None:
        super().__init__()
        geo = parse_fmri_geometry(geometry, "EncodingIdentificationModule")
        if isinstance(eval_repeats, bool) or not (
            isinstance(eval_repeats, int | float) and eval_repeats > 0
        ):
            raise InvalidInputError(f"eval_repeats={eval_repeats!r}; expected a positive number.")
        self.save_hyperparameters()
        self.hparams["geometry"] = geo.to_dict()
        self.hparams["alphas"] = [float(a) for a in np.atleast_1d(np.asarray(alphas, float))]
        self._geo = geo
        self.automatic_optimization = False
        self.encoders = nn.ModuleDict(
            {
                name: EncodingIdentification(
                    {"n_voxels": {name: v}, "target_shape": list(geo.target_shape)},
                    noise=noise,
                    noise_rank=noise_rank,
                    alphas=self.hparams["alphas"],
                    n_folds=n_folds,
                    residuals=residuals,
                )
                for name, v in geo.n_voxels.items()
            }
        )
        self._collected: dict[str, dict[int, dict[str, list[Tensor]]]] = {}

    @property
    def subjects(self) -> list[str]:
        """Subject names; position = the subject index used in batches."""
        return self._geo.subjects

    def encoder(self, subject: int | str) -> EncodingIdentification:
        """The encoding model of ``subject`` (index or name)."""
        if isinstance(subject, str):
            if subject not in self.encoders:
                raise InvalidInputError(
                    f"subject {subject!r} is unknown; expected one of {self.subjects}."
                )
            return self.encoders[subject]
        index = int(subject)
        if not 0 <= index < len(self.subjects):
            raise InvalidInputError(
                f"subject index {index} is out of range; the model knows {self.subjects}."
            )
        return self.encoders[self.subjects[index]]

    # ------------------------------------------------------------------ collection
    def _collect(self, stage: str, batch: dict[str, Tensor]) -> None:
        subjects = batch["subject"].reshape(-1).unique()
        if subjects.numel() != 1:
            raise InvalidInputError(
                f"batch mixes subjects {subjects.tolist()}; expected all rows of a batch to "
                "belong to one subject."
            )
        store = self._collected.setdefault(stage, {}).setdefault(
            int(subjects.item()), {"brain": [], "target": [], "stimulus_id": []}
        )
        store["brain"].append(batch["brain"].detach())
        store["target"].append(batch["target"].detach().flatten(1))
        ids = batch.get("stimulus_id")
        if ids is None:  # without ids every trial is its own stimulus
            start = sum(len(b) for b in store["brain"][:-1])
            ids = torch.arange(start, start + len(batch["brain"]), device=batch["brain"].device)
        store["stimulus_id"].append(ids.detach().reshape(-1))

    def _gathered(self, stage: str) -> dict[int, dict[str, Tensor]]:
        out = {}
        for index, store in sorted(self._collected.pop(stage, {}).items()):
            out[index] = {key: torch.cat(values) for key, values in store.items()}
        return out

    def setup(self, stage: str) -> None:
        if self.trainer is not None and self.trainer.world_size > 1:
            raise InvalidInputError(
                "EncodingIdentificationModule is fitted in closed form on one process; run it "
                f"with trainer.devices=1 (got world_size={self.trainer.world_size})."
            )

    # ------------------------------------------------------------------ training = one fit
    @property
    def is_fitted(self) -> bool:
        """Whether the closed-form fit has run (subjects without training trials stay unfitted)."""
        return any(encoder.is_fitted for encoder in self.encoders.values())

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        if self.is_fitted:  # later epochs, or resumed from a fitted checkpoint
            return None
        self._collect("train", batch)
        if self.trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._fit_and_count()
        return None

    def on_train_epoch_end(self) -> None:
        if "train" in self._collected:  # the epoch ended before a batch flagged as last
            self._fit_and_count()

    def _fit_and_count(self) -> None:
        self.fit_collected()
        self.optimizers().step()  # a no-op step: Lightning's checkpointing sees one step

    def fit_collected(self) -> dict[str, float]:
        """Fit each subject's encoder on the training batches collected so far.

        Returns
        -------
        dict
            Per subject: trials used, mean cross-validated R² over voxels and fit seconds
            (also logged as ``train/{subject}/...``).
        """
        import time

        info: dict[str, float] = {}
        for index, data in self._gathered("train").items():
            name = self.subjects[index]
            start = time.perf_counter()
            encoder = self.encoders[name]
            encoder.fit(data["target"], data["brain"], groups=data["stimulus_id"].cpu().numpy())
            seconds = time.perf_counter() - start
            values = {
                "n_trials": float(len(data["brain"])),
                "mean_cv_r2": float(encoder.cv_score.mean()),
                "fit_s": seconds,
                "shrinkage": float(encoder.shrinkage),
            }
            for key, value in values.items():
                info[f"{name}/{key}"] = value
                if self._trainer is not None:
                    self.log(f"train/{name}/{key}", value, on_step=False, on_epoch=True)
        return info

    def configure_optimizers(self) -> None:
        """No optimiser: the fit is closed-form."""
        return None

    # ------------------------------------------------------------------ evaluation
    def _identification(self, index: int, data: dict[str, Tensor]) -> dict[str, float] | None:
        encoder = self.encoders[self.subjects[index]]
        if not encoder.is_fitted:
            return None
        _, first = np.unique(data["stimulus_id"].cpu().numpy(), return_index=True)
        keep = torch.as_tensor(np.sort(first), device=data["brain"].device)
        brain, target = data["brain"][keep], data["target"][keep]
        n_way = min(int(self.hparams.test_n_way), len(brain))
        if n_way < 2:
            return None
        return encoder.identification_metrics(
            brain,
            target,
            n_repeats=float(self.hparams.eval_repeats),
            n_way=n_way,
            n_draws=int(self.hparams.test_n_draws),
            k=(1, 5) if n_way >= 5 else (1,),
        )

    def on_validation_epoch_start(self) -> None:
        self._collected.pop("val", None)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._collect("val", batch)

    def on_validation_epoch_end(self) -> None:
        for index, data in self._gathered("val").items():
            metrics = self._identification(index, data)
            if metrics is None:  # not fitted yet (sanity check)
                continue
            self.log("val/top1_brain_to_image", metrics["brain_to_image_top1"])
            self.log("val/top1_image_to_brain", metrics["image_to_brain_top1"])
            self.log("val/n_way", float(metrics["n_way"]))

    def on_test_epoch_start(self) -> None:
        self._collected.pop("test", None)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._collect("test", batch)

    def on_test_epoch_end(self) -> None:
        collected: dict[str, list[float]] = {}
        for index, data in self._gathered("test").items():
            metrics = self._identification(index, data)
            if metrics is None:
                encoder = self.encoders[self.subjects[index]]
                if not encoder.is_fitted:
                    raise EncodingNotFittedError(
                        f"test needs a fitted model; subject {self.subjects[index]!r} has no "
                        "fit (train with `neurodecode fit` first, or pass --ckpt_path)."
                    )
                continue
            name = self.subjects[index]
            for key, value in metrics.items():
                if key.startswith(("brain_to_image", "image_to_brain")):
                    self.log(f"test/{name}/{key}", value)
                    collected.setdefault(key, []).append(value)
            self.log(f"test/{name}/n_way", float(metrics["n_way"]))
        for key, values in collected.items():
            self.log(f"test/{key}", float(np.mean(values)))

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Predicted responses to the batch's stimuli (``target`` features) and, for each
        trial, its log-likelihood under each stimulus of the batch."""
        encoder = self.encoder(int(batch["subject"].reshape(-1)[0]))
        target = batch["target"].flatten(1)
        out = {
            "predicted_brain": encoder.predict(target),
            "log_likelihood": encoder.log_likelihood(
                batch["brain"], target, float(self.hparams.eval_repeats)
            ),
            "subject": batch["subject"],
        }
        if "stimulus_id" in batch:
            out["stimulus_id"] = batch["stimulus_id"]
        return out
