"""Encoding-model identification: the oracle with true parameters, recovery of a planted linear
world, the shrinkage noise model, save/load, the LightningCLI path and input errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from sklearn.covariance import ledoit_wolf_shrinkage

import neurodecode
from neurodecode.cli.main import main
from neurodecode.models.encoding_identification import (
    EncodingIdentification,
    EncodingIdentificationModule,
    EncodingNotFittedError,
    ledoit_wolf_intensity,
)
from neurodecode.sim.oracle import oracle_scores
from neurodecode.validation import InvalidInputError

from ..conftest import REPO, write_projected_features


def geometry(n_voxels: int, n_features: int) -> dict:
    return {"n_voxels": {"subj01": n_voxels}, "target_shape": [n_features]}


def planted_world(
    seed=0, n_images=400, repeats=2, n_features=8, n_voxels=120, weight=0.3, factors=0
):
    """Linear-Gaussian world: ``brain = features @ W + b + noise``; noise per voxel with sd in
    [0.5, 1.5], optionally with ``factors`` shared components (correlated across voxels)."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(n_features, n_voxels)) * weight
    b = rng.normal(size=n_voxels)
    sd = rng.uniform(0.5, 1.5, n_voxels)
    loadings = rng.normal(size=(n_voxels, factors))

    def noise(n):
        shared = rng.normal(size=(n, factors)) @ loadings.T
        private = rng.normal(size=(n, n_voxels)) * (np.sqrt(0.5) if factors else 1.0)
        return (shared + private) * sd

    X = rng.normal(size=(n_images, n_features))
    ids = np.repeat(np.arange(n_images), repeats)
    Y = X[ids] @ W + b + noise(len(ids))
    X_test = rng.normal(size=(100, n_features))
    Y_test = X_test @ W + b + sum(noise(100) for _ in range(repeats)) / repeats
    # per-voxel single-trial noise variance
    var = sd**2 * ((loadings**2).sum(1) + (0.5 if factors else 1.0))
    return {
        "X": X[ids],
        "Y": Y,
        "ids": ids,
        "W": W,
        "b": b,
        "var": var,
        "X_test": X_test,
        "Y_test": Y_test,
        "repeats": repeats,
    }


# ------------------------------------------------------------------ the true model is the oracle
def test_true_parameters_rank_candidates_exactly_as_the_oracle():
    world = planted_world(weight=0.1)
    model = EncodingIdentification.from_arrays(world["W"], world["b"], world["var"])
    observed, X = world["Y_test"], world["X_test"]
    n = world["repeats"]
    ours = model.log_likelihood(observed, X, n_repeats=n)
    oracle = oracle_scores(observed, X @ world["W"] + world["b"], world["var"] / n)
    assert ours.shape == (100, 100)
    np.testing.assert_array_equal(np.argsort(ours, 1), np.argsort(oracle, 1))
    np.testing.assert_array_equal(ours.argmax(1), oracle.argmax(1))
    # the oracle scores twice the log-likelihood (both up to a constant)
    np.testing.assert_allclose(2 * ours, oracle, rtol=1e-5)
    # identify = the likelihood normalised over candidates per row (as oracle_retrieval does)
    posterior = model.identify(observed, X, n_repeats=n)
    np.testing.assert_allclose(np.exp(posterior).sum(1), 1.0, rtol=1e-9)
    np.testing.assert_array_equal(np.argsort(posterior, 1), np.argsort(oracle, 1))


def test_feature_oracle_fit_with_known_noise_ranks_as_the_oracle():
    # the feature-oracle recipe: noise-free responses regressed on the features, true noise
    world = planted_world(weight=0.1)
    clean = world["X"] @ world["W"] + world["b"]
    model = EncodingIdentification(geometry(120, 8), alphas=[1e-6]).fit(
        world["X"], clean, noise_var=world["var"]
    )
    np.testing.assert_allclose(model.noise_var.numpy(), world["var"], rtol=1e-5)
    n = world["repeats"]
    ours = model.log_likelihood(world["Y_test"], world["X_test"], n)
    truth = world["X_test"] @ world["W"] + world["b"]
    oracle = oracle_scores(world["Y_test"], truth, world["var"] / n)
    np.testing.assert_array_equal(ours.argmax(1), oracle.argmax(1))
    np.testing.assert_allclose(2 * ours, oracle, rtol=1e-3)


