"""Diffusion prior: denoise a CLIP image embedding conditioned on a brain embedding.

Owns :class:`DiffusionPrior` (an ``nn.Module`` with ``loss`` and ``sample``), the transformer it
trains (:class:`PriorTransformerNet`) and :class:`PriorModule`, a LightningModule that trains a
prior alone. :class:`neurodecode.models.retrieval.RetrievalModule` trains the same
``DiffusionPrior`` jointly with its contrastive loss (MindEye: contrastive + 30 x prior).

Design (DALL·E 2 prior as adapted by MindEye1/2)
------------------------------------------------
- A small bidirectional transformer of our own, not diffusers' ``PriorTransformer``: that class
  denoises a *single* embedding vector (its output is one token), whereas MindEye's prior and our
  token-level targets need ``(T, D)`` outputs (257 x 768 in MindEye1). Ours handles pooled
  ``(D,)`` targets as ``T = 1`` and ``(T, D)`` targets natively. The sequence is
  ``[brain tokens (T), time token, noisy image tokens (T)]`` with learned positions; the last
  ``T`` outputs are the prediction.
- diffusers schedulers: ``DDPMScheduler`` (100 training timesteps, ``squaredcos_cap_v2`` betas as
  in DALL·E 2, ``prediction_type="sample"``: the network predicts the clean embedding, MSE loss
  against it); sampling with DDIM (deterministic, default) or DDPM over 20 steps.
- Classifier-free guidance: during training the brain condition is replaced by a learned null
  embedding with probability 0.2; ``sample(..., guidance_scale=s)`` returns
  ``x0_uncond + s (x0_cond - x0_uncond)`` at each step (s = 1: plain conditional sampling).
- Scale: image embeddings are multiplied by ``sqrt(D) / mean token norm`` (the mean token norm is
  a buffer estimated from training targets) so that the noise schedule sees unit-variance
  coordinates, as DALL·E 2's ``image_embed_scale``; samples are returned in the original scale.
  The brain condition goes through a LayerNorm, so its scale is free.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import Tensor, nn

from neurodecode.models.training import adamw_onecycle, onecycle_step_scheduler
from neurodecode.pretrained import PretrainedMixin
from neurodecode.validation import InvalidInputError, check_option

__all__ = ["DiffusionPrior", "PriorModule", "PriorTransformerNet"]


class PriorTransformerNet(nn.Module):
    """Transformer that predicts clean embedding tokens from noisy ones, a timestep and a condition.

    Parameters
    ----------
    n_tokens, embed_dim : int
        Shape ``(T, D)`` of the embedding (T = 1 for pooled embeddings).
    depth : int
        Number of transformer layers.
    num_heads, head_dim : int
        Attention heads and their size; the model width is ``num_heads * head_dim``.
    dropout : float
        Dropout inside the transformer layers.
    """

    def __init__(
        self,
        n_tokens: int,
        embed_dim: int,
        depth: int = 6,
        num_heads: int = 8,
        head_dim: int = 64,
        dropout: float = 0.0,
    ):
        super().__init__()
        width = num_heads * head_dim
        self.n_tokens = n_tokens
        self.cond_norm = nn.LayerNorm(embed_dim)
        self.cond_in = nn.Linear(embed_dim, width)
        self.null_cond = nn.Parameter(torch.randn(n_tokens, width) * 0.02)
        self.x_in = nn.Linear(embed_dim, width)
        self.time_proj = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(width, width)
        self.positions = nn.Parameter(torch.randn(2 * n_tokens + 1, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width,
            num_heads,
            dim_feedforward=4 * width,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, embed_dim)

    def forward(self, x_t: Tensor, timestep: Tensor, cond: Tensor, drop_cond: Tensor) -> Tensor:
        """Predict the clean embedding.

        Parameters
        ----------
        x_t : Tensor, shape (B, T, D)
            Noisy (scaled) image embedding.
        timestep : Tensor, shape (B,)
            Diffusion step of each row.
        cond : Tensor, shape (B, T, D)
            Brain embedding.
        drop_cond : Tensor, shape (B,), bool
            Rows whose condition is replaced by the learned null embedding.

        Returns
        -------
        Tensor, shape (B, T, D)
        """
        cond_tokens = self.cond_in(self.cond_norm(cond))
        null = self.null_cond.unsqueeze(0).expand_as(cond_tokens)
        cond_tokens = torch.where(drop_cond.view(-1, 1, 1), null, cond_tokens)
        t_emb = self.time_embed(self.time_proj(timestep).to(x_t.dtype)).unsqueeze(1)
        seq = torch.cat([cond_tokens, t_emb, self.x_in(x_t)], dim=1) + self.positions
        h = self.transformer(seq)
        return self.out(self.out_norm(h[:, -self.n_tokens :]))


class DiffusionPrior(nn.Module):
    """Diffusion prior on CLIP image embeddings conditioned on brain embeddings.

    Parameters
    ----------
    embed_shape : sequence of int
        ``[D]`` (pooled) or ``[T, D]`` (token-level) embedding shape.
    depth, num_heads, head_dim, dropout :
        Transformer size (MindEye1: depth 6, 12 heads x 64).
    num_train_timesteps : int
        Diffusion steps in training (MindEye: 100).
    cond_drop_prob : float
        Probability of dropping the brain condition in training (MindEye: 0.2).
    beta_schedule : str
        diffusers beta schedule (``"squaredcos_cap_v2"`` = DALL·E 2's cosine schedule).
    """

    def __init__(
        self,
        embed_shape: Sequence[int],
        depth: int = 6,
        num_heads: int = 8,
        head_dim: int = 64,
        dropout: float = 0.0,
        num_train_timesteps: int = 100,
        cond_drop_prob: float = 0.2,
        beta_schedule: str = "squaredcos_cap_v2",
    ):
        super().__init__()
        embed_shape = tuple(int(s) for s in embed_shape)
        if len(embed_shape) not in (1, 2):
            raise InvalidInputError(f"embed_shape={embed_shape}; expected [D] or [T, D].")
        if not 0.0 <= cond_drop_prob < 1.0:
            raise InvalidInputError(f"cond_drop_prob={cond_drop_prob}; expected 0 <= p < 1.")
        self.embed_shape = embed_shape
        self.n_tokens, self.embed_dim = (1, *embed_shape) if len(embed_shape) == 1 else embed_shape
        self.cond_drop_prob = float(cond_drop_prob)
        self.net = PriorTransformerNet(
            self.n_tokens, self.embed_dim, depth, num_heads, head_dim, dropout
        )
        self.scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_schedule=beta_schedule,
            prediction_type="sample",
            clip_sample=False,
            timestep_spacing="trailing",
        )
        # Mean L2 norm of a target token, estimated from training targets (see module notes).
        self.register_buffer("target_norm", torch.tensor(1.0))
        self.register_buffer("n_norm_batches", torch.tensor(0, dtype=torch.long))

    def _tokens(self, x: Tensor, name: str) -> Tensor:
        if tuple(x.shape[1:]) != self.embed_shape:
            raise InvalidInputError(
                f"{name} has shape {tuple(x.shape)}; expected (B, {', '.join(map(str, self.embed_shape))})."
            )
        return x.reshape(x.shape[0], self.n_tokens, self.embed_dim)

    @property
    def _scale(self) -> Tensor:
        return math.sqrt(self.embed_dim) / self.target_norm.clamp_min(1e-8)

    @torch.no_grad()
    def _update_norm(self, x0: Tensor) -> None:
        batch_norm = x0.norm(dim=-1).mean()
        n = self.n_norm_batches.item()
        self.target_norm.copy_((self.target_norm * n + batch_norm) / (n + 1) if n else batch_norm)
        self.n_norm_batches += 1

    def loss(self, brain_emb: Tensor, image_emb: Tensor) -> Tensor:
        """MSE between the predicted and the true clean embedding at a random diffusion step.

        Parameters
        ----------
        brain_emb : Tensor, shape (B, *embed_shape)
            Condition (the retrieval backbone's output in MindEye).
        image_emb : Tensor, shape (B, *embed_shape)
            True CLIP image embedding.

        Returns
        -------
        Tensor, shape ()
            Mean squared error in the scaled space (per coordinate, ~unit variance).
        """
        cond = self._tokens(brain_emb, "brain_emb")
        x0 = self._tokens(image_emb, "image_emb")
        if self.training:
            self._update_norm(x0)
        x0 = x0 * self._scale
        b = x0.shape[0]
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), device=x0.device)
        noise = torch.randn_like(x0)
        x_t = self.scheduler.add_noise(x0, noise, t)
        drop = torch.rand(b, device=x0.device) < (self.cond_drop_prob if self.training else 0.0)
        pred = self.net(x_t, t, cond, drop)
        return F.mse_loss(pred, x0)

    @torch.no_grad()
    def sample(
        self,
        brain_emb: Tensor,
        num_inference_steps: int = 20,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
        scheduler: str = "ddim",
    ) -> Tensor:
        """Sample image embeddings for brain embeddings.

        Parameters
        ----------
        brain_emb : Tensor, shape (B, *embed_shape)
            Condition.
        num_inference_steps : int
            Denoising steps (MindEye2: 20).
        guidance_scale : float
            Classifier-free guidance scale; 1 = conditional prediction only.
        generator : torch.Generator, optional
            Random source for the initial noise (and DDPM's step noise); a CPU generator also
            works for CUDA inputs (noise is drawn on the CPU and moved).
        scheduler : {"ddim", "ddpm"}
            DDIM (eta = 0, deterministic given the initial noise) or ancestral DDPM sampling.

        Returns
        -------
        Tensor, shape (B, *embed_shape)
            Sampled image embeddings in the scale of the training targets.
        """
        check_option("scheduler", scheduler, ("ddim", "ddpm"))
        cond = self._tokens(brain_emb, "brain_emb")
        b = cond.shape[0]
        sched_cls = DDIMScheduler if scheduler == "ddim" else DDPMScheduler
        sched = sched_cls.from_config(self.scheduler.config)
        sched.set_timesteps(num_inference_steps, device=cond.device)
        noise_device = generator.device if generator is not None else cond.device
        x = torch.randn(cond.shape, generator=generator, device=noise_device, dtype=cond.dtype)
        x = x.to(cond.device)
        x = x * sched.init_noise_sigma
        guided = guidance_scale != 1.0
        keep = torch.zeros(b, dtype=torch.bool, device=cond.device)
        drop = torch.ones(b, dtype=torch.bool, device=cond.device)
        for t in sched.timesteps:
            t_batch = t.expand(b).to(cond.device)
            if guided:
                both = self.net(
                    torch.cat([x, x]),
                    torch.cat([t_batch, t_batch]),
                    torch.cat([cond, cond]),
                    torch.cat([keep, drop]),
                )
                x0_cond, x0_null = both.chunk(2)
                x0 = x0_null + guidance_scale * (x0_cond - x0_null)
            else:
                x0 = self.net(x, t_batch, cond, keep)
            x = sched.step(x0, t, x, generator=generator).prev_sample
        return (x / self._scale).reshape(b, *self.embed_shape)


class PriorModule(PretrainedMixin, L.LightningModule):
    """Train a :class:`DiffusionPrior` alone (conditions given, or from a frozen encoder).

    Batches carry ``target`` (B, *target_shape) and either ``condition`` (B, *target_shape),
    a precomputed brain embedding, or ``brain``/``subject`` together with an ``encoder`` (e.g. a
    trained :class:`~neurodecode.models.retrieval.RetrievalModule`) whose
    ``embed(brain, subject, output="backbone")`` gives the condition. The encoder is frozen and
    is *not* part of this module's weights or config (``attach_encoder`` it after loading).

    Parameters
    ----------
    geometry : dict, optional
        fMRI geometry; only ``target_shape`` is used.
    prior : dict, optional
        Keyword arguments of :class:`DiffusionPrior` other than ``embed_shape``.
    lr, weight_decay : float
        AdamW settings (OneCycle schedule with max ``lr``).
    encoder : nn.Module, optional
        Frozen module with ``embed(brain, subject, output=...)``.
    """

    def __init__(
        self,
        geometry: dict | None = None,
        prior: dict | None = None,
        lr: float = 3e-4,
        weight_decay: float = 0.01,
        encoder: nn.Module | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["encoder"])
        if geometry is None or "target_shape" not in geometry:
            raise InvalidInputError(
                f"PriorModule needs geometry with 'target_shape' ([D] or [T, D]); got {geometry!r}."
            )
        self.target_shape = tuple(int(s) for s in geometry["target_shape"])
        self.prior = DiffusionPrior(self.target_shape, **(prior or {}))
        self.attach_encoder(encoder)

    @property
    def encoder(self) -> nn.Module | None:
        """The frozen condition encoder (not a submodule: neither saved nor trained)."""
        return self.__dict__.get("_condition_encoder")

    def attach_encoder(self, module: nn.Module | None) -> None:
        """Use ``module.embed(brain, subject, output="backbone")`` (frozen) as the condition."""
        if module is not None:
            module.eval().requires_grad_(False)
        self.__dict__["_condition_encoder"] = module

    def _condition(self, batch: dict[str, Any]) -> Tensor:
        if "condition" in batch:
            return batch["condition"]
        if self.encoder is None:
            raise InvalidInputError(
                "PriorModule batch has no 'condition' and no encoder is attached; give "
                "precomputed brain embeddings as batch['condition'] or call attach_encoder()."
            )
        brain = batch["brain"]
        self.encoder.to(brain.device)
        with torch.no_grad():
            return self.encoder.embed(brain, batch["subject"], output="backbone")

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self.prior.loss(self._condition(batch), batch["target"])
        self.log("train/prior_loss", loss, prog_bar=True, batch_size=batch["target"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        cond = self._condition(batch)
        target = batch["target"]
        loss = self.prior.loss(cond, target)
        sample = self.prior.sample(cond, num_inference_steps=20)
        cos = F.cosine_similarity(sample.flatten(1), target.flatten(1), dim=-1).mean()
        bs = target.shape[0]
        self.log("val/prior_loss", loss, prog_bar=True, batch_size=bs)
        self.log("val/prior_cosine", cos, batch_size=bs)
        return loss

    @torch.no_grad()
    def embed(self, condition: Tensor, **sample_kwargs: Any) -> Tensor:
        """Sample image embeddings for brain embeddings ``condition`` (B, *target_shape)."""
        return self.prior.sample(condition, **sample_kwargs)

    def configure_optimizers(self):
        return adamw_onecycle(self, self.hparams.lr, self.hparams.weight_decay)

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        onecycle_step_scheduler(scheduler, metric)
