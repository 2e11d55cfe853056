"""Brain-guided image synthesis (BrainDiVE): diffusion sampling steered toward a brain region.

Luo et al. (2023), "Brain Diffusion for Visual Exploration", NeurIPS. At every denoising step the
clean image is estimated from the current noisy sample, decoded to pixels, embedded with an image
encoder (CLIP), and passed through a voxel-wise encoder; the gradient of the predicted mean response
of a region (times ``guidance_scale``) with respect to the noisy sample moves the noise estimate
(classifier guidance, Dhariwal & Nichol 2021):

    eps' = eps - guidance_scale * sqrt(1 - abar_t) * grad_{x_t} objective(decode(x0_hat(x_t)))

followed by a deterministic DDIM step. Of many samples, the top fraction (BrainDiVE: 20 %) by
predicted activation is kept.

The sampler works on a :class:`Denoiser` — a network call plus its noise schedule — built from the
embedded default generator (:func:`denoiser_from_sim_generator`, which needs the model inside a
:class:`~neurodecode.reconstruct.sim_generator.SimGenerator`; the
:class:`~neurodecode.reconstruct.generators.Generator` protocol only exposes whole generations)
or from any diffusers UNet with a scheduler, optionally with a VAE for latent diffusion
(:func:`denoiser_from_diffusers`). The objective is any differentiable ``images -> (N,)``; for
BrainDiVE it is :func:`roi_objective` (CLIP image tower + :class:`VoxelEncoder`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from neurodecode.analysis.encoding import VoxelEncoder
from neurodecode.validation import InvalidInputError, check_option

#: images (N, 3, H, W) in [0, 1] -> scores (N,), differentiable
ImageObjective = Callable[[torch.Tensor], torch.Tensor]
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


@dataclass
class Denoiser:
    """A diffusion network with the schedule it was trained on.

    Attributes
    ----------
    predict : callable
        ``(x_t (N, C, h, w), t (N,) long) -> model output`` (same shape as ``x_t``).
    alphas_cumprod : Tensor, shape (num_train_timesteps,)
        The training schedule's cumulative alpha products.
    prediction_type : {"epsilon", "sample", "v_prediction"}
    sample_shape : tuple of int
        ``(C, h, w)`` of the diffusion variable (pixels or latents).
    decode : callable, optional
        ``x0 -> images (N, 3, H, W) in [0, 1]``; default ``(x0.clamp(-1, 1) + 1) / 2``.
    clip_sample : bool
        Clip the clean estimate to [-1, 1] (pixel-space models).
    device : torch.device or str
        Where the network runs (the sampler draws noise on the CPU and moves it there).
    """

    predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    alphas_cumprod: torch.Tensor
    prediction_type: str
    sample_shape: tuple[int, int, int]
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None
    clip_sample: bool = True
    device: torch.device | str = "cpu"

    def __post_init__(self) -> None:
        check_option("prediction_type", self.prediction_type, PREDICTION_TYPES)

    def to_images(self, x0: torch.Tensor) -> torch.Tensor:
        if self.decode is not None:
            return self.decode(x0)
        return (x0.clamp(-1, 1) + 1) / 2


def denoiser_from_sim_generator(generator, image_embeds: torch.Tensor | None = None) -> Denoiser:
    """A :class:`Denoiser` over the embedded default generator's UNet.

    Parameters
    ----------
    generator : SimGenerator
        From :func:`~neurodecode.reconstruct.sim_generator.get_sim_generator`.
    image_embeds : Tensor, shape (1, D) or (N, D), optional
        Condition; default the learned null embedding (unconditional sampling, as BrainDiVE
        samples Stable Diffusion with an empty prompt).
    """
    from diffusers import DDPMScheduler

    model, config = generator.model, generator.config
    if image_embeds is None:
        cond_one = model.null_embed[None]
    else:
        cond_one = model.normalise(image_embeds.to(generator.device))

    def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cond = cond_one.expand(len(x), -1) if len(cond_one) == 1 else cond_one
        return model(x, t, cond.to(x.device))

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
    )


def denoiser_from_diffusers(
    unet: torch.nn.Module,
    scheduler,
    encoder_hidden_states: torch.Tensor | None = None,
    vae: torch.nn.Module | None = None,
    sample_size: int | None = None,
) -> Denoiser:
    """A :class:`Denoiser` over a diffusers UNet (``UNet2DModel`` or ``UNet2DConditionModel``).

    Parameters
    ----------
    unet : diffusers UNet
    scheduler : diffusers scheduler with ``alphas_cumprod`` and ``config.prediction_type``
    encoder_hidden_states : Tensor, optional
        Text/image conditioning of a ``UNet2DConditionModel`` (one row, broadcast over the batch).
    vae : diffusers AutoencoderKL, optional
        For latent diffusion: ``decode`` maps latents / ``scaling_factor`` to pixels.
    sample_size : int, optional
        Side of the diffusion variable (default ``unet.config.sample_size``).
    """

    def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if encoder_hidden_states is None:
            return unet(x, t).sample
        hidden = encoder_hidden_states.to(x.device, x.dtype)
        hidden = hidden.expand(len(x), *hidden.shape[1:]) if len(hidden) == 1 else hidden
        return unet(x, t, encoder_hidden_states=hidden).sample

    decode = None
    clip = True
    if vae is not None:
        factor = float(getattr(vae.config, "scaling_factor", 0.18215))

        def decode(x0: torch.Tensor) -> torch.Tensor:
            return ((vae.decode(x0 / factor).sample).clamp(-1, 1) + 1) / 2

        clip = False
    size = int(sample_size or unet.config.sample_size)
    return Denoiser(
        predict,
        scheduler.alphas_cumprod,
        scheduler.config.prediction_type,
        (int(unet.config.in_channels), size, size),
        decode=decode,
        clip_sample=clip,
        device=next(unet.parameters()).device,
    )


# --------------------------------------------------------------------------------------------
# objectives


def differentiable_clip_embed(clip_encoder) -> Callable[[torch.Tensor], torch.Tensor]:
    """``images (N, 3, H, W) in [0, 1] -> unit-norm embeddings (N, D)``, differentiable.

    Resizes (bilinear) to the encoder's input size and applies its mean/std normalisation — the
    tensor path of open_clip's preprocessing (which works on PIL images).
    """
    model = clip_encoder.model
    cfg = getattr(model.visual, "preprocess_cfg", {})
    mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))
    std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))
    size = clip_encoder.image_size

    def embed(images: torch.Tensor) -> torch.Tensor:
        x = images
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        x = (x - mean.to(x)[:, None, None]) / std.to(x)[:, None, None]
        return F.normalize(model.encode_image(x).float(), dim=-1)

    return embed


def roi_objective(
    embed: Callable[[torch.Tensor], torch.Tensor],
    encoder: VoxelEncoder,
    voxels: np.ndarray | Sequence[int],
) -> ImageObjective:
    """Predicted mean response of ``voxels``: ``images -> (N,)``.

    Parameters
    ----------
    embed : callable
        ``images (N, 3, H, W) in [0, 1] -> features (N, F)``, differentiable (e.g.
        :func:`differentiable_clip_embed`), the features ``encoder`` was fitted on.
    encoder : VoxelEncoder
    voxels : bool mask (n_voxels,) or indices
        The region (must select at least one voxel).
    """
    index = np.asarray(voxels)
    if index.dtype == bool:
        if index.shape != (encoder.n_voxels,):
            raise InvalidInputError(
                f"voxel mask has shape {index.shape}; expected ({encoder.n_voxels},)."
            )
        index = np.flatnonzero(index)
    if index.size == 0:
        raise InvalidInputError("voxels selects no voxel; expected a non-empty region.")
    if index.min() < 0 or index.max() >= encoder.n_voxels:
        raise InvalidInputError(
            f"voxel indices span {index.min()}..{index.max()}; the encoder has "
            f"{encoder.n_voxels} voxels."
        )

    def objective(images: torch.Tensor) -> torch.Tensor:
        return encoder.predict_torch(embed(images), index).mean(1)

    return objective


# --------------------------------------------------------------------------------------------
# sampler


def _split(
    output: torch.Tensor, x: torch.Tensor, abar: torch.Tensor, prediction_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Model output -> (clean estimate x0, noise estimate eps)."""
    a, s = abar.sqrt(), (1 - abar).sqrt()
    if prediction_type == "epsilon":
        return (x - s * output) / a, output
    if prediction_type == "sample":
        return output, (x - a * output) / s
    return a * x - s * output, a * output + s * x  # v-prediction


