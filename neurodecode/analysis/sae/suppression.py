"""The feature-suppression fix (Wright & Sharkey 2024, "Addressing Feature Suppression in SAEs"):
an L1 penalty shrinks every active latent, so after L1 training each latent is rescaled by the
factor that best reconstructs the training rows, and the SAE's sparsity pattern is kept.

The factors solve one least-squares problem in closed form. With ``z`` the latents, ``d_i`` the
decoder rows and ``t`` the (normalised) target, ``s = argmin Σ_n ||t_n - b - Σ_i s_i z_ni d_i||²``
(``b`` = ``b_dec`` plus any skip path) satisfies ``G s = r`` with
``G = (ZᵀZ) ⊙ (D Dᵀ)`` and ``r_i = Σ_n z_ni d_i·(t_n - b)``; latents that never fire keep
``s_i = 1``. :func:`fix_feature_suppression` folds ``s`` into the encoder (each latent's
activation is positively homogeneous in its encoder column and bias), so the fixed SAE is the same
architecture, saved and loaded as before, with the same latents firing.

Shrinkage before and after is read with the two closed forms of
:mod:`neurodecode.analysis.sae.metrics` (``gamma_rescale_reconstruction``,
``gamma_rescale_input``) and with the per-latent optimal scales themselves (all 1 when nothing is
shrunk; > 1 under shrinkage).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from neurodecode.analysis.sae.core import SparseAutoencoder
from neurodecode.validation import InvalidInputError

#: architectures whose latents scale with their encoder column and bias (see the fold).
RESCALABLE = ("relu_l1", "prolu", "gated")


@torch.no_grad()
def optimal_latent_scales(
    sae: SparseAutoencoder,
    batches: Iterable[Tensor | tuple[Tensor, Tensor]],
    ridge: float = 1e-8,
) -> tuple[Tensor, Tensor]:
    """Per-latent scales that minimise the squared reconstruction error, in closed form.

    Parameters
    ----------
    sae : SparseAutoencoder
        Any SAE or transcoder (its inference latents are used).
    batches : iterable
        Raw input rows (batch, d_in), or (inputs, targets) pairs for a transcoder.
    ridge : float
        Added to ``G``'s diagonal, relative to its mean diagonal (numerical safety).

    Returns
    -------
    scales : Tensor, shape (n_latents,), float64
        The optimal non-negative ``s`` (a latent whose unconstrained optimum is <= 0 gets 0 and
        the others are re-solved); 1 for latents that never fired.
    fire_count : Tensor, shape (n_latents,), long
        Rows on which each latent fired.
    """
    was_training = sae.training
    sae.eval()
    n = sae.n_latents
    gram = torch.zeros(n, n, dtype=torch.float64)
    rhs = torch.zeros(n, dtype=torch.float64)
    fire_count = torch.zeros(n, dtype=torch.long)
    atoms = sae.W_dec.detach().double().cpu()
    n_rows = 0
    for batch in batches:
        x, target = batch if isinstance(batch, list | tuple) else (batch, batch)
        x, target = x.to(sae.W_enc), target.to(sae.W_enc)
        latents = sae.encode(x)
        xn = x * sae.input_scale if sae.skip_connection else None
        base = sae._decode_normalised(torch.zeros_like(latents), xn)
        residual = (target * sae.output_scale - base).double().cpu()
        z = latents.double().cpu()
        gram += z.T @ z
        rhs += ((residual @ atoms.T) * z).sum(0)
        fire_count += (z != 0).sum(0)
        n_rows += x.shape[0]
    sae.train(was_training)
    if n_rows == 0:
        raise InvalidInputError("optimal_latent_scales got no rows.")
    gram = gram * (atoms @ atoms.T)
    gram += ridge * gram.diagonal().mean().clamp_min(1e-300) * torch.eye(n, dtype=gram.dtype)
    scales = torch.ones(n, dtype=torch.float64)
    free = fire_count > 0
    scales[free] = 0.0
    # non-negative least squares by elimination: a latent whose best scale is <= 0 is set to 0
    # and the rest re-solved (a few rounds at most in practice; at most n_latents)
    while free.any():
        solution = torch.linalg.solve(gram[free][:, free], rhs[free])
        if (solution > 0).all():
            scales[free] = solution
            break
        index = free.nonzero().squeeze(1)
        free[index[solution <= 0]] = False
    return scales, fire_count


@torch.no_grad()
def fix_feature_suppression(
    sae: SparseAutoencoder,
    batches: Iterable[Tensor | tuple[Tensor, Tensor]],
    ridge: float = 1e-8,
) -> Tensor:
    """Rescale each latent of an L1-trained SAE by its optimal factor, in place.

    The factors (:func:`optimal_latent_scales`, clamped to ``>= 1e-6`` so that a latent whose best
    scale is 0 keeps firing where it fired, at a negligible value) are folded into the encoder: ReLU-L1 and ProLU scale their encoder column and bias,
    Gated its magnitude path (``r_mag += log s``, ``b_mag *= s``); which latents fire is unchanged.

    Parameters
    ----------
    sae : SparseAutoencoder
        A ``relu_l1``, ``prolu`` or ``gated`` SAE (or transcoder).
    batches : iterable
        Raw rows (or (inputs, targets) pairs) to fit the factors on, e.g. training rows.

    Returns
    -------
    Tensor, shape (n_latents,), float64
        The factors applied.
    """
    if sae.architecture not in RESCALABLE:
        raise InvalidInputError(
            f"fix_feature_suppression supports {list(RESCALABLE)} SAEs (L1-trained, latents "
            f"homogeneous in their encoder); got {sae.architecture!r}."
        )
    scales, _ = optimal_latent_scales(sae, batches, ridge=ridge)
    s = scales.clamp_min(1e-6).to(sae.W_enc)
    if sae.architecture == "gated":
        sae.r_mag.add_(s.log())
        sae.b_mag.mul_(s)
    else:
        sae.W_enc.mul_(s)
        sae.b_enc.mul_(s)
    return scales
