"""Metrics for SAEs and transcoders, computed over a whole evaluation set.

Owns: fraction of variance unexplained (FVU), L0, dead and dense latent fractions, the feature
density histogram, the relative reconstruction bias in its two closed forms, and the downstream
drop when a layer's activations are replaced by reconstructions.

Conventions (see ``REFERENCES.md``):

- FVU = Σ‖x - x̂‖² / Σ‖x - x̄‖², x̄ the per-dimension mean over the evaluation set, all sums
  accumulated in float64 over every batch (not a mean of per-batch ratios).
- Relative reconstruction bias γ (Wright & Sharkey 2024; Rajamanoharan et al. 2024a):
  ``gamma_rescale_reconstruction`` = E‖x̂‖² / E[x·x̂] (the γ for which x̂/γ best matches x) and
  ``gamma_rescale_input`` = E[x·x̂] / E‖x‖² (the γ for which γ·x best matches x̂). Both are 1 for
  an unbiased reconstruction and < 1 under shrinkage; they agree in 1-D and differ in general.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from neurodecode.validation import InvalidInputError


def _as_float64(array: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(array, Tensor):
        array = array.detach().cpu().numpy()
    return np.asarray(array, dtype=np.float64)


class ReconstructionMetrics:
    """Streaming accumulator of reconstruction and sparsity statistics (float64).

    Parameters
    ----------
    n_latents : int, optional
        Number of latents; needed for latent statistics (pass ``latents`` to :meth:`update`).
    dense_threshold : float
        A latent firing on more than this fraction of rows counts as dense (default 0.1).
    """

    def __init__(self, n_latents: int | None = None, dense_threshold: float = 0.1) -> None:
        self.n_latents = n_latents
        self.dense_threshold = float(dense_threshold)
        self.n_rows = 0
        # per-dimension running mean and sum of squared deviations (Chan et al. merge)
        self.mean_x: np.ndarray | None = None
        self.m2_x: np.ndarray | None = None
        self.sum_sq_error = 0.0
        self.sum_dot = 0.0
        self.sum_x_norm_sq = 0.0
        self.sum_xhat_norm_sq = 0.0
        self.active_count = 0.0
        self.fire_count = None if n_latents is None else np.zeros(n_latents, dtype=np.int64)

    def update(
        self,
        x: np.ndarray | Tensor,
        x_hat: np.ndarray | Tensor,
        latents: np.ndarray | Tensor | None = None,
    ) -> None:
        """Add one batch: ``x``, ``x_hat`` (batch, d) and optionally ``latents`` (batch, n)."""
        x, x_hat = _as_float64(x), _as_float64(x_hat)
        if x.shape != x_hat.shape or x.ndim != 2:
            raise InvalidInputError(
                f"x and x_hat must both be (batch, d); got {x.shape} and {x_hat.shape}."
            )
        if self.mean_x is None:
            self.mean_x = np.zeros(x.shape[1])
            self.m2_x = np.zeros(x.shape[1])
        n_batch = x.shape[0]
        if n_batch == 0:
            return
        batch_mean = x.mean(0)
        batch_m2 = ((x - batch_mean) ** 2).sum(0)
        total = self.n_rows + n_batch
        delta = batch_mean - self.mean_x
        self.m2_x += batch_m2 + delta**2 * self.n_rows * n_batch / total
        self.mean_x += delta * n_batch / total
        self.n_rows = total
        self.sum_sq_error += float(((x - x_hat) ** 2).sum())
        self.sum_dot += float((x * x_hat).sum())
        self.sum_x_norm_sq += float((x**2).sum())
        self.sum_xhat_norm_sq += float((x_hat**2).sum())
        if latents is not None:
            if self.fire_count is None:
                raise InvalidInputError("pass n_latents to ReconstructionMetrics to track latents.")
            active = _as_float64(latents) != 0
            self.active_count += float(active.sum())
            self.fire_count += active.sum(0)

    def compute(self) -> dict[str, Any]:
        """The metrics over everything seen so far (see :func:`evaluate_reconstruction`)."""
        if self.n_rows == 0:
            raise InvalidInputError("no rows were given to ReconstructionMetrics.")
        total_variance = float(self.m2_x.sum())
        out: dict[str, Any] = {
            "n_rows": self.n_rows,
            "fvu": self.sum_sq_error / total_variance if total_variance > 0 else float("nan"),
            "mse": self.sum_sq_error / (self.n_rows * self.mean_x.size),
            **_bias_from_sums(self.sum_dot, self.sum_x_norm_sq, self.sum_xhat_norm_sq),
        }
        if self.fire_count is not None:
            density = self.fire_count / self.n_rows
            out.update(
                l0=self.active_count / self.n_rows,
                dead_fraction=float((self.fire_count == 0).mean()),
                dense_fraction=float((density > self.dense_threshold).mean()),
                density_histogram=feature_density_histogram(density),
            )
        return out


def _bias_from_sums(dot: float, x_sq: float, xhat_sq: float) -> dict[str, float]:
    return {
        "gamma_rescale_reconstruction": xhat_sq / dot if dot != 0 else float("nan"),
        "gamma_rescale_input": dot / x_sq if x_sq != 0 else float("nan"),
    }


def fraction_of_variance_unexplained(x: np.ndarray | Tensor, x_hat: np.ndarray | Tensor) -> float:
    """FVU = Σ‖x - x̂‖² / Σ‖x - x̄‖² over all rows, per-dimension mean x̄, in float64.

    Parameters
    ----------
    x, x_hat : array, shape (n, d)
    """
    metrics = ReconstructionMetrics()
    metrics.update(x, x_hat)
    return metrics.compute()["fvu"]


def relative_reconstruction_bias(
    x: np.ndarray | Tensor, x_hat: np.ndarray | Tensor
) -> dict[str, float]:
    """Both closed forms of the shrinkage γ, named for what they rescale.

    Parameters
    ----------
    x, x_hat : array, shape (n, d)

    Returns
    -------
    dict
        ``gamma_rescale_reconstruction`` = E‖x̂‖² / E[x·x̂] and ``gamma_rescale_input`` =
        E[x·x̂] / E‖x‖².
    """
    x, x_hat = _as_float64(x), _as_float64(x_hat)
    return _bias_from_sums(float((x * x_hat).sum()), float((x**2).sum()), float((x_hat**2).sum()))


def feature_density_histogram(density: np.ndarray, n_bins: int = 20) -> dict[str, Any]:
    """Histogram of log10 firing frequency over latents; dead latents counted apart.

    Parameters
    ----------
    density : array, shape (n_latents,)
        Fraction of rows on which each latent fires.

    Returns
    -------
    dict
        ``log10_edges`` (n_bins + 1), ``counts`` (n_bins) over latents that fire, and ``dead``.
    """
    density = np.asarray(density, dtype=np.float64)
    alive = density[density > 0]
    low = min(-6.0, float(np.floor(np.log10(alive.min())))) if alive.size else -6.0
    edges = np.linspace(low, 0.0, n_bins + 1)
    counts, _ = np.histogram(np.log10(alive), bins=edges)
    return {
        "log10_edges": edges.tolist(),
        "counts": counts.tolist(),
        "dead": int((density == 0).sum()),
    }


def downstream_drop(
    downstream: Callable[[np.ndarray | Tensor], float],
    activations: np.ndarray | Tensor,
    reconstructions: np.ndarray | Tensor,
) -> dict[str, float]:
    """Score a downstream task with original and with reconstructed activations.

    Parameters
    ----------
    downstream : callable
        ``downstream(activations) -> score`` (higher is better), e.g. the rest of a network
        followed by zero-shot accuracy.
    activations, reconstructions : array, shape (n, ...)

    Returns
    -------
    dict
        ``original``, ``reconstructed`` and ``drop`` = original - reconstructed.
    """
    original = float(downstream(activations))
    reconstructed = float(downstream(reconstructions))
    return {"original": original, "reconstructed": reconstructed, "drop": original - reconstructed}


@torch.no_grad()
def evaluate_reconstruction(
    sae: torch.nn.Module,
    batches: Iterable[Tensor | tuple[Tensor, Tensor]],
    dense_threshold: float = 0.1,
) -> dict[str, Any]:
    """Run an SAE/transcoder over evaluation batches and return every metric.

    Parameters
    ----------
    sae : SparseAutoencoder
    batches : iterable
        Raw input rows (batch, d_in), or (inputs, targets) pairs for a transcoder.

    Returns
    -------
    dict
        ``fvu``, ``mse`` (raw units, per element), ``l0``, ``dead_fraction``,
        ``dense_fraction``, ``density_histogram``, ``gamma_rescale_reconstruction``,
        ``gamma_rescale_input``, ``n_rows``.
    """
    was_training = sae.training
    sae.eval()
    metrics = ReconstructionMetrics(sae.n_latents, dense_threshold)
    for batch in batches:
        x, target = batch if isinstance(batch, list | tuple) else (batch, batch)
        x = x.to(sae.W_enc)
        out = sae(x)
        metrics.update(target, out.output, out.latents)
    sae.train(was_training)
    return metrics.compute()
