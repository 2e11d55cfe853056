"""MindEye's releases on small files written at their exact schemas (keys, dtypes, shapes, tar
member names), as MindEyeV2's src/dataset_creation.ipynb and fMRI-reconstruction-NSD's loaders
define them; and every bad input giving one clear error."""

from __future__ import annotations

import io
import logging
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from neurodecode.data.mindeye import MINDEYE2_BEHAV_COLUMNS, read_mindeye1, read_mindeye2
from neurodecode.data.nsd import count_roi_voxels
from neurodecode.data.stimuli import open_stimuli
from neurodecode.validation import InvalidInputError

V = 40  # voxels of the small releases (NSD subj01: 15,724)
COL = {name: k for k, name in enumerate(MINDEYE2_BEHAV_COLUMNS)}


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def write_tar(path: Path, samples: list[dict[str, bytes]]) -> None:
    """A webdataset shard: members ``KEY.ext`` in sample order (as wds.TarWriter writes them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            key = sample["__key__"]
            for ext, payload in sample.items():
                if ext == "__key__":
                    continue
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))


# ----------------------------------------------------------------------------- MindEye2


def write_mindeye2(root: Path, n_voxels: int = V, seed: int = 0, n_images_file: int = 64) -> dict:
    """Two sessions of 30 trials each (at their real global-trial rows of 750-trial sessions):
    6 shared images x 3 repeats, 14 other images x 3; shards train/0.tar, train/1.tar,
    new_test/0.tar (all shared trials) and test/0.tar (the shared trials of 5 of the 6 images)."""
    rng = np.random.default_rng(seed)
    ids73k = rng.choice(n_images_file, 20, replace=False)
    shared = ids73k[:6]
    shown = rng.permutation(np.repeat(ids73k, 3))  # 60 trials
    session = np.repeat([1, 2], 30)
    in_session = np.tile(np.arange(30), 2)
    global_trial = (session - 1) * 750 + in_session
    behav = np.full((60, 17), -1.0)
    behav[:, COL["cocoidx"]] = shown
    behav[:, COL["subject"]] = 1
    behav[:, COL["session"]] = session
    behav[:, COL["run"]] = in_session // 10 + 1
    behav[:, COL["trial"]] = in_session % 10 + 1
    behav[:, COL["global_trial"]] = global_trial
    behav[:, COL["time"]] = in_session * 4
    behav[:, COL["shared1000"]] = np.isin(shown, shared)
    betas = rng.standard_normal((1500, n_voxels)).astype(np.float32)
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / "betas_all_subj01_fp32_renorm.hdf5", "w") as f:
        f.create_dataset("betas", data=betas)
    images = rng.random((n_images_file, 3, 224, 224)).astype(np.float16)
    with h5py.File(root / "coco_images_224_float16.hdf5", "w") as f:
        f.create_dataset("images", data=images)

    def sample(t: int, count: int) -> dict:
        olds = np.full((3, 17), -1.0)
        others = [u for u in np.nonzero(shown == shown[t])[0] if u != t]
        olds[: len(others)] = behav[others]
        return {
            "__key__": f"sample{count:09d}",
            "behav.npy": _npy(behav[t : t + 1]),
            "past_behav.npy": _npy(np.full((15, 17), -1.0)),
            "future_behav.npy": _npy(np.full((15, 17), -1.0)),
            "olds_behav.npy": _npy(olds),
        }

    wds = root / "wds/subj01"
    is_shared = behav[:, COL["shared1000"]] == 1
    train_count = 0
    for s in (1, 2):
        rows = np.nonzero((session == s) & ~is_shared)[0]
        write_tar(
            wds / f"train/{s - 1}.tar", [sample(t, train_count + i) for i, t in enumerate(rows)]
        )
        train_count += len(rows)
    rows = np.nonzero(is_shared)[0]
    write_tar(wds / "new_test/0.tar", [sample(t, i) for i, t in enumerate(rows)])
    old = rows[np.isin(shown[rows], shared[:5])]
    write_tar(wds / "test/0.tar", [sample(t, i) for i, t in enumerate(old)])
    return {"behav": behav, "betas": betas, "images": images, "shown": shown, "shared": shared}


@pytest.fixture
def me2(tmp_path) -> tuple[Path, dict]:
    root = tmp_path / "mindeyev2"
    return root, write_mindeye2(root)


def test_mindeye2_trials_index_the_betas_and_images(me2):
    root, truth = me2
    trials = read_mindeye2(root, "subj01", n_voxels=V)
    behav = truth["behav"]
    order = {int(g): k for k, g in enumerate(behav[:, COL["global_trial"]])}
    rows = np.array([order[int(g)] for g in trials.info["trial"]])
    assert len(trials) == 60 and trials.data.dtype == np.float32
    np.testing.assert_array_equal(trials.data, truth["betas"][trials.info["trial"]])
    np.testing.assert_array_equal(trials.stimulus_id, behav[rows, COL["cocoidx"]].astype(int))
    np.testing.assert_array_equal(trials.session, behav[rows, COL["session"]].astype(int))
    assert set(trials.stimulus_id[trials.split == "test"]) == set(truth["shared"].tolist())
    assert trials.info["test_set"] == "shared 1000 images (MindEye2)"
    # repeats: presentation number in the experiment (from olds_behav), 0, 1, 2 per image
    for sid in np.unique(trials.stimulus_id):
        pick = trials.stimulus_id == sid
        by_time = np.argsort(trials.info["trial"][pick])
        assert trials.repeat[pick][by_time].tolist() == [0, 1, 2]
    test = trials.select(trials.split == "test").average_repeats()
    assert len(test) == 6 and set(test.repeat) == {3}
    # the older test shard: 5 of the 6 images
    old = read_mindeye2(root, "subj01", splits=("test",), n_voxels=V)
    assert len(np.unique(old.stimulus_id)) == 5 and set(old.split) == {"test"}
    assert old.info["test_set"] == "982 shared images (MindEye1 and earlier)"
    with pytest.raises(InvalidInputError, match="both 'test' and 'new_test'"):
        read_mindeye2(root, "subj01", splits=("new_test", "test"), n_voxels=V)


def test_mindeye2_images_through_the_stimulus_interface(me2):
    root, truth = me2
    source = open_stimuli(root)
    assert source.kind == "mindeye2" and len(source) == 64
    ids = [int(truth["shown"][3]), int(truth["shown"][0]), int(truth["shown"][3])]
    images = source.load(ids)
    assert images.shape == (3, 224, 224, 3) and images.dtype == np.uint8
    expected = np.rint(truth["images"][ids].astype(np.float32).transpose(0, 2, 3, 1) * 255)
    np.testing.assert_array_equal(images, expected.astype(np.uint8))
    with pytest.raises(InvalidInputError, match=r"'64' is not a row of images"):
        source.load([64])


def test_mindeye2_partial_download_is_logged(me2, caplog):
    root, _ = me2
    (root / "wds/subj01/train/1.tar").unlink()
    with caplog.at_level(logging.INFO, logger="neurodecode.data.mindeye"):
        trials = read_mindeye2(root, "subj01", n_voxels=V)
    line = next(r for r in caplog.records if "train shards found" in r.getMessage())
    assert line.levelname == "WARNING"
    assert "1 of 40 MindEye2 train shards" in line.getMessage()
    assert "sessions found: 1; missing: 2-40" in line.getMessage()
    assert set(trials.session[trials.split == "train"]) == {1}
    assert trials.info["sessions_missing"] == list(range(2, 41))
    with pytest.raises(InvalidInputError, match=r"sessions \[2\].*train/1\.tar"):
        read_mindeye2(root, "subj01", sessions=[2], n_voxels=V)


def _rewrite_sample(path: Path, change) -> None:
    """Rewrite a shard with ``change(samples)`` applied to its list of sample dicts."""
    samples, current = [], None
    with tarfile.open(path) as tar:
        for member in tar:
            key, _, ext = member.name.partition(".")
            if current is None or current["__key__"] != key:
                current = {"__key__": key}
                samples.append(current)
            current[ext] = tar.extractfile(member).read()
    path.unlink()
    write_tar(path, change(samples))


def _first(samples, **replace):
    samples[0] = {k: v for k, v in {**samples[0], **replace}.items() if v is not None}
    return samples


def test_mindeye2_bad_inputs_name_the_file(me2):
    root, truth = me2
    shard = root / "wds/subj01/train/0.tar"
    good = shard.read_bytes()

    def fails(pattern: str, **kwargs) -> None:
        with pytest.raises(InvalidInputError, match=pattern):
            read_mindeye2(root, "subj01", **{"n_voxels": V, **kwargs})

    shard.write_bytes(good[: len(good) // 2])  # cut inside a member
    fails(r"train/0\.tar.*truncated")
    last = max(m.offset_data + m.size for m in tarfile.open(fileobj=io.BytesIO(good)).getmembers())
    shard.write_bytes(good[: (last + 511) // 512 * 512])  # cut at a member boundary: no end blocks
    fails(r"train/0\.tar is truncated: no end-of-archive")
    shard.write_bytes(good)
    _rewrite_sample(shard, lambda s: _first(s, **{"behav.npy": None}))
    fails(r"train/0\.tar: sample 'sample000000000' lacks \['behav\.npy'\]")
    shard.write_bytes(good)
    _rewrite_sample(shard, lambda s: _first(s, **{"behav.npy": _npy(np.zeros(17, bool))}))
    fails(r"train/0\.tar: sample000000000\.behav\.npy is bool \(17,\); expected \(1, 17\)")
    shard.write_bytes(good)
    bad_row = truth["behav"][:1].copy()
    bad_row[0, COL["global_trial"]] = 5000
    _rewrite_sample(shard, lambda s: _first(s, **{"behav.npy": _npy(bad_row)}))
    fails(r"train/0\.tar: behav global_trial .*outside 0\.\.1499")
    shard.write_bytes(good)
    # wrong voxel count: the default expects subj01's nsdgeneral
    with pytest.raises(
        InvalidInputError, match=r"fp32_renorm\.hdf5 have 40 voxels; expected 15724"
    ):
        read_mindeye2(root, "subj01")
    # wrong dtype of the betas
    betas = root / "betas_all_subj01_fp32_renorm.hdf5"
    with h5py.File(betas, "w") as f:
        f.create_dataset("betas", data=(truth["betas"] * 100).astype(np.int16))
    fails(r"fp32_renorm\.hdf5 are int16 \(1500, 40\); expected \(n_trials, n_voxels\) float32")
    with h5py.File(betas, "w") as f:
        f.create_dataset("betas", data=truth["betas"])
    # ids without images: an images file with fewer rows than the ids need
    with h5py.File(root / "coco_images_224_float16.hdf5", "w") as f:
        f.create_dataset("images", data=truth["images"][:5])
    fails(r"behav image id \(column 0; rows of .*coco_images_224_float16\.hdf5\).*outside 0\.\.4")
    (root / "coco_images_224_float16.hdf5").unlink()
    assert len(read_mindeye2(root, "subj01", n_voxels=V)) == 60  # ids then checked against 73k
    # nothing there
    (root / "wds/subj01/new_test/0.tar").unlink()
    fails(r"new_test shard not found: expected .*new_test/0\.tar")
    for path in (root / "wds/subj01/train").iterdir():
        path.unlink()
    fails(r"no MindEye2 train shards for subj01: expected K\.tar", splits=("train",))


def test_mindeye2_voxel_coordinates_from_the_nsd_mask(tiny_nsd, tmp_path):
    n = count_roi_voxels(tiny_nsd, "subj01")
    root = tmp_path / "me2"
    write_mindeye2(root, n_voxels=n)
    trials = read_mindeye2(root, "subj01", n_voxels=n, nsd_root=tiny_nsd)
    assert trials.info["voxel_ijk"].shape == (n, 3)
    write_mindeye2(tmp_path / "other", n_voxels=V)
    with pytest.raises(InvalidInputError, match=r"nsdgeneral\.nii\.gz has \d+ nsdgeneral voxels"):
        read_mindeye2(tmp_path / "other", "subj01", n_voxels=V, nsd_root=tiny_nsd)


# ----------------------------------------------------------------------------- MindEye1


def _jpg(rng) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_mindeye1(root: Path, n_voxels: int = V, seed: int = 0) -> dict:
    """webdataset_avg_split with train (2 shards), val (1) and test (2) for subj01: one sample per
    image, its 3 repeats in nsdgeneral.npy (fewer real ones padded as MindEye's writers pad)."""
    rng = np.random.default_rng(seed)
    folder = root / "webdataset_avg_split"
    truth, k = {}, 0
    layout = {"train": [5, 4], "val": [3], "test": [4, 3]}
    for split, sizes in layout.items():
        for shard, size in enumerate(sizes):
            samples = []
            for _ in range(size):
                n_unique = [3, 3, 2, 1][k % 4]
                real = rng.standard_normal((n_unique, n_voxels)).astype(np.float16)
                if n_unique == 1:
                    rows = np.concatenate([real, real, real])
                elif n_unique == 2:
                    rows = np.concatenate([real, real.astype(np.float32).mean(0)[None]])
                else:
                    rows = real
                coco = 1000 + k
                jpg = _jpg(rng)
                truth[coco] = {
                    "rows": rows.astype(np.float16),
                    "n": n_unique,
                    "split": split,
                    "jpg": jpg,
                }
                samples.append(
                    {
                        "__key__": f"sample{k:09d}",
                        "jpg": jpg,
                        "nsdgeneral.npy": _npy(rows.astype(np.float16)),
                        "coco73k.npy": _npy(np.array([coco])),
                        "trial.npy": _npy(np.array([10 * k])),
                        "num_uniques.npy": _npy(np.array([n_unique])),
                    }
                )
                k += 1
            write_tar(folder / split / f"{split}_subj01_{shard}.tar", samples)
    return truth


@pytest.fixture
def me1(tmp_path) -> tuple[Path, dict]:
    root = tmp_path / "mindeye1"
    return root, write_mindeye1(root)


def test_mindeye1_repeats_become_trials_and_average_like_mindeye(me1, caplog):
    root, truth = me1
    with caplog.at_level(logging.INFO, logger="neurodecode.data.mindeye"):
        trials = read_mindeye1(root, "subj01", n_voxels=V)
    n_real = sum(t["n"] for t in truth.values())
    assert len(trials) == n_real and trials.data.dtype == np.float32
    padding = 3 * len(truth) - n_real
    assert any(f"skipped {padding} padding rows" in r.getMessage() for r in caplog.records)
    assert set(trials.session) == {0}
    averaged = trials.average_repeats()
    for row in range(len(averaged)):
        t = truth[int(averaged.stimulus_id[row])]
        mindeye = t["rows"].astype(np.float32).mean(0)  # torch.mean(voxel, axis=1)
        np.testing.assert_allclose(averaged.data[row], mindeye, rtol=1e-3, atol=1e-3)
        assert averaged.repeat[row] == t["n"]
        assert averaged.split[row] == ("test" if t["split"] == "test" else "train")
    assert set(trials.info["mindeye_split"]) == {"train", "val", "test"}
    test_only = read_mindeye1(root / "webdataset_avg_split", "subj01", ("test",), n_voxels=V)
    assert set(test_only.split) == {"test"} and len(np.unique(test_only.stimulus_id)) == 7


def test_mindeye1_images_through_the_stimulus_interface(me1):
    root, truth = me1
    source = open_stimuli(root)
    assert source.kind == "tar" and len(source) == len(truth)
    images = source.load([1003, 1000])
    for image, coco in zip(images, [1003, 1000]):
        expected = np.asarray(Image.open(io.BytesIO(truth[coco]["jpg"])).convert("RGB"))
        np.testing.assert_array_equal(image, expected)
    with pytest.raises(InvalidInputError, match=r"1 stimulus ids have no image in the MindEye1"):
        source.load(["5"])


def test_mindeye1_bad_inputs_name_the_file(me1):
    root, _ = me1
    shard = root / "webdataset_avg_split/train/train_subj01_1.tar"
    good = shard.read_bytes()

    def fails(pattern: str, **kwargs) -> None:
        with pytest.raises(InvalidInputError, match=pattern):
            read_mindeye1(root, "subj01", **{"n_voxels": V, **kwargs})

    shard.write_bytes(good[: len(good) // 2])
    fails(r"train_subj01_1\.tar.*truncated")
    shard.write_bytes(good)
    _rewrite_sample(shard, lambda s: _first(s, jpg=None))
    fails(r"train_subj01_1\.tar: sample 'sample000000005' has no image; expected .*\.jpg")
    with pytest.raises(InvalidInputError, match=r"train_subj01_1\.tar: sample 'sample000000005'"):
        open_stimuli(root)
    shard.write_bytes(good)
    _rewrite_sample(shard, lambda s: _first(s, **{"coco73k.npy": None}))
    fails(r"lacks \['coco73k\.npy'\]")
    shard.write_bytes(good)
    bad = _npy(np.zeros((3, V), np.int16))
    _rewrite_sample(shard, lambda s: _first(s, **{"nsdgeneral.npy": bad}))
    fails(r"nsdgeneral\.npy is int16 \(3, 40\); expected \(3, 40\) float16")
    shard.write_bytes(good)
    fails(
        r"train_subj01_0\.tar: sample000000000\.nsdgeneral\.npy has 40 voxels; expected 15724",
        n_voxels=None,
    )
    (root / "webdataset_avg_split/val/val_subj01_0.tar").unlink()
    fails(r"no MindEye1 val shards for subj01: expected val_subj01_K\.tar")
    assert len(read_mindeye1(root, "subj01", ("train", "test"), n_voxels=V)) > 0
