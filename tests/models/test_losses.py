"""MindEye losses against values computed by hand (pure Python math on 2 x 2 examples)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from neurodecode.models.losses import (
    clip_loss,
    cosine_temperature,
    mixco_loss,
    mixco_voxels,
    mse_loss,
    normalize_flat,
    soft_clip_loss,
)

# Unit-norm 2-D examples: pred rows p0 = (1, 0), p1 = (0.6, 0.8).
PRED = torch.tensor([[1.0, 0.0], [0.6, 0.8]])


def log_softmax(row: list[float]) -> list[float]:
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def softmax(row: list[float]) -> list[float]:
    return [math.exp(v) for v in log_softmax(row)]


def cross_entropy(logits: list[list[float]], weights: list[list[float]]) -> float:
    """Mean over rows of -sum_j w_ij log_softmax(logits_i)_j."""
    return sum(
        -sum(w * lp for w, lp in zip(wr, log_softmax(lr))) for lr, wr in zip(logits, weights)
    ) / len(logits)


def transpose(m: list[list[float]]) -> list[list[float]]:
    return [list(col) for col in zip(*m)]


def test_clip_loss_matches_hand_value():
    target = torch.tensor([[1.0, 0.0], [0.6, 0.8]]) * torch.tensor([[2.0], [5.0]])  # not unit
    pred = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # cosines: [[1, 0.6], [0, 0.8]]; τ = 0.5 -> logits [[2, 1.2], [0, 1.6]]
    rows = math.log(1 + math.exp(-0.8)) + math.log(1 + math.exp(-1.6))
    cols = math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-0.4))
    expected = 0.25 * (rows + cols)
    assert clip_loss(pred, target, 0.5).item() == pytest.approx(expected, rel=1e-6)
    # scale invariance: embeddings are L2-normalised inside
    assert clip_loss(3 * pred, target, 0.5).item() == pytest.approx(expected, rel=1e-6)


def test_token_level_embeddings_are_flattened():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(4, 3, 5, generator=g), torch.randn(4, 3, 5, generator=g)
    flat = clip_loss(pred.flatten(1), target.flatten(1), 0.1)
    assert clip_loss(pred, target, 0.1).item() == pytest.approx(flat.item(), rel=1e-6)
    assert normalize_flat(pred).shape == (4, 15)
    assert torch.allclose(normalize_flat(pred).norm(dim=1), torch.ones(4))


def test_mixco_loss_matches_hand_value():
    target = torch.eye(2)
    perm = torch.tensor([1, 0])
    lam = torch.tensor([0.7, 1.0])
    tau = 0.5
    logits = [[2.0, 0.0], [1.2, 1.6]]  # PRED @ I / τ
    soft = [[0.7, 0.3], [0.0, 1.0]]  # λ on self, 1-λ on the partner
    expected = 0.5 * (
        cross_entropy(logits, soft) + cross_entropy(transpose(logits), transpose(soft))
    )
    got = mixco_loss(PRED, target, perm, lam, tau)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_mixco_loss_self_partner_keeps_unit_weight():
    # perm[i] == i: the target row must still sum to 1 (all weight on the diagonal) = InfoNCE.
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    got = mixco_loss(pred, target, torch.arange(3), torch.tensor([0.2, 0.5, 0.9]), 0.3)
    assert got.item() == pytest.approx(clip_loss(pred, target, 0.3).item(), rel=1e-6)


def test_bimixco_reduces_to_infonce_at_lambda_one():
    g = torch.Generator().manual_seed(2)
    pred, target = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    perm = torch.randperm(8, generator=g)
    got = mixco_loss(pred, target, perm, torch.ones(8), 0.006)
    assert got.item() == pytest.approx(clip_loss(pred, target, 0.006).item(), rel=1e-6)
    assert mixco_loss(pred, target, temperature=0.006).item() == pytest.approx(got.item())


def test_mixco_voxels_mixes_selected_rows_only():
    g = torch.Generator().manual_seed(3)
    voxels = torch.randn(64, 10, generator=g)
    original = voxels.clone()
    mixed = mixco_voxels(voxels, beta=0.15, mix_probability=0.5, generator=g)
    assert torch.equal(voxels, original)  # input untouched
    assert 10 < int(mixed.selected.sum()) < 54  # about half of the rows
    assert torch.all(mixed.lam[~mixed.selected] == 1)
    assert torch.all((mixed.lam >= 0) & (mixed.lam <= 1))
    expected = mixed.lam[:, None] * voxels + (1 - mixed.lam[:, None]) * voxels[mixed.perm]
    assert torch.allclose(mixed.voxels, expected)
    assert torch.equal(mixed.voxels[~mixed.selected], voxels[~mixed.selected])
    # Beta(0.15, 0.15) is U-shaped: most mixing weights lie near 0 or 1
    lam_sel = mixed.lam[mixed.selected]
    assert ((lam_sel < 0.1) | (lam_sel > 0.9)).float().mean() > 0.5
    none = mixco_voxels(voxels, mix_probability=0.0, generator=g)
    assert torch.equal(none.voxels, voxels)


def test_soft_clip_matches_hand_value():
    target = torch.eye(2)
    tau = 0.5
    logits = [[2.0, 0.0], [1.2, 1.6]]
    soft = [softmax([2.0, 0.0]), softmax([0.0, 2.0])]  # softmax(t tᵀ / τ)
    expected = 0.5 * (cross_entropy(logits, soft) + cross_entropy(transpose(logits), soft))
    assert soft_clip_loss(PRED, target, tau).item() == pytest.approx(expected, rel=1e-6)


def test_soft_clip_with_one_hot_like_targets_is_infonce():
    # Orthogonal targets at small τ: softmax(t tᵀ/τ) is one-hot to ~1e-9, so SoftCLIP == CLIP.
    g = torch.Generator().manual_seed(4)
    target = torch.eye(6)[:, :] * 3.0
    pred = torch.randn(6, 6, generator=g)
    tau = 0.05
    assert soft_clip_loss(pred, target, tau).item() == pytest.approx(
        clip_loss(pred, target, tau).item(), rel=1e-6
    )
    # Correlated targets make the soft labels spread, and the losses differ.
    similar = target + 2.0
    assert soft_clip_loss(pred, similar, tau).item() != pytest.approx(
        clip_loss(pred, similar, tau).item(), rel=1e-3
    )


def test_cosine_temperature_schedule():
    assert cosine_temperature(0, 160) == pytest.approx(0.004)
    assert cosine_temperature(159, 160) == pytest.approx(0.0075)
    assert cosine_temperature(1, 3, 0.004, 0.0075) == pytest.approx((0.004 + 0.0075) / 2)
    taus = [cosine_temperature(s, 10) for s in range(10)]
    assert all(a < b for a, b in itertools.pairwise(taus))  # monotone increase
    assert cosine_temperature(50, 10) == pytest.approx(0.0075)  # clamped
    assert cosine_temperature(0, 1) == pytest.approx(0.004)


def test_mse_and_shape_errors():
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]])
    assert mse_loss(a, b).item() == pytest.approx((1 + 4) / 2)
    with pytest.raises(ValueError, match="same shape"):
        mse_loss(a, b.T)
    with pytest.raises(ValueError, match="same shape"):
        clip_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        clip_loss(a, b, 0.0)
