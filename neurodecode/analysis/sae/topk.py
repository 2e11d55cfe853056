"""TopK SAE with the AuxK dead-latent loss (Gao et al. 2024) and BatchTopK (Bussmann et al. 2024:
the ``k * batch`` largest latents over the batch; a threshold estimated in training at inference)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from neurodecode.analysis.sae.core import SparseAutoencoder, register_sae


class _AuxKMixin(SparseAutoencoder):
    """AuxK: reconstruct the residual from the top ``k_aux`` dead latents (Gao et al. 2024).

    ``aux = coefficient · ||e - ê||² / ||e - mean(e)||²`` with residual ``e = x - x̂`` (stop
    gradient; ``x̂`` already holds ``b_dec``) and ``ê = z_aux W_dec`` with **no** ``b_dec``, so the
    bias is counted once. ``k_aux`` defaults to ``d_out // 2``.
    """

    def auxk_terms(
        self, x: Tensor, target: Tensor | None = None
    ) -> tuple[Tensor, Tensor] | tuple[None, None]:
        """(residual, aux reconstruction), normalised units, or (None, None) if nothing is dead."""
        xn = x * self.input_scale
        tn = (x if target is None else target) * self.output_scale
        pre = self.pre_activations(xn)
        output = self._decode_normalised(self.training_latents(pre), xn)
        return self._auxk_reconstruction(tn, pre, output)

    def _auxk_reconstruction(
        self, target_normalised: Tensor, pre: Tensor, output: Tensor
    ) -> tuple[Tensor, Tensor] | tuple[None, None]:
        dead = self.dead_mask()
        n_dead = int(dead.sum())
        if n_dead == 0:
            return None, None
        k_aux = self.options["k_aux"] or self.d_out // 2
        k_aux = min(int(k_aux), n_dead)
        masked = pre.masked_fill(~dead, float("-inf"))
        values, indices = masked.topk(k_aux, dim=-1)
        aux_latents = torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))
        residual = (target_normalised - output).detach()
        return residual, aux_latents @ self.W_dec

    def auxiliary_loss(
        self, x_normalised: Tensor, target_normalised: Tensor, pre: Tensor, output: Tensor
    ) -> Tensor:
        residual, aux_output = self._auxk_reconstruction(target_normalised, pre, output)
        if residual is None:
            return pre.new_zeros(())
        error = (aux_output - residual).pow(2).sum(-1).mean()
        variance = (residual - residual.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
        return self.options["aux_coefficient"] * torch.nan_to_num(error / variance)


@register_sae
class TopKSAE(_AuxKMixin):
    """Keep the ``k`` largest (ReLU'd) pre-activations of each row; AuxK for dead latents.

    Hyperparameters: ``k`` (32), ``k_aux`` (None → ``d_out // 2``), ``aux_coefficient`` (1/32).
    """

    architecture = "topk"
    hyperparameters: ClassVar[dict[str, Any]] = {"k": 32, "k_aux": None, "aux_coefficient": 1 / 32}

    def activate(self, pre: Tensor) -> Tensor:
        k = min(int(self.options["k"]), self.n_latents)
        values, indices = pre.topk(k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))


@register_sae
class BatchTopKSAE(_AuxKMixin):
    """Keep the ``k · batch`` largest activations over a training batch (Bussmann et al. 2024).

    At inference latents pass where ``pre > threshold``; the threshold is an exponential moving
    average (``threshold_momentum``) of the smallest activation kept in each training batch.
    Hyperparameters: ``k`` (32), ``k_aux``, ``aux_coefficient`` (1/32), ``threshold_momentum``
    (0.01).
    """

    architecture = "batchtopk"
    hyperparameters: ClassVar[dict[str, Any]] = {
        "k": 32,
        "k_aux": None,
        "aux_coefficient": 1 / 32,
        "threshold_momentum": 0.01,
    }

    def __init__(self, d_in: int, n_latents: int, **kwargs: Any) -> None:
        super().__init__(d_in, n_latents, **kwargs)
        self.register_buffer("threshold", torch.full((), -1.0))  # < 0: not estimated yet

    def activate(self, pre: Tensor) -> Tensor:
        threshold = self.threshold.clamp_min(0.0)
        return torch.relu(pre) * (pre > threshold).to(pre.dtype)

    def training_latents(self, pre: Tensor) -> Tensor:
        flat = torch.relu(pre).flatten()
        n_keep = min(int(self.options["k"]) * pre.shape[0], flat.numel())
        values, indices = flat.topk(n_keep)
        latents = torch.zeros_like(flat).scatter(0, indices, values).view_as(pre)
        if self.training:
            with torch.no_grad():
                positive = values[values > 0]
                if positive.numel():
                    smallest = positive.min()
                    if self.threshold < 0:
                        self.threshold.copy_(smallest)
                    else:
                        m = self.options["threshold_momentum"]
                        self.threshold.mul_(1 - m).add_(m * smallest)
        return latents
