"""Brain-guided image synthesis (BrainDiVE): diffusion sampling steered toward a brain region.

Luo et al. (2023), "Brain Diffusion for Visual Exploration", NeurIPS. At every denoising step the
clean image is estimated from the current noisy sample, decoded to pixels, embedded with an image
encoder (CLIP), and passed through a voxel-wise encoder; the gradient of the predicted mean response
of a region (times ``guidance_scale``) with respect to the noisy sample moves the noise estimate
(classifier guidance, Dhariwal & Nichol 2021):

    eps' = eps - guidance_scale * sqrt(1 - abar_t) * grad_{x_t} objective(decode(x0_hat(x_t)))

followed by a deterministic DDIM step. Of many samples, the top fraction (BrainDiVE: 20 %) by
predicted activation is kept.

With a conditioned generator the same gradient can also (or instead) act on the *conditioning*
(``guidance_space="condition"`` or ``"both"``): at every step each sample's condition moves
``condition_scale`` (in units of its RMS with ``normalize_gradient``) along
``grad_c objective(decode(x0_hat(x_t, c)))`` and is projected back to the norm the network was
trained on. This is our variant, not the paper's (BrainDiVE guides Stable Diffusion sampled with
an empty prompt): with a small embedding-conditioned generator the category a sample shows is
set mostly by its conditioning, so the condition is where the gradient can change it.

When the conditioning space is the encoder's own feature space (the sim generator is conditioned
on sim-clip image embeddings, the features the voxel encoder was fitted on), the condition can
instead follow the encoder's exact gradient on the embedding (``condition_objective``,
:func:`embedding_objective`), and be projected back onto real image embeddings after each step
(:func:`image_manifold_projection`: the nearest one, or BrainSCUBA's softmax). On the simulation
this is the recipe that works: pixel gradients through a small CLIP find adversarial images
(predicted FFA response above that of real faces, on images the judge calls words), and a
condition moved off the manifold of real embeddings makes the generator draw blends.

The samples are judged by :class:`CategoryJudge`, a small CNN trained on simulated stimuli at the
generator's resolution (:func:`simulated_category_judge`), independent of the guidance encoder;
sim-clip zero-shot labels (:func:`zero_shot_categories`) are a second opinion but fail at 32 px
(real 32 px faces are never called faces).

The sampler works on a :class:`Denoiser` — a network call plus its noise schedule — built from the
embedded default generator (:func:`denoiser_from_sim_generator`, which needs the model inside a
:class:`~neurodecode.embedded.generator.SimGenerator`; the
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
        ``(x_t (N, C, h, w), t (N,) long, condition (N, ...) or None) -> model output`` (same
        shape as ``x_t``); a None condition means :attr:`condition`.
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
    condition : Tensor, shape (1, ...) or (N, ...), optional
        The network's default conditioning, in its own input space (sim generator: the normalised
        embedding; diffusers: ``encoder_hidden_states``); None for an unconditional network.
        Needed for ``guidance_space="condition"``.
    project_condition : callable, optional
        Maps a moved condition back to where the network was trained (sim generator: rescale to
        the norm of :attr:`condition`); default identity.
    """

    predict: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
    alphas_cumprod: torch.Tensor
    prediction_type: str
    sample_shape: tuple[int, int, int]
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None
    clip_sample: bool = True
    device: torch.device | str = "cpu"
    condition: torch.Tensor | None = None
    project_condition: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        check_option("prediction_type", self.prediction_type, PREDICTION_TYPES)

    def to_images(self, x0: torch.Tensor) -> torch.Tensor:
        if self.decode is not None:
            return self.decode(x0)
        return (x0.clamp(-1, 1) + 1) / 2


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

    def predict(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None):
        hidden = encoder_hidden_states if cond is None else cond
        if hidden is None:
            return unet(x, t).sample
        hidden = hidden.to(x.device, x.dtype)
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
        condition=encoder_hidden_states,
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


def _region_indices(encoder: VoxelEncoder, voxels: np.ndarray | Sequence[int]) -> np.ndarray:
    """Voxel indices of a region given as a bool mask (n_voxels,) or indices; checked."""
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
    return index


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
    index = _region_indices(encoder, voxels)

    def objective(images: torch.Tensor) -> torch.Tensor:
        return encoder.predict_torch(embed(images), index).mean(1)

    return objective


