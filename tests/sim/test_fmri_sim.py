"""The simulated NSD world: files in NSD's exact formats, read back with h5py/nibabel/scipy
directly (not through neurodecode's readers), and the planted truth really in the data."""

from __future__ import annotations

import csv
import dataclasses
import filecmp
import json

import h5py
import nibabel as nib
import numpy as np
import pytest
import scipy.io

from neurodecode.demo.ladder import oracle_retrieval
from neurodecode.sim.fmri import FMRISimConfig, simulate_fmri
from neurodecode.validation import InvalidInputError

from ..conftest import REPO

BETAS = "nsddata_betas/ppdata/{s}/func1pt8mm/betas_fithrf_GLMdenoise_RR"
ROI = "nsddata/ppdata/{s}/func1pt8mm/roi"


def test_layout_names_dtypes_and_shapes(tiny_nsd):
    config = FMRISimConfig.from_yaml(REPO / "datasets/sim/tiny.yaml")
    for s in ("subj01", "subj02"):
        roi = nib.load(tiny_nsd / ROI.format(s=s) / "nsdgeneral.nii.gz")
        x, y, z = roi.shape
        files = sorted((tiny_nsd / BETAS.format(s=s)).glob("betas_session*.hdf5"))
        assert [f.name for f in files] == [f"betas_session{i:02d}.hdf5" for i in range(1, 5)]
        n_trials = 0
        for f in files:
            with h5py.File(f, "r") as h:
                assert h["betas"].dtype == np.int16
                assert h["betas"].shape[1:] == (z, y, x)  # (trials, Z, Y, X)
                assert h["betas"].shape[0] <= config.trials_per_session
                n_trials += h["betas"].shape[0]
        assert n_trials == (config.n_shared + config.n_train_per_subject) * config.n_repeats
        for name in ("prf-visualrois", "floc-faces", "floc-bodies", "floc-places", "floc-words"):
            vol = np.asarray(nib.load(tiny_nsd / ROI.format(s=s) / f"{name}.nii.gz").dataobj)
            assert vol.shape == (x, y, z)
            assert set(np.unique(vol)) <= set(range(-1, 8))
            ctab = tiny_nsd / f"nsddata/freesurfer/{s}/label/{name}.mgz.ctab"
            assert ctab.read_text().splitlines()[0] == "0 Unknown"
    with h5py.File(tiny_nsd / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5", "r") as h:
        assert h["imgBrick"].dtype == np.uint8
        assert h["imgBrick"].shape == (config.n_images, 32, 32, 3)
    with open(tiny_nsd / "nsddata_stimuli/stimuli/nsd/nsd_captions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == config.n_images and rows[0]["caption"]


def test_subjects_differ_in_voxel_count_and_placement(tiny_nsd):
    masks = [
        np.asarray(nib.load(tiny_nsd / ROI.format(s=s) / "nsdgeneral.nii.gz").dataobj)
        for s in ("subj01", "subj02")
    ]
    assert (masks[0] == 1).sum() != (masks[1] == 1).sum() or masks[0].shape != masks[1].shape


def test_expdesign_is_one_based_like_nsd(tiny_nsd):
    mat = scipy.io.loadmat(tiny_nsd / "nsddata/experiments/nsd/nsd_expdesign.mat")
    master, subjectim, shared = (
        mat[k].astype(int) for k in ("masterordering", "subjectim", "sharedix")
    )
    assert master.shape[0] == 1 and shared.shape[0] == 1
    assert master.min() == 1 and master.max() == subjectim.shape[1]
    assert subjectim.min() >= 1 and shared.min() >= 1
    # the first n_shared columns of every subject are the shared images (NSD's convention)
    n_shared = shared.shape[1]
    for row in subjectim:
        assert np.array_equal(np.sort(row[:n_shared]), np.sort(shared.ravel()))
    # every image column is shown n_repeats times
    assert np.all(np.bincount(master.ravel())[1:] == 3)


def test_voxel_at_known_xyz_appears_at_trial_z_y_x(tiny_nsd):
    """The strongest voxel's written betas track its planted responses at [t, z, y, x] only."""
    with h5py.File(tiny_nsd / "ground_truth.h5", "r") as gt:
        g = gt["subj01"]
        ijk = g["voxel_ijk"][:]
        asymmetric = ijk[:, 0] != ijk[:, 2]  # so that [z, y, x] and [x, y, z] differ
        best = int(np.argmax(np.where(asymmetric, g["ncsnr"][:], -1)))
        x, y, z = ijk[best]
        row_of = {int(i): k for k, i in enumerate(g["stimulus_ids"][:])}
        planted = g["responses"][:, best]
    mat = scipy.io.loadmat(tiny_nsd / "nsddata/experiments/nsd/nsd_expdesign.mat")
    master = mat["masterordering"].ravel().astype(int) - 1
    ids = mat["subjectim"].astype(int)[0, master[:150]] - 1
    with h5py.File(tiny_nsd / BETAS.format(s="subj01") / "betas_session01.hdf5", "r") as h:
        betas = h["betas"][:]
    expected = planted[[row_of[i] for i in ids]]
    right = np.corrcoef(betas[:, z, y, x] / 300.0, expected)[0, 1]
    assert right > 0.5
    if x < betas.shape[1] and z < betas.shape[3]:  # the same index read in the wrong axis order
        wrong = betas[:, x, y, z].astype(float)
        assert wrong.std() == 0 or abs(np.corrcoef(wrong, expected)[0, 1]) < right - 0.3


def test_category_rois_prefer_their_category_in_written_betas(tiny_nsd):
    """Measured from the betas files (z-scored per session), not from the generator."""
    with open(tiny_nsd / "nsddata_stimuli/stimuli/nsd/nsd_captions.csv") as fh:
        category = {int(r["nsdId"]): r["category"] for r in csv.DictReader(fh)}
    mat = scipy.io.loadmat(tiny_nsd / "nsddata/experiments/nsd/nsd_expdesign.mat")
    master = mat["masterordering"].ravel().astype(int) - 1
    subjectim = mat["subjectim"].astype(int) - 1
    prefer = {
        "floc-faces": "face",
        "floc-bodies": "body",
        "floc-places": "place",
        "floc-words": "word",
    }
    for s_index, s in enumerate(("subj01", "subj02")):
        files = sorted((tiny_nsd / BETAS.format(s=s)).glob("betas_session*.hdf5"))
        data, cats = [], []
        t0 = 0
        for f in files:
            with h5py.File(f, "r") as h:
                b = h["betas"][:].astype(float) / 300.0
            b = (b - b.mean(0)) / (b.std(0) + 1e-9)
            ids = subjectim[s_index, master[t0 : t0 + len(b)]]
            data.append(b)
            cats += [category[i] for i in ids]
            t0 += len(b)
        data, cats = np.concatenate(data), np.array(cats)
        for name, cat in prefer.items():
            vol = np.asarray(nib.load(tiny_nsd / ROI.format(s=s) / f"{name}.nii.gz").dataobj)
            xs, ys, zs = np.nonzero(vol > 0)
            if len(xs) < 5:
                continue
            roi_mean = data[:, zs, ys, xs].mean(axis=1)
            own = roi_mean[cats == cat].mean()
            others = [roi_mean[cats == c].mean() for c in set(cats) - {cat}]
            assert own > max(others), (s, name, own, others)


def test_ground_truth_noise_ceiling_uses_nsd_formula(tiny_nsd):
    with h5py.File(tiny_nsd / "ground_truth.h5", "r") as gt:
        g = gt["subj01"]
        ncsnr = g["amplitude"][:] / g["noise_sd"][:]
        np.testing.assert_allclose(g["ncsnr"][:], ncsnr)
        np.testing.assert_allclose(g["noise_ceiling"][:], 100 * ncsnr**2 / (ncsnr**2 + 1 / 3))
        assert json.loads(gt.attrs["config"])["n_repeats"] == 3


def test_oracle_far_above_chance_and_falls_with_noise(tmp_path):
    config = FMRISimConfig.from_yaml(REPO / "datasets/sim/tiny.yaml")
    tops = []
    for scale in (1.0, 6.0):
        root = simulate_fmri(
            dataclasses.replace(config, noise_scale=scale, n_subjects=1),
            tmp_path / f"noise{scale}",
            progress=False,
        )
        tops.append(oracle_retrieval(root, "subj01", n_way=60)["brain_to_image_top1"])
    assert tops[0] > 0.5 > 10 / 60
    assert tops[1] < tops[0]


def test_same_seed_gives_identical_bytes(tmp_path, monkeypatch):
    import neurodecode.sim.fmri as fmri

    config = dataclasses.replace(
        FMRISimConfig.from_yaml(REPO / "datasets/sim/tiny.yaml"),
        n_subjects=1,
        n_train_per_subject=30,
        n_shared=12,
    )
    a = simulate_fmri(config, tmp_path / "a", progress=False)
    monkeypatch.setattr(fmri, "_TRIALS_PER_BLOCK", 5)  # streamed in other blocks: same bytes
    b = simulate_fmri(config, tmp_path / "b", progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) > 10
    for rel in files:
        assert filecmp.cmp(a / rel, b / rel, shallow=False), rel


def test_config_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("n_subjcts: 2\n")
    with pytest.raises(InvalidInputError, match=r"bad\.yaml.*n_subjcts"):
        FMRISimConfig.from_yaml(bad)
    with pytest.raises(InvalidInputError, match="already exists"):
        simulate_fmri(FMRISimConfig(), tmp_path)


def test_options_added_later_are_not_recorded_while_unset():
    import hashlib

    config = FMRISimConfig.from_yaml(REPO / "datasets/sim/default.yaml")
    legacy = dataclasses.asdict(config)
    del legacy["cortex_thickness"]  # the settings as recorded before the option existed
    assert config.settings() == legacy
    expected = hashlib.sha256(json.dumps(legacy, sort_keys=True).encode()).hexdigest()[:16]
    assert config.digest() == expected
    shell = dataclasses.replace(config, cortex_thickness=1.5)
    assert shell.settings()["cortex_thickness"] == 1.5 and shell.digest() != config.digest()


def test_cortex_shell_holds_nsdgeneral_and_every_category_roi():
    from neurodecode.sim.fmri import _anatomy

    config = FMRISimConfig.from_yaml(REPO / "datasets/sim/nsd-scale.yaml")
    shell = _anatomy(config, 0, np.random.default_rng([config.seed, 100]))  # as simulate_fmri
    assert 14_000 < shell.nsdgeneral.sum() < 17_500  # NSD subj01: 15,724 in an 81x104x83 volume
    x, y, z = np.nonzero(shell.nsdgeneral)
    r = np.sqrt(sum(((c - shell.centre[i]) / shell.radii[i]) ** 2 for i, c in enumerate((x, y, z))))
    assert ((1 - r) * shell.radii.mean()).max() < config.cortex_thickness
    for name, mask in shell.labels.items():
        assert mask.sum() > 0, name
        assert not (mask & ~shell.nsdgeneral).any(), name


def test_simulate_set_overrides(tmp_path):
    from neurodecode.cli.simulate import apply_overrides

    config = FMRISimConfig()
    apply_overrides(config, ["n_shared=25", "grid=[20, 22, 18]", "cortex_thickness=1.65"])
    assert (config.n_shared, config.grid, config.cortex_thickness) == (25, [20, 22, 18], 1.65)
    with pytest.raises(InvalidInputError, match="no setting 'n_sharde'"):
        apply_overrides(config, ["n_sharde=3"])
    with pytest.raises(InvalidInputError, match="KEY=VALUE"):
        apply_overrides(config, ["n_shared"])
