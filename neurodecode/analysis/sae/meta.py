"""Meta-SAEs (Bussmann et al. 2024, "Showing SAE latents are not atomic using meta-SAEs").

Owns :func:`train_meta_sae`: a BatchTopK SAE trained on another SAE's decoder directions (one row
per latent, unit norm), and :class:`MetaSAEResult`, which says how each latent decomposes into
meta-latents and which meta-latents are shared by several latents. A latent that needs more than
one meta-latent is not atomic: its direction is a composition of directions other latents reuse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from neurodecode.analysis.sae.core import SparseAutoencoder, create_sae
from neurodecode.analysis.sae.metrics import fraction_of_variance_unexplained
from neurodecode.analysis.sae.training import ArrayActivationDataModule, encode_rows, train_sae
from neurodecode.validation import InvalidInputError


@dataclass
class MetaSAEResult:
    """A meta-SAE and the decomposition of every latent it was trained on.

    Attributes
    ----------
    meta_sae : SparseAutoencoder
        The BatchTopK meta-SAE (input width = the SAE's ``d``).
    codes : ndarray, shape (n_latents, n_meta_latents), float32
        Meta-latent activations of each (unit-norm) decoder row, inference rule.
    fvu : float
        Fraction of the decoder directions' variance the meta-SAE leaves unexplained.
    """

    meta_sae: SparseAutoencoder
    codes: np.ndarray
    fvu: float

    @property
    def l0(self) -> float:
        """Mean number of meta-latents per latent."""
        return float((self.codes > 0).sum(1).mean())

    def usage(self) -> np.ndarray:
        """Number of latents each meta-latent takes part in, shape (n_meta_latents,), int64."""
        return (self.codes > 0).sum(0).astype(np.int64)

    def shared_meta_latents(self, min_latents: int = 2) -> np.ndarray:
        """Boolean (n_meta_latents,): meta-latents used by at least ``min_latents`` latents."""
        return self.usage() >= int(min_latents)

    def decomposition(self, latent: int) -> list[tuple[int, float]]:
        """(meta-latent, activation) pairs of one latent, strongest first."""
        if not 0 <= latent < len(self.codes):
            raise InvalidInputError(f"latent must be in 0..{len(self.codes) - 1}; got {latent}.")
        row = self.codes[latent]
        order = np.argsort(-row)
        return [(int(j), float(row[j])) for j in order if row[j] > 0]


def _decoder_rows(decoder: np.ndarray | Tensor | SparseAutoencoder) -> np.ndarray:
    if isinstance(decoder, SparseAutoencoder):
        decoder = decoder.W_dec
    if isinstance(decoder, Tensor):
        decoder = decoder.detach().cpu().numpy()
    rows = np.asarray(decoder, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[0] < 2:
        raise InvalidInputError(
            f"decoder must be (n_latents >= 2, d) decoder rows; got shape {rows.shape}."
        )
    if not np.isfinite(rows).all():
        raise InvalidInputError("decoder contains NaN or infinite values.")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InvalidInputError("decoder has all-zero rows; drop them before a meta-SAE.")
    return (rows / norms).astype(np.float32)


def train_meta_sae(
    decoder: np.ndarray | Tensor | SparseAutoencoder,
    n_meta_latents: int,
    k: int = 4,
    steps: int = 2000,
    lr: float = 2e-3,
    batch_size: int = 1024,
    accelerator: str = "cpu",
    seed: int = 0,
) -> MetaSAEResult:
    """Train a BatchTopK meta-SAE on the unit-norm decoder directions of an SAE.

    Parameters
    ----------
    decoder : array, shape (n_latents, d), or SparseAutoencoder
        Decoder rows (``W_dec``); each is rescaled to unit norm, so only directions count.
    n_meta_latents : int
        Meta-dictionary size (usually smaller than ``n_latents``).
    k : int
        Mean meta-latents per row over a batch (BatchTopK).
    steps, lr, batch_size, accelerator, seed
        Training options of :func:`~neurodecode.analysis.sae.training.train_sae`; the batch is
        capped at ``n_latents`` rows.

    Returns
    -------
    MetaSAEResult
    """
    rows = _decoder_rows(decoder)
    if n_meta_latents < 1 or k < 1:
        raise InvalidInputError(f"n_meta_latents and k must be >= 1; got {n_meta_latents}, {k}.")
    torch.manual_seed(seed)
    meta = create_sae("batchtopk", rows.shape[1], int(n_meta_latents), k=int(k))
    data = ArrayActivationDataModule(rows, batch_size=batch_size, eval_fraction=0.0, seed=seed)
    module = train_sae(
        meta, data, steps=steps, lr=lr, decay_fraction=0.2, accelerator=accelerator, seed=seed
    )
    meta = module.sae.cpu().eval()
    inputs = torch.from_numpy(rows)
    codes = encode_rows(meta, inputs)
    with torch.no_grad():
        reconstruction = meta.decode(codes)
    return MetaSAEResult(
        meta_sae=meta,
        codes=codes.numpy().astype(np.float32),
        fvu=fraction_of_variance_unexplained(inputs, reconstruction),
    )
