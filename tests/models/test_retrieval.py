"""Retrieval head on planted linear brain -> embedding problems; multi-subject; Lightning resume."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from neurodecode.evaluate.retrieval import retrieval_metrics
from neurodecode.models.retrieval import RetrievalModule
from neurodecode.validation import InvalidInputError

DIM = 16
TINY = {
    "hidden_dim": 64,
    "n_blocks": 2,
    "projector_dim": 32,
    "dropout_in": 0.0,
    "dropout_blocks": 0.0,
}


def planted_subject(z: torch.Tensor, n_voxels: int, seed: int, noise: float = 0.5) -> torch.Tensor:
    """Voxels = z @ A_s + noise: a linear code of the target embedding, different per subject."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(z.shape[1], n_voxels, generator=g)
    return z @ mixing + noise * torch.randn(z.shape[0], n_voxels, generator=g)


def embeddings(n: int = 256, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed))


def batches(brain: torch.Tensor, target: torch.Tensor, subject: int, size: int, seed: int = 0):
    """Batches (dicts) of one subject, in a seeded random order."""
    order = torch.randperm(len(brain), generator=torch.Generator().manual_seed(seed))
    out = []
    for start in range(0, len(brain), size):
        idx = order[start : start + size]
        out.append(
            {
                "brain": brain[idx],
                "subject": torch.full((len(idx),), subject, dtype=torch.long),
                "target": target[idx],
                "stimulus_id": idx,
            }
        )
    return out


