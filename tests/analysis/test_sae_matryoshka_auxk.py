"""Matryoshka BatchTopK with one AuxK term per level: the loss by hand, and the option's bounds."""

from __future__ import annotations

import pytest
import torch

import neurodecode
from neurodecode.analysis.sae.core import create_sae
from neurodecode.validation import InvalidInputError


def _hand_built(per_level: bool):
    sae = create_sae(
        "matryoshka_batchtopk", 2, 4, k=1, k_aux=1, aux_coefficient=0.5, matryoshka_widths=[2],
        auxk_per_level=per_level, normalize_activations=False, dead_window=1,
    )  # fmt: skip
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 0.5, 0.2, 0.3], [0.0, 0.4, 1.0, 0.6]]))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.W_dec.copy_(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.0, 1.0]]))
    return sae


def _auxk(aux_output, residual):
    variance = (residual - residual.mean(0)).pow(2).sum(-1).mean()
    return 0.5 * (aux_output - residual).pow(2).sum(-1).mean() / variance


def test_per_level_auxk_is_the_hand_computed_sum_over_levels():
    x = torch.tensor([[3.0, 1.0], [1.0, 2.5]])
    pre = x @ _hand_built(True).W_enc.detach()
    # pre = [[3, 1.9, 1.6, 1.5], [1, 1.5, 2.7, 1.8]]: the batch keeps its 2 largest, 3 (row 0,
    # latent 0) and 2.7 (row 1, latent 2); with dead_window=1 latents 1 (level 1) and 3 (level 2)
    # did not fire in this batch, so they are dead
    z = torch.zeros(2, 4)
    z[0, 0], z[1, 2] = pre[0, 0], pre[1, 2]
    W = _hand_built(True).W_dec.detach()
    out1, out2 = z[:, :2] @ W[:2], z @ W
    residual1, residual2 = x - out1, x - out2
    level1 = _auxk(pre[:, 1:2] @ W[1:2], residual1)  # latent 1 on prefix 1's residual
    level2 = _auxk(pre[:, 3:4] @ W[3:4], residual2)  # latent 3 on the whole residual
    # BatchTopK's single term: the top dead latent of the whole dictionary, per row (1 then 3)
    top = torch.zeros(2, 4)
    top[0, 1], top[1, 3] = pre[0, 1], pre[1, 3]
    single = _auxk(top @ W, residual2)
    mse = (residual2.pow(2).sum(-1).mean(), residual1.pow(2).sum(-1).mean())
    for per_level, auxiliary in ((True, level1 + level2), (False, single)):
        losses = _hand_built(per_level).training_loss(x)
        assert losses["auxiliary"].item() == pytest.approx(auxiliary.item(), rel=1e-5)
        assert losses["loss"].item() == pytest.approx((sum(mse) + auxiliary).item(), rel=1e-5)
    assert abs((level1 + level2 - single).item()) > 0.02  # the two forms differ here


def test_per_level_auxk_skips_levels_without_dead_latents_and_trains_dead_latents_only():
    sae = _hand_built(True)
    x = torch.tensor([[3.0, 1.0], [1.0, 2.5]])
    sae.training_loss(x)  # marks latents 1 and 3 dead (not fired in this batch)
    pre = sae.pre_activations(x)
    outputs = sae.prefix_outputs(sae.training_latents(pre))
    sae.per_level_auxiliary_loss(x, pre, outputs).backward()
    # only the dead latents' encoder columns and decoder rows get an AuxK gradient
    assert sae.W_enc.grad[:, [0, 2]].abs().sum() == 0 and sae.W_enc.grad[:, [1, 3]].abs().sum() > 0
    alive = _hand_built(True)
    alive.dead_window = 10**9  # nothing is dead
    assert alive.training_loss(x)["auxiliary"].item() == 0.0


def test_option_is_checked_and_round_trips(tmp_path):
    with pytest.raises(InvalidInputError, match="auxk_per_level must be true or false"):
        create_sae("matryoshka_batchtopk", 4, 8, auxk_per_level="yes")
    sae = create_sae("matryoshka_batchtopk", 4, 8, k=2, auxk_per_level=True)
    sae.initialize_from_sample(torch.randn(32, 4))
    loaded = neurodecode.load_pretrained(sae.save_pretrained(tmp_path / "m"))
    assert loaded.options["auxk_per_level"] is True and loaded.config() == sae.config()
