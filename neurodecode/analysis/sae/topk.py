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

import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from neurodecode.analysis.sae.core import SparseAutoencoder, register_sae
from neurodecode.validation import InvalidInputError, check_option


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


def _group_size(n_columns: int, k: int) -> int:
    """Group width for :func:`topk_indices`'s two-stage selection, or 0 for one plain topk."""
    best = 0
    if n_columns < 4096:  # measured: one topk is faster on short rows (512 columns: 1.6 vs 1.9 ms)
        return best
    for width in (16, 32, 64):
        # the groups must tile the row, and the k kept groups must be a small part of it
        if n_columns % width == 0 and 4 * k * width <= n_columns:
            if best == 0 or abs(width * width * k - n_columns) < abs(best * best * k - n_columns):
                best = width
    return best


def _row_topk(values: Tensor, k: int) -> Tensor:
    """``values.topk(k, dim=-1, sorted=False).indices`` (the same values; ties in any order).

    Float32 on the CPU: the top-k of the values' bits read as int32, the same order as the
    floats' among entries with the sign bit clear (+0, positive, +inf, +NaN) and below all
    of them for the rest, so exact on every row with ``k`` such entries (its k-th key is
    non-negative); other rows, and any input with a NaN (torch counts every NaN as largest,
    a sign-set NaN too), take the float top-k. An integer comparison has no NaN test, so it
    is faster than the float selection (benchmarks/README.md, SAE training speed).
    """
    if values.dtype != torch.float32 or values.device.type != "cpu" or values.numel() == 0:
        return values.topk(k, dim=-1, sorted=False).indices
    if bool(torch.isnan(values.amax())):
        return values.topk(k, dim=-1, sorted=False).indices
    keys, index = values.view(torch.int32).topk(k, dim=-1, sorted=False)
    short = keys.amin(-1) < 0  # fewer than k entries with the sign bit clear
    if bool(short.any()):
        rows = short.nonzero().squeeze(1)
        index[rows] = values[rows].topk(k, dim=-1, sorted=False).indices
    return index


