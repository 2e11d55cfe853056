"""The fine-tune variant of the feature-suppression fix (Wright & Sharkey 2024): encoder frozen,
scales + decoder fine-tuned on MSE alone; shrinkage removed on planted rows, FVU no worse than the
closed-form rescale, the same latents firing."""

from __future__ import annotations

import copy

import pytest
import torch

from neurodecode.analysis.sae.core import create_sae
from neurodecode.analysis.sae.planted import make_planted_activations
from neurodecode.analysis.sae.suppression import (
    finetune_feature_suppression,
    fix_feature_suppression,
    shrinkage_report,
)
from neurodecode.analysis.sae.training import ArrayActivationDataModule, train_sae
from neurodecode.validation import InvalidInputError


@pytest.fixture(scope="module")
def shrunk():
    """A ReLU-L1 SAE trained with a strong L1 term on planted rows (so its latents shrink)."""
    planted = make_planted_activations(12_000, d=16, n_atoms=40, n_active=2, seed=3)
    data = ArrayActivationDataModule(planted.inputs, batch_size=256, eval_fraction=0.1)
    torch.manual_seed(0)
    sae = create_sae("relu_l1", 16, 80, dead_window=5_000, l1_coefficient=1.0)
    sae = train_sae(sae, data, steps=200, lr=3e-3, decay_fraction=0.2, accelerator="cpu").sae
    return sae.cpu().eval(), data


def test_finetune_removes_shrinkage_and_is_no_worse_than_the_closed_form(shrunk):
    sae, data = shrunk
    closed, tuned = copy.deepcopy(sae), copy.deepcopy(sae)
    held = list(data.eval_batches())  # scored only: the fixes fit on the training rows
    fix_feature_suppression(closed, [data.train_inputs])
    firing = tuned.encode(data.eval_inputs) > 0
    decoder_before = tuned.W_dec.detach().clone()
    result = finetune_feature_suppression(tuned, data, steps=300, lr=3e-3, eval_batches=held)
    before, after, rescaled = result.before, result.after, shrinkage_report(closed, held)
    assert before == shrinkage_report(sae, held)
    assert before["gamma_rescale_reconstruction"] < 0.92  # L1 shrinks
    assert after["gamma_rescale_reconstruction"] == pytest.approx(1.0, abs=0.02)
    assert after["gamma_rescale_input"] > before["gamma_rescale_input"]
    assert after["fvu"] < before["fvu"]
    assert after["fvu"] <= rescaled["fvu"] + 0.002  # fine-tuning the decoder too: not worse
    assert torch.equal(tuned.encode(data.eval_inputs) > 0, firing)  # same latents fire
    assert after["l0"] == pytest.approx(before["l0"])
    fired = firing.any(0)
    assert result.scales[fired].median() > 1.05  # the shrunk latents are scaled up
    assert torch.all(result.scales[~fired] == 1.0)  # latents that never fired are left alone
    assert not torch.allclose(tuned.W_dec, decoder_before)  # the decoder was fine-tuned
    assert torch.allclose(tuned.decoder_norms(), torch.ones(80), atol=1e-5)  # at unit norm
    assert all(p.requires_grad for p in tuned.parameters())  # flags given back


def test_finetune_of_a_gated_sae_folds_into_its_magnitude_path(shrunk):
    _, data = shrunk
    torch.manual_seed(0)
    sae = create_sae("gated", 16, 40, dead_window=5_000, l1_coefficient=1.0)
    sae = train_sae(sae, data, steps=100, lr=3e-3, accelerator="cpu").sae.cpu().eval()
    gate_before = sae.b_enc.detach().clone()
    result = finetune_feature_suppression(sae, data, steps=100, eval_batches=data.eval_batches())
    assert torch.equal(sae.b_enc, gate_before)  # the gate path is untouched
    assert result.after["fvu"] < result.before["fvu"]
    # Gated barely shrinks (its magnitude path has no L1); fine-tuning leaves no bias either way
    assert result.after["gamma_rescale_reconstruction"] == pytest.approx(1.0, abs=0.02)


def test_bad_inputs(shrunk):
    _, data = shrunk
    with pytest.raises(InvalidInputError, match="supports"):
        finetune_feature_suppression(create_sae("topk", 16, 8), data, steps=5)
    with pytest.raises(InvalidInputError, match="steps must be >= 1"):
        finetune_feature_suppression(create_sae("relu_l1", 16, 8), data, steps=0)
