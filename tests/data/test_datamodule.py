"""NSDDataModule: joins trials with features by stimulus id, subject-pure batches, splits."""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode.datamodules.nsd import NSDDataModule, SubjectBatchSampler
from neurodecode.features.store import FeatureStore
from neurodecode.validation import InvalidInputError


@pytest.fixture(scope="module")
def id_store(tiny_nsd, tmp_path_factory):
    """Features whose first column is the stimulus id itself, so joins can be checked exactly."""
    path = tmp_path_factory.mktemp("store") / "ids.h5"
    FeatureStore(path).fill(
        "ids",
        "image",
        np.arange(300),
        lambda ids: np.array([[float(i), 1.0, 2.0] for i in ids], dtype=np.float32),
        {"model": "ids"},
        progress=False,
    )
    return path


def test_join_splits_and_geometry(tiny_nsd, id_store):
    dm = NSDDataModule(
        str(tiny_nsd),
        str(id_store),
        "ids",
        "image",
        subjects=["subj01", "subj02"],
        val_images=5,
        batch_size=16,
    )
    geometry = dm.geometry
    assert list(geometry["n_voxels"]) == ["subj01", "subj02"]
    assert geometry["target_shape"] == [3]
    dm.setup("fit")
    for batch in dm.train_dataloader():
        assert len(set(batch["subject"].tolist())) == 1  # never mixes subjects
        subject = dm.subjects[int(batch["subject"][0])]
        assert batch["brain"].shape[1] == geometry["n_voxels"][subject]
        # the target row is the feature of exactly this trial's stimulus
        np.testing.assert_array_equal(batch["target"][:, 0].long(), batch["stimulus_id"])
    test = dm.test_trials
    assert set(test.repeat) == {3} and (test.split == "test").all()
    val_ids = set(dm.val_set.trials[0].stimulus_id)
    train_ids = set(dm.train_set.trials[0].stimulus_id)
    assert len(val_ids) == 5 and not val_ids & train_ids


def test_max_train_sessions_limits_training_only(tiny_nsd, id_store):
    full = NSDDataModule(
        str(tiny_nsd), str(id_store), "ids", "image", subjects=["subj02"], val_images=0
    )
    low = NSDDataModule(
        str(tiny_nsd),
        str(id_store),
        "ids",
        "image",
        subjects=["subj02"],
        val_images=0,
        max_train_sessions={"subj02": 1},
    )
    full.setup()
    low.setup()
    assert set(low.train_set.trials[0].session) == {1}
    assert len(low.train_set) < len(full.train_set)
    assert len(low.test_trials) == len(full.test_trials)


def test_subject_sampler_covers_everything_once():
    subject_of = np.array([0] * 10 + [1] * 7)
    sampler = SubjectBatchSampler(subject_of, batch_size=4, shuffle=True, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(17))
    assert all(len(set(subject_of[b])) == 1 for b in batches)


def test_errors(tiny_nsd, id_store):
    with pytest.raises(InvalidInputError, match="eval_subject"):
        NSDDataModule(str(tiny_nsd), str(id_store), subjects=["subj01"], eval_subject="subj02")


def test_repeat_average_augmentation_mixes_single_trials_and_image_averages(tiny_nsd, id_store):
    def items(p, epoch=0):
        dm = NSDDataModule(
            str(tiny_nsd), str(id_store), "ids", "image", val_images=5, repeat_average=p
        )
        dm.setup("fit")
        dm.train_set.epoch_source = lambda: epoch
        return dm.train_set, [dm.train_set[i]["brain"].numpy() for i in range(len(dm.train_set))]

    dataset, single = items(0.0)
    trials = dataset.trials[0]
    np.testing.assert_array_equal(np.stack(single), trials.data)
    _, averaged = items(1.0)
    for i in (0, 7, len(trials) - 1):  # every item is the mean of its image's training trials
        same = trials.stimulus_id == trials.stimulus_id[i]
        assert same.sum() > 1
        np.testing.assert_allclose(averaged[i], trials.data[same].mean(0), rtol=1e-5, atol=1e-6)
    _, half = items(0.5)
    is_average = np.array([not np.array_equal(h, s) for h, s in zip(half, single, strict=True)])
    assert 0.35 < is_average.mean() < 0.65
    _, again = items(0.5)  # the same items for the same (seed, epoch): a resumed run replays them
    np.testing.assert_array_equal(np.stack(again), np.stack(half))
    _, next_epoch = items(0.5, epoch=1)
    assert not np.array_equal(np.stack(next_epoch), np.stack(half))
    # the ladder and the pools read the single trials whatever the augmentation
    assert len(dataset.trials[0]) == len(trials)
    with pytest.raises(InvalidInputError, match="repeat_average"):
        NSDDataModule(str(tiny_nsd), str(id_store), "ids", "image", repeat_average=1.5)
