"""The feature-suppression fix (Wright & Sharkey 2024, "Addressing Feature Suppression in SAEs"):
an L1 penalty shrinks every active latent, so after L1 training each latent is rescaled by the
factor that best reconstructs the training rows, and the SAE's sparsity pattern is kept. Two
variants:

- **closed form** (:func:`fix_feature_suppression`): per-latent factors only, the decoder fixed,
  solved exactly (below);
- **fine-tune** (:func:`finetune_feature_suppression`, as in the paper): the encoder is frozen —
  which latents fire and their pre-scale values are fixed — and a per-latent scale and the
  decoder (unit-norm rows, projected as in training; a skip path; a transcoder's ``b_dec``) are
  fine-tuned on the reconstruction MSE alone, without the L1 term, through the Lightning path of
  :mod:`neurodecode.analysis.sae.training`. An SAE's ``b_dec`` stays frozen: it is also the
  encoder's input centre here (``b_pre = b_dec``), where the paper's encoder has no such term.

The factors solve one least-squares problem in closed form. With ``z`` the latents, ``d_i`` the
decoder rows and ``t`` the (normalised) target, ``s = argmin Σ_n ||t_n - b - Σ_i s_i z_ni d_i||²``
(``b`` = ``b_dec`` plus any skip path) satisfies ``G s = r`` with
``G = (ZᵀZ) ⊙ (D Dᵀ)`` and ``r_i = Σ_n z_ni d_i·(t_n - b)``; latents that never fire keep
``s_i = 1``. :func:`fix_feature_suppression` folds ``s`` into the encoder (each latent's
activation is positively homogeneous in its encoder column and bias), so the fixed SAE is the same
architecture, saved and loaded as before, with the same latents firing.

Both fold their factors into the encoder, so the result is the same architecture. Shrinkage
before and after is read with the two closed forms of :mod:`neurodecode.analysis.sae.metrics`
(``gamma_rescale_reconstruction`` = E‖x̂‖² / E[x·x̂], ``gamma_rescale_input`` = E[x·x̂] / E‖x‖²;
:func:`shrinkage_report`) and with the per-latent optimal scales themselves (all 1 when nothing is
shrunk; > 1 under shrinkage).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from neurodecode.analysis.sae.core import SparseAutoencoder
from neurodecode.analysis.sae.metrics import evaluate_reconstruction
from neurodecode.analysis.sae.training import SAETrainingModule
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
    _check_rescalable(sae, "fix_feature_suppression")
    scales, _ = optimal_latent_scales(sae, batches, ridge=ridge)
    _fold_scales(sae, scales)
    return scales


def _check_rescalable(sae: SparseAutoencoder, caller: str) -> None:
    if not isinstance(sae, SparseAutoencoder) or sae.architecture not in RESCALABLE:
        name = getattr(sae, "architecture", type(sae).__name__)
        raise InvalidInputError(
            f"{caller} supports {list(RESCALABLE)} SAEs (L1-trained, latents homogeneous in "
            f"their encoder); got {name!r}."
        )


@torch.no_grad()
def _fold_scales(sae: SparseAutoencoder, scales: Tensor) -> None:
    """Multiply each latent's activation by ``scales`` (clamped to >= 1e-6) through its encoder."""
    s = scales.clamp_min(1e-6).to(sae.W_enc)
    if sae.architecture == "gated":
        sae.r_mag.add_(s.log())
        sae.b_mag.mul_(s)
    else:
        sae.W_enc.mul_(s)
        sae.b_enc.mul_(s)


def shrinkage_report(
    sae: SparseAutoencoder, batches: Iterable[Tensor | tuple[Tensor, Tensor]]
) -> dict[str, float]:
    """Both shrinkage closed forms, FVU and L0 of an SAE on rows (e.g. held-out rows).

    Parameters
    ----------
    sae : SparseAutoencoder
    batches : iterable
        Raw rows (batch, d_in), or (inputs, targets) pairs for a transcoder.

    Returns
    -------
    dict
        ``gamma_rescale_reconstruction`` (E‖x̂‖² / E[x·x̂]; < 1 under shrinkage),
        ``gamma_rescale_input`` (E[x·x̂] / E‖x‖²), ``fvu``, ``l0``.
    """
    metrics = evaluate_reconstruction(sae, batches)
    keys = ("gamma_rescale_reconstruction", "gamma_rescale_input", "fvu", "l0")
    return {key: float(metrics[key]) for key in keys}


