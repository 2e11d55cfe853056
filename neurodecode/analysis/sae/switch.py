"""Switch SAE (Mudide et al. 2024, "Efficient Dictionary Learning with Switch Sparse
Autoencoders"): a router sends each input to one of ``E`` expert TopK SAEs, so an input pays for
one expert's encoder instead of the whole dictionary's.

With ``x̃`` the normalised input, the router gives ``p(x) = softmax(W_routerᵀ(x̃ - b_router))``
over experts and picks ``e* = argmax p``; expert ``e`` owns latents ``e·m .. (e+1)·m - 1``
(``m = n_latents / E``, contiguous blocks of ``W_enc``'s columns and ``W_dec``'s rows). The
latents are

``z = p_e*(x) · TopK_k(W_enc,e*ᵀ(x̃ - b_dec) + b_enc,e*)`` on block ``e*``, zero elsewhere,

and ``x̂ = z W_dec + b_dec``: the router's probability scales the expert's reconstruction, which
is how the router gets a gradient (here ``b_dec`` is added outside that scale, so a certain route
reconstructs exactly as a TopK SAE would). The loss adds the Switch Transformer load-balancing
term the paper uses, ``α · E · Σ_e f_e P_e`` with ``f_e`` the fraction of the batch routed to
``e`` (no gradient) and ``P_e`` the batch-mean router probability of ``e``; it is 1 when routing
is uniform.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from neurodecode.analysis.sae.core import SAEOutput, SparseAutoencoder, register_sae
from neurodecode.validation import InvalidInputError


@register_sae
class SwitchSAE(SparseAutoencoder):
    """``E`` TopK experts behind a softmax router; one expert per input.

    Hyperparameters: ``n_experts`` (E, 8; must divide ``n_latents``), ``k`` (32, latents kept in
    the chosen expert), ``load_balance_coefficient`` (α, 1.0).
    Not a transcoder (``transcoder=True`` is refused).
    """

    architecture = "switch"
    hyperparameters: ClassVar[dict[str, Any]] = {
        "n_experts": 8,
        "k": 32,
        "load_balance_coefficient": 1.0,
    }

    def __init__(self, d_in: int, n_latents: int, **kwargs: Any) -> None:
        super().__init__(d_in, n_latents, **kwargs)
        n_experts = int(self.options["n_experts"])
        if self.transcoder:
            raise InvalidInputError("the switch SAE is not implemented as a transcoder.")
        if n_experts < 1 or self.n_latents % n_experts:
            raise InvalidInputError(
                f"n_experts={n_experts} must be >= 1 and divide n_latents={self.n_latents}."
            )
        self.n_experts = n_experts
        self.expert_size = self.n_latents // n_experts
        self.W_router = nn.Parameter(torch.randn(self.d_in, n_experts) / math.sqrt(self.d_in))
        self.b_router = nn.Parameter(torch.zeros(self.d_in))

    @torch.no_grad()
    def initialize_from_sample(self, inputs: Tensor, targets: Tensor | None = None) -> None:
        """The base initialisation, and ``b_router`` at the geometric median as ``b_dec``."""
        super().initialize_from_sample(inputs, targets)
        self.b_router.copy_(self.b_dec)

    def router_probabilities(self, x_normalised: Tensor) -> Tensor:
        """Softmax router probabilities, shape (batch, n_experts), from normalised inputs."""
        return torch.softmax((x_normalised - self.b_router) @ self.W_router, dim=-1)

    def _latents(self, x_normalised: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(latents (batch, n_latents), router probabilities, chosen expert (batch,))."""
        probs = self.router_probabilities(x_normalised)
        p_top, expert = probs.max(-1)
        centred = x_normalised - self.b_dec
        m = self.expert_size
        k = min(int(self.options["k"]), m)
        latents = centred.new_zeros(centred.shape[0], self.n_latents)
        for e in range(self.n_experts):
            rows = (expert == e).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            block = slice(e * m, (e + 1) * m)
            pre = centred[rows] @ self.W_enc[:, block] + self.b_enc[block]
            values, index = pre.topk(k, dim=-1)
            values = torch.relu(values) * p_top[rows, None]
            latents[rows[:, None], e * m + index] = values
        return latents, probs, expert

    def encode(self, x: Tensor) -> Tensor:
        """Latent activations, shape (batch, n_latents) (router-scaled), from raw inputs."""
        return self._latents(x * self.input_scale)[0]

    def activate(self, pre: Tensor) -> Tensor:
        raise InvalidInputError(
            "a switch SAE's latents depend on the router, not on pre-activations alone; "
            "use encode(x)."
        )

    def forward(self, x: Tensor) -> SAEOutput:
        """Route, encode with the chosen expert and decode raw inputs ``x`` (batch, d_in)."""
        latents = self.encode(x)
        return SAEOutput(self._decode_normalised(latents, None) / self.output_scale, latents)

    def load_balancing_loss(self, probs: Tensor, expert: Tensor) -> Tensor:
        """``E · Σ_e f_e P_e`` (unscaled by α): f_e routed fraction (constant), P_e mean prob."""
        fraction = torch.bincount(expert, minlength=self.n_experts).to(probs.dtype)
        fraction = fraction / max(1, expert.numel())
        return self.n_experts * (fraction * probs.mean(0)).sum()

    def training_loss(self, x: Tensor, target: Tensor | None = None) -> dict[str, Tensor]:
        """Loss terms on one batch of raw rows (keys of the base class, plus
        ``load_balance``)."""
        xn = x * self.input_scale
        latents, probs, expert = self._latents(xn)
        output = self._decode_normalised(latents, None)
        mse = (output - xn).pow(2).sum(-1).mean()
        self._track_firing(latents)
        balance = self.load_balancing_loss(probs, expert)
        auxiliary = self.options["load_balance_coefficient"] * balance
        return {
            "loss": mse + auxiliary,
            "mse": mse.detach(),
            "sparsity": mse.new_zeros(()),
            "auxiliary": auxiliary.detach(),
            "load_balance": balance.detach(),
            "l0": (latents > 0).sum(-1).float().mean().detach(),
            "dead_fraction": self.dead_mask().float().mean(),
        }

    def forward_flops(self) -> int:
        """Multiply-adds ×2 of one input's forward pass as the switch algorithm runs it.

        Router ``2·d·E``, the chosen expert's encoder ``2·d·m`` and a sparse decoder
        ``2·k·d`` (selection and softmax not counted). Compare :func:`topk_forward_flops`.
        """
        k = min(int(self.options["k"]), self.expert_size)
        d = self.d_in
        return 2 * d * self.n_experts + 2 * d * self.expert_size + 2 * k * d


def topk_forward_flops(d_in: int, n_latents: int, k: int) -> int:
    """Multiply-adds ×2 of one input through a TopK SAE: dense encoder ``2·d·n`` and a sparse
    decoder ``2·k·d`` (selection not counted)."""
    return 2 * d_in * n_latents + 2 * min(k, n_latents) * d_in
