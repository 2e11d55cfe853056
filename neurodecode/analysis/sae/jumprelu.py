"""JumpReLU SAE (Rajamanoharan et al. 2024b): a learned threshold trained through a rectangle-kernel
straight-through estimator, with an L0 penalty."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from neurodecode.analysis.sae.core import SparseAutoencoder, register_sae


class _JumpReLUFunction(torch.autograd.Function):
    """``z * H(z - θ)`` with the rectangle-kernel pseudo-derivative for ``θ``.

    d/dz = H(z - θ); d/dθ = -(θ/ε) K((z - θ)/ε), K(u) = 1 for |u| < ½ (Rajamanoharan et al. 2024b).
    """

    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        kernel = (((pre - threshold) / eps).abs() < 0.5).to(pre.dtype)
        grad_pre = grad * (pre > threshold).to(pre.dtype)
        grad_threshold = (-(threshold / eps) * kernel * grad).sum_to_size(threshold.shape)
        return grad_pre, grad_threshold, None


class _StepFunction(torch.autograd.Function):
    """Heaviside ``H(z - θ)``: d/dz = 0; d/dθ = -(1/ε) K((z - θ)/ε)."""

    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        kernel = (((pre - threshold) / eps).abs() < 0.5).to(pre.dtype)
        grad_threshold = (-(1.0 / eps) * kernel * grad).sum_to_size(threshold.shape)
        return torch.zeros_like(pre), grad_threshold, None


def jumprelu(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """JumpReLU ``pre * H(pre - threshold)`` with the straight-through threshold gradient."""
    return _JumpReLUFunction.apply(pre, threshold, bandwidth)


def heaviside_step(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """Heaviside ``H(pre - threshold)`` with the straight-through threshold gradient."""
    return _StepFunction.apply(pre, threshold, bandwidth)


@register_sae
class JumpReLUSAE(SparseAutoencoder):
    """JumpReLU latents ``z · H(z - θ)`` with a learned per-latent threshold and an L0 penalty.

    ``θ = exp(log_threshold)`` is trained through the rectangle-kernel straight-through estimator
    of bandwidth ``ε``. Hyperparameters: ``l0_coefficient`` (λ, 1.0), ``bandwidth`` (ε, default
    0.001 as in the paper, on activations normalised to ``E||x||² = d``), ``initial_threshold``
    (0.001).
    """

    architecture = "jumprelu"
    hyperparameters: ClassVar[dict[str, Any]] = {
        "l0_coefficient": 1.0,
        "bandwidth": 0.001,
        "initial_threshold": 0.001,
    }

    def __init__(self, d_in: int, n_latents: int, **kwargs: Any) -> None:
        super().__init__(d_in, n_latents, **kwargs)
        initial = math.log(float(self.options["initial_threshold"]))
        self.log_threshold = nn.Parameter(torch.full((self.n_latents,), initial))

    @property
    def threshold(self) -> Tensor:
        """Per-latent threshold θ, shape (n_latents,)."""
        return self.log_threshold.exp()

    def activate(self, pre: Tensor) -> Tensor:
        return jumprelu(pre, self.threshold, float(self.options["bandwidth"]))

    def sparsity_loss(self, pre: Tensor, latents: Tensor) -> Tensor:
        l0 = heaviside_step(pre, self.threshold, float(self.options["bandwidth"])).sum(-1).mean()
        return self.options["l0_coefficient"] * l0
