"""Two-subject training beats one-subject training on the low-data subject (issue 14).

World: ``datasets/sim/tiny-twosubj.yaml`` (tiny.yaml with 600 training images per subject; why it
exists is in the file). subj01 trains on all its 1,800 training trials, subj02 on its first
session only (~140). Targets: a fixed random 128-d projection of the generating features
(``write_projected_features``). Metric: 2-way identification (correlation, chance 0.5) of
subj02's 60 repeat-averaged shared test images.

Recipe (MindEye2's new-subject step): a decoder pretrained on subj01, then a new subj02 adapter
with everything else frozen (:func:`fit_new_subject`). It, the sizes and the softer contrastive
temperature (0.05 instead of MindEye's 0.004-0.0075, which left a 64-d head at 0.60 2-way vs
0.88 on subj01's own validation images) were chosen on validation trials only: 100
repeat-averaged subj02 training images that are not in its first session (never trained on,
never test), seeds 0 and 1 (``runs/``-only exploration, not shipped). The one-subject baseline is
the same network at its own best validation settings.
"""

from __future__ import annotations

import copy

import lightning as L
import numpy as np
import pytest
from scipy.stats import wilcoxon

from neurodecode.datamodules.nsd import NSDDataModule
from neurodecode.evaluate.image_metrics import two_way_identification_per_image
from neurodecode.models.retrieval import RetrievalModule, fit_new_subject

from ..conftest import REPO, write_projected_features

NET = {
    "hidden_dim": 64, "n_blocks": 1, "projector_dim": 64, "prior": None, "test_n_draws": 3,
    "dropout_in": 0.1, "dropout_blocks": 0.1, "mixco_temperature": 0.05, "soft_tau": (0.05, 0.05),
}  # fmt: skip
PRETRAIN = {"lr": 1e-3, "weight_decay": 0.01, "epochs": 10}
NEW_SUBJECT = {"lr": 1e-3, "weight_decay": 20.0, "epochs": 30}
ALONE = {"lr": 3e-3, "weight_decay": 0.01, "epochs": 30}
LOW = {"subj02": 1}
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from neurodecode.sim.fmri import FMRISimConfig, simulate_fmri

    folder = tmp_path_factory.mktemp("twosubj")
    config = FMRISimConfig.from_yaml(REPO / "datasets/sim/tiny-twosubj.yaml")
    root = simulate_fmri(config, folder / "world", progress=False)
    return root, write_projected_features(root, folder / "features.h5", 128)


def _data(world, **kwargs) -> NSDDataModule:
    root, store = world
    return NSDDataModule(
        str(root), str(store), "gt-projection", "image", val_images=5, batch_size=16, **kwargs
    )


def _trainer(epochs: int) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        num_sanity_val_steps=0,
    )  # fmt: skip


def _pretrained(world, shuffle_targets: bool = False) -> RetrievalModule:
    """A decoder trained on subj01 (seed 0); ``shuffle_targets`` permutes its trials' targets
    (the control: the same data with no structure shared with subj02)."""
    data = _data(world, subjects=["subj01"])
    data.setup("fit")
    if shuffle_targets:
        targets = data.train_set.targets[0]
        data.train_set.targets[0] = targets[np.random.default_rng(0).permutation(len(targets))]
    L.seed_everything(0, verbose=False)
    model = RetrievalModule(
        data.geometry, lr=PRETRAIN["lr"], weight_decay=PRETRAIN["weight_decay"], **NET
    )
    _trainer(PRETRAIN["epochs"]).fit(model, datamodule=data)
    return model


def _alone(world, seed: int) -> np.ndarray:
    """Per test image 2-way scores of the same network trained on subj02's session alone."""
    data = _data(world, subjects=["subj02"], max_train_sessions=LOW)
    L.seed_everything(seed, verbose=False)
    model = RetrievalModule(
        data.geometry, lr=ALONE["lr"], weight_decay=ALONE["weight_decay"], **NET
    )
    _trainer(ALONE["epochs"]).fit(model, datamodule=data)
    return two_way_identification_per_image(
        model.embed(data.test_trials.data, "subj02").numpy(), data.test_targets
    )


def _new_subject(world, pretrained: RetrievalModule, seed: int) -> np.ndarray:
    """Per test image 2-way scores of subj02 as a new subject of ``pretrained`` (rest frozen)."""
    data = _data(
        world, subjects=["subj01", "subj02"], train_subjects=["subj02"], eval_subject="subj02",
        max_train_sessions=LOW,
    )  # fmt: skip
    L.seed_everything(seed, verbose=False)
    model = copy.deepcopy(pretrained)
    trainer = _trainer(NEW_SUBJECT["epochs"])
    n_voxels = data.geometry["n_voxels"]["subj02"]
    fit_new_subject(
        model, "subj02", n_voxels, trainer, data,
        lr=NEW_SUBJECT["lr"], weight_decay=NEW_SUBJECT["weight_decay"],
    )  # fmt: skip
    return two_way_identification_per_image(
        model.embed(data.test_trials.data, "subj02").numpy(), data.test_targets
    )


@pytest.mark.skip(
    reason="not done: 66 s on the contended 2-core machine (aim < 40 s) and the pooled paired "
    "p = 0.029 misses its 0.01 bar (gains 0.018 / 0.075 per seed); see the twosubj branch report"
)
def test_two_subjects_beat_one_on_the_low_data_subject(world):
    data = _data(world, subjects=["subj02"], max_train_sessions=LOW)
    data.setup("fit")
    assert len(data.train_set) < 200 and len(data.test_targets) == 60  # one session: low data

    pretrained = _pretrained(world)
    shuffled = _pretrained(world, shuffle_targets=True)
    alone = {s: _alone(world, s) for s in SEEDS}
    joint = {s: _new_subject(world, pretrained, s) for s in SEEDS}
    control = {s: _new_subject(world, shuffled, s) for s in SEEDS}
    gains = {s: joint[s].mean() - alone[s].mean() for s in SEEDS}
    losses = {s: alone[s].mean() - control[s].mean() for s in SEEDS}
    assert all(g > 0 for g in gains.values()), gains  # ahead on each seed
    # pooled over seeds, paired over the 60 test images: the gain is more than noise (margins
    # set from the validation gap, 0.058, before the test images were scored)
    gain = np.mean([joint[s] - alone[s] for s in SEEDS], axis=0)
    assert gain.mean() > 0.02 and wilcoxon(gain, alternative="greater").pvalue < 0.01, gains
    # the control: subj01's targets shuffled, nothing shared with subj02: the gain vanishes
    assert (
        np.mean([control[s].mean() for s in SEEDS])
        < np.mean([alone[s].mean() for s in SEEDS]) + 0.01
    ), losses
