"""SAE/transcoder training with Lightning on planted ground truth (tiny, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from neurodecode.analysis.sae.core import create_sae
from neurodecode.analysis.sae.metrics import evaluate_reconstruction
from neurodecode.analysis.sae.planted import dictionary_recovery, make_planted_activations
from neurodecode.analysis.sae.training import (
    ArrayActivationDataModule,
    HookedActivationStream,
    encode_rows,
    train_sae,
)
from neurodecode.validation import InvalidInputError


@pytest.fixture(scope="module")
def planted():
    return make_planted_activations(12_000, d=16, n_atoms=40, n_active=2, d_out=12, seed=3)


@pytest.mark.parametrize("unit_norm", [True, False])
def test_unit_norm_decoder_is_kept_after_steps(unit_norm):
    rng = np.random.default_rng(0)
    data = ArrayActivationDataModule(rng.normal(size=(512, 8)).astype(np.float32), batch_size=64)
    sae = create_sae("relu_l1", 8, 16, unit_norm_decoder=unit_norm, l1_coefficient=0.1)
    before = sae.W_dec.detach().clone()
    module = train_sae(sae, data, steps=20, lr=5e-2, accelerator="cpu")
    norms = module.sae.decoder_norms().detach()
    assert not torch.allclose(module.sae.W_dec.detach(), before)  # it did train
    if unit_norm:
        assert torch.allclose(norms, torch.ones(16), atol=1e-5)
    else:
        assert (norms - 1).abs().max() > 1e-2


def test_topk_recovers_a_planted_dictionary_far_above_a_random_one(planted):
    data = ArrayActivationDataModule(planted.inputs, batch_size=256, eval_fraction=0.1)
    sae = create_sae("topk", 16, 80, k=2, dead_window=5_000)
    module = train_sae(sae, data, steps=400, lr=3e-3, decay_fraction=0.2, accelerator="cpu")
    recovery = dictionary_recovery(planted.atoms, module.sae.W_dec)
    random_recovery = dictionary_recovery(planted.atoms, create_sae("topk", 16, 80).W_dec)
    assert random_recovery <= 0.05
    assert recovery >= 0.8
    metrics = evaluate_reconstruction(module.sae, data.eval_batches())
    assert metrics["l0"] <= 2.0
    assert metrics["fvu"] < 0.2
    latents = encode_rows(module.sae, torch.from_numpy(planted.inputs[:10]))
    assert latents.shape == (10, 80)
    assert ((latents > 0).sum(1) <= 2).all()


@pytest.mark.parametrize("skip", [False, True])
def test_transcoder_learns_a_planted_sparse_map(planted, skip):
    data = ArrayActivationDataModule(planted.inputs, planted.targets, batch_size=256)
    sae = create_sae(
        "topk", 16, 80, k=2, transcoder=True, d_out=12, skip_connection=skip, dead_window=5_000
    )
    module = train_sae(sae, data, steps=300, lr=3e-3, decay_fraction=0.2, accelerator="cpu")
    metrics = evaluate_reconstruction(module.sae, data.eval_batches())
    # predicting the mean would give FVU 1; the planted map is sparse in exactly these atoms
    assert metrics["fvu"] < 0.25
    if skip:  # the affine path takes the linearly predictable part; atoms are not identifiable
        assert torch.count_nonzero(module.sae.W_skip) > 0
    else:
        assert dictionary_recovery(planted.output_atoms, module.sae.W_dec) >= 0.6


def test_hooked_stream_captures_input_output_pairs_of_a_submodule():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Sequential(nn.Tanh(), nn.Linear(5, 4)))
    images = [torch.randn(6, 2, 3), torch.randn(6, 2, 3)]  # (batch, tokens, features)

    def stimuli(i):
        return images[i] if i < len(images) else None

    stream = HookedActivationStream(model, "1", stimuli, batch_size=4, capture="io")
    inputs, outputs = stream.capture_batch(images[0])
    assert inputs.shape == (12, 5) and outputs.shape == (12, 4)
    with torch.no_grad():
        hidden = model[0](images[0]).reshape(12, 5)
        assert torch.allclose(inputs, hidden)
        assert torch.allclose(outputs, model[1](hidden))
    batches = list(stream)
    assert len(batches) == 6 and all(b[0].shape == (4, 5) for b in batches)
    # a transcoder trains straight from the stream (Lightning restarts it when it ends)
    sae = create_sae("topk", 5, 8, k=2, transcoder=True, d_out=4)
    module = train_sae(
        sae,
        DataLoader(stream, batch_size=None),
        steps=8,
        init_sample=(inputs, outputs),
        accelerator="cpu",
    )
    assert module.global_step == 8
    assert module.sae.input_scale.item() != 1.0
    with pytest.raises(InvalidInputError, match="layer='2'"):
        HookedActivationStream(model, "2", stimuli)


def test_datamodule_rejects_mismatched_targets_and_nan():
    with pytest.raises(InvalidInputError, match="rows"):
        ArrayActivationDataModule(np.zeros((10, 3), np.float32), np.zeros((9, 3), np.float32))
    bad = np.zeros((10, 3), np.float32)
    bad[4, 1] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        ArrayActivationDataModule(bad)