def guided_sample(
    denoiser: Denoiser,
    objective: ImageObjective | None,
    n_images: int,
    guidance_scale: float = 1.0,
    num_inference_steps: int = 20,
    generator: torch.Generator | None = None,
    through_denoiser: bool = True,
    device: torch.device | str | None = None,
    normalize_gradient: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """DDIM sampling with BrainDiVE's gradient guidance (``guidance_scale=0``: unguided).

    Parameters
    ----------
    denoiser : Denoiser
    objective : callable or None
        ``images (N, 3, H, W) in [0, 1] -> (N,)`` to increase; None or scale 0: plain DDIM.
    n_images : int
    guidance_scale : float
        Step along the objective's gradient, in units of the noise estimate.
    num_inference_steps : int
        DDIM steps ("trailing" spacing, ending at t = 0).
    generator : torch.Generator, optional
        Seeds the initial noise (drawn on the CPU): the same seed gives the same unguided images,
        so guided and unguided runs start from the same noise.
    through_denoiser : bool
        Differentiate through the network (BrainDiVE). False uses the cheaper approximation
        ``dx0/dx_t = 1/sqrt(abar_t)`` (no backward pass through the network).
    device : torch.device or str, optional
        Default ``denoiser.device``.
    normalize_gradient : bool
        Rescale each sample's gradient to unit root-mean-square, so that ``guidance_scale`` is in
        units of the noise estimate's standard deviation whatever the objective's scale.

    Returns
    -------
    images : Tensor, shape (n_images, 3, H, W), in [0, 1]
    scores : Tensor, shape (n_images,) or None
        The objective on the final images (None without an objective).
    """
    if n_images < 1 or num_inference_steps < 1:
        raise InvalidInputError(
            f"n_images={n_images}, num_inference_steps={num_inference_steps}; expected >= 1."
        )
    if guidance_scale < 0:
        raise InvalidInputError(f"guidance_scale={guidance_scale}; expected >= 0.")
    guided = objective is not None and guidance_scale > 0
    device = torch.device(device if device is not None else denoiser.device)
    abar_all = denoiser.alphas_cumprod.to(device=device, dtype=torch.float32)
    n_train = len(abar_all)
    step = n_train / num_inference_steps
    timesteps = (np.round(np.arange(n_train, 0, -step)) - 1).astype(np.int64)  # trailing
    x = torch.randn((n_images, *denoiser.sample_shape), generator=generator).to(device)
    for i, t in enumerate(timesteps):
        abar = abar_all[t]
        abar_prev = (
            abar_all[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.ones((), device=device)
        )
        t_batch = torch.full((n_images,), int(t), device=device, dtype=torch.long)
        if guided and through_denoiser:
            x_in = x.detach().requires_grad_(True)
            with torch.enable_grad():
                x0, eps = _split(
                    denoiser.predict(x_in, t_batch), x_in, abar, denoiser.prediction_type
                )
                score = objective(denoiser.to_images(x0))
                grad = torch.autograd.grad(score.sum(), x_in)[0]
            x0, eps = x0.detach(), eps.detach()
        else:
            with torch.no_grad():
                x0, eps = _split(denoiser.predict(x, t_batch), x, abar, denoiser.prediction_type)
            if guided:
                x0_in = x0.detach().requires_grad_(True)
                with torch.enable_grad():
                    score = objective(denoiser.to_images(x0_in))
                    grad = torch.autograd.grad(score.sum(), x0_in)[0] / abar.sqrt()
        if guided:
            if normalize_gradient:
                rms = grad.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12)
                grad = grad / rms.view(-1, *([1] * (grad.ndim - 1)))
            eps = eps - guidance_scale * (1 - abar).sqrt() * grad
            x0 = (x - (1 - abar).sqrt() * eps) / abar.sqrt()
        if denoiser.clip_sample:
            x0 = x0.clamp(-1, 1)
            eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
        x = (abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps).detach()
    with torch.no_grad():
        images = denoiser.to_images(x)
        scores = objective(images) if objective is not None else None
    return images.clamp(0, 1), scores


@dataclass
class BrainDiVEResult:
    """Kept images (top fraction by predicted activation) and all scores."""

    images: torch.Tensor
    scores: torch.Tensor
    all_scores: torch.Tensor
    kept: np.ndarray


def braindive(
    denoiser: Denoiser,
    objective: ImageObjective,
    n_images: int,
    guidance_scale: float = 1.0,
    keep_fraction: float = 0.2,
    num_inference_steps: int = 20,
    seed: int = 0,
    batch_size: int = 16,
    through_denoiser: bool = True,
    normalize_gradient: bool = False,
) -> BrainDiVEResult:
    """Generate ``n_images`` guided samples and keep the top ``keep_fraction`` by the objective.

    Returns
    -------
    BrainDiVEResult
        ``images`` (n_kept, 3, H, W) in [0, 1], best first; ``kept`` their indices among the
        ``n_images`` samples; ``all_scores`` (n_images,).
    """
    if not 0 < keep_fraction <= 1:
        raise InvalidInputError(f"keep_fraction={keep_fraction}; expected a value in (0, 1].")
    generator = torch.Generator().manual_seed(seed)
    images, scores = [], []
    for start in range(0, n_images, batch_size):
        n = min(batch_size, n_images - start)
        imgs, sc = guided_sample(
            denoiser,
            objective,
            n,
            guidance_scale,
            num_inference_steps,
            generator,
            through_denoiser=through_denoiser,
            normalize_gradient=normalize_gradient,
        )
        images.append(imgs)
        scores.append(sc)
    images_t, scores_t = torch.cat(images), torch.cat(scores)
    n_keep = max(1, round(keep_fraction * n_images))
    kept = torch.argsort(scores_t, descending=True)[:n_keep].numpy()
    return BrainDiVEResult(images_t[kept], scores_t[kept], scores_t, kept)


# --------------------------------------------------------------------------------------------
# judging the samples


def zero_shot_categories(
    clip_encoder, images: torch.Tensor, categories: Sequence[str] | None = None
) -> np.ndarray:
    """Category of each image by CLIP zero-shot classification over prompt ensembles.

    Parameters
    ----------
    clip_encoder : ClipEncoder
        sim-clip (or any CLIP) with ``encode_text``.
    images : Tensor, shape (N, 3, H, W), in [0, 1]
    categories : sequence of str, optional
        Default :data:`~neurodecode.sim.stimuli.CATEGORIES`, prompts from
        :func:`~neurodecode.features.sim_clip.category_prompt_ensemble`.

    Returns
    -------
    ndarray of str, shape (N,)
    """
    from neurodecode.features.sim_clip import category_prompt_ensemble
    from neurodecode.sim.stimuli import CATEGORIES

    names = list(categories or CATEGORIES)
    with torch.no_grad():
        prompts = torch.stack(
            [
                clip_encoder.encode_text(category_prompt_ensemble(c), normalize=True).mean(0)
                for c in names
            ]
        )
        prompts = F.normalize(prompts, dim=-1)
        embeds = differentiable_clip_embed(clip_encoder)(images.to(clip_encoder.device))
    return np.array(names)[(embeds @ prompts.T).argmax(1).cpu().numpy()]
