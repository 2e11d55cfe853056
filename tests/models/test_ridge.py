"""Ridge solver and estimator: planted weights, agreement with scikit-learn, shapes, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from neurodecode.models.ridge import RidgeRegression, RidgeSolution, solve_ridge_cv
from neurodecode.validation import InvalidInputError

ALPHAS = np.logspace(-2, 6, 17)


def planted(n=240, p=30, noise=(0.05, 1.0, 5.0, 50.0), seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    W = rng.normal(size=(p, len(noise)))
    Y = X @ W + 2.0 + rng.normal(size=(n, len(noise))) * np.asarray(noise)
    return X, Y, W


def test_recovers_planted_weights_and_regularises_noisier_targets_more():
    X, Y, W = planted()
    solution = solve_ridge_cv(X, Y, alphas=ALPHAS)
    assert isinstance(solution, RidgeSolution)
    assert solution.weights.shape == (30, 4)
    assert solution.intercept.shape == solution.alpha.shape == solution.cv_score.shape == (4,)
    weights = solution.weights.numpy()
    # the clean target is recovered almost exactly, intercept included
    np.testing.assert_allclose(weights[:, 0], W[:, 0], atol=0.02)
    assert abs(solution.intercept[0].item() - 2.0) < 0.02
    alphas = solution.alpha.numpy()
    assert np.all(np.diff(alphas) >= 0), alphas  # noisier target -> no smaller alpha
    assert alphas[-1] > 10 * alphas[0]
    scores = solution.cv_score.numpy()
    assert scores[0] > 0.99 and np.all(np.diff(scores) < 0)


@pytest.mark.parametrize("method", ["eigh", "svd"])
def test_fixed_alpha_matches_sklearn_ridge(method):
    X, Y, _ = planted()
    for alpha in (0.1, 10.0, 1e4):
        ours = solve_ridge_cv(X, Y, alphas=[alpha], method=method)
        theirs = Ridge(alpha=alpha).fit(X, Y)
        np.testing.assert_allclose(ours.weights.numpy().T, theirs.coef_, atol=1e-5)
        np.testing.assert_allclose(ours.intercept.numpy(), theirs.intercept_, atol=1e-5)


@pytest.mark.parametrize("method", ["eigh", "svd"])
def test_more_features_than_samples_matches_sklearn_ridge(method):
    # eigh takes its kernel form (X X^T) here
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(40, 120)), rng.normal(size=(40, 3))
    ours = solve_ridge_cv(X, Y, alphas=[3.0], method=method)
    theirs = Ridge(alpha=3.0).fit(X, Y)
    np.testing.assert_allclose(ours.weights.numpy().T, theirs.coef_, atol=1e-5)
    np.testing.assert_allclose(ours.intercept.numpy(), theirs.intercept_, atol=1e-5)


@pytest.mark.parametrize("cv_solver", ["refit", "downdate"])
def test_alpha_choice_matches_sklearn_ridgecv_with_the_same_folds(cv_solver):
    # RidgeCV with cv=KFold(5) grid-searches by R² averaged over folds (and over targets), which
    # is our criterion; its default leave-one-out mode would differ, so the folds are given.
    X, Y, _ = planted()
    shared = solve_ridge_cv(X, Y, alphas=ALPHAS, per_target=False, cv_solver=cv_solver)
    reference = RidgeCV(alphas=ALPHAS, cv=KFold(5)).fit(X, Y)
    assert np.all(shared.alpha.numpy() == reference.alpha_)
    assert shared.cv_score.numpy().mean() == pytest.approx(reference.best_score_, abs=1e-8)

    per_target = solve_ridge_cv(X, Y, alphas=ALPHAS, per_target=True, cv_solver=cv_solver)
    for target in range(Y.shape[1]):
        reference = RidgeCV(alphas=ALPHAS, cv=KFold(5)).fit(X, Y[:, target])
        assert per_target.alpha[target].item() == pytest.approx(reference.alpha_)
        assert per_target.cv_score[target].item() == pytest.approx(reference.best_score_, abs=1e-8)


def explicit_fold_scores(X, Y, alphas, n_folds=5, groups=None):
    """R² of every alpha on every fold from scikit-learn ``Ridge`` refitted on the training rows."""
    from neurodecode.models.ridge import _fold_indices

    scores = np.zeros((len(alphas), Y.shape[1]))
    for train, val in _fold_indices(len(X), n_folds, groups):
        for a, alpha in enumerate(alphas):
            pred = Ridge(alpha=alpha).fit(X[train], Y[train]).predict(X[val])
            ss_res = ((Y[val] - pred) ** 2).sum(0)
            scores[a] += 1 - ss_res / ((Y[val] - Y[val].mean(0)) ** 2).sum(0)
    return scores / n_folds


@pytest.mark.parametrize(
    "shape, method, grouped",
    [
        ((240, 30), "eigh", False),  # more samples than features: eigh of X^T X
        ((240, 30), "svd", False),
        ((60, 150), "eigh", False),  # more features: kernel form X X^T
        ((60, 150), "svd", False),
        ((180, 150), "eigh", True),  # folds of whole stimuli (3 repeats each)
        ((103, 20), "eigh", False),  # unequal folds
    ],
)
def test_downdated_folds_equal_refitting_every_fold(shape, method, grouped):
    # The one-decomposition CV (each validation fold removed by a Woodbury update) must give the
    # scores of refitting ridge on every training fold, for every alpha, and the same alphas.
    n, p = shape
    rng = np.random.default_rng(4)
    X = rng.normal(size=(n, p)) + 3.0  # off-centre: each fold's own centring matters
    Y = X @ rng.normal(size=(p, 3)) * 0.1 + rng.normal(size=(n, 3)) * [0.1, 1.0, 10.0] + 2.0
    groups = np.tile(np.arange(n // 3), 3) if grouped else None
    downdate = solve_ridge_cv(
        X, Y, alphas=ALPHAS, groups=groups, method=method, cv_solver="downdate"
    )
    refit = solve_ridge_cv(X, Y, alphas=ALPHAS, groups=groups, method=method, cv_solver="refit")
    reference = explicit_fold_scores(X, Y, ALPHAS, groups=groups)
    np.testing.assert_allclose(downdate.cv_scores_per_alpha.numpy(), reference, atol=1e-7)
    np.testing.assert_allclose(refit.cv_scores_per_alpha.numpy(), reference, atol=1e-7)
    np.testing.assert_array_equal(downdate.alpha.numpy(), refit.alpha.numpy())
    np.testing.assert_allclose(downdate.weights.numpy(), refit.weights.numpy(), atol=1e-10)
    assert len(np.unique(downdate.alpha.numpy())) > 1  # the targets need different alphas
    batched = solve_ridge_cv(
        X, Y, alphas=ALPHAS, groups=groups, method=method, cv_solver="downdate", n_targets_batch=2
    )
    np.testing.assert_allclose(
        batched.cv_scores_per_alpha.numpy(), downdate.cv_scores_per_alpha.numpy(), atol=1e-12
    )


def test_downdate_falls_back_to_refitting_a_fold_it_cannot_factor(monkeypatch):
    # A fold whose I - H_vv is not positive definite in the working precision is refitted.
    X, Y, _ = planted()
    refit = solve_ridge_cv(X, Y, alphas=ALPHAS, cv_solver="refit")
    real = torch.linalg.cholesky_ex
    calls = []

    def failing_on_second_fold(matrix):
        calls.append(1)
        factor, info = real(matrix)
        return factor, torch.ones_like(info) if len(calls) == 1 + len(ALPHAS) else info

    monkeypatch.setattr(torch.linalg, "cholesky_ex", failing_on_second_fold)
    downdate = solve_ridge_cv(X, Y, alphas=ALPHAS, cv_solver="downdate")
    assert len(calls) == 4 * len(ALPHAS) + 1  # fold 2 stopped at its first alpha
    np.testing.assert_allclose(
        downdate.cv_scores_per_alpha.numpy(), refit.cv_scores_per_alpha.numpy(), atol=1e-10
    )


def test_float32_and_target_batches_agree_with_float64():
    X, Y, _ = planted()
    reference = solve_ridge_cv(X, Y, alphas=ALPHAS)
    batched = solve_ridge_cv(X, Y, alphas=ALPHAS, n_targets_batch=3)
    np.testing.assert_allclose(batched.weights.numpy(), reference.weights.numpy(), atol=1e-10)
    single = solve_ridge_cv(torch.as_tensor(X, dtype=torch.float32), Y, alphas=ALPHAS)
    assert single.weights.dtype == torch.float32
    np.testing.assert_array_equal(single.alpha.numpy(), reference.alpha.numpy().astype(np.float32))
    np.testing.assert_allclose(single.weights.numpy(), reference.weights.numpy(), atol=1e-3)
    # the solution predicts in the type it is given
    assert isinstance(single.predict(torch.as_tensor(X[:5], dtype=torch.float32)), torch.Tensor)
    np.testing.assert_allclose(
        reference.predict(X[:5]), X[:5] @ reference.weights.numpy() + reference.intercept.numpy()
    )


def test_groups_keep_repeats_out_of_validation():
    # 60 stimuli shown 3 times; targets are stimulus-specific noise that X cannot explain but that
    # a minimum-norm fit memorises (p > n). Splitting repeats across folds rewards memorising.
    rng = np.random.default_rng(2)
    stimuli = np.tile(np.arange(60), 3)
    X = rng.normal(size=(60, 150))[stimuli] + 0.1 * rng.normal(size=(180, 150))
    Y = rng.normal(size=(60, 2))[stimuli]
    leaky = solve_ridge_cv(X, Y, alphas=ALPHAS)
    grouped = solve_ridge_cv(X, Y, alphas=ALPHAS, groups=stimuli)
    assert leaky.cv_score.min().item() > 0.5
    assert grouped.cv_score.max().item() < 0.1
    assert grouped.alpha.min().item() > leaky.alpha.max().item()


def test_estimator_shapes_token_targets_and_flattened_epochs():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(80, 4, 6))  # e.g. MEG epochs: channels x times, flattened inside
    W = rng.normal(size=(24, 3 * 5))
    Y = (X.reshape(80, -1) @ W).reshape(80, 3, 5)  # token-level targets (n, T, D)
    model = RidgeRegression(alphas=[1e-3, 1.0]).fit(torch.as_tensor(X), torch.as_tensor(Y))
    assert model.coef_.shape == (15, 24) and model.intercept_.shape == (15,)
    assert model.alpha_.shape == (15,)
    prediction = model.predict(X)
    assert isinstance(prediction, np.ndarray) and prediction.shape == (80, 3, 5)
    np.testing.assert_allclose(prediction, Y, atol=1e-3)  # noise-free: near-exact recovery
    assert model.score(X, Y).shape == (3, 5) and model.score(X, Y).min() > 0.999


def test_standardize_matches_scaled_sklearn_ridge():
    X, Y, _ = planted()
    X = X * np.linspace(0.1, 10, X.shape[1]) + 5.0
    ours = RidgeRegression(alphas=[10.0], standardize=True).fit(X, Y)
    theirs = make_pipeline(StandardScaler(), Ridge(alpha=10.0)).fit(X, Y)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), atol=1e-6)


def test_estimator_is_sklearn_cloneable():
    model = RidgeRegression(alphas=(1.0, 10.0), n_folds=3, per_target=False)
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    copy.set_params(n_folds=4)
    assert copy.n_folds == 4 and model.n_folds == 3
    assert "n_folds=3" in repr(model)


def test_errors_are_clear():
    X, Y, _ = planted()
    with pytest.raises(InvalidInputError, match=r"X has 240 samples .* Y has 200"):
        solve_ridge_cv(X, Y[:200])
    with pytest.raises(InvalidInputError, match=r"X has 240 samples .* Y has 200"):
        RidgeRegression().fit(X, Y[:200])
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InvalidInputError, match=r"X has 1 NaN/inf values \(first rows: \[3\]\)"):
        solve_ridge_cv(bad, Y)
    with pytest.raises(InvalidInputError, match="alphas"):
        solve_ridge_cv(X, Y, alphas=[1.0, -1.0])
    with pytest.raises(InvalidInputError, match="method='qr' is not valid"):
        solve_ridge_cv(X, Y, method="qr")
    with pytest.raises(InvalidInputError, match="n_folds"):
        solve_ridge_cv(X, Y, n_folds=1)
    with pytest.raises(InvalidInputError, match="cv_solver='loo' is not valid"):
        solve_ridge_cv(X, Y, cv_solver="loo")
    with pytest.raises(InvalidInputError, match="Y has 3 dimensions"):
        solve_ridge_cv(X, Y[:, :, None])
    with pytest.raises(InvalidInputError, match="not fitted"):
        RidgeRegression().predict(X)
    model = RidgeRegression(alphas=[1.0]).fit(X, Y)
    with pytest.raises(
        InvalidInputError, match="X has 29 features, but RidgeRegression is expecting 30"
    ):
        model.predict(X[:, :29])


@pytest.mark.parametrize(
    "check",
    [
        "check_estimators_unfitted",
        "check_fit2d_predict1d",
        "check_estimators_nan_inf",
        "check_estimators_empty_data_messages",
        "check_estimator_sparse_array",
        "check_fit_idempotent",
        "check_regressors_train",
        "check_regressor_data_not_an_array",
        "check_requires_y_none",
        "check_supervised_y_2d",
    ],
)
def test_passes_sklearn_estimator_checks(check):
    # check_estimator passes 52 of its 53 checks (scikit-learn 1.9); the one left expects score(X, y=...) by keyword,
    # while our score returns R² per target and names its argument Y like fit.
    from sklearn.utils import estimator_checks

    getattr(estimator_checks, check)(
        "RidgeRegression", RidgeRegression(alphas=(0.1, 1.0), n_folds=2)
    )
