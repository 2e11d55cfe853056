"""The simulated NSD world as a stand-in for NSD: pixel, colour and semantic information in the
cortex, NSD-like noise ceilings, correlated noise that the oracle models exactly, and the one
ground-truth reader."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import scipy.sparse

from neurodecode.demo.ladder import oracle_identification, read_oracle_test_data
from neurodecode.evaluate.image_metrics import pixcorr_per_image
from neurodecode.sim.brain import LOWLEVEL_BLOCKS, SEMANTIC_AXES
from neurodecode.sim.fmri import early_area
from neurodecode.sim.ground_truth import read_ground_truth, read_subject_truth
from neurodecode.sim.noise import NoiseModel, whitened_quadratics
from neurodecode.sim.oracle import oracle_scores, oracle_test_data
from neurodecode.validation import InvalidInputError


@pytest.fixture(scope="module")
def world(tiny_nsd):
    return read_ground_truth(tiny_nsd)


@pytest.fixture(scope="module")
def truth(tiny_nsd):
    return read_subject_truth(tiny_nsd, "subj01")


def test_reader_returns_what_was_written(tiny_nsd, world, truth):
    assert world.subjects == ["subj01", "subj02"]
    assert list(world.features.blocks) == [
        "energy",
        "luminance",
        "colour",
        "category",
        "semantic",
        "attributes",
    ]
    assert world.semantic_axes == SEMANTIC_AXES
    assert world.features.values.shape[0] == len(world.category) == 60 + 2 * 120
    v = len(truth.voxel_ijk)
    assert truth.responses.shape == (180, v)
    assert truth.voxels.weights.shape == (v, world.features.values.shape[1])
    np.testing.assert_allclose(truth.noise.total_sd, truth.noise_sd, rtol=1e-12)
    np.testing.assert_allclose(truth.ncsnr, truth.voxels.amplitude / truth.noise_sd)
    assert truth.sources is not None and len(truth.sources.ijk) < v  # sources are sparser
    assert truth.noise.mixing.shape == (v, len(truth.sources.ijk))
    np.testing.assert_allclose(np.asarray(truth.noise.mixing.sum(axis=1)).ravel(), 1.0)
    shared = world.sharedix[:3]
    rows = [int(np.flatnonzero(truth.stimulus_ids == i)[0]) for i in shared]
    np.testing.assert_array_equal(truth.responses_to(shared), truth.responses[rows])
    with pytest.raises(InvalidInputError, match="never saw"):
        truth.responses_to(np.array([10**6]))
    with pytest.raises(InvalidInputError, match="subj09"):
        read_subject_truth(tiny_nsd, "subj09")


def test_reader_reads_worlds_without_the_noise_model(tiny_nsd, tmp_path, truth):
    path = tmp_path / "ground_truth.h5"
    shutil.copy(tiny_nsd / "ground_truth.h5", path)
    with h5py.File(path, "a") as f:
        del f["subj01/noise"], f["subj01/sources"]
    old = read_subject_truth(path, "subj01")
    assert old.sources is None and old.noise.factors.shape[1] == 0
    np.testing.assert_allclose(old.noise.total_sd, truth.noise_sd)
    mu = truth.responses[:4].astype(np.float64)
    scores = oracle_scores(mu, mu, old.noise, n_repeats=3)
    assert np.all(np.argmax(scores, axis=1) == np.arange(4))


def _random_model(rng, n_vox=30, n_src=6, n_global=2) -> NoiseModel:
    dense = rng.random((n_vox, n_src)) * (rng.random((n_vox, n_src)) < 0.4)
    dense[np.arange(n_vox), rng.integers(n_src, size=n_vox)] += 1.0
    mixing = scipy.sparse.csr_matrix(dense / dense.sum(axis=1, keepdims=True))
    return NoiseModel(
        mixing,
        rng.uniform(0.5, 2.0, n_src),
        rng.normal(0, 0.3, (n_vox, n_global)),
        rng.uniform(0.2, 1.0, n_vox),
    )


def test_noise_draws_have_the_model_covariance():
    rng = np.random.default_rng(0)
    model = _random_model(rng)
    factors = model.factors.toarray()
    expected = factors @ factors.T + np.diag(model.independent_sd**2)
    draws = model.draw(40_000, np.random.default_rng(1))
    np.testing.assert_allclose(np.cov(draws.T), expected, atol=0.08)
    np.testing.assert_allclose(np.diag(expected), model.total_sd**2)
    shares = model.variance_shares()
    np.testing.assert_allclose(sum(shares.values()), 1.0)


def test_woodbury_quadratics_match_the_dense_inverse():
    rng = np.random.default_rng(2)
    model = _random_model(rng)
    y, mu = rng.normal(size=(5, 30)), rng.normal(size=(7, 30))
    cov = model.factors.toarray() @ model.factors.toarray().T + np.diag(model.independent_sd**2)
    inv = np.linalg.inv(cov)
    diff = y[:, None, :] - mu[None]
    expected = -np.einsum("ijv,vw,ijw->ij", diff, inv, diff)
    for factors in (model.factors, model.factors.toarray()):  # sparse and dense
        got = whitened_quadratics(y, mu, factors, model.independent_sd**2)
        np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-8)


def test_oracle_uses_the_noise_correlations(tiny_nsd, world, truth):
    """The oracle with the true covariance beats the same likelihood with independent noise,
    and the array API gives what the file convenience gives."""
    from neurodecode.data.nsd import read_nsd_betas

    trials = read_nsd_betas(tiny_nsd, "subj01", zscore=False, progress=False)
    test = trials.split == "test"
    data = oracle_test_data(
        truth, world.sharedix, trials.data[test], trials.stimulus_id[test], trials.session[test]
    )
    np.testing.assert_allclose(data.observed, read_oracle_test_data(tiny_nsd, "subj01").observed)
    assert data.n_repeats == 3
    exact = oracle_identification(data.scores(), n_way=60)
    independent = oracle_identification(
        oracle_scores(data.observed, data.responses, truth.noise_sd**2 / 3), n_way=60
    )
    assert exact["brain_to_image_top1"] > independent["brain_to_image_top1"]
    assert 10 / 60 < exact["brain_to_image_top1"] < 1.0  # informative, not saturated


def test_neighbouring_voxels_share_noise(truth):
    """Noise correlation falls with distance (point-spread neural noise)."""
    factors = truth.noise.factors.toarray()
    cov = factors @ factors.T + np.diag(truth.noise.independent_sd**2)
    sd = np.sqrt(np.diag(cov))
    corr = cov / np.outer(sd, sd)
    ijk = truth.voxel_ijk
    dist = np.sqrt(((ijk[:, None] - ijk[None]) ** 2).sum(-1))
    near = corr[(dist > 0) & (dist <= 1.0)].mean()
    far = corr[dist >= 6].mean()
    assert near > 0.3 and near > far + 0.2


def test_brain_carries_pixel_information(world, truth):
    """A ridge from the noise-free responses to 16 x 16 RGB images reconstructs the test images
    far better than the mean training image (the old energy-only cortex was blind to luminance
    and colour: +0.13 on the default world)."""
    from neurodecode.data.nsd import read_stimuli

    root = world.path.parent
    images = read_stimuli(root, truth.stimulus_ids).astype(np.float64) / 255.0
    n, side = len(images), 16
    small = images.reshape(n, side, images.shape[1] // side, side, -1, 3).mean(axis=(2, 4))
    y = small.reshape(n, -1)
    test = np.isin(truth.stimulus_ids, world.sharedix)
    x = truth.responses.astype(np.float64)
    x = (x - x[~test].mean(0)) / (x[~test].std(0) + 1e-9)
    y_mean = y[~test].mean(0)
    a = x[~test]
    w = np.linalg.solve(a.T @ a + 10.0 * np.eye(a.shape[1]), a.T @ (y[~test] - y_mean))
    pred = np.clip(x[test] @ w + y_mean, 0, 1)

    def chw(z):
        return z.reshape(-1, side, side, 3).transpose(0, 3, 1, 2).astype(np.float32)

    ridge = pixcorr_per_image(chw(pred), chw(y[test]), size=None).mean()
    mean_image = np.broadcast_to(y_mean, y[test].shape)
    baseline = pixcorr_per_image(chw(mean_image), chw(y[test]), size=None).mean()
    assert ridge > baseline + 0.4, (ridge, baseline)  # measured: 0.77 vs 0.07, 0.79 vs 0.10


def test_early_visual_tuning_follows_the_hierarchy(truth, world):
    src = truth.sources
    areas = np.array([early_area(r) for r in src.roi])
    sizes = [np.median(src.prf[areas == a, 2]) for a in ("V1", "V2", "V3", "hV4")]
    assert np.all(np.diff(sizes) > 0), sizes  # pRF size grows V1 -> hV4

    def block_share(name):
        a, b = world.features.blocks[name]
        norms = {k: np.abs(src.weights[:, slice(*world.features.blocks[k])]).sum(1) for k in
                 LOWLEVEL_BLOCKS}  # fmt: skip
        return np.abs(src.weights[:, a:b]).sum(1) / sum(norms.values())

    colour = block_share("colour")
    assert np.median(colour[areas == "hV4"]) > 1.5 * np.median(colour[areas == "V1"])
    assert np.all(block_share("luminance")[areas != ""] > 0)


def test_category_areas_are_graded(world, truth):
    """Face areas prefer faces, then bodies (shared animacy), and respond more to larger faces."""
    face_voxels = np.isin(truth.roi, ["FFA-1", "FFA-2", "OFA"])
    assert face_voxels.sum() >= 5
    cat = world.category[truth.stimulus_ids]
    mean = truth.responses[:, face_voxels].mean(axis=1)
    by = {c: mean[cat == c].mean() for c in set(cat)}
    assert by["face"] > by["body"] > max(by[c] for c in ("place", "word", "object"))
    sem = world.block_features(standardised=False)["semantic"][truth.stimulus_ids]
    faces = cat == "face"
    salience = sem[faces, SEMANTIC_AXES.index("face")]
    assert np.corrcoef(salience, mean[faces])[0, 1] > 0.3


def test_noise_ceilings_resemble_nsd(truth):
    """Median NC near NSD's volumetric nsdgeneral (~24 %), early visual above the rest."""
    nc = truth.noise_ceiling
    assert 18 < np.median(nc) < 32
    early = truth.kind == "early"
    assert np.median(nc[early]) > np.median(nc[truth.kind == "other"])
    v1 = np.array([early_area(r) == "V1" for r in truth.roi])
    assert np.median(nc[v1]) > np.median(nc[truth.kind == "other"]) + 8
