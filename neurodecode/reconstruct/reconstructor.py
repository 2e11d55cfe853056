"""Brain activity -> images: decoder embedding, optional low-level init, generator, best-of-n.

:class:`Reconstructor` composes the pieces as MindEye does: the decoder (retrieval head + diffusion
prior) predicts an image embedding per trial; the low-level pathway, if given, decodes a blurry
image used as the img2img init at ``strength``; the generator draws ``num_samples`` images per trial;
and the sample whose embedding (by ``select_with``, the same image encoder the decoder targets) is
most cosine-similar to the predicted embedding is kept. With ``blend > 0`` the kept sample is then
mixed with the blurry image (:func:`blend_images`: in RGB, as MindEye2 blends its blurry and final
reconstructions, or in luminance only, keeping the generated colours) so that the final image keeps
the low-level information.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from neurodecode.reconstruct.generators import Generator, resize_images, tensor_to_images
from neurodecode.validation import InvalidInputError, check_option

#: brain (B, V) -> predicted image embeddings (B, D)
DecoderEmbedFn = Callable[[torch.Tensor], torch.Tensor]
#: uint8 images (N, H, W, 3) -> embeddings (N, D)
ImageEmbedFn = Callable[[np.ndarray], np.ndarray | torch.Tensor]


@dataclass
class Reconstruction:
    """Reconstructions of a batch of trials.

    Attributes
    ----------
    images : Tensor, shape (B, 3, H, W), in [0, 1]
        The final image per trial: the selected sample, blended with the low-level image when the
        reconstructor's ``blend`` is positive.
    samples : Tensor, shape (B, n, 3, H, W), in [0, 1]
        Every sample drawn.
    scores : Tensor, shape (B, n)
        Cosine similarity of each sample's embedding to the predicted one (zeros without selection).
    selected : Tensor, shape (B,), int
        Index of the kept sample.
    embeds : Tensor, shape (B, D)
        Predicted image embeddings.
    lowlevel : Tensor, shape (B, 3, h, w), in [0, 1], or None
        Low-level (blurry) images used as img2img init.
    """

    images: torch.Tensor
    samples: torch.Tensor
    scores: torch.Tensor
    selected: torch.Tensor
    embeds: torch.Tensor
    lowlevel: torch.Tensor | None = None


def _embed(embed_fn: ImageEmbedFn, images: torch.Tensor) -> torch.Tensor:
    out = embed_fn(tensor_to_images(images))
    out = out.detach() if isinstance(out, torch.Tensor) else torch.as_tensor(np.asarray(out))
    return out.float().cpu()


def select_best(
    samples: torch.Tensor, target_embeds: torch.Tensor, embed_fn: ImageEmbedFn
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best-of-n: per trial, the sample whose embedding is most cosine-similar to the target.

    Parameters
    ----------
    samples : Tensor, shape (B, n, 3, H, W), in [0, 1]
    target_embeds : Tensor, shape (B, D)
    embed_fn : callable
        ``uint8 (N, H, W, 3) -> (N, D)``, the image encoder of the target embedding space.

    Returns
    -------
    best : Tensor, shape (B, 3, H, W)
    index : Tensor, shape (B,), int64
    scores : Tensor, shape (B, n)
    """
    if samples.ndim != 5 or target_embeds.ndim != 2 or len(samples) != len(target_embeds):
        raise InvalidInputError(
            f"samples has shape {tuple(samples.shape)} and target_embeds "
            f"{tuple(target_embeds.shape)}; expected (B, n, 3, H, W) and (B, D)."
        )
    b, n = samples.shape[:2]
    embeds = _embed(embed_fn, samples.flatten(0, 1)).view(b, n, -1)
    if embeds.shape[-1] != target_embeds.shape[-1]:
        raise InvalidInputError(
            f"select_with gives {embeds.shape[-1]}-d embeddings but the decoder predicts "
            f"{target_embeds.shape[-1]}-d ones; expected the same embedding space."
        )
    scores = F.cosine_similarity(embeds, target_embeds.float().cpu()[:, None, :], dim=-1)
    index = scores.argmax(dim=1)
    best = samples[torch.arange(b), index.to(samples.device)]
    return best, index, scores


BLEND_MODES = ("rgb", "luminance")


