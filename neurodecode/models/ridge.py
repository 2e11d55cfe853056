"""Ridge regression with cross-validated alphas per target: the project's linear models.

This module owns the closed-form ridge solver used for every linear model in the project: brain ->
embedding decoders (fMRI voxels or flattened MEG epochs -> CLIP embeddings) and feature -> voxel
encoders. It follows himalaya's approach (Dupré la Tour et al., 2022, NeuroImage 264:119728): one
SVD of the centred training design per cross-validation fold serves the whole alpha grid, so
choosing one alpha per target costs little more than choosing one alpha in total.

Two layers, as in himalaya: :func:`solve_ridge_cv` is the torch solver (no file I/O, runs on the
device of its inputs or the one asked for, float32 or float64) and :class:`RidgeRegression` is the
scikit-learn-style estimator around it (numpy or torch in, numpy out).

For ``X = U diag(s) V^T`` (centred) the ridge weights are ``W(alpha) = V diag(s / (s^2 + alpha))
U^T Y``; only the diagonal changes across the alpha grid.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import NotFittedError

from neurodecode.validation import InvalidInputError, check_array, check_option

DEFAULT_ALPHAS = np.logspace(-2, 6, 17)
#: The same grid as a tuple, a safe estimator default (scikit-learn compares defaults with ``==``).
DEFAULT_ALPHA_GRID: tuple[float, ...] = tuple(float(a) for a in DEFAULT_ALPHAS)

ArrayLike = np.ndarray | torch.Tensor


class RidgeNotFittedError(InvalidInputError, NotFittedError):
    """``predict``/``score`` called before ``fit`` (also scikit-learn's ``NotFittedError``)."""


@dataclass
class RidgeSolution:
    """Result of :func:`solve_ridge_cv`; all tensors live on the device the solver ran on.

    Attributes
    ----------
    weights : torch.Tensor, shape (n_features, n_targets)
        Ridge weights for the chosen alpha of each target.
    intercept : torch.Tensor, shape (n_targets,)
        ``mean(Y) - mean(X) @ weights``, so that ``X @ weights + intercept`` predicts ``Y``.
    alpha : torch.Tensor, shape (n_targets,)
        Chosen alpha per target (all equal when ``per_target=False``).
    cv_score : torch.Tensor, shape (n_targets,)
        Cross-validated R² of each target at its chosen alpha (mean over folds).
    alphas : torch.Tensor, shape (n_alphas,)
        The alpha grid that was searched.
    cv_scores_per_alpha : torch.Tensor, shape (n_alphas, n_targets)
        Cross-validated R² of every target at every alpha of the grid.
    """

    weights: torch.Tensor
    intercept: torch.Tensor
    alpha: torch.Tensor
    cv_score: torch.Tensor
    alphas: torch.Tensor | None = None
    cv_scores_per_alpha: torch.Tensor | None = None

    def predict(self, X: ArrayLike) -> ArrayLike:
        """Predict targets for ``X`` (n_samples, n_features); returns the type it was given."""
        is_numpy = not isinstance(X, torch.Tensor)
        Xt = torch.as_tensor(np.asarray(X) if is_numpy else X)
        Xt = Xt.to(device=self.weights.device, dtype=self.weights.dtype)
        if Xt.ndim != 2 or Xt.shape[1] != self.weights.shape[0]:
            raise InvalidInputError(
                f"X has shape {tuple(Xt.shape)}; expected (n_samples, {self.weights.shape[0]})."
            )
        Y = Xt @ self.weights + self.intercept
        return Y.cpu().numpy() if is_numpy else Y

    def to_numpy(self) -> dict[str, np.ndarray]:
        """All fields as numpy arrays (on the CPU), keyed by field name."""
        out = {}
        for name in ("weights", "intercept", "alpha", "cv_score", "alphas", "cv_scores_per_alpha"):
            value = getattr(self, name)
            out[name] = None if value is None else value.detach().cpu().numpy()
        return out


# --------------------------------------------------------------------------------------------
# input handling


def _to_tensor(
    name: str,
    array: ArrayLike,
    *,
    ndim: int | None = 2,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Numpy or torch -> floating tensor; checks rank and finiteness with one clear message."""
    if isinstance(array, torch.Tensor):
        tensor = array.detach()
    else:
        arr = np.asarray(array)
        if arr.dtype.kind not in "biuf":
            raise InvalidInputError(
                f"{name} has dtype {arr.dtype}; expected a numeric array (int or float)."
            )
        with warnings.catch_warnings():
            # read-only arrays (memory maps, broadcasts) are shared, never written: the solver
            # only reads its inputs
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensor = torch.from_numpy(np.ascontiguousarray(arr))
    if ndim is not None and tensor.ndim != ndim:
        raise InvalidInputError(
            f"{name} has {tensor.ndim} dimensions {tuple(tensor.shape)}; expected {ndim} "
            f"({'n_samples, n_features' if name == 'X' else 'n_samples, n_targets'})."
        )
    if dtype is None:
        dtype = tensor.dtype if tensor.dtype in (torch.float32, torch.float64) else torch.float32
    tensor = tensor.to(device=device if device is not None else tensor.device, dtype=dtype)
    bad = ~torch.isfinite(tensor)
    if bool(bad.any()):
        rows = torch.unique(torch.nonzero(bad)[:, 0])[:5].tolist()
        raise InvalidInputError(
            f"{name} has {int(bad.sum())} NaN/inf values (first rows: {rows}); expected finite values."
        )
    return tensor


def _check_alphas(alphas: ArrayLike) -> np.ndarray:
    alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    if (
        alphas.ndim != 1
        or alphas.size == 0
        or not np.all(np.isfinite(alphas))
        or np.any(alphas <= 0)
    ):
        raise InvalidInputError(
            f"alphas={alphas!r} is not valid; expected a non-empty 1-D grid of positive finite values."
        )
    return alphas


def _check_same_samples(X_shape: tuple, Y_shape: tuple) -> None:
    if X_shape[0] != Y_shape[0]:
        raise InvalidInputError(
            f"X has {X_shape[0]} samples (rows) but Y has {Y_shape[0]}; expected the same number of "
            "samples in X and Y (one row per trial)."
        )


def _fold_indices(
    n_samples: int, n_folds: int, groups: np.ndarray | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Contiguous K-fold splits (as scikit-learn's ``KFold`` without shuffling).

    With ``groups`` the folds are made of whole groups (in order of first appearance), so that the
    repeats of one stimulus never sit on both sides of a split.
    """
    if groups is None:
        sizes = np.full(n_folds, n_samples // n_folds)
        sizes[: n_samples % n_folds] += 1
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        order = np.arange(n_samples)
        return [
            (
                np.concatenate([order[: bounds[f]], order[bounds[f + 1] :]]),
                order[bounds[f] : bounds[f + 1]],
            )
            for f in range(n_folds)
        ]
    groups = np.asarray(groups)
    if groups.shape != (n_samples,):
        raise InvalidInputError(
            f"groups has shape {groups.shape}; expected ({n_samples},), one group label per sample."
        )
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    n_groups = first.size
    if n_groups < n_folds:
        raise InvalidInputError(
            f"groups has {n_groups} distinct values; expected at least n_folds={n_folds}."
        )
    # rank groups by first appearance, then cut the ranked list into contiguous folds
    rank_of_group = np.empty(n_groups, dtype=np.int64)
    rank_of_group[np.argsort(first, kind="stable")] = np.arange(n_groups)
    fold_of_rank = np.repeat(
        np.arange(n_folds), np.bincount(np.arange(n_groups) % n_folds, minlength=n_folds)
    )
    fold_of_sample = fold_of_rank[rank_of_group[inverse]]
    return [
        (np.flatnonzero(fold_of_sample != f), np.flatnonzero(fold_of_sample == f))
        for f in range(n_folds)
    ]


def _r2_columns(Y_true: torch.Tensor, Y_pred: torch.Tensor) -> torch.Tensor:
    """R² per column, as ``sklearn.metrics.r2_score(..., multioutput='raw_values')``."""
    ss_res = ((Y_true - Y_pred) ** 2).sum(0)
    ss_tot = ((Y_true - Y_true.mean(0)) ** 2).sum(0)
    r2 = 1.0 - ss_res / torch.where(ss_tot > 0, ss_tot, torch.ones_like(ss_tot))
    # constant target: perfect prediction scores 1, anything else 0 (scikit-learn's convention)
    constant = ss_tot <= 0
    return torch.where(constant, (ss_res <= 0).to(r2.dtype), r2)


def _target_batches(n_targets: int, batch: int | None) -> list[slice]:
    batch = n_targets if batch is None or batch <= 0 else batch
    return [slice(start, min(start + batch, n_targets)) for start in range(0, n_targets, batch)]


@dataclass
class _SpectralBasis:
    """One decomposition of a centred design ``Xc`` (n, p) that serves every alpha.

    Ridge weights are ``W(alpha) = directions @ diag(scale / (eigenvalues + alpha)) @ C`` with
    ``C = coordinates(Yc)``, so predictions for a new centred design ``Xn`` are
    ``(Xn @ directions) @ diag(...) @ C``: only the diagonal changes across the alpha grid.

    - ``svd``: ``Xc = U diag(s) V^T``; directions ``V``, eigenvalues ``s²``, scale ``s``,
      ``C = U^T Yc`` (himalaya's ``solve_ridge_cv_svd``).
    - ``eigh`` with p <= n: ``Xc^T Xc = V diag(l) V^T``; directions ``V``, scale 1,
      ``C = V^T Xc^T Yc``.
    - ``eigh`` with p > n (kernel form): ``Xc Xc^T = U diag(l) U^T``; directions ``Xc^T U``,
      scale 1, ``C = U^T Yc``.

    ``eigh`` of the Gram matrix costs about half an SVD on CPU; it squares the condition number,
    so ill-conditioned float32 work is more precise with ``svd``.
    """

    directions: torch.Tensor  # (p, k)
    eigenvalues: torch.Tensor  # (k,)
    scale: torch.Tensor | None  # (k,) or None for 1
    left: torch.Tensor  # (n, k) or (p, k): what Yc (or Xc^T Yc) is projected on
    project_through_design: torch.Tensor | None  # Xc when C = left^T Xc^T Yc

    @classmethod
    def of(cls, Xc: torch.Tensor, method: str) -> _SpectralBasis:
        n, p = Xc.shape
        if method == "svd":
            U, s, Vh = torch.linalg.svd(Xc, full_matrices=False)
            return cls(Vh.T, s**2, s, U, None)
        if p <= n:
            eigenvalues, V = torch.linalg.eigh(Xc.T @ Xc)
            return cls(V, eigenvalues.clamp_min(0), None, V, Xc)
        eigenvalues, U = torch.linalg.eigh(Xc @ Xc.T)
        return cls(Xc.T @ U, eigenvalues.clamp_min(0), None, U, None)

    def design_coordinates(self, Xc: torch.Tensor) -> torch.Tensor:
        """(n, k) rows of the decomposed design in its orthogonal basis: ``Z`` with
        ``Xc Xc^T = Z Z^T`` and ``Z^T Z = diag(eigenvalues)``."""
        if self.scale is not None:  # svd: Z = U diag(s)
            return self.left * self.scale
        if self.project_through_design is not None:  # eigh of Xc^T Xc: Z = Xc V
            return Xc @ self.directions
        return self.left * self.eigenvalues.sqrt()  # eigh of Xc Xc^T: Z = U diag(sqrt(l))

    def coordinates(self, Yc: torch.Tensor) -> torch.Tensor:
        """(k, n_targets) coordinates of the centred targets in this basis."""
        if self.project_through_design is not None:
            return self.left.T @ (self.project_through_design.T @ Yc)
        return self.left.T @ Yc

    def shrinkage(self, alpha: torch.Tensor) -> torch.Tensor:
        """(k,) diagonal ``scale / (eigenvalues + alpha)``."""
        shrink = 1.0 / (self.eigenvalues + alpha)
        return shrink if self.scale is None else self.scale * shrink


# --------------------------------------------------------------------------------------------
# cross-validation scores

#: How the validation predictions of each fold are computed (:func:`solve_ridge_cv`).
CV_SOLVERS = ("auto", "refit", "downdate")
#: Cost of ``torch.linalg.eigh`` of an ``m x m`` matrix in units of ``m^3`` matrix-product
#: multiply-adds (measured on CPU, one thread: 4.2-5.5 for 1000 <= m <= 4233; the tridiagonal
#: reduction is memory-bound). Only steers the ``"auto"`` choice between two exact methods.
EIGH_COST = 5.0


def _cheaper_cv_solver(
    n_samples: int,
    n_features: int,
    n_targets: int,
    n_alphas: int,
    folds: list[tuple[np.ndarray, np.ndarray]],
) -> str:
    """``"downdate"`` or ``"refit"``, whichever needs fewer multiply-adds (rough model)."""
    refit = downdate = 0.0
    rank = min(n_samples, n_features)
    # the downdate needs the design in the full decomposition's basis once
    downdate += n_samples * n_features * rank
    for train, val in folds:
        n_t, n_v = len(train), len(val)
        m = min(n_t, n_features)
        refit += n_t * n_features * m + EIGH_COST * m**3 + n_v * n_features * m
        refit += n_alphas * n_v * m * n_targets
        downdate += n_v * rank * n_targets
        downdate += n_alphas * (n_v**2 * rank + n_v**3 / 3 + n_v * rank * n_targets)
        downdate += n_alphas * n_v**2 * n_targets
    return "downdate" if downdate < refit else "refit"


def _cv_scores_refit(
    X: torch.Tensor,
    Y: torch.Tensor,
    folds: list[tuple[np.ndarray, np.ndarray]],
    alphas: torch.Tensor,
    batches: list[slice],
    method: str,
) -> torch.Tensor:
    """(n_alphas, n_targets) R² averaged over folds: one decomposition per training fold."""
    scores = torch.zeros(alphas.numel(), Y.shape[1], dtype=X.dtype, device=X.device)
    for train, val in folds:
        train_t = torch.as_tensor(train, device=X.device)
        val_t = torch.as_tensor(val, device=X.device)
        X_train = X[train_t]
        x_mean = X_train.mean(0)
        basis = _SpectralBasis.of(X_train - x_mean, method)
        del X_train
        val_coords = (X[val_t] - x_mean) @ basis.directions  # (n_val, k)
        for cols in batches:
            Y_train = Y[train_t, cols]
            y_mean = Y_train.mean(0)
            coords = basis.coordinates(Y_train - y_mean)  # (k, n_batch)
            Y_val = Y[val_t, cols]
            for a, alpha in enumerate(alphas):
                Y_pred = val_coords @ (basis.shrinkage(alpha)[:, None] * coords) + y_mean
                scores[a, cols] += _r2_columns(Y_val, Y_pred)
        del basis, val_coords
    return scores / len(folds)


def _cv_scores_downdate(
    Xc: torch.Tensor,
    Y: torch.Tensor,
    basis: _SpectralBasis,
    folds: list[tuple[np.ndarray, np.ndarray]],
    alphas: torch.Tensor,
    batches: list[slice],
) -> torch.Tensor:
    """The same scores as :func:`_cv_scores_refit` from one decomposition of all samples.

    Ridge with an unpenalised intercept is penalised least squares on ``A = [1, X]``; leaving
    the rows ``v`` out changes its solution by a rank-``|v|`` update (Sherman-Morrison-Woodbury),
    so the held-out residuals are ``e_v = (I - H_vv)^{-1} r_v``, with ``r`` the residuals of the
    fit on all samples and ``H = 11^T / n + Z diag(1 / (l + alpha)) Z^T`` its hat matrix
    (``Z`` the centred design in the decomposition's orthogonal basis, ``l`` its eigenvalues).
    Each fold costs an ``|v| x |v|`` Cholesky per alpha instead of a decomposition of the
    training design: exact up to rounding, and the fold's own centring is implied by the free
    intercept. A fold whose ``I - H_vv`` is not positive definite in the working precision falls
    back to the explicit fit.
    """
    n = Xc.shape[0]
    Z = basis.design_coordinates(Xc)  # (n, k)
    y_mean = Y.mean(0)
    coords = torch.empty(Z.shape[1], Y.shape[1], dtype=Xc.dtype, device=Xc.device)
    for cols in batches:  # the centred targets in the same basis, (k, n_targets)
        coords[:, cols] = Z.T @ (Y[:, cols] - y_mean[cols])
    scores = torch.zeros(alphas.numel(), Y.shape[1], dtype=Xc.dtype, device=Xc.device)
    for train, val in folds:
        val_t = torch.as_tensor(val, device=Xc.device)
        Z_val, Y_val = Z[val_t], Y[val_t]
        Yc_val = Y_val - y_mean
        eye = torch.eye(len(val), dtype=Xc.dtype, device=Xc.device)
        fold_scores = torch.zeros_like(scores)
        for a, alpha in enumerate(alphas):
            gain = 1.0 / (basis.eigenvalues + alpha)
            # I - H_vv; the intercept's part of H is 1/n in every entry
            factor, info = torch.linalg.cholesky_ex(eye - (Z_val * gain) @ Z_val.T - 1.0 / n)
            if int(info) != 0:
                break
            for cols in batches:
                residual = Yc_val[:, cols] - Z_val @ (gain[:, None] * coords[:, cols])
                held_out = torch.cholesky_solve(residual, factor)
                fold_scores[a, cols] = _r2_columns(Y_val[:, cols], Y_val[:, cols] - held_out)
        else:
            scores += fold_scores
            continue
        method = "svd" if basis.scale is not None else "eigh"
        scores += _cv_scores_refit(Xc, Y, [(train, val)], alphas, batches, method)
    return scores / len(folds)


# --------------------------------------------------------------------------------------------
# solver


def solve_ridge_cv(
    X: ArrayLike,
    Y: ArrayLike,
    alphas: ArrayLike = DEFAULT_ALPHAS,
    n_folds: int = 5,
    per_target: bool = True,
    device: torch.device | str | None = None,
    *,
    dtype: torch.dtype | None = None,
    groups: ArrayLike | None = None,
    n_targets_batch: int | None = None,
    method: str = "eigh",
    cv_solver: str = "auto",
) -> RidgeSolution:
    """Fit ridge regression with the alpha of each target chosen by K-fold cross-validated R².

    Per fold, ``X`` and ``Y`` are centred with the training fold's means and ridge fitted on the
    training fold predicts the validation fold at every alpha: from one decomposition of the
    training design (an eigendecomposition of its Gram matrix, or a thin SVD as in himalaya's
    ``solve_ridge_cv_svd``), or, the same numbers, from the decomposition of all samples
    downdated by the fold (``cv_solver``). R² is computed per fold and averaged over folds (as scikit-learn's
    ``GridSearchCV`` does); each target keeps the alpha with the best mean R², or all targets share
    the alpha with the best R² averaged over targets when ``per_target=False``. Ties go to the
    smallest alpha. The final weights are refitted on all samples.

    Parameters
    ----------
    X : ndarray or Tensor, shape (n_samples, n_features)
        Design matrix (e.g. voxels, flattened MEG epochs, or stimulus features).
    Y : ndarray or Tensor, shape (n_samples, n_targets)
        Targets (e.g. embedding dimensions or voxels).
    alphas : array-like, shape (n_alphas,)
        Positive regularisation strengths to search; default ``np.logspace(-2, 6, 17)``.
    n_folds : int
        Number of contiguous folds (scikit-learn ``KFold`` without shuffling), 2 <= n_folds <= n.
    per_target : bool
        One alpha per target (True) or one alpha shared by all targets (False).
    device : torch.device or str, optional
        Where to compute; default the device of ``X`` (CPU for numpy input).
    dtype : torch.dtype, optional
        Compute precision; default float64 for float64 input and float32 otherwise.
    groups : array-like, shape (n_samples,), optional
        Group labels (e.g. stimulus ids): samples of one group always fall in the same fold.
    n_targets_batch : int, optional
        Process targets in batches of this size to bound memory (default: all at once).
    method : {"eigh", "svd"}
        Decomposition: ``eigh`` of ``X^T X`` (or of ``X X^T`` when features outnumber
        samples), about twice as fast on CPU, or a thin ``svd`` of ``X`` (better conditioned; use it
        in float32 with very small alphas).
    cv_solver : {"auto", "refit", "downdate"}
        How each fold's validation predictions are computed; both are exact (equal up to
        rounding). ``"refit"``: one decomposition of each training fold. ``"downdate"``: the one
        decomposition of all samples, each fold removed by a low-rank update (an
        ``n_val x n_val`` Cholesky per alpha; see :func:`_cv_scores_downdate`), cheaper when
        validation folds are small next to the features (e.g. 5 folds of 5,850 trials x 4,233
        voxels). ``"auto"`` takes the one with fewer multiply-adds.

    Returns
    -------
    RidgeSolution
        Weights (n_features, n_targets), intercept, chosen alpha and CV R² per target, as tensors
        on the compute device.

    Raises
    ------
    InvalidInputError
        If X or Y is not 2-D or not finite, their sample counts differ, the alpha grid is not
        positive, or ``n_folds`` is out of range.
    """
    if isinstance(X, torch.Tensor) and device is None:
        device = X.device
    X = _to_tensor("X", X, device=device, dtype=dtype)
    Y = _to_tensor("Y", Y, device=X.device, dtype=X.dtype)
    _check_same_samples(tuple(X.shape), tuple(Y.shape))
    alphas_np = _check_alphas(alphas)
    check_option("method", method, ("eigh", "svd"))
    check_option("cv_solver", cv_solver, CV_SOLVERS)
    n_samples, n_features = X.shape
    n_targets = Y.shape[1]
    if not isinstance(n_folds, int | np.integer) or not 2 <= n_folds <= n_samples:
        raise InvalidInputError(
            f"n_folds={n_folds!r} is not valid; expected an integer between 2 and n_samples="
            f"{n_samples}."
        )
    if groups is not None:
        groups = np.asarray(groups.cpu() if isinstance(groups, torch.Tensor) else groups)
    alphas_t = torch.as_tensor(alphas_np, dtype=X.dtype, device=X.device)
    batches = _target_batches(n_targets, n_targets_batch)

    folds = _fold_indices(n_samples, int(n_folds), groups)
    if cv_solver == "auto":
        cv_solver = _cheaper_cv_solver(n_samples, n_features, n_targets, alphas_t.numel(), folds)
    x_mean = X.mean(0)
    y_mean = Y.mean(0)
    if cv_solver == "downdate":
        # one decomposition of all samples serves every fold and the final fit
        basis = _SpectralBasis.of(X - x_mean, method)
        scores = _cv_scores_downdate(X - x_mean, Y, basis, folds, alphas_t, batches)
    else:
        scores = _cv_scores_refit(X, Y, folds, alphas_t, batches, method)
        basis = _SpectralBasis.of(X - x_mean, method)

    if per_target:
        best = torch.argmax(scores, dim=0)  # first maximum = smallest alpha on ties
    else:
        best = torch.argmax(scores.mean(1)).expand(n_targets)
    chosen_alpha = alphas_t[best]
    cv_score = scores.gather(0, best[None, :])[0]

    weights = torch.empty(n_features, n_targets, dtype=X.dtype, device=X.device)
    for cols in batches:
        coords = basis.coordinates(Y[:, cols] - y_mean[cols])
        best_cols = best[cols]
        for a in torch.unique(best_cols).tolist():
            idx = torch.nonzero(best_cols == a)[:, 0]
            shrunk = basis.shrinkage(alphas_t[a])[:, None] * coords[:, idx]
            weights[:, idx + cols.start] = basis.directions @ shrunk
    intercept = y_mean - x_mean @ weights
    return RidgeSolution(
        weights=weights,
        intercept=intercept,
        alpha=chosen_alpha,
        cv_score=cv_score,
        alphas=alphas_t,
        cv_scores_per_alpha=scores,
    )


# --------------------------------------------------------------------------------------------
# estimator


class RidgeRegression(RegressorMixin, BaseEstimator):
    """Scikit-learn-style ridge regression with cross-validated alpha per target.

    Used as the brain -> embedding decoder baseline (fMRI voxels, or MEG epochs flattened over
    channels x times) and as the feature -> voxel encoder. Inputs may be numpy arrays or torch
    tensors; outputs are numpy arrays. ``X`` of shape (n, ...) is flattened to (n, n_features) and
    ``Y`` of shape (n, ...) (e.g. token-level embeddings (n, T, D)) to (n, n_targets); predictions
    come back in the target shape seen by :meth:`fit`.

    Parameters
    ----------
    alphas : array-like, shape (n_alphas,)
        Regularisation strengths to search (default ``np.logspace(-2, 6, 17)``).
    n_folds : int
        Number of cross-validation folds.
    per_target : bool
        One alpha per target (True) or one shared alpha (False).
    standardize : bool
        Z-score the features with the training mean and standard deviation before fitting (the
        folded-back ``coef_`` still applies to raw ``X``). The statistics come from all training
        samples, before the CV split.
    device : torch.device or str, optional
        Where to compute (default: CPU for numpy input, the tensor's device otherwise).
    n_targets_batch : int, optional
        Target batch size passed to :func:`solve_ridge_cv` to bound memory.
    method : {"eigh", "svd"}
        Decomposition used by :func:`solve_ridge_cv`.

    Attributes
    ----------
    coef_ : ndarray, shape (n_targets, n_features)
    intercept_ : ndarray, shape (n_targets,)
    alpha_ : ndarray, shape (n_targets,)
    cv_score_ : ndarray, shape (n_targets,)
        Cross-validated R² per target at its chosen alpha.
    n_features_in_ : int
    """

    def __init__(
        self,
        alphas: ArrayLike | tuple[float, ...] = DEFAULT_ALPHA_GRID,
        n_folds: int = 5,
        per_target: bool = True,
        standardize: bool = False,
        device: torch.device | str | None = None,
        n_targets_batch: int | None = None,
        method: str = "eigh",
    ) -> None:
        self.alphas = alphas
        self.n_folds = n_folds
        self.per_target = per_target
        self.standardize = standardize
        self.device = device
        self.n_targets_batch = n_targets_batch
        self.method = method

    def __sklearn_tags__(self):
        """Scikit-learn tags: a multi-output regressor."""
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    @staticmethod
    def _as_array(name: str, array: ArrayLike) -> ArrayLike:
        """Check an estimator input: a dense real numpy array or torch tensor."""
        if array is None:
            raise InvalidInputError(
                f"RidgeRegression requires y to be passed, but the target y is None ({name})."
            )
        if sparse.issparse(array):
            raise InvalidInputError(
                f"{name} is a sparse matrix; sparse input is not supported, pass a dense array "
                "(e.g. X.toarray())."
            )
        if not isinstance(array, torch.Tensor):
            array = np.asarray(array)
            if array.dtype.kind == "c":
                raise InvalidInputError(
                    f"{name} has dtype {array.dtype}: Complex data not supported; expected real "
                    "numbers."
                )
            if array.dtype.kind == "O":
                array = array.astype(np.float64)  # numbers stored as objects; strings fail here
        return array

    @classmethod
    def _flat(cls, name: str, array: ArrayLike) -> ArrayLike:
        """Check an estimator input and flatten it to (n_samples, n_columns)."""
        array = cls._as_array(name, array)
        if array.ndim < 1 or (name == "X" and array.ndim < 2):
            raise InvalidInputError(
                f"{name} has shape {tuple(array.shape)}; expected (n_samples, ...) with "
                f"{'at least 2 dimensions' if name == 'X' else 'at least 1 dimension'}. "
                "Reshape your data, e.g. X.reshape(-1, 1) for a single feature."
            )
        flat = array.reshape(array.shape[0], -1)
        if flat.shape[0] == 0 or flat.shape[1] == 0:
            raise InvalidInputError(
                f"{name} has shape {tuple(array.shape)}: Found array with {flat.shape[0]} "
                f"sample(s) and {flat.shape[1]} feature(s) (shape={tuple(flat.shape)}) while a "
                "minimum of 1 is required."
            )
        return flat

    def fit(self, X: ArrayLike, Y: ArrayLike, groups: ArrayLike | None = None) -> RidgeRegression:
        """Fit on ``X`` (n_samples, ...) and ``Y`` (n_samples, ...); returns ``self``.

        ``groups`` (n_samples,), e.g. stimulus ids, keeps the repeats of a stimulus in one fold.
        """
        Y = self._as_array("Y", Y)
        X2, Y2 = self._flat("X", X), self._flat("Y", Y)
        _check_same_samples(tuple(X2.shape), tuple(Y2.shape))
        self._target_shape = tuple(Y.shape[1:])
        X2 = _to_tensor("X", X2, device=self.device)
        Y2 = _to_tensor("Y", Y2, device=X2.device, dtype=X2.dtype)
        if self.standardize:
            mean = X2.mean(0)
            std = X2.std(0, unbiased=False)
            std = torch.where(std > 0, std, torch.ones_like(std))
            X2 = (X2 - mean) / std
        solution = solve_ridge_cv(
            X2,
            Y2,
            alphas=self.alphas,
            n_folds=self.n_folds,
            per_target=self.per_target,
            groups=groups,
            n_targets_batch=self.n_targets_batch,
            method=self.method,
        )
        weights, intercept = solution.weights, solution.intercept
        if self.standardize:
            weights = weights / std[:, None]
            intercept = intercept - mean @ weights
        self.coef_ = weights.T.contiguous().cpu().numpy()
        self.intercept_ = intercept.cpu().numpy()
        self.alpha_ = solution.alpha.cpu().numpy()
        self.cv_score_ = solution.cv_score.cpu().numpy()
        self.n_features_in_ = int(X2.shape[1])
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise RidgeNotFittedError(
                "This RidgeRegression is not fitted yet; call fit(X, Y) before predict or score."
            )

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predict targets, shape (n_samples, *target_shape) as seen by :meth:`fit`."""
        self._check_fitted()
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        X2 = check_array("X", self._flat("X", X), kind="biuf", finite=True)
        if X2.shape[1] != self.n_features_in_:
            raise InvalidInputError(
                f"X has {X2.shape[1]} features, but RidgeRegression is expecting "
                f"{self.n_features_in_} features as input (as during fit)."
            )
        Y = X2.astype(self.coef_.dtype, copy=False) @ self.coef_.T + self.intercept_
        return Y.reshape((X2.shape[0], *self._target_shape))

    def score(self, X: ArrayLike, Y: ArrayLike) -> np.ndarray:
        """R² per target (not averaged), shape ``target_shape`` as seen by :meth:`fit`."""
        Y_pred = self.predict(X)
        Y = self._as_array("Y", Y)
        Y = Y.detach().cpu().numpy() if isinstance(Y, torch.Tensor) else Y
        _check_same_samples(tuple(Y_pred.shape), tuple(Y.shape))
        if tuple(Y.shape[1:]) != self._target_shape:
            expected = ", ".join(["n_samples", *map(str, self._target_shape)])
            raise InvalidInputError(
                f"Y has shape {tuple(Y.shape)}; expected ({expected}) as during fit."
            )
        r2 = _r2_columns(
            torch.from_numpy(Y.reshape(len(Y), -1).astype(np.float64)),
            torch.from_numpy(Y_pred.reshape(len(Y), -1).astype(np.float64)),
        )
        return r2.numpy().reshape(self._target_shape)
