"""THINGS-MEG reader and MEG datamodule on the tiny simulated world (and broken copies of it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import mne
import numpy as np
import pytest
from scipy.signal import resample_poly

from neurodecode.datamodules.meg import MEGDataModule
from neurodecode.data.things_meg import read_things_meg, robust_scale
from neurodecode.sim.meg import MEGSimConfig, simulate_meg
from neurodecode.validation import InvalidInputError

REPO = Path(__file__).resolve().parents[2]
EPOCHS = "derivatives/preprocessed/preprocessed_P{}-epo.fif"


@pytest.fixture(scope="module")
def tiny_meg(tmp_path_factory) -> Path:
    config = MEGSimConfig.from_yaml(REPO / "datasets/sim/meg-tiny.yaml")
    return simulate_meg(config, tmp_path_factory.mktemp("meg") / "tiny")


@pytest.fixture(scope="module")
def trials(tiny_meg):
    return read_things_meg(tiny_meg)


def _epochs(root: Path, n: int) -> mne.Epochs:
    return mne.read_epochs(root / EPOCHS.format(n), preload=True, verbose="error")


def _broken_copy(root: Path, tmp_path: Path, n: int = 2) -> tuple[Path, Path]:
    """A copy of ``root``; returns it and the path of subject ``n``'s epochs file to break."""
    copy = tmp_path / "broken"
    (copy / "derivatives/preprocessed").mkdir(parents=True)
    for k in (1, 2):
        shutil.copy(root / EPOCHS.format(k), copy / EPOCHS.format(k))
    return copy, copy / EPOCHS.format(n)


def test_metadata_round_trips(tiny_meg, trials):
    for n in (1, 2):
        md = _epochs(tiny_meg, n).metadata
        mine = trials.select(trials.subject == f"P{n}")
        assert list(mine.stimulus_id) == list(md["stimulus_id"])
        assert list(mine.session) == list(md["session_nr"])
        expected_split = np.where(md["trial_type"] == "exp", "train", "test")
        assert list(mine.split) == list(expected_split)
        # repeat = 0-based occurrence of the image for that subject
        for sid in md.loc[md["trial_type"] == "test", "stimulus_id"].unique()[:3]:
            assert sorted(mine.repeat[mine.stimulus_id == sid]) == [0, 1]


def test_preprocessing_resamples_scales_and_clamps(tiny_meg, trials):
    raw = _epochs(tiny_meg, 1)
    assert trials.info["sfreq"] == 120.0
    assert trials.data.dtype == np.float32
    assert trials.data.shape[1:] == (275, 169)  # 281 samples at 200 Hz -> ceil(281 * 3 / 5)
    assert trials.info["times"][0] == pytest.approx(-0.1)
    assert np.diff(trials.info["times"]) == pytest.approx(1 / 120)
    assert np.abs(trials.data).max() <= 20.0
    # the same pipeline by hand for subject 1: baseline, polyphase 3/5, robust scale on train
    x = raw.get_data()
    x = x - x[:, :, raw.times <= 0].mean(-1, keepdims=True)
    x = resample_poly(x, 3, 5, axis=-1, padtype="line")
    train = (raw.metadata["trial_type"] == "exp").to_numpy()
    q25, med, q75 = np.percentile(np.moveaxis(x[train], 1, 0).reshape(275, -1), [25, 50, 75], 1)
    expected = np.clip((x - med[:, None]) / (q75 - q25)[:, None], -20, 20)
    np.testing.assert_allclose(trials.data[trials.subject == "P1"], expected, atol=1e-4)
    # after scaling, train trials have per-channel median 0 and IQR 1
    p1 = trials.data[(trials.subject == "P1") & (trials.split == "train")]
    q = np.percentile(np.moveaxis(p1, 1, 0).reshape(275, -1), [25, 50, 75], axis=1)
    np.testing.assert_allclose(q[1], 0, atol=1e-3)
    np.testing.assert_allclose(q[2] - q[0], 1, atol=1e-3)


def test_robust_scale_clamps_outliers():
    data = np.random.default_rng(0).normal(size=(10, 3, 50))
    data[2, 1, 7] = 1e6
    scaled, median, iqr = robust_scale(data, np.ones(10, bool), clamp=20.0)
    assert scaled[2, 1, 7] == 20.0
    assert np.abs(scaled).max() == 20.0
    assert median.shape == iqr.shape == (3,)


def test_raw_read_without_preprocessing_equals_mne(tiny_meg):
    trials = read_things_meg(tiny_meg, subjects=["P2"], preprocess=False)
    np.testing.assert_array_equal(trials.data, _epochs(tiny_meg, 2).get_data().astype(np.float32))
    assert trials.info["sfreq"] == 200.0
    assert set(trials.subject) == {"P2"}


def test_sensor_positions_match_mne_ctf275_layout(trials):
    xy = trials.info["sensor_xy"]
    layout = mne.channels.read_layout("CTF-275")
    centre = layout.pos[:, :2] + layout.pos[:, 2:4] / 2
    centre = (centre - centre.min(0)) / (centre.max(0) - centre.min(0))
    assert xy.shape == (275, 2)
    np.testing.assert_allclose(xy, centre, atol=1e-5)


