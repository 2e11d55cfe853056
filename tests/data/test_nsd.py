"""NSD reader on the simulated NSD tree: exact voxels, axis order, ids, splits, errors."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from neurodecode.data.nsd import read_captions, read_design, read_nsd_betas, read_stimuli
from neurodecode.data.rois import read_label_table, read_roi_volume
from neurodecode.validation import InvalidInputError

BETAS = "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR"


def test_returns_exactly_the_written_voxels(tiny_nsd):
    trials = read_nsd_betas(tiny_nsd, "subj01", sessions=[1], zscore=False, progress=False)
    with h5py.File(tiny_nsd / "ground_truth.h5", "r") as gt:
        ijk = gt["subj01/voxel_ijk"][:]
    assert np.array_equal(trials.info["voxel_ijk"], ijk)
    with h5py.File(tiny_nsd / BETAS / "betas_session01.hdf5", "r") as f:
        raw = f["betas"][:]
    expected = raw[:, ijk[:, 2], ijk[:, 1], ijk[:, 0]] / 300.0  # (trials, Z, Y, X), psc x 300
    np.testing.assert_allclose(trials.data, expected, rtol=1e-6)


def test_trials_map_to_the_planted_images(tiny_nsd):
    trials = read_nsd_betas(tiny_nsd, "subj01", zscore=False, progress=False)
    with h5py.File(tiny_nsd / "ground_truth.h5", "r") as gt:
        g = gt["subj01"]
        row = {int(i): k for k, i in enumerate(g["stimulus_ids"][:])}
        planted = g["responses"][:][[row[int(i)] for i in trials.stimulus_id]]
        offset = g["drift_offset"][:][trials.session - 1]
        gain = g["drift_gain"][:][trials.session - 1]
        noise_sd = g["noise_sd"][:]
    residual = (trials.data - offset) / gain[:, None] - planted
    # what is left is exactly the planted noise: unit SD in units of each voxel's noise SD
    np.testing.assert_allclose((residual / noise_sd).std(), 1.0, atol=0.05)


def test_splits_repeats_and_zscoring(tiny_nsd):
    trials = read_nsd_betas(tiny_nsd, "subj01", progress=False)
    design = read_design(tiny_nsd)
    test = trials.split == "test"
    assert set(trials.stimulus_id[test]) == set(design.sharedix)
    assert not set(trials.stimulus_id[~test]) & set(design.sharedix)
    assert np.bincount(trials.repeat).tolist() == [180, 180, 180]
    for s in np.unique(trials.session):
        block = trials.data[trials.session == s]
        np.testing.assert_allclose(block.mean(0), 0, atol=1e-4)
        np.testing.assert_allclose(block.std(0), 1, atol=1e-3)
    averaged = trials.select(test).average_repeats()
    assert len(averaged) == 60 and set(averaged.repeat) == {3}


def test_roi_labels_come_from_the_ctab(tiny_nsd):
    volume = read_roi_volume(
        tiny_nsd / "nsddata/ppdata/subj01/func1pt8mm/roi/floc-faces.nii.gz", "subj01"
    )
    assert volume.table[2] == "FFA-1"
    ffa = read_nsd_betas(
        tiny_nsd, "subj01", sessions=[1], roi="floc-faces", roi_labels="FFA-1", progress=False
    )
    with h5py.File(tiny_nsd / "ground_truth.h5", "r") as gt:
        planted = (gt["subj01/roi"][:].astype(str) == "FFA-1").sum()
    assert ffa.data.shape[1] == planted > 0
    with pytest.raises(InvalidInputError, match="FFA-9"):
        volume.mask("FFA-9")


def test_stimuli_and_captions(tiny_nsd):
    images = read_stimuli(tiny_nsd, [5, 2, 5])
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[0], images[2])
    assert len(read_captions(tiny_nsd)) == 60 + 2 * 120


def test_missing_session_is_named(tiny_nsd, tmp_path):
    root = tmp_path / "nsd"
    shutil.copytree(tiny_nsd, root)
    (root / BETAS / "betas_session02.hdf5").unlink()
    with pytest.raises(InvalidInputError, match=r"sessions \[2\].*betas_sessionNN"):
        read_nsd_betas(root, "subj01", sessions=[1, 2], progress=False)
    present = read_nsd_betas(root, "subj01", progress=False)  # reads 1, 3, 4; logs the gap
    assert sorted(set(present.session)) == [1, 3, 4]


def test_bad_files_give_one_clear_error(tiny_nsd, tmp_path):
    root = tmp_path / "nsd"
    shutil.copytree(tiny_nsd, root)
    path = root / BETAS / "betas_session01.hdf5"
    with h5py.File(path, "r") as f:
        data = f["betas"][:]
    with h5py.File(path, "w") as f:  # wrong axis order: (trials, X, Y, Z)
        f.create_dataset("betas", data=np.ascontiguousarray(data.transpose(0, 3, 2, 1)))
    with pytest.raises(InvalidInputError, match=r"betas_session01\.hdf5.*\(trials, Z, Y, X\)"):
        read_nsd_betas(root, "subj01", sessions=[1], progress=False)
    path.write_bytes(b"not an hdf5 file")
    with pytest.raises(InvalidInputError, match=r"cannot read betas file .*betas_session01"):
        read_nsd_betas(root, "subj01", sessions=[1], progress=False)
    ctab = root / "nsddata/freesurfer/subj01/label/floc-faces.mgz.ctab"
    ctab.write_text("0 Unknown\nFFA\n")
    with pytest.raises(InvalidInputError, match="index name"):
        read_label_table(ctab)
    with pytest.raises(InvalidInputError, match="subjNN"):
        read_nsd_betas(root, "S1")


def test_nifti_betas_read_like_hdf5(tiny_nsd, tmp_path):
    """NSD also ships betas as NIfTI (X, Y, Z, trials); both give the same masked trials."""
    import nibabel as nib

    root = tmp_path / "nsd"
    shutil.copytree(tiny_nsd, root)
    h5 = root / BETAS / "betas_session01.hdf5"
    with h5py.File(h5, "r") as f:
        data = f["betas"][:]  # (trials, Z, Y, X)
    nib.save(
        nib.Nifti1Image(data.transpose(3, 2, 1, 0), np.eye(4)),
        root / BETAS / "betas_session01.nii.gz",
    )
    from_h5 = read_nsd_betas(root, "subj01", sessions=[1], zscore=False, progress=False)
    h5.unlink()
    from_nifti = read_nsd_betas(root, "subj01", sessions=[1], zscore=False, progress=False)
    np.testing.assert_array_equal(from_nifti.data, from_h5.data)
    np.testing.assert_array_equal(from_nifti.stimulus_id, from_h5.stimulus_id)


# --- NSD as people have it: tables in other places, binary masks, partial downloads, layouts

ROI_DIR = "nsddata/ppdata/subj01/func1pt8mm/roi"
SUBJECT_LABELS = "nsddata/freesurfer/subj01/label"
FSAVERAGE_LABELS = "nsddata/freesurfer/fsaverage/label"


def _copy(tiny_nsd, tmp_path):
    root = tmp_path / "nsd"
    shutil.copytree(tiny_nsd, root)
    return root


def test_binary_mask_needs_no_label_table(tiny_nsd, tmp_path):
    root = _copy(tiny_nsd, tmp_path)
    with_table = read_nsd_betas(root, "subj01", sessions=[1], zscore=False, progress=False)
    for folder in (ROI_DIR, SUBJECT_LABELS):
        for path in (root / folder).glob("nsdgeneral*ctab"):
            path.unlink()
    volume = read_roi_volume(root / ROI_DIR / "nsdgeneral.nii.gz", "subj01")
    assert volume.table == {1: "nsdgeneral"} and volume.table_path is None
    without = read_nsd_betas(root, "subj01", sessions=[1], zscore=False, progress=False)
    np.testing.assert_array_equal(without.data, with_table.data)
    np.testing.assert_array_equal(without.info["voxel_ijk"], with_table.info["voxel_ijk"])
    # a multi-label ROI still needs its table: names cannot be guessed
    (root / SUBJECT_LABELS / "floc-faces.mgz.ctab").unlink()
    with pytest.raises(InvalidInputError, match=r"floc-faces\.nii\.gz.*labels \[1, 2.*fsaverage"):
        read_roi_volume(root / ROI_DIR / "floc-faces.nii.gz", "subj01")


def test_label_table_found_in_fsaverage_label_folder(tiny_nsd, tmp_path):
    """NSD ships the tables in nsddata/freesurfer/fsaverage/label/ (where nsd_access reads them)."""
    root = _copy(tiny_nsd, tmp_path)
    (root / FSAVERAGE_LABELS).mkdir(parents=True)
    shutil.move(root / SUBJECT_LABELS / "floc-faces.mgz.ctab", root / FSAVERAGE_LABELS)
    volume = read_roi_volume(root / ROI_DIR / "floc-faces.nii.gz")  # subject from the path
    assert volume.table_path == root / FSAVERAGE_LABELS / "floc-faces.mgz.ctab"
    assert volume.table[2] == "FFA-1"
    ffa = read_nsd_betas(
        root, "subj01", sessions=[1], roi="floc-faces", roi_labels="FFA-1", progress=False
    )
    assert ffa.data.shape[1] == int((volume.labels == 2).sum()) > 0
    # beside the ROI file wins over the folders
    (root / ROI_DIR / "floc-faces.ctab").write_text("0 Unknown\n1 a\n2 b\n3 c\n4 d\n5 e\n")
    assert read_roi_volume(root / ROI_DIR / "floc-faces.nii.gz").table[2] == "b"


def test_partial_download_is_counted_logged_and_restricted(tiny_nsd, tmp_path, caplog):
    root = _copy(tiny_nsd, tmp_path)
    full = read_nsd_betas(root, "subj01", zscore=False, progress=False)
    (root / BETAS / "betas_session02.hdf5").unlink()
    with caplog.at_level("INFO", logger="neurodecode.data.nsd"):
        part = read_nsd_betas(root, "subj01", zscore=False, progress=False)
    lines = [r for r in caplog.records if "sessions found" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelname == "WARNING"
    assert "3 of 4 sessions found" in lines[0].getMessage()
    assert "found: 1, 3-4; missing: 2" in lines[0].getMessage()
    assert part.info["sessions_missing"] == [2] and part.info["sessions_found"] == [1, 3, 4]
    keep = full.session != 2
    np.testing.assert_array_equal(part.info["trial"], full.info["trial"][keep])
    np.testing.assert_array_equal(part.stimulus_id, full.stimulus_id[keep])
    np.testing.assert_array_equal(part.data, full.data[keep])
    # repeats keep their place in the design: a trial's repeat does not shift with a gap
    np.testing.assert_array_equal(part.repeat, full.repeat[keep])
    caplog.clear()
    with caplog.at_level("INFO", logger="neurodecode.data.nsd"):
        read_nsd_betas(tiny_nsd, "subj01", sessions=[1], progress=False)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_nothing_usable_is_one_clear_error(tiny_nsd, tmp_path):
    root = _copy(tiny_nsd, tmp_path)
    folder = root / BETAS
    for path in folder.iterdir():
        path.unlink()
    (folder / "betas_session01.hdf5.part").write_bytes(b"")  # an interrupted download
    with pytest.raises(
        InvalidInputError, match=r"no NSD betas for subj01.*betas_session01\.hdf5\.part"
    ):
        read_nsd_betas(root, "subj01", progress=False)
    shutil.rmtree(folder)
    with pytest.raises(InvalidInputError, match=r"betas folder of subj01 not found"):
        read_nsd_betas(root, "subj01", progress=False)
    (root / ROI_DIR / "nsdgeneral.nii.gz").unlink()
    with pytest.raises(InvalidInputError, match=r"ROI volume not found.*nsdgeneral\.nii\.gz"):
        read_nsd_betas(root, "subj01", progress=False)


@pytest.mark.parametrize(
    "layout",
    ["contiguous", "userblock", "voxel_chunks", "volume_chunks", "odd_chunks", "gzip", "unwritten"],
)
def test_every_hdf5_layout_reads_the_same_voxels(tiny_nsd, tmp_path, layout):
    """NSD's own chunking (one chunk per voxel), h5py's default (contiguous), the simulator's
    (one chunk per trial) and the rest all give exactly the masked betas / 300."""
    root = _copy(tiny_nsd, tmp_path)
    path = root / BETAS / "betas_session01.hdf5"
    with h5py.File(path, "r") as f:
        data = f["betas"][:]
    n, z, y, x = data.shape
    options = {
        "contiguous": {},
        "userblock": {},
        "voxel_chunks": {"chunks": (n, 1, 1, 1)},
        "volume_chunks": {"chunks": (1, z, y, x)},
        "odd_chunks": {"chunks": (7, z, 3, x)},
        "gzip": {"chunks": (n, 1, 1, 1), "compression": "gzip"},
        "unwritten": {"chunks": (n, 1, 1, 1), "fillvalue": 0},
    }[layout]
    path.unlink()
    with h5py.File(path, "w", userblock_size=1024 if layout == "userblock" else 0) as f:
        dset = f.create_dataset("betas", shape=data.shape, dtype=data.dtype, **options)
        if layout == "unwritten":  # only the first half of the volume's voxels ever written
            dset[:, : z // 2] = data[:, : z // 2]
            data[:, z // 2 :] = 0
        else:
            dset[...] = data
    trials = read_nsd_betas(root, "subj01", sessions=[1], zscore=False, progress=False)
    ijk = trials.info["voxel_ijk"]
    expected = data[:, ijk[:, 2], ijk[:, 1], ijk[:, 0]] / np.float32(300)
    np.testing.assert_array_equal(trials.data, expected.astype(np.float32))


def test_truncated_contiguous_file_is_named(tiny_nsd, tmp_path):
    root = _copy(tiny_nsd, tmp_path)
    path = root / BETAS / "betas_session01.hdf5"
    with h5py.File(path, "r") as f:
        data = f["betas"][:]
    path.unlink()
    with h5py.File(path, "w") as f:
        f.create_dataset("betas", data=data)  # contiguous, data last in the file
    path.write_bytes(path.read_bytes()[: path.stat().st_size - 4096])
    with pytest.raises(InvalidInputError, match=r"betas_session01\.hdf5.*truncated|cannot read"):
        read_nsd_betas(root, "subj01", sessions=[1], progress=False)