def blend_images(
    generated: torch.Tensor, lowlevel: torch.Tensor, weight: float, mode: str = "rgb"
) -> torch.Tensor:
    """Blend generated images with low-level (blurry) ones, at the generated images' size.

    Parameters
    ----------
    generated : Tensor, shape (B, 3, H, W), in [0, 1]
    lowlevel : Tensor, shape (B, 3, h, w), in [0, 1]
        Resized (bilinear) to ``H x W``.
    weight : float in [0, 1]
    mode : {"rgb", "luminance"}
        ``"rgb"``: ``weight * lowlevel + (1 - weight) * generated`` (MindEye2's blend).
        ``"luminance"``: only the luminance is blended; every channel is shifted by
        ``weight * (Y(lowlevel) - Y(generated))`` (``Y`` the grayscale of the metrics), so the
        generated colour differences (chrominance) are kept and, at ``weight=1``, the layout of
        light and dark comes from the low-level pathway.

    Returns
    -------
    Tensor, shape (B, 3, H, W), in [0, 1]
    """
    if not 0.0 <= weight <= 1.0:
        raise InvalidInputError(f"blend weight={weight!r} is not valid; expected [0, 1].")
    check_option("blend mode", mode, BLEND_MODES)
    if generated.ndim != 4 or lowlevel.ndim != 4 or len(generated) != len(lowlevel):
        raise InvalidInputError(
            f"generated has shape {tuple(generated.shape)} and lowlevel "
            f"{tuple(lowlevel.shape)}; expected (B, 3, H, W) and (B, 3, h, w)."
        )
    low = resize_images(lowlevel.float(), generated.shape[-1]).to(generated.device)
    if mode == "rgb":
        return (weight * low + (1.0 - weight) * generated).clamp(0, 1)
    from neurodecode.evaluate.image_metrics import rgb_to_gray

    shift = weight * (rgb_to_gray(low) - rgb_to_gray(generated))
    return (generated + shift[:, None]).clamp(0, 1)


