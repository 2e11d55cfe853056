"""Voxel-wise encoding and the noise ceiling, scored against a simulated world's ground truth."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from neurodecode.analysis.encoding import (
    VoxelEncoder,
    concatenate_bands,
    encode_trials,
    estimate_noise_ceiling,
    fit_banded_encoder,
    fit_encoder,
    pearson_columns,
    pooled_r2_over_nc,
    r2_score_columns,
    score_encoder,
)
from neurodecode.data.nsd import read_nsd_betas
from neurodecode.sim.brain import GeneratingFeatures, standardise_features
from neurodecode.validation import InvalidInputError


@pytest.fixture(scope="module")
def quiet_world(tmp_path_factory):
    """One subject, 600 training + 80 shared images, low noise: model misfit shows over noise."""
    from neurodecode.sim.fmri import FMRISimConfig, simulate_fmri

    config = FMRISimConfig(
        seed=1,
        image_size=32,
        n_subjects=1,
        n_shared=80,
        n_train_per_subject=600,
        trials_per_session=300,
        grid=[12, 14, 10],
        energy_grid=4,
        roi_radius=1.6,
        noise_scale=0.25,
    )
    root = simulate_fmri(config, tmp_path_factory.mktemp("enc") / "world", progress=False)
    with h5py.File(root / "ground_truth.h5", "r") as f:
        gf = f["generating_features"]
        blocks = {k: tuple(v) for k, v in json.loads(gf.attrs["blocks"]).items()}
        features = standardise_features(
            GeneratingFeatures(gf[:].astype(np.float64), blocks, int(gf.attrs["energy_grid"]))
        )
        g = f["subj01"]
        truth = {
            "nc": g["noise_ceiling"][:] / 100,
            "linear": g["linear"][:].astype(bool),
            "kind": g["kind"][:].astype(str),
            "ijk": g["voxel_ijk"][:],
        }
    trials = read_nsd_betas(root, "subj01", progress=False)
    return trials, features, blocks, truth


def test_noise_ceiling_estimate_matches_the_planted_ceiling(quiet_world):
    trials, _, _, truth = quiet_world
    assert np.array_equal(trials.info["voxel_ijk"], truth["ijk"])
    _, nc = estimate_noise_ceiling(trials.data, trials.stimulus_id, trials.session, 3, False)
    assert nc.max() <= 1.0 and nc.min() >= 0.0  # a fraction, not percent
    assert np.abs(nc - truth["nc"]).mean() < 0.03
    assert np.corrcoef(nc, truth["nc"])[0, 1] > 0.95


def test_noise_ceiling_on_synthetic_repeats_any_modality():
    rng = np.random.default_rng(0)
    n_stim, n_rep, n_col = 400, 3, 50
    snr_true = np.linspace(0.2, 2.0, n_col)
    signal = rng.normal(size=(n_stim, n_col)) * snr_true
    data = np.repeat(signal, n_rep, axis=0) + rng.normal(size=(n_stim * n_rep, n_col))
    ids = np.repeat(np.arange(n_stim), n_rep)
    snr, nc = estimate_noise_ceiling(data, ids, n_repeats=3)
    assert np.corrcoef(snr, snr_true)[0, 1] > 0.98
    expected = snr_true**2 / (snr_true**2 + 1 / 3)
    assert np.abs(nc - expected).mean() < 0.03
    _, nc1 = estimate_noise_ceiling(data, ids, n_repeats=1)
    assert np.all(nc1 <= nc)  # averaging repeats raises the ceiling


def test_encoding_reaches_the_ceiling_in_linear_voxels_not_compressive(quiet_world):
    trials, features, blocks, truth = quiet_world
    bands = {k: (lambda ids, a=a, b=b: features[ids][:, a:b]) for k, (a, b) in blocks.items()}
    run = encode_trials(trials, bands)
    scores = run.scores
    assert run.test_measured.shape == (80, trials.data.shape[1])  # repeat-averaged shared images
    linear, kind = truth["linear"], truth["kind"]
    linear_ratio = pooled_r2_over_nc(scores, linear & np.isin(kind, ["early", "category"]))
    compressive_ratio = pooled_r2_over_nc(scores, ~linear)
    assert linear_ratio >= 0.95
    assert compressive_ratio < linear_ratio - 0.01
    early = kind == "early"
    assert np.median(scores.r2_over_nc[early & linear]) > np.median(
        scores.r2_over_nc[early & ~linear]
    )
    # Pearson r² can't be below R² on the same predictions
    assert np.all(scores.pearson_r**2 >= scores.r2 - 1e-9)


def test_r2_and_pearson_match_references():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(1)
    y = rng.normal(size=(30, 4))
    p = y + rng.normal(size=(30, 4))
    assert np.allclose(r2_score_columns(y, p), r2_score(y, p, multioutput="raw_values"))
    assert np.allclose(
        pearson_columns(y, p), [np.corrcoef(y[:, j], p[:, j])[0, 1] for j in range(4)]
    )
    const = np.ones((30, 1))
    assert r2_score_columns(const, const)[0] == 1.0 and pearson_columns(const, p[:, :1])[0] == 0.0


def test_encoder_recovers_planted_weights_and_predicts_in_torch():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 6)) * [1, 2, 3, 4, 5, 6] + 10
    w = rng.normal(size=(6, 3))
    y = x @ w + 1.5 + 0.01 * rng.normal(size=(300, 3))
    enc = fit_encoder(x, y, alphas=[1e-3, 1e-1, 10.0])
    assert np.allclose(enc.predict(x), y, atol=0.1)
    raw_weights = enc.weights / enc.feature_scale[:, None]  # back to raw-feature units
    assert np.allclose(raw_weights, w, atol=0.01)
    xt = torch.tensor(x[:5], requires_grad=True)
    out = enc.predict_torch(xt, voxels=[0, 2])
    assert np.allclose(out.detach().numpy(), enc.predict(x[:5])[:, [0, 2]])
    out.sum().backward()  # differentiable
    assert xt.grad is not None and xt.grad.shape == (5, 6)


def test_banded_encoder_prefers_the_informative_band():
    rng = np.random.default_rng(3)
    good = rng.normal(size=(200, 3))
    junk = rng.normal(size=(200, 60))
    y = good @ rng.normal(size=(3, 4)) + 0.3 * rng.normal(size=(200, 4))
    banded = fit_banded_encoder({"good": good, "junk": junk}, y, band_scales=(0.1, 1.0))
    flat = fit_encoder(np.hstack([good, junk]), y, standardize=True)
    assert np.all(banded.cv_score >= flat.cv_score - 1e-9)
    stacked, cols = concatenate_bands({"good": good, "junk": junk})
    assert cols == {"good": (0, 3), "junk": (3, 63)} and stacked.shape == (200, 63)
    assert banded.predict(stacked).shape == (200, 4)


def test_errors_name_the_problem(quiet_world):
    trials = quiet_world[0]
    with pytest.raises(InvalidInputError, match="responses have"):
        fit_encoder(np.zeros((10, 2)), np.zeros((9, 3)))
    with pytest.raises(InvalidInputError, match="fraction"):
        score_encoder(np.zeros((5, 2)), np.ones((5, 2)), np.array([50.0, 20.0]), np.ones(2))
    with pytest.raises(InvalidInputError, match="'train' and 'test'"):
        encode_trials(trials.select(trials.split == "train"), lambda ids: np.zeros((len(ids), 2)))
    with pytest.raises(InvalidInputError, match="train_on"):
        encode_trials(trials, lambda ids: np.zeros((len(ids), 2)), train_on="both")
    with pytest.raises(InvalidInputError, match="at least twice"):
        estimate_noise_ceiling(np.zeros((3, 2)), np.arange(3))
    enc = VoxelEncoder(
        np.zeros((4, 2)), np.zeros(2), np.zeros(4), np.ones(4), np.ones(2), np.ones(2)
    )
    with pytest.raises(InvalidInputError, match="expected \\(n_samples, 4\\)"):
        enc.predict(np.zeros((3, 5)))
    with pytest.raises(InvalidInputError, match="band 'b' has 4 samples"):
        concatenate_bands({"a": np.zeros((5, 1)), "b": np.zeros((4, 1))})


def test_brain_maps_put_values_back_in_the_volume(quiet_world, tmp_path):
    from nilearn import datasets

    from neurodecode.plotting.brain_maps import (
        plot_slice_mosaic,
        plot_surface_map,
        values_to_nifti,
        values_to_volume,
    )

    trials, _, _, truth = quiet_world
    ijk = trials.info["voxel_ijk"]
    shape = tuple(ijk.max(0) + 2)
    volume = values_to_volume(truth["nc"], ijk, shape)
    assert np.array_equal(volume[tuple(ijk.T)], truth["nc"])  # (x, y, z) indexing
    assert np.isnan(volume).sum() == np.prod(shape) - len(ijk)
    plot_slice_mosaic(truth["nc"], ijk, shape, tmp_path / "nc.png", "noise ceiling")
    assert (tmp_path / "nc.png").stat().st_size > 0
    template = datasets.load_mni152_template(resolution=4)
    inside = np.argwhere(template.get_fdata() > 0.3)[:500]
    image = values_to_nifti(np.ones(len(inside)), inside, template.shape, template.affine)
    assert image.get_fdata()[tuple(inside[0])] == 1.0
    plot_surface_map(image, tmp_path / "surf.png", "R²")
    assert (tmp_path / "surf.png").stat().st_size > 0
    with pytest.raises(InvalidInputError, match="outside the volume"):
        values_to_volume(np.ones(1), np.array([[99, 0, 0]]), (3, 3, 3))


def test_encoding_runner_writes_tables_and_maps(tiny_nsd, tmp_path):
    import csv

    from neurodecode.cli.analyze_cortex import run_encoding

    config = {
        "run_dir": str(tmp_path / "run"),
        "data": {"root": str(tiny_nsd), "subject": "subj01"},
        "features": {"source": "ground_truth"},
    }
    import yaml

    from neurodecode.cli.main import main

    path = tmp_path / "encoding.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["analyze", "encoding", "--config", str(path)]) == 0
    run_dir = tmp_path / "run"
    with open(run_dir / "voxels.csv") as fh:
        rows = list(csv.DictReader(fh))
    with h5py.File(tiny_nsd / "ground_truth.h5", "r") as f:
        roi = f["subj01/roi"][:].astype(str)
    assert len(rows) == len(roi)
    assert [r["roi"] for r in rows] == roi.tolist()  # localiser labels + the planted food ROI
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # NSD-calibrated category ROIs (median NC ~27 %) and graded tuning: 120 training images
    # reach about half the ceiling (one-hot ROIs at NC ~50 % reached more)
    assert metrics["r2_over_nc_pooled"]["PPA"] > 0.35
    assert all((run_dir / f"{k}.png").is_file() for k in ("r2", "noise_ceiling", "r2_over_nc"))
    with pytest.raises(InvalidInputError, match=r"unknown keys \['folds'\]"):
        run_encoding({**config, "encoding": {"folds": 3}})
    with pytest.raises(InvalidInputError, match=r"data\.root is missing"):
        run_encoding({"run_dir": str(tmp_path / "x"), "data": {}})
