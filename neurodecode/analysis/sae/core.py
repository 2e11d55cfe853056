"""The shared base of the sparse autoencoders and transcoders, and the registry by name.

Owns :class:`SparseAutoencoder` (encode/decode, normalisation, dead-latent tracking, the unit-norm
decoder, saving) and :func:`create_sae`; each architecture is a small subclass in its own module
(listed below) that sets its latents and losses; training itself (Lightning) lives in
:mod:`neurodecode.analysis.sae.training` and the metrics in :mod:`neurodecode.analysis.sae.metrics`.

Architectures (``architecture`` name -> module):

- ``relu_l1`` (:mod:`.relu_l1`) — ReLU latents, decoder-norm-weighted L1 penalty (Bricken et al. 2023; Anthropic's
  April 2024 update).
- ``topk`` (:mod:`.topk`) — keep the k largest latents per sample, with the AuxK dead-latent loss (Gao et al.
  2024, "Scaling and evaluating sparse autoencoders").
- ``batchtopk`` (:mod:`.topk`) — keep the ``k * batch`` largest latents over the batch; at inference a threshold
  estimated during training (Bussmann et al. 2024).
- ``jumprelu`` (:mod:`.jumprelu`) — JumpReLU latents with a learned threshold trained through a rectangle-kernel
  straight-through estimator, L0 penalty (Rajamanoharan et al. 2024b).
- ``gated`` (:mod:`.gated`) — separate gate and magnitude paths with shared weights, auxiliary reconstruction
  through a *frozen* copy of the decoder (Rajamanoharan et al. 2024a).
- ``prolu`` (:mod:`.prolu`) — ProLU latents (the bias only gates), ProLU_ReLU / ProLU_STE gradients, L1
  penalty (Taggart 2024).
- ``matryoshka_batchtopk`` (:mod:`.matryoshka`) — BatchTopK latents, loss summed over nested dictionary
  prefixes (Bussmann et al. 2025).
- ``switch`` (:mod:`.switch`) — a softmax router picks one of E TopK experts per input, load-balancing loss
  (Mudide et al. 2024); not a transcoder.

The feature-suppression fix for L1-trained SAEs (Wright & Sharkey 2024) is
:func:`neurodecode.analysis.sae.suppression.fix_feature_suppression`.

Every architecture is also a **transcoder** (``transcoder=True``: reconstruct a component's output
from its input, Dunefsky et al. 2024) and a **skip transcoder** (``skip_connection=True``: an affine
skip path ``x W_skip`` added to the output, Paulo et al. 2025).

Good practice by default: ``b_dec`` initialised at the geometric median of a sample, encoder
initialised as the decoder's transpose, unit-norm decoder atoms kept by projection (gradient
component along each atom removed before a step, rows renormalised after), dead latents tracked
over a window of training rows, and activations normalised by a stored scale so that
``E||x||² = d``. All losses are computed in the normalised space; :meth:`SparseAutoencoder.forward`
takes and returns raw activations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from neurodecode.pretrained import PretrainedMixin
from neurodecode.validation import InvalidInputError, check_keys, check_option

#: architecture name -> class; filled by :func:`register_sae`.
SAE_REGISTRY: dict[str, type[SparseAutoencoder]] = {}


def register_sae(cls: type[SparseAutoencoder]) -> type[SparseAutoencoder]:
    """Class decorator: register an SAE subclass under its ``architecture`` name."""
    if not cls.architecture:
        raise TypeError(f"{cls.__name__} needs a non-empty `architecture` class attribute.")
    SAE_REGISTRY[cls.architecture] = cls
    return cls


def create_sae(architecture: str, d_in: int, n_latents: int, **kwargs: Any) -> SparseAutoencoder:
    """Build a registered SAE by name; unknown names or hyperparameters raise one clear error.

    Parameters
    ----------
    architecture : str
        A key of :data:`SAE_REGISTRY` (``relu_l1``, ``topk``, ``batchtopk``, ``jumprelu``,
        ``gated``, ``prolu``, ``matryoshka_batchtopk``, ``switch``).
    d_in, n_latents : int
        Input width and number of latents (dictionary size).
    **kwargs
        Shared options of :class:`SparseAutoencoder` and the architecture's ``hyperparameters``.
    """
    check_option("architecture", architecture, sorted(SAE_REGISTRY))
    return SAE_REGISTRY[architecture](d_in, n_latents, **kwargs)


def geometric_median(points: Tensor, max_iter: int = 100, tol: float = 1e-6) -> Tensor:
    """Geometric median of ``points`` by Weiszfeld's algorithm (float64 internally).

    Parameters
    ----------
    points : Tensor, shape (n, d)

    Returns
    -------
    Tensor, shape (d,)
        The point minimising the sum of Euclidean distances to ``points``, in ``points``' dtype.
    """
    x = points.detach().to(torch.float64)
    median = x.mean(0)
    for _ in range(max_iter):
        dist = torch.linalg.vector_norm(x - median, dim=1)
        weights = 1.0 / dist.clamp_min(1e-12)
        new = (weights @ x) / weights.sum()  # a matrix-vector product, no (n, d) temporary
        shift = torch.linalg.vector_norm(new - median)
        median = new
        if shift <= tol * (1.0 + torch.linalg.vector_norm(median)):
            break
    return median.to(points.dtype)


@dataclass
class SAEOutput:
    """What a forward pass returns.

    Attributes
    ----------
    output : Tensor, shape (batch, d_out)
        Reconstruction (SAE) or predicted component output (transcoder), raw units.
    latents : Tensor, shape (batch, n_latents)
        Latent activations (normalised units).
    """

    output: Tensor
    latents: Tensor


class SparseAutoencoder(PretrainedMixin, nn.Module):
    """Base SAE / transcoder: linear encoder, sparse activation, linear decoder.

    ``latents = act(W_encᵀ(x̃ - b_pre) + b_enc)`` and
    ``output = (latents W_dec + b_dec [+ x̃ W_skip]) / output_scale`` with
    ``x̃ = x * input_scale``; ``b_pre = b_dec`` for an SAE and a fixed input centre (geometric
    median of the inputs) for a transcoder.

    Parameters
    ----------
    d_in : int
        Input width.
    n_latents : int
        Number of latents (dictionary atoms).
    transcoder : bool
        Predict a different target (a component's output) from the input.
    d_out : int, optional
        Target width of a transcoder (default ``d_in``); must be omitted for an SAE.
    skip_connection : bool
        Add an affine skip path ``x W_skip`` (zero-initialised); transcoders only.
    unit_norm_decoder : bool
        Keep decoder rows at unit norm by projection.
    normalize_activations : bool
        Estimate ``input_scale``/``output_scale`` in :meth:`initialize_from_sample` so that the
        normalised activations have ``E||x||² = d``.
    dead_window : int
        A latent that has not fired in this many training rows counts as dead (AuxK target).
    encoder_init_scale : float, optional
        An SAE's encoder starts as ``encoder_init_scale · W_decᵀ`` (the tied initialisation of
        Gao et al. 2024, scaled as in Anthropic's April 2024 update). Default: the
        architecture's ``encoder_init_rms`` rule when it has one (encoder entries of RMS
        ``encoder_init_rms``, i.e. ``min(1, encoder_init_rms · sqrt(d_in))``), else 1. Adam moves
        every entry by about the learning rate per step whatever its size, so smaller entries
        learn faster early on. Transcoders (``d_in != d_out``) start from a random encoder.
    **hyperparameters
        The subclass's ``hyperparameters`` (see each class).
    """

    architecture: ClassVar[str] = ""
    #: name -> default of the architecture-specific options.
    hyperparameters: ClassVar[dict[str, Any]] = {}
    #: RMS of the tied encoder's entries at initialisation (``None``: scale 1); see
    #: ``encoder_init_scale``.
    encoder_init_rms: ClassVar[float | None] = None

    def __init__(
        self,
        d_in: int,
        n_latents: int,
        *,
        transcoder: bool = False,
        d_out: int | None = None,
        skip_connection: bool = False,
        unit_norm_decoder: bool = True,
        normalize_activations: bool = True,
        dead_window: int = 10_000_000,
        encoder_init_scale: float | None = None,
        **hyperparameters: Any,
    ) -> None:
        super().__init__()
        check_keys(f"{self.architecture} SAE options", hyperparameters, self.hyperparameters)
        if d_in < 1 or n_latents < 1:
            raise InvalidInputError(f"d_in and n_latents must be >= 1; got {d_in}, {n_latents}.")
        if d_out is not None and not transcoder:
            raise InvalidInputError(
                "d_out is only valid with transcoder=True (an SAE has d_out=d_in)."
            )
        if skip_connection and not transcoder:
            raise InvalidInputError("skip_connection=True needs transcoder=True.")
        self.d_in = int(d_in)
        self.n_latents = int(n_latents)
        self.transcoder = bool(transcoder)
        self.d_out = int(d_out if d_out is not None else d_in)
        self.skip_connection = bool(skip_connection)
        self.unit_norm_decoder = bool(unit_norm_decoder)
        self.normalize_activations = bool(normalize_activations)
        self.dead_window = int(dead_window)
        self.options = {**self.hyperparameters, **hyperparameters}

        decoder = torch.randn(self.n_latents, self.d_out)
        decoder = decoder / torch.linalg.vector_norm(decoder, dim=1, keepdim=True)
        self.W_dec = nn.Parameter(decoder)
        if encoder_init_scale is None:
            rms = self.encoder_init_rms
            encoder_init_scale = 1.0 if rms is None else min(1.0, rms * math.sqrt(self.d_in))
        if not encoder_init_scale > 0:
            raise InvalidInputError(f"encoder_init_scale must be > 0; got {encoder_init_scale}.")
        self.encoder_init_scale = float(encoder_init_scale)
        if self.d_in == self.d_out:
            encoder = decoder.T.clone() * self.encoder_init_scale
        else:
            encoder = torch.randn(self.d_in, self.n_latents) / math.sqrt(self.d_in)
        self.W_enc = nn.Parameter(encoder)
        self.b_enc = nn.Parameter(torch.zeros(self.n_latents))
        self.b_dec = nn.Parameter(torch.zeros(self.d_out))
        if self.skip_connection:
            self.W_skip = nn.Parameter(torch.zeros(self.d_in, self.d_out))
        self.register_buffer("input_scale", torch.ones(()))
        self.register_buffer("output_scale", torch.ones(()))
        # transcoders centre their input on a fixed point (an SAE uses b_dec)
        self.register_buffer("input_centre", torch.zeros(self.d_in))
        self.register_buffer("rows_since_fired", torch.zeros(self.n_latents, dtype=torch.long))

    # --- configuration and persistence -----------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this module (JSON-serialisable)."""
        config = {
            "architecture": self.architecture,
            "d_in": self.d_in,
            "n_latents": self.n_latents,
            "transcoder": self.transcoder,
            "skip_connection": self.skip_connection,
            "unit_norm_decoder": self.unit_norm_decoder,
            "normalize_activations": self.normalize_activations,
            "dead_window": self.dead_window,
            "encoder_init_scale": self.encoder_init_scale,
            **self.options,
        }
        if self.transcoder:
            config["d_out"] = self.d_out
        return config

    def get_config(self) -> dict[str, Any]:
        """Init arguments of :func:`create_sae` (architecture included), as JSON types."""
        return self.config()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SparseAutoencoder:
        """Rebuild an untrained SAE of the saved architecture (any registered one)."""
        config = dict(config)
        return create_sae(config.pop("architecture", None), **config)

    # --- initialisation --------------------------------------------------------------------------
    @torch.no_grad()
    def initialize_from_sample(self, inputs: Tensor, targets: Tensor | None = None) -> None:
        """Set activation scales and ``b_dec`` (geometric median) from a sample of rows.

        Parameters
        ----------
        inputs : Tensor, shape (n, d_in)
        targets : Tensor, shape (n, d_out), optional
            Transcoder targets (required when ``transcoder=True``).
        """
        if self.transcoder and targets is None:
            raise InvalidInputError("a transcoder needs `targets` to initialise from a sample.")
        targets = inputs if targets is None else targets
        inputs = inputs.to(self.W_enc)
        targets = targets.to(self.W_enc)
        if self.normalize_activations:
            self.input_scale.fill_(_unit_scale(inputs))
            self.output_scale.fill_(_unit_scale(targets) if self.transcoder else self.input_scale)
        self.b_dec.copy_(geometric_median(targets * self.output_scale))
        if self.transcoder:
            self.input_centre.copy_(geometric_median(inputs * self.input_scale))

    # --- the forward pass ------------------------------------------------------------------------
    def _centre(self) -> Tensor:
        return self.input_centre if self.transcoder else self.b_dec

    def pre_activations(self, x_normalised: Tensor) -> Tensor:
        """Encoder pre-activations, shape (batch, n_latents), from normalised inputs."""
        return (x_normalised - self._centre()) @ self.W_enc + self.b_enc

    def activate(self, pre: Tensor) -> Tensor:
        """Inference-time sparse activation; overridden by each architecture."""
        raise NotImplementedError

    def encode(self, x: Tensor) -> Tensor:
        """Latent activations (inference rule), shape (batch, n_latents), from raw inputs."""
        return self.activate(self.pre_activations(x * self.input_scale))

    def _decode_normalised(self, latents: Tensor, x_normalised: Tensor | None) -> Tensor:
        out = latents @ self.W_dec + self.b_dec
        if self.skip_connection:
            if x_normalised is None:
                raise InvalidInputError("a skip transcoder needs the input `x` to decode.")
            out = out + x_normalised @ self.W_skip
        return out

    def decode(self, latents: Tensor, x: Tensor | None = None) -> Tensor:
        """Raw-unit output, shape (batch, d_out), from latents (and ``x`` for a skip transcoder)."""
        xn = None if x is None else x * self.input_scale
        return self._decode_normalised(latents, xn) / self.output_scale

    def forward(self, x: Tensor) -> SAEOutput:
        """Encode and decode raw inputs ``x`` (batch, d_in) with the inference rule."""
        xn = x * self.input_scale
        latents = self.activate(self.pre_activations(xn))
        return SAEOutput(self._decode_normalised(latents, xn) / self.output_scale, latents)

    # --- training --------------------------------------------------------------------------------
    def training_latents(self, pre: Tensor) -> Tensor:
        """Training-time activation (default: the inference rule)."""
        return self.activate(pre)

    def sparsity_loss(self, pre: Tensor, latents: Tensor) -> Tensor:
        """The sparsity penalty added to the reconstruction loss (default none)."""
        return pre.new_zeros(())

    def auxiliary_loss(
        self, x_normalised: Tensor, target_normalised: Tensor, pre: Tensor, output: Tensor
    ) -> Tensor:
        """Any auxiliary loss (AuxK, Gated's frozen-decoder term); default none."""
        return pre.new_zeros(())

    def training_loss(self, x: Tensor, target: Tensor | None = None) -> dict[str, Tensor]:
        """Loss terms on one batch of raw rows, in normalised units.

        Returns
        -------
        dict
            ``loss`` (the sum to minimise), ``mse`` (per-row squared error summed over
            dimensions), ``sparsity``, ``auxiliary``, ``l0`` (mean active latents per row) and
            ``dead_fraction`` (latents silent for ``dead_window`` rows).
        """
        if self.transcoder and target is None:
            raise InvalidInputError("a transcoder needs a `target` batch.")
        xn = x * self.input_scale
        tn = (x if target is None else target) * self.output_scale
        pre = self.pre_activations(xn)
        latents = self.training_latents(pre)
        output = self._decode_normalised(latents, xn)
        mse = (output - tn).pow(2).sum(-1).mean()
        self._track_firing(latents)
        sparsity = self.sparsity_loss(pre, latents)
        auxiliary = self.auxiliary_loss(xn, tn, pre, output)
        return {
            "loss": mse + sparsity + auxiliary,
            "mse": mse.detach(),
            "sparsity": sparsity.detach(),
            "auxiliary": auxiliary.detach(),
            "l0": (latents > 0).sum(-1).float().mean().detach(),
            "dead_fraction": self.dead_mask().float().mean(),
        }

    @torch.no_grad()
    def _track_firing(self, latents: Tensor) -> None:
        fired = (latents > 0).any(0)
        self.rows_since_fired += latents.shape[0]
        self.rows_since_fired[fired] = 0

    def dead_mask(self) -> Tensor:
        """Boolean (n_latents,): latents that have not fired in the last ``dead_window`` rows."""
        return self.rows_since_fired >= self.dead_window

    def decoder_norms(self) -> Tensor:
        """Norm of each decoder row, shape (n_latents,)."""
        return torch.linalg.vector_norm(self.W_dec, dim=1)

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Drop the gradient component along each (unit) decoder row before an optimiser step."""
        if not self.unit_norm_decoder or self.W_dec.grad is None:
            return
        atoms = self.W_dec / self.decoder_norms().clamp_min(1e-12)[:, None]
        parallel = (self.W_dec.grad * atoms).sum(1, keepdim=True)
        self.W_dec.grad -= parallel * atoms

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Project decoder rows back to unit norm (no-op if ``unit_norm_decoder`` is off)."""
        if self.unit_norm_decoder:
            self.W_dec /= self.decoder_norms().clamp_min(1e-12)[:, None]


def _unit_scale(x: Tensor) -> float:
    """Scale s with E||s x||² = d (Anthropic/OpenAI activation normalisation)."""
    mean_sq = x.to(torch.float64).pow(2).sum(-1).mean().item()
    return math.sqrt(x.shape[-1] / mean_sq) if mean_sq > 0 else 1.0
