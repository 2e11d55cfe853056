"""A new subject fitted into a trained model's shared latent (MindEye2): Python API and callback."""

from __future__ import annotations

import h5py
import lightning as L
import numpy as np
import pytest
import torch

from neurodecode.datamodules.nsd import NSDDataModule
from neurodecode.features.store import FeatureStore
from neurodecode.models.retrieval import NewSubjectFromPretrained, RetrievalModule, fit_new_subject
from neurodecode.pretrained import save_pretrained
from neurodecode.validation import InvalidInputError

TINY = {"hidden_dim": 32, "n_blocks": 1, "projector_dim": 32, "prior": None, "test_n_draws": 3}


@pytest.fixture(scope="module")
def store(tiny_nsd, tmp_path_factory):
    """A fixed random projection of the tiny world's generating features (16-d targets)."""
    with h5py.File(tiny_nsd / "ground_truth.h5", "r") as gt:
        values = gt["generating_features"][:].astype(np.float64)
    values = (values - values.mean(0)) / (values.std(0) + 1e-9)
    projection = np.random.default_rng(0).normal(size=(values.shape[1], 16))
    embeddings = (values @ projection / values.shape[1] ** 0.5).astype(np.float32)
    path = tmp_path_factory.mktemp("features") / "new-subject.h5"
    FeatureStore(path).fill(
        "proj", "image", np.arange(len(values)), lambda ids: embeddings[[int(i) for i in ids]],
        {"model": "proj"}, progress=False,
    )  # fmt: skip
    return path


def datamodule(tiny_nsd, store, **kwargs) -> NSDDataModule:
    return NSDDataModule(
        str(tiny_nsd), str(store), "proj", "image", val_images=5, batch_size=16, **kwargs
    )


def trainer(epochs: int, **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, **kwargs,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pretrained(tiny_nsd, store) -> RetrievalModule:
    """A tiny decoder trained on subj01 alone (single-subject model)."""
    dm = datamodule(tiny_nsd, store, subjects=["subj01"])
    L.seed_everything(0, verbose=False)
    model = RetrievalModule(dm.geometry, **TINY)
    trainer(1).fit(model, datamodule=dm)
    return model


def new_subject_data(tiny_nsd, store) -> NSDDataModule:
    return datamodule(
        tiny_nsd, store, subjects=["subj01", "subj02"], train_subjects=["subj02"],
        eval_subject="subj02", max_train_sessions={"subj02": 1},
    )  # fmt: skip


class _AdapterAtStart(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.weight = pl_module.adapters["subj02"].weight.detach().clone()


def test_new_subject_trains_only_its_adapter(tiny_nsd, store, pretrained):
    import copy

    dm = new_subject_data(tiny_nsd, store)
    dm.setup("fit")
    assert len(dm.train_set.trials[0]) == 0  # subj01 is not read for training
    assert set(dm.train_set.trials[1].session) == {1}
    assert {int(b["subject"][0]) for b in dm.train_dataloader()} == {1}  # subj02's index

    model = copy.deepcopy(pretrained)
    shared = {k: v.clone() for k, v in model.state_dict().items()}
    start = _AdapterAtStart()
    n_voxels = dm.geometry["n_voxels"]["subj02"]
    fit_new_subject(model, "subj02", n_voxels, trainer(2, callbacks=[start]), dm, lr=1e-2)
    assert model.subjects == ["subj01", "subj02"] and model.hparams.shared_latent
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in shared.items())  # frozen: bit-identical
    assert not torch.allclose(start.weight, model.adapters["subj02"].weight)  # adapter trained
    out = model.embed(dm.test_trials.data, "subj02")
    assert out.shape == (len(dm.test_trials), 16) and torch.isfinite(out).all()


def test_new_subject_needs_matching_subject_order(tiny_nsd, store, pretrained):
    import copy

    wrong = datamodule(tiny_nsd, store, subjects=["subj02"])
    with pytest.raises(InvalidInputError, match="subject indices"):
        fit_new_subject(copy.deepcopy(pretrained), "subj02", 10, trainer(1), wrong)
    with pytest.raises(InvalidInputError, match="train_subjects"):
        datamodule(tiny_nsd, store, subjects=["subj01"], train_subjects=["subj03"])


def test_callback_starts_from_saved_decoder_and_freezes(tiny_nsd, store, pretrained, tmp_path):
    folder = save_pretrained(pretrained, tmp_path / "decoder")
    dm = new_subject_data(tiny_nsd, store)
    model = RetrievalModule(dm.geometry, shared_latent=True, **TINY)
    fresh_adapter = model.adapters["subj02"].weight.detach().clone()
    callback = NewSubjectFromPretrained(str(folder), "subj02")
    trainer(1, callbacks=[callback]).fit(model, datamodule=dm)
    source = pretrained.state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith("adapters.subj02."):
            assert torch.equal(value, source[key]), key
    assert not torch.equal(fresh_adapter, model.adapters["subj02"].weight)
    # a model whose subjects are not "pretrained ones, then the new one" is refused
    other = RetrievalModule(
        datamodule(tiny_nsd, store, subjects=["subj02", "subj01"]).geometry,
        shared_latent=True, **TINY,
    )  # fmt: skip
    with pytest.raises(InvalidInputError, match="subjects"):
        trainer(1, callbacks=[NewSubjectFromPretrained(str(folder), "subj02")]).fit(
            other, datamodule=datamodule(tiny_nsd, store, subjects=["subj02", "subj01"])
        )


def test_ridge_start_decodes_a_planted_subject_before_any_step():
    """Planted linear subjects sharing one code: the ridge-composed adapter already retrieves."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(400, 8, generator=g)
    brains = [z @ torch.randn(8, n, generator=g) + 0.3 * torch.randn(400, n, generator=g)
              for n in (40, 30)]  # fmt: skip
    model = RetrievalModule(
        {"n_voxels": {"a": 40}, "target_shape": [8]}, hidden_dim=32, n_blocks=1,
        projector_dim=16, dropout_in=0.0, dropout_blocks=0.0, lr=1e-2,
    )  # fmt: skip
    batches = [
        {"brain": brains[0][i : i + 50], "subject": torch.zeros(50, dtype=torch.long),
         "target": z[i : i + 50]}
        for i in range(0, 300, 50)
    ]  # fmt: skip
    L.seed_everything(0, verbose=False)
    trainer(15).fit(model, torch.utils.data.DataLoader(batches, batch_size=None))
    model.add_subject("b", 30)

    def top1() -> float:
        e = torch.nn.functional.normalize(model.embed(brains[1][300:], "b"), dim=-1)
        sims = e @ torch.nn.functional.normalize(z[300:], dim=-1).T
        return float((sims.argmax(1) == torch.arange(100)).float().mean())

    random_start = top1()
    scores = model.init_adapter_by_ridge(
        "b", brains[1][:100], z[:100], "a", brains[0][:300], z[:300]
    )
    assert scores["brain_to_target_r2"] > 0.5
    assert top1() >= 0.3 > random_start + 0.1
    with pytest.raises(InvalidInputError, match="columns"):
        model.init_adapter_by_ridge("b", brains[0][:100], z[:100], "a", brains[0], z)


def test_new_subject_experiment_validates(capsys):
    from neurodecode.cli.main import main

    from ..conftest import REPO

    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", str(REPO / "experiments/sim_new_subject.yaml"), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "NewSubjectFromPretrained" in printed and "train_subjects:\n    - subj02" in printed