# ------------------------------------------------------------------ fitting a planted world
@pytest.mark.parametrize("residuals", ["cv", "train"])
def test_fit_recovers_planted_weights_and_noise_variance(residuals):
    # 1000 images x 3 repeats, signal variance ~ 8 * 0.3^2 = 0.72 per voxel against noise
    # variance 0.25..2.25: a coefficient's standard error is ~ sqrt(var / n) <= 0.03 against
    # weights of sd 0.3, so the correlation of fitted and planted weights is ~0.995; the
    # variance of a noise-variance estimate from 3000 residuals is ~ sqrt(2 / 3000) = 2.6 %.
    world = planted_world(n_images=1000, repeats=3)
    model = EncodingIdentification(geometry(120, 8), residuals=residuals)
    model.fit(world["X"], world["Y"], groups=world["ids"])
    raw_weights = model.weights.numpy() / model.feature_scale.numpy()[:, None]
    assert np.corrcoef(raw_weights.ravel(), world["W"].ravel())[0, 1] > 0.99
    ratio = model.noise_var.numpy() / world["var"]
    assert np.median(np.abs(ratio - 1)) < 0.03 and np.abs(ratio - 1).max() < 0.15
    np.testing.assert_allclose(model.predict(np.zeros((1, 8)))[0], world["b"], atol=0.1)
    assert model.cv_score.shape == (120,) and float(model.cv_score.mean()) > 0.1


def test_cv_residuals_are_larger_than_training_residuals():
    # few trials per feature: training residuals underestimate the error on new images
    world = planted_world(n_images=40, repeats=1, n_features=20, weight=0.3)
    kwargs = {"alphas": [1e-3, 1.0, 1e3]}
    train = EncodingIdentification(geometry(120, 20), residuals="train", **kwargs)
    cv = EncodingIdentification(geometry(120, 20), residuals="cv", **kwargs)
    train.fit(world["X"], world["Y"])
    cv.fit(world["X"], world["Y"])
    assert float((cv.noise_var / train.noise_var).median()) > 1.2


# ------------------------------------------------------------------ the shrinkage noise model
def test_ledoit_wolf_intensity_matches_scikit_learn():
    rng = np.random.default_rng(0)
    for n, p in ((50, 30), (20, 60)):
        z = rng.normal(size=(n, p)) @ rng.normal(size=(p, p))
        z -= z.mean(0)
        ours = ledoit_wolf_intensity(torch.from_numpy(z))
        assert ours == pytest.approx(ledoit_wolf_shrinkage(z, assume_centered=True), rel=1e-9)


@pytest.mark.parametrize("n_images", [400, 50])  # V <= n and V > n: both Gram sides
def test_full_rank_shrinkage_equals_the_explicit_covariance(n_images):
    # training residuals, so that the test can rebuild them
    world = planted_world(n_images=n_images, repeats=1, factors=2)
    model = EncodingIdentification(
        geometry(120, 8), noise="shrinkage", noise_rank=120, residuals="train"
    ).fit(world["X"], world["Y"])
    residual = world["Y"] - model.predict(world["X"]).astype(np.float64)
    residual -= residual.mean(0)
    sd = np.sqrt((residual**2).mean(0))
    z = residual / sd
    delta = ledoit_wolf_shrinkage(z, assume_centered=True)
    assert 0 < delta < 1 and float(model.shrinkage) == pytest.approx(delta, rel=1e-5)
    # Sigma = D ((1 - delta) C + delta I) D, inverted explicitly
    sigma = np.outer(sd, sd) * ((1 - delta) * (z.T @ z / len(z)) + delta * np.eye(120))
    diff = world["Y_test"][:, None, :] - model.predict(world["X_test"]).astype(np.float64)[None]
    expected = -0.5 * 2 * np.einsum("icv,vw,icw->ic", diff, np.linalg.inv(sigma), diff)
    ours = model.log_likelihood(world["Y_test"], world["X_test"], n_repeats=2)
    np.testing.assert_allclose(ours, expected, rtol=1e-4)


def test_shrinkage_beats_diagonal_when_noise_is_correlated_and_ties_when_not():
    # 3 shared noise components carry ~85 % of each voxel's noise variance: a diagonal model
    # weighs the same noise many times over, the shrunk covariance discounts it
    correlated = planted_world(weight=0.1, factors=3)
    independent = planted_world(weight=0.1, factors=0)
    results = {}
    for name, world in (("correlated", correlated), ("independent", independent)):
        for noise in ("diagonal", "shrinkage"):
            model = EncodingIdentification(geometry(120, 8), noise=noise, noise_rank=16)
            model.fit(world["X"], world["Y"], groups=world["ids"])
            metrics = model.identification_metrics(
                world["Y_test"], world["X_test"], n_repeats=world["repeats"], n_way=100
            )
            results[name, noise] = (metrics, float(model.shrinkage))
    for key in ("brain_to_image_top1", "image_to_brain_top1"):
        diagonal = results["correlated", "diagonal"][0][key]
        shrinkage = results["correlated", "shrinkage"][0][key]
        assert shrinkage > diagonal + 0.4, (key, diagonal, shrinkage)
        # independent noise: Ledoit-Wolf shrinks (nearly) all the way and ranks as diagonal
        same = results["independent", "diagonal"][0][key]
        assert results["independent", "shrinkage"][0][key] == pytest.approx(same, abs=0.03)
    assert results["correlated", "shrinkage"][1] < 0.1
    assert results["independent", "shrinkage"][1] > 0.9


