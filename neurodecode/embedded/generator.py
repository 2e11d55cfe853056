"""The embedded default generator: a small diffusers UNet conditioned on image embeddings.

Trained on simulated stimuli (:func:`neurodecode.sim.stimuli.generate_stimuli`; more images than any
brain saw) at 32 px with a DDPM objective and sampled with DDIM, both schedulers from diffusers. The
embedding (L2-normalised) conditions the :class:`diffusers.UNet2DModel` twice: through its class
embedding (``class_embed_type="identity"``, added to the timestep embedding and applied as a
scale/shift in every ResNet block) and as a coarse ``3 x 8 x 8`` map, upsampled and concatenated to
the noisy input (as cascaded diffusion conditions on a low-resolution image). Condition dropout
trains a learned null embedding, so sampling can use classifier-free guidance.

:func:`get_sim_generator` trains one the first time a ``(preset, embedding function)`` pair is asked
for and caches it (see :mod:`neurodecode.embedded.cache`); the ``"default"`` preset trains in
about 90 s on 2 CPU cores, ``"tiny"`` in a few seconds (for tests). ``"braindive"`` (same network,
v-prediction, 10 000 stimuli, 2000 steps; about 15 min on 2 CPU cores) is the one for
brain-guided synthesis: the default draws faces and stick-figure bodies as coloured blobs (a judge
CNN names 0-10 % of samples conditioned on held-out face or body embeddings); this one draws
them often enough to steer toward (faces 25-45 %, bodies 40-45 %, n = 20 each, over
classifier-free guidance 1-3; places 100 %, words 45-70 %, food 65-75 %).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from neurodecode.analysis.synthesis import Denoiser
from neurodecode.embedded.cache import cache_root, config_key
from neurodecode.models.training import adamw_onecycle, fit_lightning
from neurodecode.pretrained import PretrainedMixin, load_pretrained, save_pretrained
from neurodecode.reconstruct.generators import (
    check_generate_arguments,
    images_to_tensor,
    resize_images,
)
from neurodecode.sim.stimuli import generate_stimuli
from neurodecode.validation import InvalidInputError, check_array, check_keys, check_option

log = logging.getLogger(__name__)

#: ``embed_fn(images uint8 (N, H, W, 3)) -> embeddings (N, D)``
EmbedFn = Callable[[np.ndarray], np.ndarray | torch.Tensor]


@dataclass(frozen=True)
class SimGeneratorConfig:
    """Architecture and training recipe of a :class:`SimGenerator`.

    Attributes
    ----------
    image_size : int
        Side of the generated images (px).
    embed_image_size : int
        Side of the stimuli given to ``embed_fn`` (px); they are then shrunk to ``image_size``.
    block_out_channels : tuple of int
        UNet widths per resolution level (the last level has self-attention).
    layers_per_block : int
        ResNet blocks per level.
    coarse_size : int
        Side of the embedding's coarse image map concatenated to the UNet input.
    num_train_timesteps : int
        Diffusion steps of the training (DDPM) schedule.
    beta_schedule : str
        A diffusers beta schedule.
    prediction_type : {"sample", "epsilon", "v_prediction"}
        What the UNet predicts. ``"sample"`` (the clean image) learns fastest for a small budget.
    cond_dropout : float
        Probability that a training embedding is replaced by the learned null embedding.
    n_stimuli, stimulus_seed : int
        Training images: ``generate_stimuli(n_stimuli, seed=stimulus_seed)``.
    train_steps, batch_size : int
        Optimiser steps and batch size.
    learning_rate : float
        Peak AdamW learning rate (one-cycle schedule).
    seed : int
        Seeds initialisation, batches and training noise.
    guidance_scale : float
        Default classifier-free guidance at sampling (1 = none).
    num_inference_steps : int
        Default DDIM steps at sampling.
    hint_size : int
        Side (px) of the *low-level hint*, a blurry image that conditions the UNet beside the
        embedding (concatenated to its input, upsampled, with a channel saying it is present);
        0 = none. At sampling the ``init_images`` are the hint (the low-level pathway's blurry
        reconstruction). In training the hint is the clean image shrunk to ``hint_size`` (area),
        its contrast scaled toward its mean by a factor drawn in ``[hint_contrast_min, 1]`` and
        Gaussian noise of a standard deviation drawn in ``[0, hint_noise_max]`` added, as a
        decoder's blurry image is a shrunk, noisy copy of the stimulus.
    hint_contrast_min, hint_noise_max : float
        Range of that degradation (contrast factor; noise std in [0, 1] image units).
    hint_dropout : float
        Probability that a training image gets no hint (so the generator also works without one).
    """

    image_size: int = 32
    embed_image_size: int = 64
    block_out_channels: tuple[int, ...] = (32, 48, 48)
    layers_per_block: int = 1
    coarse_size: int = 8
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "sample"
    cond_dropout: float = 0.1
    n_stimuli: int = 4000
    stimulus_seed: int = 104729
    train_steps: int = 200
    batch_size: int = 32
    learning_rate: float = 3e-3
    seed: int = 0
    guidance_scale: float = 1.5
    num_inference_steps: int = 10
    hint_size: int = 0
    hint_contrast_min: float = 0.3
    hint_noise_max: float = 0.15
    hint_dropout: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists). Without a hint (``hint_size=0``) the hint fields
        are left out, so generators trained before the hint existed keep their cache keys."""
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}
        if not self.hint_size:
            values = {k: v for k, v in values.items() if not k.startswith("hint_")}
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SimGeneratorConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        check_keys("SimGeneratorConfig", values, [f.name for f in dataclasses.fields(cls)])
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**values)


