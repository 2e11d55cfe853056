"""Contrastive and regression losses for brain -> embedding decoders (MindEye1 recipe).

This module owns the loss functions and the temperature schedule; it holds no parameters.
Every contrastive loss works on *flattened, L2-normalised* embeddings: predictions and targets
of shape ``(B, *shape)`` are flattened to ``(B, prod(shape))`` and normalised along the last
axis before the cosine-similarity logits are formed (:func:`normalize_flat`).

References
----------
Scotti et al. (2023), "Reconstructing the Mind's Eye: fMRI-to-Image with Contrastive Learning and
Diffusion Priors" (MindEye1): BiMixCo for the first third of training (mixup of voxels with
λ ~ Beta(0.15, 0.15) on half of the batch, soft targets λ / 1-λ, temperature 0.006, both
directions averaged), then SoftCLIP with targets ``softmax(t tᵀ / τ)`` and τ cosine-annealed from
0.004 to 0.0075.
Kim et al. (2020), "MixCo: Mix-up Contrastive Learning for Visual Representation".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "MixcoBatch",
    "clip_loss",
    "cosine_temperature",
    "mixco_loss",
    "mixco_voxels",
    "mse_loss",
    "normalize_flat",
    "soft_clip_loss",
]


def normalize_flat(x: Tensor) -> Tensor:
    """Flatten all but the batch axis and L2-normalise each row.

    Parameters
    ----------
    x : Tensor, shape (B, *shape)
        Embeddings (pooled ``(B, D)`` or token-level ``(B, T, D)``).

    Returns
    -------
    Tensor, shape (B, prod(shape))
        Unit-norm rows.
    """
    return F.normalize(x.flatten(1), dim=-1)


def _logits(pred: Tensor, target: Tensor, temperature: float) -> Tensor:
    if pred.shape != target.shape:
        raise ValueError(
            f"pred has shape {tuple(pred.shape)} but target has shape {tuple(target.shape)}; "
            "expected the same shape."
        )
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be positive.")
    return normalize_flat(pred) @ normalize_flat(target).T / temperature


def clip_loss(pred: Tensor, target: Tensor, temperature: float = 0.006) -> Tensor:
    """Symmetric InfoNCE (CLIP) loss between brain predictions and image embeddings.

    ``logits[i, j] = cos(pred_i, target_j) / temperature``; the loss is the mean of the
    cross-entropy of rows (brain -> image) and of columns (image -> brain) against the
    diagonal.

    Parameters
    ----------
    pred, target : Tensor, shape (B, *shape)
        Brain-derived and true embeddings; flattened and L2-normalised here.
    temperature : float
        Softmax temperature τ (dimensionless).

    Returns
    -------
    Tensor, shape ()
        The loss in nats.
    """
    logits = _logits(pred, target, temperature)
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


@dataclass
class MixcoBatch:
    """Voxels mixed by :func:`mixco_voxels` and what :func:`mixco_loss` needs to score them.

    Attributes
    ----------
    voxels : Tensor, shape (B, V)
        ``λ_i x_i + (1 - λ_i) x_perm[i]`` on selected rows, ``x_i`` elsewhere.
    perm : Tensor, shape (B,)
        Index of each row's mixing partner.
    lam : Tensor, shape (B,)
        Mixing weight on the row's own sample (1 on rows that were not mixed).
    selected : Tensor, shape (B,), bool
        Rows that were mixed.
    """

    voxels: Tensor
    perm: Tensor
    lam: Tensor
    selected: Tensor


def mixco_voxels(
    voxels: Tensor,
    beta: float = 0.15,
    mix_probability: float = 0.5,
    generator: torch.Generator | None = None,
) -> MixcoBatch:
    """Mix each selected row of a voxel batch with a randomly permuted partner (MixCo).

    Each row is selected with probability ``mix_probability`` (MindEye: half of the batch); a
    selected row ``i`` becomes ``λ_i x_i + (1 - λ_i) x_perm[i]`` with ``λ_i ~ Beta(beta, beta)``.
    The input is not modified.

    Parameters
    ----------
    voxels : Tensor, shape (B, V)
        Brain responses of one subject.
    beta : float
        Both concentration parameters of the Beta distribution (MindEye: 0.15, so λ is mostly
        near 0 or 1).
    mix_probability : float
        Probability that a row is mixed.
    generator : torch.Generator, optional
        Random source (on the CPU) for reproducible mixing.

    Returns
    -------
    MixcoBatch
    """
    n = voxels.shape[0]
    perm = torch.randperm(n, generator=generator)
    # Beta sampling through two Gamma draws so that ``generator`` is honoured.
    gamma_a = torch._standard_gamma(torch.full((n,), float(beta)), generator=generator)
    gamma_b = torch._standard_gamma(torch.full((n,), float(beta)), generator=generator)
    lam = gamma_a / (gamma_a + gamma_b).clamp_min(torch.finfo(torch.float32).tiny)
    lam = torch.nan_to_num(lam, nan=1.0)
    selected = torch.rand(n, generator=generator) < mix_probability
    lam = torch.where(selected, lam, torch.ones_like(lam))
    perm, lam, selected = (t.to(voxels.device) for t in (perm, lam, selected))
    lam = lam.to(voxels.dtype)
    shape = [-1] + [1] * (voxels.ndim - 1)
    mixed = voxels * lam.view(shape) + voxels[perm] * (1 - lam).view(shape)
    return MixcoBatch(voxels=mixed, perm=perm, lam=lam, selected=selected)


def mixco_loss(
    pred: Tensor,
    target: Tensor,
    perm: Tensor | None = None,
    lam: Tensor | None = None,
    temperature: float = 0.006,
) -> Tensor:
    """Bidirectional MixCo loss (BiMixCo) with soft targets λ on self and 1-λ on the partner.

    Row ``i`` of the brain -> image logits gets target weight ``λ_i`` on column ``i`` and
    ``1 - λ_i`` on column ``perm[i]``; the image -> brain direction uses the transposed target
    matrix; the two cross-entropies are averaged. With ``λ = 1`` (or ``perm``/``lam`` omitted)
    this is exactly :func:`clip_loss`. Unlike MindEye's code, a row whose partner is itself
    keeps total weight 1 on the diagonal (weights are added, not overwritten).

    Parameters
    ----------
    pred : Tensor, shape (B, *shape)
        Embeddings predicted from the *mixed* voxels.
    target : Tensor, shape (B, *shape)
        True (unmixed) image embeddings.
    perm, lam : Tensor, shape (B,)
        From :class:`MixcoBatch`.
    temperature : float
        Softmax temperature (MindEye: 0.006).

    Returns
    -------
    Tensor, shape ()
    """
    if perm is None or lam is None:
        return clip_loss(pred, target, temperature)
    logits = _logits(pred, target, temperature)
    n = logits.shape[0]
    rows = torch.arange(n, device=logits.device)
    soft = torch.zeros_like(logits)
    soft[rows, rows] = lam.to(logits.dtype)
    soft.index_put_((rows, perm.to(logits.device)), (1 - lam).to(logits.dtype), accumulate=True)
    loss_b2i = -(logits.log_softmax(-1) * soft).sum(-1).mean()
    loss_i2b = -(logits.T.log_softmax(-1) * soft.T).sum(-1).mean()
    return 0.5 * (loss_b2i + loss_i2b)


def soft_clip_loss(pred: Tensor, target: Tensor, temperature: float) -> Tensor:
    """SoftCLIP loss: cross-entropy against the targets' own similarity distribution.

    Soft labels ``softmax(t tᵀ / τ)`` (rows of the image-image similarity) score the
    predictions ``log_softmax(p tᵀ / τ)`` row-wise and, for the other direction, column-wise
    (``log_softmax`` of the transposed logits against the same soft labels, which are
    symmetric); the two are averaged.

    Parameters
    ----------
    pred, target : Tensor, shape (B, *shape)
        Brain-derived and true embeddings; flattened and L2-normalised here.
    temperature : float
        τ, see :func:`cosine_temperature`.

    Returns
    -------
    Tensor, shape ()
    """
    logits = _logits(pred, target, temperature)
    t = normalize_flat(target)
    soft = (t @ t.T / temperature).softmax(-1)
    loss_b2i = -(logits.log_softmax(-1) * soft).sum(-1).mean()
    loss_i2b = -(logits.T.log_softmax(-1) * soft).sum(-1).mean()
    return 0.5 * (loss_b2i + loss_i2b)


def cosine_temperature(step: int, n_steps: int, start: float = 0.004, end: float = 0.0075) -> float:
    """SoftCLIP temperature at ``step`` of a cosine schedule from ``start`` to ``end``.

    ``τ(s) = end + (start - end) / 2 * (1 + cos(π s / (n_steps - 1)))``: ``τ(0) = start``,
    ``τ(n_steps - 1) = end`` (MindEye1's ``cosine_anneal``). Steps outside ``[0, n_steps - 1]``
    are clamped; a one-step schedule returns ``start``.

    Parameters
    ----------
    step : int
        Position in the schedule (MindEye: epoch since SoftCLIP began).
    n_steps : int
        Length of the schedule (MindEye: number of SoftCLIP epochs).
    start, end : float
        Temperatures at the first and last step.

    Returns
    -------
    float
    """
    if n_steps <= 1:
        return float(start)
    s = min(max(int(step), 0), n_steps - 1)
    return float(end + (start - end) / 2 * (1 + math.cos(math.pi * s / (n_steps - 1))))


def mse_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over all elements (no normalisation), for regression objectives.

    Parameters
    ----------
    pred, target : Tensor, shape (B, *shape)

    Returns
    -------
    Tensor, shape ()
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"pred has shape {tuple(pred.shape)} but target has shape {tuple(target.shape)}; "
            "expected the same shape."
        )
    return F.mse_loss(pred, target)
