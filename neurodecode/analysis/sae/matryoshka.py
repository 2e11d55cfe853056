"""Matryoshka BatchTopK SAE (Bussmann et al. 2025, "Learning Multi-Level Features with Matryoshka
Sparse Autoencoders"; Nabeshima 2024): nested dictionaries whose prefixes reconstruct on their own.

The latents are BatchTopK's (:class:`~neurodecode.analysis.sae.topk.BatchTopKSAE`: the
``k · batch`` largest over a training batch, a threshold at inference). The dictionary is cut at
increasing widths ``w_1 < w_2 < ... < w_L = n_latents`` and every prefix is trained to reconstruct
the input with only its own latents:

``loss = Σ_l ||t - (z[:, :w_l] W_dec[:w_l] + b_dec)||² + AuxK``

(each term summed over dimensions and averaged over rows, as in SAELens's
``MatryoshkaBatchTopKTrainingSAE``, whose outer term is the plain BatchTopK loss). The latents are
chosen once, over the whole dictionary; the prefixes only drop the later latents' contributions.

AuxK comes in two forms. By default (``auxk_per_level=False``) it is BatchTopK's: the top
``k_aux`` dead latents of the whole dictionary reconstruct the whole dictionary's residual. With
``auxk_per_level=True`` there is one AuxK term per level, summed: the top ``k_aux`` dead latents
*of level l's own group* (latents ``w_{l-1} .. w_l - 1``) reconstruct the residual of prefix
``l``, ``t - (z[:, :w_l] W_dec[:w_l] + b_dec)``, normalised by that residual's variance, so a dead
latent of an early group is pulled towards what its own prefix misses rather than towards the
whole dictionary's (much smaller) residual. A level without dead latents adds nothing.
"""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import torch
from torch import Tensor

from neurodecode.analysis.sae.core import SparseAutoencoder, register_sae
from neurodecode.analysis.sae.topk import BatchTopKSAE
from neurodecode.validation import InvalidInputError


