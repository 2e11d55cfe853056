"""Stitching SAEs of different sizes (Bussmann et al. 2024): which latents of a larger SAE are new.

Owns the classification of a larger SAE's latents against a smaller one's by the maximum cosine
similarity of their decoder directions: a latent whose best match in the small SAE is at least
``threshold`` is a *reconstruction* latent (it re-learns a direction the small SAE has), the rest
are *novel* latents.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from neurodecode.validation import InvalidInputError


@dataclass
class LatentMatch:
    """How each large-SAE latent matches the small SAE.

    Attributes
    ----------
    max_cosine : ndarray, shape (n_large,), float64
        Best cosine of each large decoder row to any small decoder row, in [-1, 1].
    best_small : ndarray, shape (n_large,), int64
        Index of that best small latent.
    novel : ndarray, shape (n_large,), bool
        ``max_cosine < threshold``.
    threshold : float
    """

    max_cosine: np.ndarray
    best_small: np.ndarray
    novel: np.ndarray
    threshold: float

    @property
    def novel_fraction(self) -> float:
        """Fraction of the large SAE's latents that are novel."""
        return float(self.novel.mean())


def _unit(name: str, rows: np.ndarray | Tensor) -> Tensor:
    array = (
        rows.detach().cpu().double()
        if isinstance(rows, Tensor)
        else torch.as_tensor(np.asarray(rows, dtype=np.float64))
    )
    if array.ndim != 2 or array.shape[0] < 1:
        raise InvalidInputError(f"{name} must be a non-empty 2-D array; got {tuple(array.shape)}.")
    if not torch.isfinite(array).all():
        raise InvalidInputError(f"{name} contains NaN or infinite values.")
    return array / torch.linalg.vector_norm(array, dim=1, keepdim=True).clamp_min(1e-12)


def classify_latents(
    small_decoder: np.ndarray | Tensor, large_decoder: np.ndarray | Tensor, threshold: float = 0.7
) -> LatentMatch:
    """Split the larger SAE's latents into novel and reconstruction latents.

    Parameters
    ----------
    small_decoder : array, shape (n_small, d)
        Decoder rows (``W_dec``) of the smaller SAE.
    large_decoder : array, shape (n_large, d)
        Decoder rows of the larger SAE, same ``d``.
    threshold : float
        Cosine at or above which a large latent counts as a reconstruction latent; in (-1, 1].
    """
    if not -1.0 < threshold <= 1.0:
        raise InvalidInputError(f"threshold must be in (-1, 1]; got {threshold}.")
    small = _unit("small_decoder", small_decoder)
    large = _unit("large_decoder", large_decoder)
    if small.shape[1] != large.shape[1]:
        raise InvalidInputError(
            f"small_decoder {tuple(small.shape)} and large_decoder {tuple(large.shape)} must share "
            "their second (feature) dimension."
        )
    best = (large @ small.T).max(dim=1)
    max_cosine = best.values.numpy()
    return LatentMatch(
        max_cosine=max_cosine,
        best_small=best.indices.numpy().astype(np.int64),
        novel=max_cosine < threshold,
        threshold=float(threshold),
    )