class _SuppressionFineTune(SAETrainingModule):
    """Frozen encoder, trainable per-latent log-scale and decoder: MSE only."""

    def __init__(self, sae: SparseAutoencoder, **schedule: Any) -> None:
        super().__init__(sae, **schedule)
        self.log_scale = nn.Parameter(torch.zeros(sae.n_latents, device=sae.W_dec.device))
        # an SAE centres its input on b_dec (b_pre = b_dec), so b_dec is part of its encoder;
        # a transcoder centres on a fixed point and its b_dec is decoder-only
        decoder = {"W_dec", "W_skip"} | ({"b_dec"} if sae.transcoder else set())
        for name, parameter in sae.named_parameters():
            parameter.requires_grad_(name in decoder)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, target = self._split(batch)
        sae = self.sae
        if sae.transcoder and target is None:
            raise InvalidInputError("a transcoder needs (inputs, targets) batches.")
        xn = x * sae.input_scale
        tn = (x if target is None else target) * sae.output_scale
        with torch.no_grad():  # the active set and the latents' values are the frozen encoder's
            latents = sae.activate(sae.pre_activations(xn))
        output = sae._decode_normalised(latents * self.log_scale.exp(), xn)
        mse = (output - tn).pow(2).sum(-1).mean()
        if self._should_log():
            self.log("train/mse", mse.detach(), prog_bar=False)
        return mse


@dataclass
class SuppressionFineTuneResult:
    """What :func:`finetune_feature_suppression` did.

    Attributes
    ----------
    scales : Tensor, shape (n_latents,), float64
        The per-latent factors folded into the encoder (1 for latents that never fired).
    before, after : dict or None
        :func:`shrinkage_report` on the evaluation rows before and after (None without them).
    """

    scales: Tensor
    before: dict[str, float] | None
    after: dict[str, float] | None


def finetune_feature_suppression(
    sae: SparseAutoencoder,
    data: pl.LightningDataModule | DataLoader,
    steps: int,
    lr: float = 3e-3,
    eval_batches: Iterable[Tensor | tuple[Tensor, Tensor]] | None = None,
    gradient_clip: float | None = 1.0,
    accelerator: str = "cpu",
    seed: int = 0,
) -> SuppressionFineTuneResult:
    """Fine-tune an L1-trained SAE without its L1 term, encoder frozen (Wright & Sharkey 2024).

    The encoder (which latents fire, and their values) is frozen; a per-latent scale
    ``s = exp(ρ)`` (``ρ`` initialised at 0) and the decoder rows (kept at unit norm; with
    ``W_skip``, and ``b_dec`` for a transcoder — an SAE's ``b_dec`` is its encoder's centre too and
    stays) are trained for ``steps`` Adam steps on the reconstruction MSE of ``z ⊙ s`` alone. ``s`` is then folded into the encoder (as :func:`fix_feature_suppression`),
    so the SAE, changed in place, is the same architecture with the same latents firing.

    Parameters
    ----------
    sae : SparseAutoencoder
        A trained ``relu_l1``, ``prolu`` or ``gated`` SAE (or transcoder); initialised already.
    data : LightningDataModule or DataLoader
        Training batches, as for :func:`~neurodecode.analysis.sae.training.train_sae` (the
        same data the SAE was trained on).
    steps : int
        Optimiser steps.
    lr : float
        Adam learning rate (constant).
    eval_batches : iterable, optional
        Rows for the before/after :func:`shrinkage_report` (materialised once).
    gradient_clip : float, optional
        Gradient-norm clip (None: off).
    accelerator : str
        Lightning accelerator.
    seed : int

    Returns
    -------
    SuppressionFineTuneResult
    """
    _check_rescalable(sae, "finetune_feature_suppression")
    if steps < 1:
        raise InvalidInputError(f"steps must be >= 1; got {steps}.")
    held = None if eval_batches is None else list(eval_batches)
    before = None if held is None else shrinkage_report(sae, held)
    flags = {name: p.requires_grad for name, p in sae.named_parameters()}
    pl.seed_everything(seed, verbose=False)
    module = _SuppressionFineTune(sae, lr=lr, max_steps=steps)
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=gradient_clip,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        precision="32-true",
    )
    try:
        if isinstance(data, DataLoader):
            trainer.fit(module, train_dataloaders=data)
        else:
            trainer.fit(module, datamodule=data)
    finally:
        for name, parameter in sae.named_parameters():
            parameter.requires_grad_(flags[name])
    scales = module.log_scale.detach().exp().double().cpu()
    _fold_scales(sae, scales)
    sae.eval()
    after = None if held is None else shrinkage_report(sae, held)
    return SuppressionFineTuneResult(scales=scales, before=before, after=after)