PRESETS: dict[str, SimGeneratorConfig] = {
    "default": SimGeneratorConfig(),
    "tiny": SimGeneratorConfig(
        block_out_channels=(16, 32),
        coarse_size=4,
        n_stimuli=256,
        train_steps=60,
        batch_size=16,
        learning_rate=5e-3,
        num_inference_steps=4,
        embed_image_size=32,
    ),
    # For BrainDiVE, which needs every category drawn (faces and bodies included); "default"
    # (tuned for the reconstruction demo's budget) draws those as blobs.
    "braindive": SimGeneratorConfig(
        prediction_type="v_prediction",
        n_stimuli=10000,
        train_steps=2000,
    ),
}


class ConditionedUNet(PretrainedMixin, nn.Module):
    """A :class:`diffusers.UNet2DModel` conditioned on an image embedding.

    Parameters
    ----------
    embed_dim : int
        Embedding length ``D``.
    config : SimGeneratorConfig
        Architecture fields are used.
    """

    def __init__(self, embed_dim: int, config: SimGeneratorConfig | dict):
        super().__init__()
        if isinstance(config, dict):
            config = SimGeneratorConfig.from_dict(config)
        self.recipe = config
        self.embed_dim = embed_dim
        self.coarse_size = config.coarse_size
        self.hint_size = int(config.hint_size)
        channels = tuple(config.block_out_channels)
        time_dim = channels[0] * 4
        levels = len(channels)
        self.unet = UNet2DModel(
            sample_size=config.image_size,
            in_channels=6 + (4 if self.hint_size else 0),
            out_channels=3,
            block_out_channels=channels,
            layers_per_block=config.layers_per_block,
            down_block_types=("DownBlock2D",) * (levels - 1) + ("AttnDownBlock2D",),
            up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1),
            class_embed_type="identity",
            norm_num_groups=8,
            attention_head_dim=channels[-1],
            resnet_time_scale_shift="scale_shift",
        )
        self.null_embed = nn.Parameter(torch.zeros(embed_dim))
        self.to_class = nn.Sequential(
            nn.Linear(embed_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim)
        )
        self.to_coarse = nn.Linear(embed_dim, 3 * self.coarse_size**2)

    def normalise(self, embeds: torch.Tensor) -> torch.Tensor:
        """L2-normalise and scale to unit variance per component: ``(N, D) -> (N, D)``."""
        return F.normalize(embeds.float(), dim=-1) * math.sqrt(self.embed_dim)

    def get_config(self) -> dict[str, Any]:
        """Init arguments (the embedding length and the whole recipe), as JSON types."""
        return {"embed_dim": int(self.embed_dim), "config": self.recipe.to_dict()}

    def hint_channels(
        self, hint: torch.Tensor | None, n: int, size: int, present: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The low-level hint as UNet input channels: ``(N, 4, size, size)``.

        Parameters
        ----------
        hint : Tensor, shape (N, 3, h, w), in [0, 1], or None
            Blurry images (resized to ``hint_size``, then upsampled bilinearly); ``None``
            means no hint for any row.
        n, size : int
            Rows and side of the UNet input.
        present : Tensor of bool, shape (N,), optional
            Rows that get their hint (the others get none); default all.

        Returns
        -------
        Tensor
            The hint in [-1, 1] (zero where absent) and a channel that is 1 where present.
        """
        device = self.null_embed.device
        if hint is None:
            return torch.zeros(n, 4, size, size, device=device)
        hint = hint.float().to(device)
        if hint.shape[-1] != self.hint_size:
            hint = resize_images(hint, self.hint_size)
        hint = F.interpolate(hint.clamp(0, 1) * 2 - 1, size=(size, size), mode="bilinear")
        mask = torch.ones(n, 1, size, size, device=device)
        if present is not None:
            mask = mask * present.to(device).float().view(n, 1, 1, 1)
        return torch.cat([hint * mask, mask], dim=1)

    def forward(
        self,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        cond: torch.Tensor,
        hint: torch.Tensor | None = None,
    ):
        """Predict the target for ``noisy`` (N, 3, H, W) at ``timesteps`` (N,) given ``cond`` (N, D).

        ``cond`` is an already normalised embedding (:meth:`normalise`) or the null embedding.
        ``hint`` (N, 4, H, W) is :meth:`hint_channels`' output (only with ``hint_size``; default no
        hint).
        """
        n, _, h, w = noisy.shape
        coarse = self.to_coarse(cond).view(n, 3, self.coarse_size, self.coarse_size)
        coarse = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
        inputs = [noisy, coarse]
        if self.hint_size:
            inputs.append(self.hint_channels(None, n, h) if hint is None else hint.to(noisy))
        return self.unet(
            torch.cat(inputs, dim=1), timesteps, class_labels=self.to_class(cond)
        ).sample


def degrade_to_hint(images: torch.Tensor, config: SimGeneratorConfig) -> torch.Tensor:
    """Training hints: ``images`` (N, 3, H, W) in [0, 1] -> (N, 3, hint_size, hint_size) in [0, 1].

    Shrunk (antialiased, as :meth:`ConditionedUNet.hint_channels` shrinks), contrast scaled toward each image's mean by a factor drawn uniformly in
    ``[hint_contrast_min, 1]``, Gaussian noise of a std drawn uniformly in ``[0, hint_noise_max]``
    added (see :class:`SimGeneratorConfig`).
    """
    n = len(images)
    small = resize_images(images.float(), config.hint_size)
    mean = small.mean(dim=(1, 2, 3), keepdim=True)
    draws = torch.rand(n, 2).to(small)
    contrast = config.hint_contrast_min + (1 - config.hint_contrast_min) * draws[:, 0]
    noise_std = config.hint_noise_max * draws[:, 1]
    noise = torch.randn(small.shape).to(small)
    hint = mean + contrast.view(n, 1, 1, 1) * (small - mean) + noise_std.view(n, 1, 1, 1) * noise
    return hint.clamp(0, 1)


def _train_scheduler(config: SimGeneratorConfig) -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        prediction_type=config.prediction_type,
    )


def _sample_scheduler(config: SimGeneratorConfig) -> DDIMScheduler:
    return DDIMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        prediction_type=config.prediction_type,
        clip_sample=True,
        set_alpha_to_one=True,
        timestep_spacing="trailing",
    )


class SimGeneratorModule(L.LightningModule):
    """Trains a :class:`ConditionedUNet` with the DDPM objective.

    Batches are ``(images, embeds)``: images (B, 3, H, W) in [0, 1], embeds (B, D).
    """

    def __init__(self, embed_dim: int, config: SimGeneratorConfig):
        super().__init__()
        self.config = config
        self.model = ConditionedUNet(embed_dim, config)
        self.noise_scheduler = _train_scheduler(config)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        images, embeds = batch
        clean = images * 2.0 - 1.0
        cond = self.model.normalise(embeds)
        drop = torch.rand(len(cond), device=cond.device) < self.config.cond_dropout
        cond = torch.where(drop[:, None], self.model.null_embed.expand_as(cond), cond)
        noise = torch.randn_like(clean)
        steps = torch.randint(
            0, self.config.num_train_timesteps, (len(clean),), device=clean.device
        )
        noisy = self.noise_scheduler.add_noise(clean, noise, steps)
        hint = None
        if self.config.hint_size:
            present = torch.rand(len(clean), device=clean.device) >= self.config.hint_dropout
            hint = self.model.hint_channels(
                degrade_to_hint(images, self.config).to(clean),
                len(clean),
                clean.shape[-1],
                present,
            )
        prediction = self.model(noisy, steps, cond, hint)
        if self.config.prediction_type == "sample":
            target = clean
        elif self.config.prediction_type == "epsilon":
            target = noise
        else:
            target = self.noise_scheduler.get_velocity(clean, noise, steps)
        loss = F.mse_loss(prediction, target)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return adamw_onecycle(
            self, self.config.learning_rate, 0.01, pct_start=0.15, final_div_factor=1e4
        )


class SimGenerator:
    """The embedded default :class:`~neurodecode.reconstruct.generators.Generator`.

    Parameters
    ----------
    model : ConditionedUNet
        Trained network.
    config : SimGeneratorConfig
        The recipe it was trained with (sets the schedulers and sampling defaults).
    """

    def __init__(self, model: ConditionedUNet, config: SimGeneratorConfig):
        self.model = model.eval()
        self.config = config
        self.image_size = config.image_size
        self.embed_dim = model.embed_dim

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> SimGenerator:
        """Move to ``device``; returns self."""
        self.model.to(device)
        return self

    @torch.no_grad()
    def generate(
        self,
        image_embeds: torch.Tensor,
        init_images: torch.Tensor | None = None,
        strength: float = 0.6,
        num_samples: int = 1,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        guidance_scale: float | None = None,
        batch_size: int = 16,
    ) -> torch.Tensor:
        """Generate images conditioned on ``image_embeds`` (see :class:`Generator`).

        Parameters
        ----------
        image_embeds : Tensor, shape (N, D)
        init_images : Tensor, shape (N, 3, h, w), in [0, 1], optional
            The start of img2img and, for a generator trained with a low-level hint
            (``config.hint_size``), also the hint that conditions every step, whatever
            ``strength``.
        strength : float in [0, 1]
            Fraction of the DDIM steps run from the noised init image.
        num_samples : int
        num_inference_steps : int, optional
            DDIM steps of a full generation (default: the config's).
        generator : torch.Generator, optional
            Seeds all noise (drawn on the CPU, so results match across devices).
        guidance_scale : float, optional
            Classifier-free guidance (default: the config's; 1 = none).
        batch_size : int
            Images per network call (twice that with guidance). The result does not depend on
            it: all noise is drawn before the loop. Small calls keep the UNet's activations in
            cache on a CPU (``benchmarks/bench_demo_time.py``, part ``sampling``).

        Returns
        -------
        Tensor, shape (N, num_samples, 3, image_size, image_size), in [0, 1]
        """
        steps = num_inference_steps or self.config.num_inference_steps
        check_generate_arguments(
            image_embeds, init_images, strength, num_samples, steps, self.embed_dim
        )
        guidance = self.config.guidance_scale if guidance_scale is None else guidance_scale
        device, size = self.device, self.image_size
        n = image_embeds.shape[0]
        cond = self.model.normalise(image_embeds.to(device))
        cond = cond.repeat_interleave(num_samples, dim=0)
        scheduler = _sample_scheduler(self.config)
        scheduler.set_timesteps(steps, device=device)
        timesteps = scheduler.timesteps
        shape = (n * num_samples, 3, size, size)
        noise = torch.randn(shape, generator=generator, dtype=torch.float32).to(device)
        if init_images is not None:
            run = min(round(steps * float(strength)), steps)
            timesteps = timesteps[steps - run :]
            init = resize_images(init_images.float().to(device), size).clamp(0, 1) * 2 - 1
            init = init.repeat_interleave(num_samples, dim=0)
            if run == 0:
                return ((init + 1) / 2).view(n, num_samples, 3, size, size)
            sample = scheduler.add_noise(init, noise, timesteps[:1].repeat(len(init)))
        else:
            sample = noise
        null = self.model.null_embed.expand_as(cond)
        hint = None
        if self.model.hint_size and init_images is not None:
            hint = self.model.hint_channels(
                init_images.repeat_interleave(num_samples, dim=0), len(cond), size
            )
        # NHWC convolutions: the same images to float32 rounding (1e-6), 12-18 % less sampling
        # time on CPU (oneDNN); benchmarks/README.md. Training keeps the default layout (no gain).
        self.model.unet.to(memory_format=torch.channels_last)
        out = torch.empty_like(sample)
        for start in range(0, len(sample), batch_size):
            part = slice(start, start + batch_size)
            x, c, u = sample[part], cond[part], null[part]
            hint_part = None if hint is None else hint[part]
            x = x.contiguous(memory_format=torch.channels_last)
            for t in timesteps:
                t_batch = t.expand(len(x))
                if guidance == 1.0:
                    pred = self.model(x, t_batch, c, hint_part)
                else:  # guidance on the embedding only: both halves see the hint
                    both = self.model(
                        torch.cat([x, x]),
                        torch.cat([t_batch, t_batch]),
                        torch.cat([c, u]),
                        None if hint_part is None else torch.cat([hint_part, hint_part]),
                    )
                    pred_c, pred_u = both.chunk(2)
                    pred = pred_u + guidance * (pred_c - pred_u)
                x = scheduler.step(pred, t, x, eta=0.0).prev_sample
            out[part] = x
        return ((out.clamp(-1, 1) + 1) / 2).view(n, num_samples, 3, size, size)

    def save(self, folder: str | Path) -> Path:
        """Write the network as a model folder (:func:`neurodecode.pretrained.save_pretrained`)."""
        return save_pretrained(self.model, folder)

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> SimGenerator:
        """Read a folder written by :meth:`save` (or :func:`neurodecode.load_pretrained`)."""
        model = load_pretrained(folder, device=device)
        if not isinstance(model, ConditionedUNet):
            raise InvalidInputError(
                f"{folder} holds a {type(model).__name__}; expected a sim generator "
                "(ConditionedUNet)."
            )
        return cls(model, model.recipe)


def embed_images(embed_fn: EmbedFn, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """Apply ``embed_fn`` to uint8 images in batches: ``(N, H, W, 3) -> (N, D)`` float32."""
    parts = []
    for start in range(0, len(images), batch_size):
        out = embed_fn(images[start : start + batch_size])
        out = (
            out.detach().cpu().float()
            if isinstance(out, torch.Tensor)
            else torch.as_tensor(np.asarray(out), dtype=torch.float32)
        )
        parts.append(out)
    embeds = torch.cat(parts)
    check_array("embed_fn output", embeds.numpy(), shape=(len(images), None), finite=True)
    return embeds


def embedding_fingerprint(embeds: torch.Tensor, decimals: int = 3) -> str:
    """A short digest of embeddings (rounded), identifying the embedding function that made them."""
    rounded = np.round(embeds.numpy().astype(np.float64), decimals) + 0.0  # -0.0 -> 0.0
    return hashlib.sha256(rounded.tobytes()).hexdigest()[:16]


def training_stimuli(config: SimGeneratorConfig) -> tuple[np.ndarray, torch.Tensor]:
    """The generator's training images: uint8 at ``embed_image_size`` and float at ``image_size``.

    Returns
    -------
    images_for_embedding : ndarray, shape (n_stimuli, E, E, 3), uint8
    images : Tensor, shape (n_stimuli, 3, image_size, image_size), in [0, 1]
    """
    stimuli = generate_stimuli(
        config.n_stimuli, size=config.embed_image_size, seed=config.stimulus_seed
    )
    return stimuli.images, images_to_tensor(stimuli.images, size=config.image_size)


def train_sim_generator(
    embed_fn: EmbedFn | None,
    config: SimGeneratorConfig,
    embeds: torch.Tensor | None = None,
    images: torch.Tensor | None = None,
    progress: str | None = None,
) -> SimGenerator:
    """Train a :class:`SimGenerator` on simulated stimuli embedded with ``embed_fn``.

    Parameters
    ----------
    embed_fn : callable or None
        ``uint8 (N, H, W, 3) -> (N, D)``. Not needed when ``embeds`` and ``images`` are given.
    config : SimGeneratorConfig
    embeds : Tensor, shape (n, D), optional
        Precomputed embeddings of ``images``.
    images : Tensor, shape (n, 3, image_size, image_size), in [0, 1], optional
        Training images; default :func:`training_stimuli`.
    progress : str, optional
        Description of a step progress bar; none when omitted.

    Returns
    -------
    SimGenerator
        On the CPU, in eval mode.
    """
    check_option("prediction_type", config.prediction_type, ["sample", "epsilon", "v_prediction"])
    if images is None or embeds is None:
        if embed_fn is None:
            raise InvalidInputError("train_sim_generator needs embed_fn or (embeds, images).")
        raw, images = training_stimuli(config)
        embeds = embed_images(embed_fn, raw)
    if len(images) != len(embeds):
        raise InvalidInputError(
            f"images has {len(images)} rows but embeds has {len(embeds)}; expected one each."
        )
    torch.manual_seed(config.seed)
    module = SimGeneratorModule(embeds.shape[1], config)
    loader = DataLoader(
        TensorDataset(images.float(), embeds.float()),
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=len(images) >= config.batch_size,
        generator=torch.Generator().manual_seed(config.seed),
    )
    fit_lightning(module, loader, config.train_steps, progress=progress)
    return SimGenerator(module.model.cpu(), config)


def get_sim_generator(
    embed_fn: EmbedFn,
    preset: str = "default",
    cache_dir: str | Path | None = None,
    embed_key: str | None = None,
    force_retrain: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> SimGenerator:
    """The embedded default generator for ``embed_fn``: loaded from the cache, else trained.

    Parameters
    ----------
    embed_fn : callable
        The image encoder whose embeddings condition the generator (e.g. sim-clip's):
        ``uint8 (N, H, W, 3) -> (N, D)``.
    preset : {"default", "braindive", "tiny"}
        Recipe from :data:`PRESETS`.
    cache_dir : path, optional
        Cache root (default :func:`~neurodecode.embedded.cache.cache_root`); the model lives
        in ``<cache_dir>/sim-generator/<hash>/``.
    embed_key : str, optional
        Names the embedding function in the cache key; default: a fingerprint of its embeddings of
        the first 16 training stimuli.
    force_retrain : bool
        Train (and overwrite the cache) even if a cached model exists.
    progress : bool
        Show a step progress bar when it trains.
    **overrides
        Fields of :class:`SimGeneratorConfig` to change from the preset.

    Returns
    -------
    SimGenerator
    """
    check_option("preset", preset, PRESETS)
    config = dataclasses.replace(PRESETS[preset], **overrides)
    if embed_key is None:  # image i of the stream is the same whatever n: probe with the first 16
        probe = generate_stimuli(16, size=config.embed_image_size, seed=config.stimulus_seed)
        embed_key = embedding_fingerprint(embed_images(embed_fn, probe.images))
    key = config_key({"config": config.to_dict(), "embed": embed_key})
    folder = Path(cache_dir) if cache_dir is not None else cache_root()
    folder = folder / "sim-generator" / key
    if folder.exists() and not force_retrain:
        return SimGenerator.load(folder)
    log.info("training the sim generator (preset %r) into %s", preset, folder)
    raw, images = training_stimuli(config)
    generator = train_sim_generator(
        None,
        config,
        embeds=embed_images(embed_fn, raw),
        images=images,
        progress=f"sim-generator {preset} (first use: trained once, cached)" if progress else None,
    )
    if force_retrain and folder.exists():
        shutil.rmtree(folder)
    generator.save(folder)
    return generator


def denoiser_from_sim_generator(generator, image_embeds: torch.Tensor | None = None) -> Denoiser:
    """A :class:`Denoiser` over the embedded default generator's UNet.

    Parameters
    ----------
    generator : SimGenerator
        From :func:`~neurodecode.embedded.generator.get_sim_generator`.
    image_embeds : Tensor, shape (1, D) or (N, D), optional
        Condition; default the learned null embedding (unconditional sampling, as BrainDiVE
        samples Stable Diffusion with an empty prompt).
    """
    from diffusers import DDPMScheduler

    model, config = generator.model, generator.config
    if image_embeds is None:
        cond_one = model.null_embed[None].detach()
    else:
        cond_one = model.normalise(image_embeds.to(generator.device))

    def predict(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None):
        cond = cond_one if cond is None else cond
        cond = cond.expand(len(x), -1) if len(cond) == 1 else cond
        return model(x, t, cond.to(x.device))

    norm = cond_one.norm(dim=-1, keepdim=True).clamp_min(1e-6)

    def project(cond: torch.Tensor) -> torch.Tensor:  # back to the training sphere
        return F.normalize(cond, dim=-1) * norm.to(cond)

    schedule = DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        prediction_type=config.prediction_type,
    )
    size = config.image_size
    return Denoiser(
        predict,
        schedule.alphas_cumprod,
        config.prediction_type,
        (3, size, size),
        device=generator.device,
        condition=cond_one,
        project_condition=project,
    )