@pytest.mark.parametrize("n_images", [400, 50])  # V <= n and V > n: both Gram sides
def test_truncated_rank_likelihood_equals_the_dense_inverse_of_its_covariance(n_images):
    # the low-rank + tail form: the Woodbury-style quadratic form must equal the explicit
    # inverse of Sigma = D (B diag(l) B^T + tail (I - B B^T)) D, padded columns included
    world = planted_world(n_images=n_images, repeats=3, factors=4)
    model = EncodingIdentification(geometry(120, 8), noise="shrinkage", noise_rank=7)
    model.fit(world["X"], world["Y"], groups=world["ids"])
    basis = model.noise_basis.double().numpy()
    eigenvalues = model.noise_eigenvalues.double().numpy()
    tail = float(model.noise_tail)
    assert 0 < tail < 1 and len(eigenvalues) == 7
    sd = model.noise_sd.double().numpy()
    correlation = basis @ np.diag(eigenvalues) @ basis.T + tail * (np.eye(120) - basis @ basis.T)
    sigma = np.outer(sd, sd) * correlation
    diff = world["Y_test"][:, None, :] - model.predict(world["X_test"]).astype(np.float64)[None]
    expected = -0.5 * 3 * np.einsum("icv,vw,icw->ic", diff, np.linalg.inv(sigma), diff)
    ours = model.log_likelihood(world["Y_test"], world["X_test"], n_repeats=3)
    np.testing.assert_allclose(ours, expected, rtol=1e-4)


def test_truncated_rank_keeps_the_trace():
    world = planted_world(n_images=400, repeats=1, factors=2)
    model = EncodingIdentification(geometry(120, 8), noise="shrinkage", noise_rank=5)
    model.fit(world["X"], world["Y"])
    basis = model.noise_basis.double()
    np.testing.assert_allclose((basis.T @ basis).numpy(), np.eye(5), atol=1e-5)
    trace = float(model.noise_eigenvalues.double().sum() + model.noise_tail * (120 - 5))
    assert trace == pytest.approx(120, rel=1e-5)  # correlation matrix: trace = V


# ------------------------------------------------------------------ save / load
@pytest.mark.parametrize("noise", ["diagonal", "shrinkage"])
def test_save_and_load_pretrained_give_identical_scores(noise, tmp_path):
    world = planted_world(weight=0.1, factors=1)
    model = EncodingIdentification(geometry(120, 8), noise=noise, noise_rank=8)
    model.fit(world["X"], world["Y"], groups=world["ids"])
    model.save_pretrained(tmp_path / "enc")
    loaded = neurodecode.load_pretrained(tmp_path / "enc")
    assert isinstance(loaded, EncodingIdentification) and loaded.is_fitted
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(
        loaded.identify(world["Y_test"], world["X_test"], 2),
        model.identify(world["Y_test"], world["X_test"], 2),
    )
    assert EncodingIdentification.from_pretrained(tmp_path / "enc").n_voxels == 120


# ------------------------------------------------------------------ LightningCLI
@pytest.fixture(scope="module")
def tiny_store(tiny_nsd, tmp_path_factory):
    """A 32-d random projection of the tiny world's generating features (unscaled)."""
    path = tmp_path_factory.mktemp("features") / "tiny-features.h5"
    return write_projected_features(tiny_nsd, path, width=32, scaled=False)


def _metrics(folder) -> dict[str, float]:
    (path,) = folder.rglob("metrics.csv")
    values: dict[str, float] = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            values.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return values


def _overrides(tiny_nsd, store, root):
    return [
        f"--data.init_args.root={tiny_nsd}",
        f"--data.init_args.feature_store={store}",
        "--data.init_args.feature_model=gt-projection",
        "--data.init_args.val_images=10",
        "--data.init_args.batch_size=30",  # divides the 330 training trials
        "--model.init_args.noise=shrinkage",
        "--model.init_args.noise_rank=32",
        "--model.init_args.test_n_draws=3",
        "--trainer.accelerator=cpu",
        f"--trainer.default_root_dir={root}",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={root}",
    ]