def topk_indices(pre: Tensor, k: int) -> Tensor:
    """Column indices of the ``k`` largest entries of each row, in no particular order.

    Long rows (4096 columns or more) are cut into groups of ``g`` columns (``g`` near
    ``sqrt(n_columns / k)``); the ``k``
    groups with the largest maxima are kept and the ``k`` largest of their ``k·g`` entries taken.
    Exact: every entry above the row's k-th largest value lies in a group whose maximum exceeds it,
    and there are fewer than ``k`` such groups, so all are kept; the kept groups' maxima supply
    the entries equal to it. The selected *values* are those of ``pre.topk(k)`` (an index may
    differ only between entries of equal value) at a cheaper pass: a max over the row and two
    short selections instead of one selection over all columns. Float32 selections on the CPU
    compare the values' bits as integers (:func:`_row_topk`; exact, a quarter faster).

    Parameters
    ----------
    pre : Tensor, shape (batch, n_columns)
    k : int
        ``1 <= k <= n_columns``.

    Returns
    -------
    Tensor, shape (batch, k), long
    """
    n_rows, n_columns = pre.shape
    width = _group_size(n_columns, k)
    if width == 0:
        return _row_topk(pre, k)
    groups = pre.view(n_rows, n_columns // width, width)
    kept = _row_topk(groups.amax(-1), k)  # (batch, k)
    columns = (kept[:, :, None] * width + torch.arange(width, device=pre.device)).view(n_rows, -1)
    candidates = pre.gather(-1, columns)
    return columns.gather(-1, _row_topk(candidates, k))


class _GatheredEncoder(torch.autograd.Function):
    """``relu(picked)``, ``picked = pre.gather(index)``, with a backward pass that touches the
    chosen latents only.

    ``picked`` (``pre = (x̃ - centre) @ W_enc + b_enc`` at ``index``) is computed by the caller
    without autograd; the
    backward pass gives the same gradients as differentiating ``relu((x̃ - centre) @ W_enc +
    b_enc)`` at ``index``: ``batch·m·d_in`` multiply-adds for the encoder instead of two dense
    products, and the centre's gradient as one matrix-vector product (it is the same for every
    row, ``-W_enc @ grad_b_enc``).
    """

    @staticmethod
    def forward(ctx, x_normalised, centre, W_enc, b_enc, picked, index):
        values = torch.relu(picked)
        ctx.save_for_backward(x_normalised, centre, W_enc, index, values)
        return values

    @staticmethod
    def backward(ctx, grad: Tensor):
        x_normalised, centre, W_enc, index, values = ctx.saved_tensors
        grad = grad * (values > 0).to(grad.dtype)
        d_in, n_latents = W_enc.shape
        grad_x = grad_centre = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:  # only when the caller differentiates through the input
            grad_x = F.embedding_bag(
                index, W_enc.t().contiguous(), per_sample_weights=grad, mode="sum"
            )
        if ctx.needs_input_grad[2]:
            centred = x_normalised - centre
            grad_w_t = W_enc.new_zeros(n_latents, d_in)
            rows_per_chunk = max(1, (1 << 22) // max(1, index.shape[1] * d_in))
            for start in range(0, index.shape[0], rows_per_chunk):
                stop = start + rows_per_chunk
                part = grad[start:stop, :, None] * centred[start:stop, None, :]
                grad_w_t.index_add_(0, index[start:stop].reshape(-1), part.reshape(-1, d_in))
            grad_w = grad_w_t.t()
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[3]:
            grad_b = W_enc.new_zeros(n_latents).index_add_(0, index.reshape(-1), grad.reshape(-1))
            if ctx.needs_input_grad[1]:
                grad_centre = -(W_enc @ grad_b)
            if not ctx.needs_input_grad[3]:
                grad_b = None
        return grad_x, grad_centre, grad_w, grad_b, None, None


def gathered_activations(
    x_normalised: Tensor,
    centre: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    pre: Tensor,
    index: Tensor,
    *,
    picked: Tensor | None = None,
) -> Tensor:
    """ReLU'd pre-activations of chosen latents, with gradients to the encoder, centre and input.

    Parameters
    ----------
    x_normalised : Tensor, shape (batch, d_in)
        Normalised inputs ``x̃``.
    centre : Tensor, shape (d_in,)
        ``b_pre`` (``b_dec`` for an SAE, the fixed input centre for a transcoder).
    W_enc : Tensor, shape (d_in, n_latents)
    b_enc : Tensor, shape (n_latents,)
    pre : Tensor, shape (batch, n_latents), or None
        ``(x̃ - centre) @ W_enc + b_enc``, computed without autograd; ``None`` when ``picked``
        is given.
    index : Tensor, shape (batch, m), long
        Latents to keep per row.
    picked : Tensor, shape (batch, m), optional
        ``pre.gather(-1, index)`` when the caller has it without the full ``pre``.

    Returns
    -------
    Tensor, shape (batch, m)
        ``relu(pre).gather(-1, index)``; its backward pass costs ``batch·m·d_in`` multiply-adds
        where the dense one costs ``2·batch·n_latents·d_in``.
    """
    if picked is None:
        picked = pre.gather(-1, index)
    return _GatheredEncoder.apply(x_normalised, centre, W_enc, b_enc, picked, index)


def _csr_matrix(crow: Tensor, columns: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    """A CSR matrix built from indices valid by construction (no invariant check, no warning).

    ``crow`` (rows + 1,) non-decreasing from 0 to ``len(columns)``; ``columns`` in
    ``[0, shape[1])``, not necessarily ordered within a row.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, columns, values, shape, check_invariants=False)


def _picks_pattern(index: Tensor, n_columns: int, dtype: torch.dtype) -> Tensor:
    """(batch, n_columns) CSR matrix of zeros at ``index``'s entries (``index``: (batch, m)):
    the pattern a sampled product (``torch.sparse.sampled_addmm``) fills."""
    n_rows, m = index.shape
    crow = torch.arange(0, n_rows * m + 1, m, device=index.device)
    zeros = torch.zeros(n_rows * m, dtype=dtype, device=index.device)
    return _csr_matrix(crow, index.reshape(-1), zeros, (n_rows, n_columns))


def exact_preactivations(centred: Tensor, W_enc: Tensor, b_enc: Tensor, index: Tensor) -> Tensor:
    """``(centred @ W_enc + b_enc).gather(-1, index)`` without the dense product.

    A sampled dense-dense product (``torch.sparse.sampled_addmm``: only the ``batch·m``
    requested entries of ``centred @ W_enc`` are computed) in the encoder's precision:
    ``batch·m·d_in`` multiply-adds, without gathering encoder columns.

    Parameters
    ----------
    centred : Tensor, shape (batch, d_in)
    W_enc : Tensor, shape (d_in, n_latents)
    b_enc : Tensor, shape (n_latents,)
    index : Tensor, shape (batch, m), long

    Returns
    -------
    Tensor, shape (batch, m)
    """
    n_rows, m = index.shape
    if n_rows == 0 or m == 0:
        return centred.new_zeros(n_rows, m)
    pattern = _picks_pattern(index, W_enc.shape[1], centred.dtype)
    picked = torch.sparse.sampled_addmm(pattern, centred, W_enc, beta=0.0).values()
    return picked.view(n_rows, m) + b_enc[index]


def _in_layout_of(parameter: Tensor, grad: Tensor) -> Tensor:
    """``grad`` with ``parameter``'s strides, as autograd would store it.

    Optimisers may assume it: torch's fused CPU Adam reads a gradient as if it had the
    parameter's strides (a transposed gradient of a row-major parameter gets a wrong update).
    The SAE encoder is stored transposed (``W_decᵀ`` cloned), so this is usually a view.
    """
    if grad.stride() == parameter.stride():
        return grad
    return torch.empty_like(parameter).copy_(grad)


#: :meth:`TopKSAE.write_training_gradients` adds the picks' rank-one gradient terms into their
#: latents' rows (:func:`_rows_by_latent`) on the CPU when there are at most this many entries
#: (batch·k·d), and sorts the picks by latent for two sparse-dense products
#: (:func:`_latent_major`) above (where the rank-one terms' temporary makes it slower; measured
#: in benchmarks/README.md, SAE training speed) and on other devices (where ``index_add_`` sums
#: in no fixed order).
_INDEX_ADD_TERMS = 1 << 20


def _rows_by_latent(weights: Tensor, rows: Tensor, index: Tensor, n_latents: int) -> Tensor:
    """``out[l] = Σ weights[r, j] · rows[r]`` over the picks ``index[r, j] == l``: (n_latents, d).

    The product of the transposed (batch, n_latents) matrix whose only entries are the picks
    with ``rows``, as one ``index_add_`` of the ``batch·m`` rank-one rows, so the picks need no
    sort by latent (``weights``, ``index``: (batch, m); ``rows``: (batch, d)). Its
    ``batch·m·d`` temporary makes it the faster way for small products only
    (``_INDEX_ADD_TERMS``).
    """
    n_rows, m = weights.shape
    terms = (weights[:, :, None] * rows[:, None, :]).view(n_rows * m, rows.shape[1])
    out = rows.new_zeros(n_latents, rows.shape[1])
    return out.index_add_(0, index.reshape(-1), terms)


def _latent_major(index: Tensor, n_latents: int) -> Callable[[Tensor], Tensor]:
    """The picks ``index`` (batch, m) sorted by latent, once: a function taking weights
    (batch, m) to the (n_latents, batch) CSR matrix with ``weights[r, j]`` at
    ``(index[r, j], r)``, whose products with dense (batch, d) rows sum the picks per latent."""
    flat = index.reshape(-1)
    order = torch.argsort(flat)
    crow = torch.zeros(n_latents + 1, dtype=torch.long, device=index.device)
    torch.cumsum(torch.bincount(flat, minlength=n_latents), 0, out=crow[1:])
    rows = order.div(index.shape[1], rounding_mode="floor")
    shape = (n_latents, index.shape[0])
    return lambda weights: _csr_matrix(crow, rows, weights.reshape(-1)[order], shape)


def sparse_decode(values: Tensor, index: Tensor, W_dec: Tensor) -> Tensor:
    """``Σ_j values[:, j] · W_dec[index[:, j]]``, shape (batch, d_out), via ``embedding_bag``.

    Equal to ``scatter(values, index) @ W_dec`` without forming the dense (batch, n_latents)
    latents; gradients flow to ``values`` and to the used rows of ``W_dec``.
    """
    return F.embedding_bag(index, W_dec, per_sample_weights=values, mode="sum")


@register_sae
class TopKSAE(_AuxKMixin):
    """Keep the ``k`` largest (ReLU'd) pre-activations of each row; AuxK for dead latents.

    Hyperparameters: ``k`` (32), ``k_aux`` (None → ``d_out // 2``), ``aux_coefficient`` (1/32),
    ``selection_precision`` (``"exact"``): how training *picks* the top-k latents.
    ``"exact"``: from the dense pre-activations in the encoder's precision. ``"bfloat16"``: from a
    bfloat16 product (several times faster on CPUs with AMX and on GPUs), its ``2k`` best
    candidates per row (``2·k_aux`` for AuxK) re-scored exactly and the ``k`` best of them kept;
    the values, the loss and the gradients are exact in both, and the picks differ only where a
    row's k-th and 2k-th pre-activations are within bfloat16 rounding of each other. Inference
    (:meth:`activate`) is always exact.
    """

    architecture = "topk"
    #: The tied encoder starts with entries of RMS 1/64 (``encoder_init_scale`` =
    #: ``sqrt(d_in) / 64``, at most 1). Chosen on validation draws of planted rows (seeds 1 and 2,
    #: not the benchmark's seed 0) at the two sizes of ``benchmarks/bench_sae.py``'s throughput
    #: comparison, lr 1e-3: d=64, k=8, held-out FVU after 300 steps 0.343 / 0.345 at scale 1,
    #: 0.176 / 0.177 by this rule (scale 0.125); d=768, k=32, after 40 steps 0.731 / 0.733 at 1,
    #: 0.692 / 0.693 by this rule (0.43); after 3,000 steps at d=64 scales 1 and 0.1 end equal
    #: (0.111). Not adopted for BatchTopK: there it lowered the meta-SAE's part recovery and
    #: raised Matryoshka's inference L0 in the tests.
    encoder_init_rms: ClassVar[float | None] = 1 / 64
    hyperparameters: ClassVar[dict[str, Any]] = {
        "k": 32,
        "k_aux": None,
        "aux_coefficient": 1 / 32,
        "selection_precision": "exact",
    }

    def __init__(self, d_in: int, n_latents: int, **kwargs: Any) -> None:
        super().__init__(d_in, n_latents, **kwargs)
        check_option(
            "selection_precision", self.options["selection_precision"], ("exact", "bfloat16")
        )

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
        centre = self._centre()
        k = min(int(self.options["k"]), self.n_latents)
        with torch.no_grad():
            centred = xn - centre
            scores = self._selection_scores(centred)
            index, picked = self._select(centred, scores, k)
        values = gathered_activations(
            xn, centre, self.W_enc, self.b_enc, None, index, picked=picked
        )
        output = sparse_decode(values, index, self.W_dec) + self.b_dec
        if self.skip_connection:
            output = output + xn @ self.W_skip
        mse = (output - tn).pow(2).sum(-1).mean()
        with torch.no_grad():
            active = values > 0
            self._count_rows(index, active)
        auxiliary = self._sparse_auxk(xn, centre, tn, centred, scores, output)
        return {
            "loss": mse + auxiliary,
            "mse": mse.detach(),
            "sparsity": mse.new_zeros(()),
            "auxiliary": auxiliary.detach(),
            "l0": active.sum(-1).float().mean(),
            "dead_fraction": self.dead_mask().float().mean(),
        }

    @torch.no_grad()
    def write_training_gradients(self, x: Tensor, target: Tensor | None = None) -> Tensor | None:
        """One training step's loss with its gradients written to ``.grad``, without autograd.

        The same loss and gradients as ``training_loss(x, target)["loss"].backward()`` (tested
        to float rounding) and the same dead-latent bookkeeping, in a handful of kernels: the
        dense product picks the latents, the decoder is an ``embedding_bag``, the gradient of
        the picked pre-activations is a sampled product (``g_out @ W_decᵀ`` at the picks only),
        and the encoder and decoder gradients are, for small SAEs, one ``index_add_`` each of
        the picks' rank-one terms into their latents' rows, and for large ones two
        sparse-dense products over the picks sorted by latent (``_INDEX_ADD_TERMS``). Small
        SAEs spend most of an autograd step in per-operation overhead; this path has about a
        third of the operations.

        Returns ``None`` (nothing written) when the step needs autograd: a skip connection,
        latents that may be dead (the AuxK term), or weights in a precision other than float32
        / float64 (the sparse products' dtypes) — the caller then calls :meth:`training_loss`.

        Parameters
        ----------
        x : Tensor, shape (batch, d_in)
            Raw inputs.
        target : Tensor, shape (batch, d_out), optional
            Transcoder targets (required when ``transcoder=True``).

        Returns
        -------
        Tensor, shape () or None
            The loss (sum of squared errors per row in normalised units, mean over rows).
        """
        if self.transcoder and target is None:
            raise InvalidInputError("a transcoder needs a `target` batch.")
        # the autograd path counts this batch before its AuxK test: so does this one
        if self.W_enc.dtype not in (torch.float32, torch.float64) or self.skip_connection:
            return None
        if self._may_have_dead(more_rows=x.shape[0]):
            return None
        xn = x * self.input_scale
        tn = (x if target is None else target) * self.output_scale
        centre = self._centre()
        k = min(int(self.options["k"]), self.n_latents)
        n_rows = x.shape[0]
        centred = xn - centre
        scores = self._selection_scores(centred)
        index, picked = self._select(centred, scores, k)
        del scores
        values = picked.clamp_min(0.0)
        output = F.embedding_bag(index, self.W_dec, per_sample_weights=values, mode="sum")
        error = output.add_(self.b_dec).sub_(tn)
        loss = error.pow(2).sum() / n_rows
        grad_out = error.mul_(2.0 / n_rows)  # d loss / d output, (batch, d_out)
        flat = index.reshape(-1)
        active = picked > 0
        pattern = _picks_pattern(index, self.n_latents, values.dtype)
        grad_values = torch.sparse.sampled_addmm(pattern, grad_out, self.W_dec.t(), beta=0.0)
        grad_pre = grad_values.values().view_as(values).mul_(active)  # through the ReLU
        n_latents = self.n_latents
        terms = index.numel() * max(grad_out.shape[1], centred.shape[1])
        if x.device.type == "cpu" and terms <= _INDEX_ADD_TERMS:
            # each pick's rank-one term added into its latent's row: no sort of the picks
            grad_w_dec = _rows_by_latent(values, grad_out, index, n_latents)
            grad_w_enc_t = _rows_by_latent(grad_pre, centred, index, n_latents)
        else:  # the picks sorted by latent once, then two sparse-dense products
            by_latent = _latent_major(index, n_latents)
            grad_w_dec = by_latent(values) @ grad_out
            grad_w_enc_t = by_latent(grad_pre) @ centred
        self.W_dec.grad = _in_layout_of(self.W_dec, grad_w_dec)
        self.W_enc.grad = _in_layout_of(self.W_enc, grad_w_enc_t.t())
        grad_b_enc = torch.zeros_like(self.b_enc).index_add_(0, flat, grad_pre.reshape(-1))
        self.b_enc.grad = grad_b_enc
        grad_b_dec = grad_out.sum(0)
        if not self.transcoder:  # b_dec is also the encoder's centre
            grad_b_dec -= self.W_enc @ grad_b_enc
        self.b_dec.grad = grad_b_dec
        self._count_rows(index, active)
        return loss

    @torch.no_grad()
    def _selection_scores(self, centred: Tensor) -> Tensor:
        """Dense pre-activations (batch, n_latents) that pick the latents: in the encoder's
        precision, or in bfloat16 with ``selection_precision="bfloat16"``."""
        if self.options["selection_precision"] == "bfloat16":
            return torch.addmm(
                self.b_enc.to(torch.bfloat16),
                centred.to(torch.bfloat16),
                self.W_enc.to(torch.bfloat16),
            )
        return torch.addmm(self.b_enc, centred, self.W_enc)

    def _count_rows(self, index: Tensor, active: Tensor) -> None:
        """Advance ``rows_since_fired`` by the batch and zero it where a latent fired.

        No host synchronisation: the fired latents are counted with ``index_add_`` (not a
        boolean-indexed gather); a host-side upper bound of the counters (``_rows_bound``,
        valid while the buffer is the same tensor at the same version: any other write, a
        ``load_state_dict`` or a move drops it) lets :meth:`_sparse_auxk` skip the dead-latent
        test without reading the device.
        """
        counts = torch.zeros(self.n_latents, device=index.device, dtype=torch.int32)
        counts.index_add_(0, index.reshape(-1), active.reshape(-1).to(torch.int32))
        bound = self._valid_rows_bound()
        self.rows_since_fired.add_(index.shape[0]).masked_fill_(counts > 0, 0)
        # any counter grew by at most the batch; a bound not taken on these counters is dropped
        self._rows_bound = None if bound is None else (bound + index.shape[0], self._counter_key())

    def _counter_key(self) -> tuple[int, int, int]:
        counters = self.rows_since_fired
        return (id(counters), counters.data_ptr(), counters._version)

    def _valid_rows_bound(self) -> int | None:
        saved = getattr(self, "_rows_bound", None)
        if saved is None or saved[1] != self._counter_key():
            return None
        return saved[0]

    def _may_have_dead(self, more_rows: int = 0) -> bool:
        """False only when no counter can have reached ``dead_window``, or will have after
        ``more_rows`` more rows (no device read)."""
        bound = self._valid_rows_bound()
        if bound is None:  # one read of the counters, then tracked on the host
            bound = int(self.rows_since_fired.max())
            self._rows_bound = (bound, self._counter_key())
        return bound + more_rows >= self.dead_window

    @torch.no_grad()
    def _select(
        self, centred: Tensor, scores: Tensor, k: int, columns: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """(index, exact pre-activations at index), each (batch, k): the k best latents.

        ``scores`` are the dense pre-activations, exact or bfloat16 (then ``2k`` candidates
        are re-scored exactly); ``columns`` restricts the choice to those latents.
        """
        sub = scores if columns is None else scores.index_select(1, columns)
        if scores.dtype == self.W_enc.dtype:
            pick = topk_indices(sub, k)
            index = pick if columns is None else columns[pick]
            return index, scores.gather(-1, index)
        candidates = topk_indices(sub, min(2 * k, sub.shape[1]))
        if columns is not None:
            candidates = columns[candidates]
        exact = exact_preactivations(centred, self.W_enc, self.b_enc, candidates)
        pick = topk_indices(exact, k)
        return candidates.gather(-1, pick), exact.gather(-1, pick)

    def _sparse_auxk(
        self,
        xn: Tensor,
        centre: Tensor,
        tn: Tensor,
        centred: Tensor,
        scores: Tensor,
        output: Tensor,
    ) -> Tensor:
        """AuxK over the dead latents' columns only; zero (and no selection) when none is dead."""
        if not self._may_have_dead():
            return output.new_zeros(())
        dead_columns = self.dead_mask().nonzero().squeeze(1)
        n_dead = dead_columns.numel()
        if n_dead == 0:
            return output.new_zeros(())
        k_aux = min(int(self.options["k_aux"] or self.d_out // 2), n_dead)
        index, picked = self._select(centred, scores, k_aux, dead_columns)
        values = gathered_activations(
            xn, centre, self.W_enc, self.b_enc, None, index, picked=picked
        )
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
