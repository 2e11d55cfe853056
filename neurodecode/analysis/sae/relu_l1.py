"""ReLU-L1 SAE: ReLU latents with a decoder-norm-weighted L1 penalty (Bricken et al. 2023;
Anthropic's April 2024 update)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from neurodecode.analysis.sae.core import SparseAutoencoder, register_sae


@register_sae
class ReLUL1SAE(SparseAutoencoder):
    """ReLU latents with a decoder-norm-weighted L1 penalty ``λ Σ_i z_i ||W_dec,i||``.

    Hyperparameters: ``l1_coefficient`` (λ, default 5.0 with ``E||x||² = d``).
    """

    architecture = "relu_l1"
    hyperparameters: ClassVar[dict[str, Any]] = {"l1_coefficient": 5.0}

    def activate(self, pre: Tensor) -> Tensor:
        return torch.relu(pre)

    def sparsity_loss(self, pre: Tensor, latents: Tensor) -> Tensor:
        weighted = latents * self.decoder_norms()
        return self.options["l1_coefficient"] * weighted.sum(-1).mean()