@register_sae
class MatryoshkaBatchTopKSAE(BatchTopKSAE):
    """BatchTopK latents trained so that each dictionary prefix reconstructs on its own.

    Hyperparameters: BatchTopK's (``k``, ``k_aux``, ``aux_coefficient``,
    ``threshold_momentum``), ``matryoshka_widths``: the increasing prefix sizes (a final width
    ``n_latents`` is appended when missing; default ``[n_latents // 4, n_latents // 2,
    n_latents]``), and ``auxk_per_level`` (False): one AuxK term per level (module docstring).
    """

    architecture = "matryoshka_batchtopk"
    hyperparameters: ClassVar[dict[str, Any]] = {
        **BatchTopKSAE.hyperparameters,
        "matryoshka_widths": None,
        "auxk_per_level": False,
    }

    def __init__(self, d_in: int, n_latents: int, **kwargs: Any) -> None:
        super().__init__(d_in, n_latents, **kwargs)
        widths = self.options["matryoshka_widths"]
        if widths is None:
            widths = [w for w in (self.n_latents // 4, self.n_latents // 2) if w >= 1]
        widths = [int(w) for w in widths]
        if not widths or widths[-1] != self.n_latents:
            widths.append(self.n_latents)
        if widths[0] < 1 or any(b <= a for a, b in itertools.pairwise(widths)):
            raise InvalidInputError(
                f"matryoshka_widths must increase strictly from >= 1 to n_latents="
                f"{self.n_latents}; got {self.options['matryoshka_widths']}."
            )
        self.options["matryoshka_widths"] = widths
        if not isinstance(self.options["auxk_per_level"], bool):
            raise InvalidInputError(
                f"auxk_per_level must be true or false; got {self.options['auxk_per_level']!r}."
            )

    @property
    def widths(self) -> list[int]:
        """The prefix sizes, increasing, the last one ``n_latents``."""
        return list(self.options["matryoshka_widths"])

    def prefix_outputs(self, latents: Tensor, x_normalised: Tensor | None = None) -> list[Tensor]:
        """``z[:, :w] W_dec[:w] + b_dec`` (+ skip path) for every prefix width ``w``.

        Parameters
        ----------
        latents : Tensor, shape (batch, n_latents)
        x_normalised : Tensor, shape (batch, d_in), optional
            Needed by a skip transcoder.

        Returns
        -------
        list of Tensor, each (batch, d_out), normalised units, one per width in
        :attr:`widths`; the last is the whole dictionary's output.
        """
        out = self.b_dec.expand(latents.shape[0], -1)
        if self.skip_connection:
            if x_normalised is None:
                raise InvalidInputError("a skip transcoder needs the input `x` to decode.")
            out = out + x_normalised @ self.W_skip
        outputs, start = [], 0
        for width in self.widths:
            out = out + latents[:, start:width] @ self.W_dec[start:width]
            outputs.append(out)
            start = width
        return outputs

    def per_level_auxiliary_loss(
        self, target_normalised: Tensor, pre: Tensor, outputs: list[Tensor]
    ) -> Tensor:
        """Σ_l AuxK of level l's dead latents on prefix l's residual (module docstring).

        Parameters
        ----------
        target_normalised : Tensor, shape (batch, d_out)
        pre : Tensor, shape (batch, n_latents)
            Encoder pre-activations.
        outputs : list of Tensor
            :meth:`prefix_outputs` of the batch, one per level.
        """
        dead = self.dead_mask()
        total = pre.new_zeros(())
        start = 0
        for width, output in zip(self.widths, outputs, strict=True):
            level_dead = torch.zeros_like(dead)
            level_dead[start:width] = dead[start:width]
            start = width
            n_dead = int(level_dead.sum())
            if n_dead == 0:
                continue
            k_aux = min(int(self.options["k_aux"] or self.d_out // 2), n_dead)
            values, indices = pre.masked_fill(~level_dead, float("-inf")).topk(k_aux, dim=-1)
            aux_latents = torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))
            residual = (target_normalised - output).detach()
            total = total + self._auxk_normalised_error(aux_latents @ self.W_dec, residual)
        return total

    def training_loss(self, x: Tensor, target: Tensor | None = None) -> dict[str, Tensor]:
        """Loss terms (keys of the base class, plus ``prefix_mse``: the inner prefixes' sum)."""
        if self.transcoder and target is None:
            raise InvalidInputError("a transcoder needs a `target` batch.")
        xn = x * self.input_scale
        tn = (x if target is None else target) * self.output_scale
        pre = self.pre_activations(xn)
        latents = self.training_latents(pre)
        outputs = self.prefix_outputs(latents, xn)
        errors = [(out - tn).pow(2).sum(-1).mean() for out in outputs]
        output = outputs[-1]
        self._track_firing(latents)
        if self.options["auxk_per_level"]:
            auxiliary = self.per_level_auxiliary_loss(tn, pre, outputs)
        else:
            auxiliary = self.auxiliary_loss(xn, tn, pre, output)
        mse, inner = errors[-1], torch.stack(errors[:-1]).sum() if len(errors) > 1 else None
        total = mse + auxiliary if inner is None else mse + inner + auxiliary
        return {
            "loss": total,
            "mse": mse.detach(),
            "prefix_mse": mse.new_zeros(()) if inner is None else inner.detach(),
            "sparsity": mse.new_zeros(()),
            "auxiliary": auxiliary.detach(),
            "l0": (latents > 0).sum(-1).float().mean().detach(),
            "dead_fraction": self.dead_mask().float().mean(),
        }


@torch.no_grad()
def prefix_reconstruction(sae: SparseAutoencoder, x: Tensor, width: int) -> Tensor:
    """Raw-unit reconstruction of ``x`` from the first ``width`` latents of any SAE.

    The latents are the SAE's inference latents (``sae.encode``); latents ``width:`` are set to
    zero before decoding. For a Matryoshka SAE this is what each prefix was trained for; for any
    other SAE it is the same-size prefix of an unordered dictionary.

    Parameters
    ----------
    sae : SparseAutoencoder
    x : Tensor, shape (batch, d_in)
    width : int
        1..n_latents.

    Returns
    -------
    Tensor, shape (batch, d_out)
    """
    if not 1 <= int(width) <= sae.n_latents:
        raise InvalidInputError(f"width must be in 1..{sae.n_latents}; got {width}.")
    x = x.to(sae.W_enc)
    latents = sae.encode(x).clone()
    latents[:, int(width) :] = 0
    return sae.decode(latents, x if sae.skip_connection else None)
