"""TopK SAE with the AuxK dead-latent loss (Gao et al. 2024) and BatchTopK (Bussmann et al. 2024:
the ``k * batch`` largest latents over the batch; a threshold estimated in training at inference).

TopK trains on a **sparse path** by default (:meth:`TopKSAE.training_loss`): the dense
pre-activations are computed once without autograd to pick the top-k (and AuxK) latents, the
picked values are recomputed with autograd as row-wise dot products with the gathered encoder
columns, and the decoder is an ``embedding_bag`` over the picked rows. The loss, its gradients and
the dead-latent bookkeeping equal the dense path's (:meth:`TopKSAE.dense_training_loss`, kept for
tests and for comparison) up to float rounding, at one dense matmul per step instead of five.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from neurodecode.analysis.sae.core import SparseAutoencoder, register_sae
from neurodecode.validation import InvalidInputError


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
        return self._auxk_normalised_error(aux_output, residual)

    def _auxk_normalised_error(self, aux_output: Tensor, residual: Tensor) -> Tensor:
        error = (aux_output - residual).pow(2).sum(-1).mean()
        variance = (residual - residual.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
        return self.options["aux_coefficient"] * torch.nan_to_num(error / variance)


class _GatheredEncoder(torch.autograd.Function):
    """``relu(pre).gather(index)`` with a backward pass that touches the chosen latents only.

    ``pre = centred @ W_enc + b_enc`` is computed by the caller without autograd; the backward
    pass gives the same gradients as differentiating ``relu(centred @ W_enc + b_enc)`` at
    ``index`` (a ``batch·m·d_in`` scatter instead of two dense products).
    """

    @staticmethod
    def forward(ctx, centred: Tensor, W_enc: Tensor, b_enc: Tensor, pre: Tensor, index: Tensor):
        values = torch.relu(pre.gather(-1, index))
        ctx.save_for_backward(centred, W_enc, index, values)
        return values

    @staticmethod
    def backward(ctx, grad: Tensor):
        centred, W_enc, index, values = ctx.saved_tensors
        grad = grad * (values > 0).to(grad.dtype)
        n_latents, d_in = W_enc.shape[1], W_enc.shape[0]
        flat_index = index.reshape(-1)
        grad_centred = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_centred = F.embedding_bag(
                index, W_enc.t().contiguous(), per_sample_weights=grad, mode="sum"
            )
        if ctx.needs_input_grad[1]:
            grad_w_t = W_enc.new_zeros(n_latents, d_in)
            rows_per_chunk = max(1, (1 << 22) // max(1, index.shape[1] * d_in))
            for start in range(0, index.shape[0], rows_per_chunk):
                stop = start + rows_per_chunk
                part = grad[start:stop, :, None] * centred[start:stop, None, :]
                grad_w_t.index_add_(0, index[start:stop].reshape(-1), part.reshape(-1, d_in))
            grad_w = grad_w_t.t()
        if ctx.needs_input_grad[2]:
            grad_b = W_enc.new_zeros(n_latents).index_add_(0, flat_index, grad.reshape(-1))
        return grad_centred, grad_w, grad_b, None, None


def gathered_activations(
    centred: Tensor, W_enc: Tensor, b_enc: Tensor, pre: Tensor, index: Tensor
) -> Tensor:
    """ReLU'd pre-activations of chosen latents, with gradients to the encoder and the input.

    Parameters
    ----------
    centred : Tensor, shape (batch, d_in)
        Normalised, centred inputs (``x̃ - b_pre``).
    W_enc : Tensor, shape (d_in, n_latents)
    b_enc : Tensor, shape (n_latents,)
    pre : Tensor, shape (batch, n_latents)
        ``centred @ W_enc + b_enc``, computed without autograd.
    index : Tensor, shape (batch, m), long
        Latents to keep per row.

    Returns
    -------
    Tensor, shape (batch, m)
        ``relu(pre).gather(-1, index)``; its backward pass costs ``batch·m·d_in`` multiply-adds
        where the dense one costs ``2·batch·n_latents·d_in``.
    """
    return _GatheredEncoder.apply(centred, W_enc, b_enc, pre, index)


def sparse_decode(values: Tensor, index: Tensor, W_dec: Tensor) -> Tensor:
    """``Σ_j values[:, j] · W_dec[index[:, j]]``, shape (batch, d_out), via ``embedding_bag``.

    Equal to ``scatter(values, index) @ W_dec`` without forming the dense (batch, n_latents)
    latents; gradients flow to ``values`` and to the used rows of ``W_dec``.
    """
    return F.embedding_bag(index, W_dec, per_sample_weights=values, mode="sum")


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

    def dense_training_loss(self, x: Tensor, target: Tensor | None = None) -> dict[str, Tensor]:
        """The reference (dense-latent) loss of the base class; same terms as the sparse path."""
        return super().training_loss(x, target)

    def training_loss(self, x: Tensor, target: Tensor | None = None) -> dict[str, Tensor]:
        """Sparse-path loss terms (see the module docstring); keys as the base class's."""
        if self.transcoder and target is None:
            raise InvalidInputError("a transcoder needs a `target` batch.")
        xn = x * self.input_scale
        tn = (x if target is None else target) * self.output_scale
        centred = xn - self._centre()
        k = min(int(self.options["k"]), self.n_latents)
        with torch.no_grad():
            pre = torch.addmm(self.b_enc, centred, self.W_enc)
            index = pre.topk(k, dim=-1).indices
        values = gathered_activations(centred, self.W_enc, self.b_enc, pre, index)
        output = sparse_decode(values, index, self.W_dec) + self.b_dec
        if self.skip_connection:
            output = output + xn @ self.W_skip
        mse = (output - tn).pow(2).sum(-1).mean()
        with torch.no_grad():
            active = values > 0
            fired = torch.zeros(self.n_latents, dtype=torch.bool, device=x.device)
            fired[index[active]] = True
            self.rows_since_fired += x.shape[0]
            self.rows_since_fired[fired] = 0
        auxiliary = self._sparse_auxk(centred, tn, pre, output)
        return {
            "loss": mse + auxiliary,
            "mse": mse.detach(),
            "sparsity": mse.new_zeros(()),
            "auxiliary": auxiliary.detach(),
            "l0": active.sum(-1).float().mean(),
            "dead_fraction": self.dead_mask().float().mean(),
        }

    def _sparse_auxk(self, centred: Tensor, tn: Tensor, pre: Tensor, output: Tensor) -> Tensor:
        dead = self.dead_mask()
        n_dead = int(dead.sum())
        if n_dead == 0:
            return output.new_zeros(())
        k_aux = min(int(self.options["k_aux"] or self.d_out // 2), n_dead)
        with torch.no_grad():
            index = pre.masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1).indices
        values = gathered_activations(centred, self.W_enc, self.b_enc, pre, index)
        residual = (tn - output).detach()
        return self._auxk_normalised_error(sparse_decode(values, index, self.W_dec), residual)


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