def loader(batch_list: list[dict], shuffle: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader over ready-made batches (batch_size=None: each item is a batch)."""
    return torch.utils.data.DataLoader(batch_list, batch_size=None, shuffle=shuffle)


def trainer(epochs: int, **kwargs) -> L.Trainer:
    options = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    options.update(kwargs)
    return L.Trainer(max_epochs=epochs, **options)


def top1(model: RetrievalModule, brain: torch.Tensor, target: torch.Tensor, subject) -> float:
    emb = model.embed(brain, subject)
    return retrieval_metrics(emb, target, n_way=len(target), n_draws=1, k=1)["brain_to_image_top1"]


@pytest.fixture(scope="module")
def single_subject():
    torch.manual_seed(0)
    z = embeddings()
    brain = planted_subject(z, 50, seed=1)
    geometry = {"n_voxels": {"subj01": 50}, "target_shape": [DIM]}
    model = RetrievalModule(geometry, **TINY, lr=1e-2)
    before = top1(model, brain[200:], z[200:], 0)
    trainer(20).fit(model, loader(batches(brain[:200], z[:200], 0, 32), shuffle=True))
    return model, brain, z, before


def test_retrieval_learns_planted_mapping(single_subject):
    model, brain, z, before = single_subject
    n_test = 56
    after = top1(model, brain[200:], z[200:], "subj01")
    chance = 1 / n_test
    assert after >= 10 * chance
    assert after > before + 0.2
    image_to_brain = retrieval_metrics(
        model.embed(brain[200:], 0), z[200:], n_way=n_test, n_draws=1, k=1
    )["image_to_brain_top1"]
    assert image_to_brain >= 10 * chance


def test_embed_restores_mode_and_accepts_numpy(single_subject):
    model, brain, _, _ = single_subject
    model.train()
    out = model.embed(brain[:4].numpy(), 0)
    assert model.training and not out.requires_grad
    assert out.shape == (4, DIM)
    assert torch.allclose(out, model.embed(brain[:4], torch.zeros(4, dtype=torch.long)))
    assert model.embed(brain[:4], 0, output="backbone").shape == (4, DIM)
    with pytest.raises(InvalidInputError, match="prior"):
        model.embed(brain[:4], 0, output="prior")
    model.eval()


def test_test_loop_logs_n_way_retrieval(single_subject):
    model, brain, z, _ = single_subject
    test_loader = loader(batches(brain[200:], z[200:], 0, 28))
    result = trainer(1).test(model, test_loader, verbose=False)[0]
    assert result["test/subj01/n_way"] == 56
    assert result["test/brain_to_image_top1"] >= 10 / 56
    assert "test/image_to_brain_top5" in result


def test_loss_schedule_mixco_then_softclip():
    model = RetrievalModule({"n_voxels": {"s1": 5}, "target_shape": [4]}, **TINY, max_epochs_hint=9)
    assert model.loss_phase(0) == ("mixco", pytest.approx(0.006))
    assert model.loss_phase(2)[0] == "mixco"
    assert model.loss_phase(3) == ("softclip", pytest.approx(0.004))
    assert model.loss_phase(8) == ("softclip", pytest.approx(0.0075))


def test_token_level_targets_and_prior_train_jointly():
    torch.manual_seed(0)
    z = torch.randn(48, 3, 8)
    brain = planted_subject(z.flatten(1), 30, seed=2)
    geometry = {"n_voxels": {"subj01": 30}, "target_shape": [3, 8]}
    prior = {"depth": 1, "num_heads": 2, "head_dim": 8}
    model = RetrievalModule(geometry, **TINY, prior=prior, prior_weight=30.0)
    fit = trainer(3)
    fit.fit(model, loader(batches(brain, z, 0, 16)))
    assert "train/prior_loss" in fit.callback_metrics
    assert (
        "train/softclip_loss" in fit.callback_metrics and "train/mixco_loss" in fit.callback_metrics
    )
    assert model.embed(brain[:5], 0).shape == (5, 3, 8)
    assert model.embed(brain[:5], 0, output="prior").shape == (5, 3, 8)
    result = fit.test(model, loader(batches(brain[:24], z[:24], 0, 24)), verbose=False)[0]
    assert "test/prior_brain_to_image_top1" in result and "test/prior_cosine" in result


def test_shared_latent_multi_subject_and_new_subject():
    torch.manual_seed(0)
    z = embeddings(n=200, seed=3)
    voxels = {"subj01": 50, "subj02": 37}
    brains = {
        name: planted_subject(z, n, seed=10 + i) for i, (name, n) in enumerate(voxels.items())
    }
    model = RetrievalModule(
        {"n_voxels": voxels, "target_shape": [DIM]}, **TINY, shared_latent=True, lr=1e-2
    )
    train = []
    for index, name in enumerate(voxels):
        train += batches(brains[name][:150], z[:150], index, 25, seed=index)
    trainer(15).fit(model, loader(train, shuffle=True))  # subjects interleave
    for index, name in enumerate(voxels):
        assert top1(model, brains[name][150:], z[150:], index) >= 10 / 50

    # A new subject fitted from 40 trials with everything else frozen.
    new_brain = planted_subject(z, 44, seed=20)
    index = model.add_subject("subj03", 44, freeze_shared=True)
    assert index == 2 and model.subjects == ["subj01", "subj02", "subj03"]
    assert model.geometry["n_voxels"]["subj03"] == 44
    frozen = {k: v.clone() for k, v in model.state_dict().items() if "subj03" not in k}
    chance_before = top1(model, new_brain[150:], z[150:], "subj03")
    trainer(25).fit(model, loader(batches(new_brain[:40], z[:40], 2, 20), shuffle=True))
    after = top1(model, new_brain[150:], z[150:], "subj03")
    assert after >= 5 / 50 and after > chance_before
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())


def test_input_errors():
    geometry = {"n_voxels": {"subj01": 10, "subj02": 12}, "target_shape": [4]}
    with pytest.raises(InvalidInputError, match="shared_latent=True"):
        RetrievalModule(geometry, **TINY)
    with pytest.raises(InvalidInputError, match="geometry"):
        RetrievalModule(None)
    with pytest.raises(InvalidInputError, match="target_shape"):
        RetrievalModule({"n_voxels": {"s": 3}, "target_shape": [0]})
    model = RetrievalModule(geometry, **TINY, shared_latent=True)
    with pytest.raises(InvalidInputError, match=r"expected \(B, 12\) for subject 'subj02'"):
        model(torch.randn(2, 10), 1)
    with pytest.raises(InvalidInputError, match="one subject"):
        model(torch.randn(2, 10), torch.tensor([0, 1]))
    with pytest.raises(InvalidInputError, match="out of range"):
        model(torch.randn(2, 10), 5)
    with pytest.raises(InvalidInputError, match="already"):
        model.add_subject("subj01", 10)
    single = RetrievalModule({"n_voxels": {"s": 3}, "target_shape": [4]}, **TINY)
    assert single.add_subject("t", 3) == 1  # a single-subject model becomes shared-latent
    assert single.hparams.shared_latent and single(torch.randn(2, 3), "t")[1].shape == (2, 4)


class _EpochRecorder(Callback):
    def __init__(self):
        self.epochs: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.epochs.append(trainer.current_epoch)


class _StopAfter(Callback):
    """Interrupt training at the end of epoch ``epoch`` (as a killed job would)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def test_checkpoint_resume_continues(tmp_path):
    torch.manual_seed(0)
    z = embeddings(n=64, seed=4)
    brain = planted_subject(z, 20, seed=5)
    geometry = {"n_voxels": {"subj01": 20}, "target_shape": [DIM]}
    data = loader(batches(brain, z, 0, 16))
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    first = trainer(4, enable_checkpointing=True, callbacks=[ckpt, _StopAfter(1)])
    model = RetrievalModule(geometry, **TINY)
    first.fit(model, data)
    assert first.global_step == 8
    lr_at_stop = first.optimizers[0].param_groups[0]["lr"]
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert saved["epoch"] == 1 and saved["hyper_parameters"]["geometry"] == geometry

    recorder = _EpochRecorder()
    second = trainer(4, callbacks=[recorder])
    resumed = RetrievalModule(geometry, **TINY)
    second.fit(resumed, data, ckpt_path=tmp_path / "last.ckpt")
    assert recorder.epochs == [2, 3]  # continues after the saved epoch
    assert second.global_step == 16
    assert resumed.loss_phase(3)[0] == "softclip"
    # the OneCycle schedule continued too: it ended far below the LR it had when stopped
    assert second.optimizers[0].param_groups[0]["lr"] < 0.1 * lr_at_stop
    restored = RetrievalModule.load_from_checkpoint(tmp_path / "last.ckpt")
    assert restored.subjects == ["subj01"]

    # Extending a finished run (more epochs than the schedule was built for) does not crash:
    # the learning rate stays at the schedule's final value.
    longer = trainer(6)
    longer.fit(RetrievalModule(geometry, **TINY), data, ckpt_path=tmp_path / "last.ckpt")
    assert longer.global_step == 24