def test_fit_and_test_through_lightning_cli(tiny_nsd, tiny_store, tmp_path):
    config = str(REPO / "experiments/sim_encoding_identification.yaml")
    main(["fit", "-c", config, *_overrides(tiny_nsd, tiny_store, tmp_path / "fit")])
    (checkpoint,) = (tmp_path / "fit").rglob("*.ckpt")
    assert "step=1" in checkpoint.name
    fitted = _metrics(tmp_path / "fit")
    assert fitted["train/subj01/n_trials"] == 330
    # 10 validation images (10-way, chance 0.1); the tiny world's feature oracle for the tiny
    # sim-clip space is only ~0.35 at 60-way, so margins are small here
    assert fitted["val/top1_brain_to_image"] > 0.1

    main(
        [
            "test",
            "-c",
            config,
            *_overrides(tiny_nsd, tiny_store, tmp_path / "test"),
            f"--ckpt_path={checkpoint}",
        ]
    )
    tested = _metrics(tmp_path / "test")
    assert tested["test/subj01/n_way"] == 60
    for key in ("test/brain_to_image_top1", "test/image_to_brain_top1"):
        assert tested[key] > 4 / 60, (key, tested[key])  # chance 1 / 60

    # the checkpoint restores the fitted buffers, and the fitted module saves as a folder
    module = EncodingIdentificationModule.load_from_checkpoint(checkpoint, map_location="cpu")
    assert module.encoder("subj01").is_fitted
    module.save_pretrained(tmp_path / "folder")
    loaded = neurodecode.load_pretrained(tmp_path / "folder")
    rng = np.random.default_rng(0)
    n_voxels = module.encoder(0).n_voxels
    brain, features = rng.normal(size=(5, n_voxels)), rng.normal(size=(7, 32))
    np.testing.assert_array_equal(
        loaded.encoder("subj01").identify(brain, features, 3),
        module.encoder("subj01").identify(brain, features, 3),
    )


def test_experiment_config_validates_with_print_config(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "-c",
                str(REPO / "experiments/sim_encoding_identification.yaml"),
                "--print_config",
            ]
        )
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "EncodingIdentificationModule" in printed and "max_epochs: 1" in printed


# ------------------------------------------------------------------ input errors
def test_input_errors_are_clear():
    world = planted_world(n_images=100)
    model = EncodingIdentification(geometry(120, 8))
    with pytest.raises(EncodingNotFittedError, match="not fitted"):
        model.log_likelihood(world["Y_test"], world["X_test"])
    bad = world["X"].copy()
    bad[3, 2] = np.nan
    with pytest.raises(
        InvalidInputError, match=r"features has 1 NaN/inf values \(first rows: \[3\]"
    ):
        model.fit(bad, world["Y"])
    with pytest.raises(InvalidInputError, match="features has 200 rows but brain has 199"):
        model.fit(world["X"], world["Y"][:-1])
    with pytest.raises(
        InvalidInputError, match=r"brain has shape \(200, 119\); expected \(n, 120\)"
    ):
        model.fit(world["X"], world["Y"][:, :-1])
    model.fit(world["X"], world["Y"], groups=world["ids"])
    with pytest.raises(
        InvalidInputError, match=r"brain has shape \(100, 100\); expected \(n, 120\)"
    ):
        model.log_likelihood(world["Y_test"][:, :100], world["X_test"])
    with pytest.raises(InvalidInputError, match=r"candidate_features has shape \(100, 7\)"):
        model.identify(world["Y_test"], world["X_test"][:, :7])
    bad = world["X_test"].copy()
    bad[5] = np.inf
    with pytest.raises(InvalidInputError, match="candidate_features has 8 NaN/inf"):
        model.identify(world["Y_test"], bad)
    with pytest.raises(InvalidInputError, match="n_repeats=0"):
        model.log_likelihood(world["Y_test"], world["X_test"], n_repeats=0)
    with pytest.raises(InvalidInputError, match="noise='full' is not valid"):
        EncodingIdentification(geometry(120, 8), noise="full")
    with pytest.raises(InvalidInputError, match="models one subject"):
        EncodingIdentification({"n_voxels": {"a": 3, "b": 4}, "target_shape": [2]})
    with pytest.raises(InvalidInputError, match="needs noise='diagonal'"):
        EncodingIdentification(geometry(120, 8), noise="shrinkage").fit(
            world["X"], world["Y"], noise_var=world["var"]
        )
    with pytest.raises(InvalidInputError, match="noise_var has values <= 0"):
        EncodingIdentification.from_arrays(world["W"], world["b"], np.zeros(120))
