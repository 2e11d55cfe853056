"""Gated SAE (Rajamanoharan et al. 2024a): gate and magnitude paths with shared weights, and an
auxiliary reconstruction through a frozen copy of the decoder."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from neurodecode.analysis.sae.core import SparseAutoencoder, register_sae


@register_sae
class GatedSAE(SparseAutoencoder):
    """Gated SAE: a gate path decides which latents fire, a magnitude path how much.

    ``π_gate = W_encᵀ(x - b_dec) + b_gate``, ``π_mag = exp(r_mag) ⊙ W_encᵀ(x - b_dec) + b_mag``,
    ``z = H(π_gate) ⊙ ReLU(π_mag)``. Loss: ``||x - x̂||² + λ Σ ReLU(π_gate)·||W_dec,i|| +
    ||x - x̂_frozen(ReLU(π_gate))||²`` where ``x̂_frozen`` uses stop-gradient copies of ``W_dec``
    and ``b_dec`` — the auxiliary term trains the gate only. Hyperparameters: ``l1_coefficient``
    (λ, 5.0).
    """

    architecture = "gated"
    hyperparameters: ClassVar[dict[str, Any]] = {"l1_coefficient": 5.0}

    def __init__(self, d_in: int, n_latents: int, **kwargs: Any) -> None:
        super().__init__(d_in, n_latents, **kwargs)
        self.r_mag = nn.Parameter(torch.zeros(self.n_latents))
        self.b_mag = nn.Parameter(torch.zeros(self.n_latents))

    def _gate_and_magnitude(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        # pre = W_encᵀ(x - b_dec) + b_enc (b_enc is the gate bias); recover the shared projection
        projection = pre - self.b_enc
        magnitude = projection * self.r_mag.exp() + self.b_mag
        return pre, magnitude

    def activate(self, pre: Tensor) -> Tensor:
        gate, magnitude = self._gate_and_magnitude(pre)
        return (gate > 0).to(pre.dtype) * torch.relu(magnitude)

    def sparsity_loss(self, pre: Tensor, latents: Tensor) -> Tensor:
        gate = torch.relu(pre)
        return self.options["l1_coefficient"] * (gate * self.decoder_norms()).sum(-1).mean()

    def frozen_decoder_loss(
        self, x_normalised: Tensor, target_normalised: Tensor, pre: Tensor
    ) -> Tensor:
        """``||t - (ReLU(π_gate) W_dec' + b_dec')||²`` with ``W_dec'``, ``b_dec'`` detached."""
        gate = torch.relu(pre)
        frozen = gate @ self.W_dec.detach() + self.b_dec.detach()
        if self.skip_connection:
            frozen = frozen + x_normalised @ self.W_skip.detach()
        return (frozen - target_normalised).pow(2).sum(-1).mean()

    def auxiliary_loss(
        self, x_normalised: Tensor, target_normalised: Tensor, pre: Tensor, output: Tensor
    ) -> Tensor:
        return self.frozen_decoder_loss(x_normalised, target_normalised, pre)