class Reconstructor:
    """Brain activity -> images (MindEye's reconstruction pipeline).

    Parameters
    ----------
    decoder_embed_fn : callable
        ``brain (B, V) -> predicted image embeddings (B, D)`` (retrieval head + prior).
    generator : Generator
        Image generator conditioned on those embeddings.
    lowlevel : callable, optional
        ``brain (B, V) -> blurry images (B, 3, h, w) in [0, 1]`` (e.g.
        :meth:`neurodecode.reconstruct.lowlevel.LowLevelModule.decode`); used as img2img init.
    strength : float in [0, 1]
        img2img strength from the low-level image (ignored without ``lowlevel``).
    blend : float in [0, 1]
        Weight of the low-level image in the final one (MindEye2's blending; 0 keeps the generated
        sample as it is; ignored without ``lowlevel``).
    blend_mode : {"rgb", "luminance"}
        See :func:`blend_images`.
    num_samples : int
        Samples drawn per trial.
    select_with : callable, optional
        ``uint8 (N, H, W, 3) -> (N, D)`` image encoder for best-of-n; without it the first sample
        is kept.
    num_inference_steps : int, optional
        Passed to the generator (its default otherwise).
    batch_size : int
        Trials per generator call.
    sample_conditions : callable, optional
        ``brain (B, V) -> embeddings (B, num_samples, D)``: a condition per sample (e.g. the
        nearest training images' embeddings, :meth:`neurodecode.reconstruct.conditioning.
        ImageManifoldProjection.sample_conditions`); ``decoder_embed_fn``'s output then only
        picks the best sample. Default: every sample is conditioned on ``decoder_embed_fn``'s.
    guidance_scale : float, optional
        Classifier-free guidance passed to generators that take it (the embedded
        :class:`~neurodecode.embedded.generator.SimGenerator`); their default otherwise.
    """

    def __init__(
        self,
        decoder_embed_fn: DecoderEmbedFn,
        generator: Generator,
        lowlevel: Callable[[torch.Tensor], torch.Tensor] | None = None,
        strength: float = 0.6,
        num_samples: int = 4,
        select_with: ImageEmbedFn | None = None,
        num_inference_steps: int | None = None,
        batch_size: int = 64,
        blend: float = 0.0,
        blend_mode: str = "rgb",
        sample_conditions: DecoderEmbedFn | None = None,
        guidance_scale: float | None = None,
    ):
        if not 0.0 <= strength <= 1.0:
            raise InvalidInputError(f"strength={strength!r} is not valid; expected [0, 1].")
        if not 0.0 <= blend <= 1.0:
            raise InvalidInputError(f"blend={blend!r} is not valid; expected [0, 1].")
        check_option("blend_mode", blend_mode, BLEND_MODES)
        if num_samples < 1:
            raise InvalidInputError(f"num_samples={num_samples!r} is not valid; expected >= 1.")
        self.decoder_embed_fn = decoder_embed_fn
        self.generator = generator
        self.lowlevel = lowlevel
        self.strength = strength
        self.blend = blend
        self.blend_mode = blend_mode
        self.num_samples = num_samples
        self.select_with = select_with
        self.num_inference_steps = num_inference_steps
        self.batch_size = batch_size
        self.sample_conditions = sample_conditions
        self.guidance_scale = guidance_scale

    @torch.no_grad()
    def _batch(self, brain: torch.Tensor, seed: torch.Generator | None) -> Reconstruction:
        embeds = torch.as_tensor(self.decoder_embed_fn(brain)).float()
        init = self.lowlevel(brain).float() if self.lowlevel is not None else None
        kwargs = {}
        if self.num_inference_steps is not None:
            kwargs["num_inference_steps"] = self.num_inference_steps
        if self.guidance_scale is not None:
            kwargs["guidance_scale"] = self.guidance_scale
        if self.sample_conditions is None:
            samples = self.generator.generate(
                embeds,
                init_images=init,
                strength=self.strength,
                num_samples=self.num_samples,
                generator=seed,
                **kwargs,
            ).cpu()
        else:  # one condition per sample: one generator draw of each
            conditions = torch.as_tensor(self.sample_conditions(brain)).float()
            if conditions.shape[:2] != (len(brain), self.num_samples) or conditions.ndim != 3:
                raise InvalidInputError(
                    f"sample_conditions gave shape {tuple(conditions.shape)}; expected "
                    f"({len(brain)}, {self.num_samples}, D): one embedding per sample."
                )
            samples = self.generator.generate(
                conditions.flatten(0, 1),
                init_images=None if init is None else init.repeat_interleave(self.num_samples, 0),
                strength=self.strength,
                num_samples=1,
                generator=seed,
                **kwargs,
            ).cpu()
            samples = samples.view(len(brain), self.num_samples, *samples.shape[2:])
        if self.select_with is not None and self.num_samples > 1:
            best, index, scores = select_best(samples, embeds, self.select_with)
        else:
            best = samples[:, 0]
            index = torch.zeros(len(samples), dtype=torch.long)
            scores = torch.zeros(samples.shape[:2])
        if init is not None and self.blend > 0:
            best = blend_images(best, init.cpu(), self.blend, self.blend_mode)
        return Reconstruction(
            best, samples, scores, index, embeds.cpu(), None if init is None else init.cpu()
        )

    def reconstruct(
        self,
        brain: torch.Tensor | np.ndarray,
        generator: torch.Generator | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Reconstruction:
        """Reconstruct images from brain activity.

        Parameters
        ----------
        brain : Tensor or ndarray, shape (B, V)
            One row per trial (repeat-averaged for evaluation).
        generator : torch.Generator, optional
            Seeds the generator's noise.
        progress : callable, optional
            Called with the number of trials done after each batch (e.g. a progress bar's update).

        Returns
        -------
        Reconstruction
        """
        brain = torch.as_tensor(brain).float()
        if brain.ndim != 2 or len(brain) == 0:
            raise InvalidInputError(
                f"brain has shape {tuple(brain.shape)}; expected a non-empty (trials, voxels) array."
            )
        parts = []
        for start in range(0, len(brain), self.batch_size):
            parts.append(self._batch(brain[start : start + self.batch_size], generator))
            if progress is not None:
                progress(len(parts[-1].images))
        lowlevel = None if parts[0].lowlevel is None else torch.cat([p.lowlevel for p in parts])
        return Reconstruction(
            torch.cat([p.images for p in parts]),
            torch.cat([p.samples for p in parts]),
            torch.cat([p.scores for p in parts]),
            torch.cat([p.selected for p in parts]),
            torch.cat([p.embeds for p in parts]),
            lowlevel,
        )