def embedding_objective(
    encoder: VoxelEncoder, voxels: np.ndarray | Sequence[int]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Predicted mean response of ``voxels`` to an embedding direction: ``(N, F) -> (N,)``.

    For a generator conditioned on the same (unit-norm) CLIP image embeddings the ``encoder`` was
    fitted on: each row is L2-normalised first, so the conditioning embedding's scale (e.g. the
    sim generator's ``sqrt(D)``) does not matter. Use as ``condition_objective`` of
    :func:`guided_sample`.
    """
    index = _region_indices(encoder, voxels)

    def objective(embeds: torch.Tensor) -> torch.Tensor:
        return encoder.predict_torch(F.normalize(embeds.flatten(1), dim=-1), index).mean(1)

    return objective


def image_manifold_projection(
    pool: np.ndarray | torch.Tensor, temperature: float | None = None, radius: float = 1.0
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Projection of conditions onto real image embeddings (a ``Denoiser.project_condition``).

    A condition moved by an encoder's gradient soon leaves the embeddings a generator was trained
    on; this maps each row back onto them: with a ``temperature``, BrainSCUBA's softmax-weighted
    mean of the ``pool`` (see :func:`~neurodecode.analysis.captioning.project_to_image_manifold`);
    with ``temperature=None``, the single most similar pool embedding (the generator then sees
    exactly the kind of condition it was trained on, never a blend).

    Parameters
    ----------
    pool : array, shape (n_pool, D)
        Real image embeddings (any norm).
    temperature : float or None
        Softmax temperature on cosine similarity, or None for the nearest embedding.
    radius : float
        Norm of the returned rows (the generator's conditioning norm, e.g. ``sqrt(D)``).

    Returns
    -------
    callable
        ``conditions (N, D) -> (N, D)``, not differentiable (applied after each step).
    """
    from neurodecode.analysis.captioning import project_to_image_manifold

    if temperature is not None and not temperature > 0:
        raise InvalidInputError(f"temperature={temperature!r}; expected > 0 or None (nearest).")
    pool_t = F.normalize(torch.as_tensor(np.asarray(pool), dtype=torch.float32), dim=-1)
    if pool_t.ndim != 2 or len(pool_t) == 0:
        raise InvalidInputError(f"pool has shape {tuple(pool_t.shape)}; expected (n_pool, D).")

    def project(cond: torch.Tensor) -> torch.Tensor:
        flat = cond.detach().float().cpu().flatten(1)
        if temperature is None:
            near = pool_t[(F.normalize(flat, dim=-1) @ pool_t.T).argmax(1)]
        else:
            near = torch.from_numpy(project_to_image_manifold(flat, pool_t, temperature))
        return (near * radius).view_as(cond).to(cond)

    return project


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


GUIDANCE_SPACES = ("sample", "condition", "both")


def _unit_rms(grad: torch.Tensor) -> torch.Tensor:
    """Rescale each row of ``grad`` (N, ...) to unit root-mean-square."""
    rms = grad.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12)
    return grad / rms.view(-1, *([1] * (grad.ndim - 1)))


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
    guidance_space: str = "sample",
    condition_scale: float | None = None,
    condition: torch.Tensor | None = None,
    condition_objective: Callable[[torch.Tensor], torch.Tensor] | None = None,
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
        ``dx0/dx_t = 1/sqrt(abar_t)`` (no backward pass through the network; pixels only).
    device : torch.device or str, optional
        Default ``denoiser.device``.
    normalize_gradient : bool
        Rescale each sample's gradient to unit root-mean-square, so that ``guidance_scale`` is in
        units of the noise estimate's standard deviation whatever the objective's scale (and
        ``condition_scale`` in units of the condition's components).
    guidance_space : {"sample", "condition", "both"}
        Where the gradient acts: the noisy sample (BrainDiVE), the denoiser's conditioning
        (:attr:`Denoiser.condition`, moved per sample and projected back with
        :attr:`Denoiser.project_condition` at every step), or both.
    condition_scale : float, optional
        Step of the condition per denoising step; default ``guidance_scale``.
    condition : Tensor, shape (1, ...) or (n_images, ...), optional
        Starting condition per sample, in the network's conditioning space (e.g. one real image
        embedding per sample, normalised as :attr:`Denoiser.condition`); default
        :attr:`Denoiser.condition`.
    condition_objective : callable, optional
        ``condition (N, ...) -> (N,)``, differentiable: when given, the condition moves along the
        exact gradient of this function (e.g. :func:`embedding_objective`, the voxel encoder
        applied to the conditioning embedding itself) instead of the gradient through the network
        and the image objective; the pixels (``"both"``) still follow ``objective``.

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
    check_option("guidance_space", guidance_space, GUIDANCE_SPACES)
    guided = objective is not None and guidance_scale > 0
    guide_sample = guided and guidance_space in ("sample", "both")
    guide_condition = guided and guidance_space in ("condition", "both")
    start = denoiser.condition if condition is None else condition
    if guide_condition and (
        start is None or (condition_objective is None and not through_denoiser)
    ):
        raise InvalidInputError(
            f"guidance_space={guidance_space!r} needs a conditioned denoiser (Denoiser.condition) "
            "and through_denoiser=True or a condition_objective."
        )
    condition_step = guidance_scale if condition_scale is None else float(condition_scale)
    device = torch.device(device if device is not None else denoiser.device)
    abar_all = denoiser.alphas_cumprod.to(device=device, dtype=torch.float32)
    n_train = len(abar_all)
    step = n_train / num_inference_steps
    timesteps = (np.round(np.arange(n_train, 0, -step)) - 1).astype(np.int64)  # trailing
    x = torch.randn((n_images, *denoiser.sample_shape), generator=generator).to(device)
    cond = None
    if start is not None:
        start = start.detach().to(device)
        cond = start.expand(n_images, *start.shape[1:]).clone() if len(start) == 1 else start
        if len(cond) != n_images:
            raise InvalidInputError(
                f"the condition has {len(cond)} rows; expected 1 or n_images={n_images}."
            )
    for i, t in enumerate(timesteps):
        abar = abar_all[t]
        abar_prev = (
            abar_all[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.ones((), device=device)
        )
        t_batch = torch.full((n_images,), int(t), device=device, dtype=torch.long)
        grad = cond_grad = None
        through_image = guide_condition and condition_objective is None
        if guide_condition and not through_image:
            c_in = cond.detach().requires_grad_(True)
            with torch.enable_grad():
                cond_grad = torch.autograd.grad(condition_objective(c_in).sum(), c_in)[0]
        if (guide_sample and through_denoiser) or through_image:
            x_in = x.detach().requires_grad_(guide_sample)
            c_in = cond.detach().requires_grad_(through_image) if cond is not None else None
            with torch.enable_grad():
                x0, eps = _split(
                    denoiser.predict(x_in, t_batch, c_in), x_in, abar, denoiser.prediction_type
                )
                score = objective(denoiser.to_images(x0))
                wrt = [v for v, use in ((x_in, guide_sample), (c_in, through_image)) if use]
                grads = list(torch.autograd.grad(score.sum(), wrt))
            grad = grads.pop(0) if guide_sample else None
            cond_grad = grads.pop(0) if through_image else cond_grad
            x0, eps = x0.detach(), eps.detach()
        else:
            with torch.no_grad():
                x0, eps = _split(
                    denoiser.predict(x, t_batch, cond), x, abar, denoiser.prediction_type
                )
            if guide_sample:
                x0_in = x0.detach().requires_grad_(True)
                with torch.enable_grad():
                    score = objective(denoiser.to_images(x0_in))
                    grad = torch.autograd.grad(score.sum(), x0_in)[0] / abar.sqrt()
        if grad is not None:
            if normalize_gradient:
                grad = _unit_rms(grad)
            eps = eps - guidance_scale * (1 - abar).sqrt() * grad
            x0 = (x - (1 - abar).sqrt() * eps) / abar.sqrt()
        if cond_grad is not None:
            if normalize_gradient:
                cond_grad = _unit_rms(cond_grad)
            cond = (cond + condition_step * cond_grad).detach()
            if denoiser.project_condition is not None:
                cond = denoiser.project_condition(cond)
        if denoiser.clip_sample:
            x0 = x0.clamp(-1, 1)
            eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
        x = (abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps).detach()
    with torch.no_grad():
        images = denoiser.to_images(x)
        scores = objective(images) if objective is not None else None
    return images.clamp(0, 1), scores


def pool_starts(generator, pool: np.ndarray, n_images: int, seed: int = 0) -> torch.Tensor:
    """One real image embedding per sample as its starting condition: ``(n_images, D)``.

    Drawn from ``pool`` (N, D) with ``np.random.default_rng(seed)`` (without replacement when the
    pool is large enough) and normalised as the sim generator's conditioning
    (:meth:`~neurodecode.embedded.generator.ConditionedUNet.normalise`).
    """
    pick = np.random.default_rng(seed).choice(len(pool), n_images, replace=len(pool) < n_images)
    return generator.model.normalise(torch.from_numpy(np.asarray(pool)[pick]))


def score_against_unguided(
    category: str,
    guided_labels: np.ndarray,
    guided_scores: torch.Tensor | np.ndarray,
    unguided_labels: np.ndarray,
    unguided_scores: torch.Tensor | np.ndarray,
    keep_fraction: float = 0.2,
) -> dict[str, float]:
    """How often guided samples show ``category``, against unguided samples paired by index.

    Sample ``i`` of both runs shares its noise and starting condition, so the comparison is
    paired: ``sign_test_p`` is the one-sided exact McNemar test that guidance adds hits.

    Parameters
    ----------
    category : str
        The ROI's category (judge label).
    guided_labels, unguided_labels : arrays of str, shape (n,)
        Judge labels, in sample order.
    guided_scores, unguided_scores : shape (n,)
        Objective (predicted ROI response) per sample, in sample order.
    keep_fraction : float
        BrainDiVE's selection: ``*_rate_top`` are the rates among the top fraction by score.

    Returns
    -------
    dict
        ``guided_rate``, ``unguided_rate``, ``guided_rate_top``, ``unguided_rate_top``,
        ``sign_test_p``, ``mean_predicted_guided``, ``mean_predicted_unguided``.
    """
    from neurodecode.evaluate.significance import exact_mcnemar

    g_hit = np.asarray(guided_labels) == category
    u_hit = np.asarray(unguided_labels) == category
    g_score = np.asarray(torch.as_tensor(guided_scores).detach().cpu(), dtype=np.float64)
    u_score = np.asarray(torch.as_tensor(unguided_scores).detach().cpu(), dtype=np.float64)
    if not (g_hit.shape == u_hit.shape == g_score.shape == u_score.shape) or g_hit.ndim != 1:
        raise InvalidInputError(
            "labels and scores of the guided and unguided samples must all have shape (n,); got "
            f"{g_hit.shape}, {g_score.shape}, {u_hit.shape}, {u_score.shape}."
        )
    n_keep = max(1, round(keep_fraction * len(g_hit)))
    g_top, u_top = np.argsort(-g_score)[:n_keep], np.argsort(-u_score)[:n_keep]
    return {
        "guided_rate": float(g_hit.mean()),
        "unguided_rate": float(u_hit.mean()),
        "guided_rate_top": float(g_hit[g_top].mean()),
        "unguided_rate_top": float(u_hit[u_top].mean()),
        "sign_test_p": exact_mcnemar(g_hit, u_hit, alternative="greater")["p_value"],
        "mean_predicted_guided": float(g_score.mean()),
        "mean_predicted_unguided": float(u_score.mean()),
    }


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
    guidance_space: str = "sample",
    condition_scale: float | None = None,
    condition: torch.Tensor | None = None,
    condition_objective: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> BrainDiVEResult:
    """Generate ``n_images`` guided samples and keep the top ``keep_fraction`` by the objective.

    The sampling arguments are those of :func:`guided_sample`; samples are drawn in batches of
    ``batch_size`` from one seeded noise stream (``seed``); a ``condition`` with ``n_images`` rows
    gives each sample its own starting condition.

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
            guidance_space=guidance_space,
            condition_scale=condition_scale,
            condition=(
                condition[start : start + n]
                if condition is not None and len(condition) == n_images and n_images > 1
                else condition
            ),
            condition_objective=condition_objective,
        )
        images.append(imgs)
        scores.append(sc)
    images_t, scores_t = torch.cat(images), torch.cat(scores)
    n_keep = max(1, round(keep_fraction * n_images))
    kept = torch.argsort(scores_t, descending=True)[:n_keep].numpy()
    return BrainDiVEResult(images_t[kept], scores_t[kept], scores_t, kept)


# --------------------------------------------------------------------------------------------
# judging the samples
