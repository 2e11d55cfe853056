"""The pathology check on a small net whose downstream is linear: closed forms."""

import numpy as np
import pytest
import torch
from torch import nn

from neurodecode.analysis.sae.core import create_sae
from neurodecode.analysis.sae.pathology import (
    kl_divergence,
    pathology_check,
    replaced_activations,
)
from neurodecode.validation import InvalidInputError

D_IN, H, C = 6, 10, 4


def _net_and_null_space(seed: int = 0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(D_IN, H), nn.Linear(H, C)).double()
    readout = net[1].weight.detach()  # (C, H): a rank-C map, so H - C directions cost nothing
    _, _, vh = torch.linalg.svd(readout, full_matrices=True)
    return net, readout, vh[:C], vh[C:]  # row space, null space (orthonormal rows)


def _squared_output_change(clean, patched):
    return (clean - patched).pow(2).sum(-1)


def test_error_in_the_readout_null_space_costs_nothing_and_random_error_does():
    net, _, _, null = _net_and_null_space()
    inputs = torch.randn(64, D_IN, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    error = 0.3 * null[0]
    result = pathology_check(net, "0", inputs, lambda rows: rows + error, n_random=8)
    assert result.sae_divergence == pytest.approx(0.0, abs=1e-12)
    assert result.random_divergence > 1e-4
    assert result.ratio == pytest.approx(0.0, abs=1e-8)
    assert result.error_norm == pytest.approx(0.3)
    assert result.n_inputs == 64


def test_ratio_matches_the_closed_form_for_a_linear_readout():
    # squared output change: SAE error e costs |W e|^2; a random direction of the same norm
    # costs |e|^2 |W|_F^2 / H on average, so ratio = H |W e|^2 / (|e|^2 |W|_F^2)
    net, readout, row, _ = _net_and_null_space()
    inputs = torch.randn(32, D_IN, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    error = 0.5 * row[0]
    result = pathology_check(
        net,
        "0",
        inputs,
        lambda rows: rows - error,
        divergence=_squared_output_change,
        n_random=400,
        batch_size=32,
    )
    expected = H * float((readout @ error).pow(2).sum()) / (0.25 * float(readout.pow(2).sum()))
    assert expected > 1.5  # the top singular direction is worse than random
    assert result.sae_divergence == pytest.approx(float((readout @ error).pow(2).sum()))
    assert result.ratio == pytest.approx(expected, rel=0.05)


def test_kl_of_a_real_sae_on_token_activations_and_the_hook_is_removed():
    class TokenNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(3, 8)
            self.head = nn.Linear(8, 5)

        def forward(self, x):  # (batch, tokens, 3) -> (batch, 5) logits
            return self.head(self.embed(x)).mean(1)

    torch.manual_seed(0)
    net = TokenNet()
    inputs = torch.randn(20, 7, 3)
    sae = create_sae("topk", 8, 16, k=2)
    result = pathology_check(net, "embed", inputs, sae, n_random=2, batch_size=8)
    assert result.sae_divergence > 0 and result.random_divergence > 0
    assert 0 < result.relative_error_norm
    assert np.isfinite(result.ratio)
    assert net.embed._forward_hooks == {}
    clean = net(inputs)
    with replaced_activations(net, "embed", lambda rows: rows):
        assert torch.allclose(net(inputs), clean)
    assert kl_divergence(clean, clean).abs().max() < 1e-12


def test_bad_inputs():
    net, *_ = _net_and_null_space()
    x = torch.randn(4, D_IN, dtype=torch.float64)
    with pytest.raises(InvalidInputError, match="not a submodule"):
        pathology_check(net, "nope", x, lambda rows: rows)
    with pytest.raises(InvalidInputError, match="shape"):
        pathology_check(net, "0", x, lambda rows: rows[:, :3])
    with pytest.raises(InvalidInputError, match="transcoder"):
        pathology_check(net, "0", x, create_sae("topk", H, 8, transcoder=True))
