"""BIDS fMRI loader: planted single-trial betas come back (LSA and LSS), in the right voxel
columns, with their stimulus ids, runs, repeats and splits; bad inputs give one clear error."""

from __future__ import annotations

import shutil
from pathlib import Path

import joblib
import nibabel as nib
import numpy as np
import pytest

from neurodecode.data.bids_fmri import read_bids_fmri
from neurodecode.sim.bids import simulate_bids_fmri
from neurodecode.validation import InvalidInputError

GRID = (7, 6, 4)  # all sizes differ, so any axis swap changes the voxel set
HIGH_GAIN = 1.5  # planted gain above which a voxel counts as high-SNR


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("bids") / "ds"
    return simulate_bids_fmri(root, n_runs=2, n_trials_per_run=20, tr=1.0, grid=GRID, noise=0.2)


@pytest.fixture(scope="module")
def truth(sim) -> dict:
    return dict(np.load(sim["01"]["truth"]))


@pytest.fixture(scope="module")
def loaded(sim) -> dict:
    return {
        m: read_bids_fmri(sim["root"], "01", "images", method=m, progress=False)
        for m in ("lsa", "lss")
    }


def _planted_at_columns(trials, truth) -> np.ndarray:
    x, y, z = trials.info["voxel_ijk"].T
    return truth["betas"][:, x, y, z]


def _voxel_correlations(estimated: np.ndarray, planted: np.ndarray) -> np.ndarray:
    e = estimated - estimated.mean(0)
    p = planted - planted.mean(0)
    return (e * p).sum(0) / np.sqrt((e**2).sum(0) * (p**2).sum(0))


def _high_snr_correlation(trials, truth) -> float:
    x, y, z = trials.info["voxel_ijk"].T
    high = truth["gain"][x, y, z] > HIGH_GAIN
    assert high.sum() >= 5
    r = _voxel_correlations(trials.data, _planted_at_columns(trials, truth))
    return float(r[high].mean())


@pytest.mark.parametrize("method", ["lsa", "lss"])
def test_recovers_planted_single_trial_betas(loaded, truth, method):
    trials = loaded[method]
    assert trials.data.dtype == np.float32
    assert trials.data.shape == (40, int(truth["mask"].sum()))
    assert trials.info["method"] == method
    assert _high_snr_correlation(trials, truth) > 0.8
    # Units: betas are percent signal change of a baseline-100 series, i.e. the planted scale.
    x, y, z = trials.info["voxel_ijk"].T
    high = truth["gain"][x, y, z] > HIGH_GAIN
    planted = _planted_at_columns(trials, truth)[:, high].ravel()
    slope = np.polyfit(planted, trials.data[:, high].ravel(), 1)[0]
    assert 0.8 < slope < 1.25


def test_lss_beats_lsa_in_a_rapid_noisy_design(tmp_path):
    # Mumford et al. (2012): with short ISIs and noise, LSA's collinear trial regressors make
    # its betas unstable and LSS recovers trial-to-trial variation better. (In the slower,
    # low-noise design above LSA is the better one: 0.97 vs 0.85 there.)
    sim = simulate_bids_fmri(
        tmp_path / "ds", n_runs=2, n_trials_per_run=20, grid=(5, 5, 3), noise=1.0, isi_range=(1, 3)
    )
    truth = dict(np.load(sim["01"]["truth"]))
    r = {
        m: _high_snr_correlation(read_bids_fmri(sim["root"], "01", "images", method=m), truth)
        for m in ("lsa", "lss")
    }
    assert r["lss"] > r["lsa"] + 0.15, r


def test_voxel_columns_follow_voxel_ijk(loaded, truth, sim):
    trials = loaded["lsa"]
    ijk = trials.info["voxel_ijk"]
    assert ijk.shape == (int(truth["mask"].sum()), 3)
    np.testing.assert_array_equal(ijk, np.argwhere(truth["mask"]))
    np.testing.assert_allclose(trials.info["affine"], nib.load(sim["01"]["bold"][0]).affine)
    # The marker voxel (largest planted gain) is the column whose betas match it best, and no
    # other planted voxel matches that column as well.
    marker = truth["marker_ijk"]
    column = int(np.flatnonzero((ijk == marker).all(1))[0])
    planted_all = truth["betas"][:, truth["mask"]]  # (n_trials, n_voxels) in argwhere order
    r = _voxel_correlations(
        np.repeat(trials.data[:, [column]], planted_all.shape[1], 1), planted_all
    )
    assert int(np.argmax(r)) == column
    assert r[column] > 0.9


