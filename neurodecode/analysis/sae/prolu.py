"""ProLU SAE (Taggart 2024, "ProLU: A Nonlinearity for Sparse Autoencoders"): the encoder bias
only gates a latent, it never shifts its value, so an active latent is the plain projection ``m``.

``ProLU(m, b) = m · H(m) · H(m + b)``; its true derivative in ``b`` is zero almost everywhere, so
training uses one of the post's two pseudo-derivatives (``g`` the incoming gradient, ``a = H(m)
H(m + b)`` the gate):

- ``ProLU_ReLU`` (``variant="relu"``): ``∂/∂m = a``, ``∂/∂b = a`` — the gradient of
  ``ReLU(m + b)`` on the active set.
- ``ProLU_STE`` (``variant="ste"``): ``∂/∂b = a · m`` and ``∂/∂m = a · (1 + m)`` — the output read
  as ``m · H(m + b)`` with the step's derivative replaced by 1 (a straight-through estimator).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from neurodecode.analysis.sae.core import SparseAutoencoder, register_sae
from neurodecode.validation import check_option

#: the two pseudo-derivatives of the post.
PROLU_VARIANTS = ("relu", "ste")


class _ProLUFunction(torch.autograd.Function):
    """``m · H(m) · H(m + b)`` with the ProLU_ReLU or ProLU_STE backward pass."""

    @staticmethod
    def forward(ctx, m: Tensor, b: Tensor, variant: str) -> Tensor:
        gate = (m > 0) & (m + b > 0)
        ctx.save_for_backward(m, gate)
        ctx.variant = variant
        ctx.b_shape = b.shape
        return torch.where(gate, m, torch.zeros_like(m))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        m, gate = ctx.saved_tensors
        gated = grad * gate.to(grad.dtype)
        if ctx.variant == "ste":
            grad_b = gated * m
            grad_m = gated + grad_b
        else:
            grad_b = gated
            grad_m = gated
        # b broadcasts over the batch: sum its gradient back to its own shape
        return grad_m, grad_b.sum_to_size(ctx.b_shape), None


def prolu(m: Tensor, b: Tensor, variant: str = "ste") -> Tensor:
    """ProLU activation with the chosen pseudo-derivative.

    Parameters
    ----------
    m : Tensor, shape (batch, n_latents)
        Bias-free projections ``W_encᵀ(x̃ - b_dec)``.
    b : Tensor, shape (n_latents,) or (batch, n_latents)
        Gating bias; a latent fires where ``m > 0`` and ``m + b > 0``.
    variant : {"relu", "ste"}
        ``ProLU_ReLU`` or ``ProLU_STE`` gradient (module docstring).

    Returns
    -------
    Tensor, shape (batch, n_latents)
        ``m`` where the gate is open, else 0.
    """
    check_option("variant", variant, PROLU_VARIANTS)
    return _ProLUFunction.apply(m, b, variant)


@register_sae
class ProLUSAE(SparseAutoencoder):
    """ProLU latents ``m · H(m) · H(m + b_enc)`` with ``m = W_encᵀ(x̃ - b_dec)`` and a
    decoder-norm-weighted L1 penalty ``λ Σ_i z_i ||W_dec,i||``.

    Hyperparameters: ``l1_coefficient`` (λ, 5.0 with ``E||x||² = d``), ``variant`` (``"ste"``
    for ProLU_STE, ``"relu"`` for ProLU_ReLU).
    """

    architecture = "prolu"
    hyperparameters: ClassVar[dict[str, Any]] = {"l1_coefficient": 5.0, "variant": "ste"}

    def __init__(self, d_in: int, n_latents: int, **kwargs: Any) -> None:
        super().__init__(d_in, n_latents, **kwargs)
        check_option("variant", self.options["variant"], PROLU_VARIANTS)

    def activate(self, pre: Tensor) -> Tensor:
        # pre = m + b_enc (the base class adds the bias); recover the bias-free projection
        return prolu(pre - self.b_enc, self.b_enc, self.options["variant"])

    def sparsity_loss(self, pre: Tensor, latents: Tensor) -> Tensor:
        weighted = latents * self.decoder_norms()
        return self.options["l1_coefficient"] * weighted.sum(-1).mean()