def test_missing_subject_names_the_expected_file(tiny_meg):
    with pytest.raises(InvalidInputError, match=r"preprocessed_P7-epo\.fif"):
        read_things_meg(tiny_meg, subjects=[1, 7])


@pytest.mark.parametrize("defect", ["channels", "nan", "no_image_column"])
def test_bad_file_gives_one_error_naming_it(tiny_meg, tmp_path, defect):
    root, bad = _broken_copy(tiny_meg, tmp_path)
    epochs = _epochs(root, 2)
    if defect == "channels":
        epochs.drop_channels(epochs.ch_names[:3])
        match = r"preprocessed_P2-epo\.fif has 272 MEG channels; expected the same 275"
    elif defect == "nan":
        epochs._data[3, 10, 20] = np.nan
        match = r"preprocessed_P2-epo\.fif has 1 NaN"
    else:
        epochs.metadata = epochs.metadata.drop(columns=["stimulus_id", "image_path"])
        match = r"preprocessed_P2-epo\.fif has no image column"
    epochs.save(bad, overwrite=True, verbose="error")
    subjects = [1, 2] if defect == "channels" else [2]  # a channel mismatch needs a reference
    with pytest.raises(InvalidInputError, match=match):
        read_things_meg(root, subjects=subjects)


def test_datamodule_joins_targets_by_stimulus_and_averages_test(trials):
    ids = np.unique(trials.stimulus_id)
    table = {sid: np.full(3, i, dtype=np.float32) for i, sid in enumerate(ids)}
    dm = MEGDataModule(trials=trials, targets=table, window=(0.0, 0.5), batch_size=8)
    dm.setup("fit")
    geometry = dm.geometry
    assert geometry["n_channels"] == 275
    assert geometry["n_times"] == int(
        np.sum((trials.info["times"] >= -1e-9) & (trials.info["times"] <= 0.5 + 1e-9))
    )
    assert geometry["subjects"] == ["P1", "P2"]
    assert geometry["target_shape"] == [3]
    assert np.asarray(geometry["sensor_xy"]).shape == (275, 2)
    batch = next(iter(dm.train_dataloader()))
    assert batch["brain"].shape == (8, 275, geometry["n_times"])
    assert batch["brain"].dtype.is_floating_point and batch["subject"].dtype.is_signed
    for target, sid in zip(batch["target"], batch["stimulus_id"]):
        assert (target.numpy() == table[sid]).all()
    # test: one repeat-averaged row per (subject, test image), equal to the mean of the repeats
    test = dm.dataset("test")
    n_test_images = len(np.unique(trials.stimulus_id[trials.split == "test"]))
    assert len(test) == 2 * n_test_images
    sid, subj = test.stimulus_id[0], geometry["subjects"][int(test.subject[0])]
    keep = (trials.info["times"] >= -1e-9) & (trials.info["times"] <= 0.5 + 1e-9)
    rows = trials.data[(trials.stimulus_id == sid) & (trials.subject == subj)][:, :, keep]
    np.testing.assert_allclose(test.brain[0].numpy(), rows.mean(0), atol=1e-5)
    # validation images are held out of training entirely
    assert not set(dm.dataset("val").stimulus_id) & set(dm.dataset("train").stimulus_id)


def test_datamodule_reads_ground_truth_features(tiny_meg, trials):
    dm = MEGDataModule(root=str(tiny_meg), trials=trials)
    assert dm.geometry["target_shape"] == [24]


def test_datamodule_missing_target_is_an_error(trials):
    with pytest.raises(InvalidInputError, match="targets lacks"):
        MEGDataModule(trials=trials, targets={"nothing": np.zeros(2)}).setup("fit")


def test_sim_meg_experiment_fits_through_lightning_cli(tiny_meg, tmp_path):
    """experiments/sim_meg.yaml (one-cycle schedule included) runs as it stands, sizes shrunk."""
    from neurodecode.cli.main import main

    args = [
        "-c",
        str(REPO / "experiments/sim_meg.yaml"),
        f"--data.init_args.root={tiny_meg}",
        "--data.init_args.batch_size=16",
        "--data.init_args.val_fraction=0.2",
        "--model.init_args.hidden=8",
        "--model.init_args.n_blocks=1",
        "--model.init_args.spatial_channels=8",
        "--model.init_args.out_channels=16",
        "--model.init_args.n_way=10",
        "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    main(["fit", *args])
    checkpoints = sorted(tmp_path.rglob("*.ckpt"))
    assert checkpoints and "epoch=1" in checkpoints[-1].name
    state = __import__("torch").load(checkpoints[-1], map_location="cpu", weights_only=True)
    # the one-cycle schedule spans the whole run and was stepped once per training batch
    scheduler = state["lr_schedulers"][0]
    assert scheduler["last_epoch"] == state["global_step"] == scheduler["total_steps"] > 2