def test_stimulus_ids_runs_repeats_and_splits(loaded, truth, sim):
    trials = loaded["lss"]
    # Trials come in run order, by onset, as the simulator planted them.
    np.testing.assert_array_equal(trials.stimulus_id, truth["stimulus_id"])
    assert trials.stimulus_id.dtype.kind == "i"
    np.testing.assert_array_equal(trials.session, truth["run"])
    np.testing.assert_array_equal(trials.subject, ["sub-01"] * 40)
    # Every stimulus is shown once per run: repeat 0 in run 1, repeat 1 in run 2.
    np.testing.assert_array_equal(trials.repeat, truth["run"] - 1)
    # Split from the events' split column (stimuli 0..3 are test in the simulation).
    np.testing.assert_array_equal(trials.split == "test", truth["stimulus_id"] < 4)
    assert [r["run"] for r in trials.info["runs"]] == ["1", "2"]
    assert trials.info["runs"][0]["tr"] == 1.0
    assert trials.info["mask_source"].endswith("desc-brain_mask.nii.gz")


def test_test_stimuli_argument_and_zscoring(sim, truth):
    trials = read_bids_fmri(
        sim["root"],
        "sub-01",
        "images",
        method="lsa",
        test_stimuli=[5, 7],
        zscore_runs=True,
        progress=False,
    )
    np.testing.assert_array_equal(trials.split == "test", np.isin(truth["stimulus_id"], [5, 7]))
    for run in (1, 2):
        block = trials.data[trials.session == run]
        np.testing.assert_allclose(block.mean(0), 0.0, atol=1e-4)
        np.testing.assert_allclose(block.std(0), 1.0, atol=1e-4)
    assert trials.info["units"] == "z-score per run"


def test_mask_argument_and_computed_mask(tmp_path, sim, truth):
    # An explicit smaller mask (as an image) selects exactly its voxels.
    sub = truth["mask"].copy()
    sub[:, :, 0] = False
    img = nib.Nifti1Image(sub.astype(np.uint8), nib.load(sim["01"]["mask"]).affine)
    trials = read_bids_fmri(sim["root"], "01", "images", mask=img, method="lsa")
    np.testing.assert_array_equal(trials.info["voxel_ijk"], np.argwhere(sub))
    # Without a mask file, one is computed from the EPI: inside the planted brain, not empty.
    big = simulate_bids_fmri(tmp_path / "big", n_runs=1, n_trials_per_run=6, grid=(12, 12, 8))
    big["01"]["mask"].unlink()
    trials = read_bids_fmri(big["root"], "01", "images", method="lsa")
    assert trials.info["mask_source"].startswith("computed")
    brain = np.load(big["01"]["truth"])["mask"]
    x, y, z = trials.info["voxel_ijk"].T
    assert len(x) > 50 and brain[x, y, z].all()


def test_lss_in_parallel_matches_serial(tmp_path):
    sim = simulate_bids_fmri(tmp_path / "ds", n_runs=1, n_trials_per_run=6, grid=(4, 4, 3))
    serial = read_bids_fmri(sim["root"], "01", "images", progress=False)
    # Threads keep the test fast (no worker processes to start); the code path, including the
    # order in which results come back, is the same as with the default process backend.
    with joblib.parallel_config(backend="threading"):
        parallel = read_bids_fmri(sim["root"], "01", "images", n_jobs=2, progress=False)
    np.testing.assert_allclose(parallel.data, serial.data, rtol=1e-5, atol=1e-6)


def test_simulation_is_deterministic(tmp_path):
    a = simulate_bids_fmri(tmp_path / "a", n_runs=1, n_trials_per_run=5, grid=(4, 4, 3), seed=3)
    b = simulate_bids_fmri(tmp_path / "b", n_runs=1, n_trials_per_run=5, grid=(4, 4, 3), seed=3)
    for key in ("bold", "events"):
        assert a["01"][key][0].read_bytes() == b["01"][key][0].read_bytes()
    img = nib.load(a["01"]["bold"][0])
    assert img.ndim == 4 and img.get_data_dtype() == np.float32
    assert img.header.get_zooms()[3] == 1.0


# ---------------------------------------------------------------- bad inputs: one clear error


@pytest.fixture()
def copy(sim, tmp_path) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(sim["root"], root)
    return root


def _func(root: Path, name: str) -> Path:
    return root / "sub-01" / "func" / f"sub-01_task-images_run-1_{name}"


def test_missing_events_file(copy):
    path = _func(copy, "events.tsv")
    path.unlink()
    with pytest.raises(InvalidInputError, match="events file") as err:
        read_bids_fmri(copy, "01", "images")
    assert str(path) in str(err.value)


def test_events_without_required_columns(copy):
    path = _func(copy, "events.tsv")
    path.write_text("onset\tduration\tresponse\n10.0\t1.0\t1\n")
    with pytest.raises(InvalidInputError, match="expected 'onset', 'duration' and") as err:
        read_bids_fmri(copy, "01", "images")
    assert str(path) in str(err.value) and "stimulus_id" in str(err.value)


def test_events_with_missing_onset(copy):
    path = _func(copy, "events.tsv")
    path.write_text("onset\tduration\ttrial_type\nn/a\t1.0\timage\n")
    with pytest.raises(InvalidInputError, match="'onset'") as err:
        read_bids_fmri(copy, "01", "images")
    assert str(path) in str(err.value)


def test_bold_not_4d(copy):
    path = _func(copy, "bold.nii.gz")
    img = nib.load(path)
    nib.save(nib.Nifti1Image(img.get_fdata()[..., 0].astype(np.float32), img.affine), path)
    with pytest.raises(InvalidInputError, match="expected a 4D BOLD series") as err:
        read_bids_fmri(copy, "01", "images")
    assert str(path) in str(err.value)


def test_mask_shape_mismatch(copy, tmp_path):
    mask = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((6, 7, 4), np.uint8), np.eye(4)), mask)
    with pytest.raises(InvalidInputError, match=r"shape \(6, 7, 4\)") as err:
        read_bids_fmri(copy, "01", "images", mask=mask)
    assert str(mask) in str(err.value) and str(_func(copy, "bold.nii.gz")) in str(err.value)


def test_nan_voxels_inside_mask(copy, truth):
    path = _func(copy, "bold.nii.gz")
    img = nib.load(path)
    data = img.get_fdata().astype(np.float32)
    x, y, z = truth["marker_ijk"]
    data[x, y, z, 3] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine, img.header), path)
    with pytest.raises(InvalidInputError, match="NaN") as err:
        read_bids_fmri(copy, "01", "images")
    assert str(path) in str(err.value) and f"[{x}, {y}, {z}]" in str(err.value)


def test_unknown_task_and_method(copy):
    with pytest.raises(InvalidInputError, match=r"no BOLD runs for task 'rest'.*'images'"):
        read_bids_fmri(copy, "01", "rest")
    with pytest.raises(InvalidInputError, match="method='glmsingle'"):
        read_bids_fmri(copy, "01", "images", method="glmsingle")
    with pytest.raises(InvalidInputError, match="sub-02"):
        read_bids_fmri(copy, "02", "images")


def test_non_trial_events_are_nuisance_not_trials(copy, truth):
    path = _func(copy, "events.tsv")
    lines = path.read_text().splitlines()
    lines += ["3.000\t0.5\tfixation\tn/a\tn/a", "40.000\t0.5\tfixation\tn/a\tn/a"]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InvalidInputError, match="missing \\(n/a\\) 'stimulus_id'") as err:
        read_bids_fmri(copy, "01", "images", method="lsa")
    assert str(path) in str(err.value)
    trials = read_bids_fmri(copy, "01", "images", method="lsa", exclude_trial_types=["fixation"])
    np.testing.assert_array_equal(trials.stimulus_id, truth["stimulus_id"])
    assert _high_snr_correlation(trials, truth) > 0.8
