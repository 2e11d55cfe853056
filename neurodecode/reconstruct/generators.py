"""The one interface every image generator in :mod:`neurodecode.reconstruct` implements.

A generator turns image embeddings (the output of a brain decoder's prior, or of an image encoder)
into images, optionally starting from an init image (img2img, MindEye's low-level pathway) at a set
strength. The embedded default is :mod:`neurodecode.embedded.generator`; real diffusers
pipelines are wrapped in :mod:`neurodecode.reconstruct.diffusers_pipelines`.

Images cross this interface as float tensors ``(N, 3, H, W)`` in ``[0, 1]`` (the convention of
torchvision and of the metrics in :mod:`neurodecode.evaluate.image_metrics`);
:func:`images_to_tensor` and :func:`tensor_to_images` convert from and to ``uint8`` ``(N, H, W, 3)``
arrays as the stimuli are stored.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from neurodecode.validation import InvalidInputError, check_array


@runtime_checkable
class Generator(Protocol):
    """Image embeddings (+ optional init images) -> images.

    Attributes
    ----------
    image_size : int
        Side of the generated square images, in pixels.
    embed_dim : int
        Length ``D`` of the image embeddings it is conditioned on.
    """

    image_size: int
    embed_dim: int

    def generate(
        self,
        image_embeds: torch.Tensor,
        init_images: torch.Tensor | None = None,
        strength: float = 0.6,
        num_samples: int = 1,
        num_inference_steps: int = 20,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Generate images.

        Parameters
        ----------
        image_embeds : Tensor, shape (N, D)
            Image embeddings to condition on (any norm; generators normalise as they need).
        init_images : Tensor, shape (N, 3, h, w), in [0, 1], optional
            Starting images for img2img (resized to ``image_size``). ``None``: start from noise.
        strength : float in [0, 1]
            How much of the diffusion is run from the noised init image: 0 returns the init image,
            1 ignores it. Unused without ``init_images``.
        num_samples : int
            Images per embedding.
        num_inference_steps : int
            Scheduler steps for a full (strength 1) generation.
        generator : torch.Generator, optional
            Seeds the noise; the same seed gives the same images.

        Returns
        -------
        Tensor, shape (N, num_samples, 3, image_size, image_size), in [0, 1]
        """
        ...


def check_generate_arguments(
    image_embeds: torch.Tensor,
    init_images: torch.Tensor | None,
    strength: float,
    num_samples: int,
    num_inference_steps: int,
    embed_dim: int | None = None,
) -> None:
    """Validate the arguments of :meth:`Generator.generate`; raise one clear error otherwise."""
    if not isinstance(image_embeds, torch.Tensor) or image_embeds.ndim != 2:
        shape = tuple(getattr(image_embeds, "shape", ()))
        raise InvalidInputError(f"image_embeds has shape {shape}; expected a 2-D tensor (N, D).")
    if embed_dim is not None and image_embeds.shape[1] != embed_dim:
        raise InvalidInputError(
            f"image_embeds has {image_embeds.shape[1]} dimensions; this generator was trained on "
            f"{embed_dim}-dimensional embeddings."
        )
    if not torch.isfinite(image_embeds).all():
        raise InvalidInputError("image_embeds has NaN/inf values; expected finite values.")
    if init_images is not None:
        if init_images.ndim != 4 or init_images.shape[1] != 3:
            raise InvalidInputError(
                f"init_images has shape {tuple(init_images.shape)}; expected (N, 3, H, W)."
            )
        if init_images.shape[0] != image_embeds.shape[0]:
            raise InvalidInputError(
                f"init_images has {init_images.shape[0]} images but image_embeds has "
                f"{image_embeds.shape[0]} rows; expected one init image per embedding."
            )
    if not 0.0 <= float(strength) <= 1.0:
        raise InvalidInputError(f"strength={strength!r} is not valid; expected a value in [0, 1].")
    if int(num_samples) < 1:
        raise InvalidInputError(f"num_samples={num_samples!r} is not valid; expected >= 1.")
    if int(num_inference_steps) < 1:
        raise InvalidInputError(
            f"num_inference_steps={num_inference_steps!r} is not valid; expected >= 1."
        )


def images_to_tensor(images: np.ndarray, size: int | None = None) -> torch.Tensor:
    """Convert ``uint8`` images to a float tensor in ``[0, 1]``.

    Parameters
    ----------
    images : ndarray, shape (N, H, W, 3), uint8
    size : int, optional
        Resize (bilinear, antialiased) to ``size x size``.

    Returns
    -------
    Tensor, shape (N, 3, H, W) or (N, 3, size, size), float32 in [0, 1]
    """
    images = check_array("images", images, ndim=4, kind="u")
    if images.shape[-1] != 3:
        raise InvalidInputError(f"images has shape {images.shape}; expected (N, H, W, 3) uint8.")
    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    if size is not None and tuple(tensor.shape[-2:]) != (size, size):
        tensor = resize_images(tensor, size)
    return tensor


def tensor_to_images(tensor: torch.Tensor) -> np.ndarray:
    """Convert a float tensor ``(N, 3, H, W)`` in ``[0, 1]`` to ``uint8`` ``(N, H, W, 3)``."""
    if tensor.ndim != 4 or tensor.shape[1] != 3:
        raise InvalidInputError(f"tensor has shape {tuple(tensor.shape)}; expected (N, 3, H, W).")
    array = (tensor.detach().clamp(0, 1) * 255.0).round().to(torch.uint8)
    return array.permute(0, 2, 3, 1).cpu().numpy()


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` images to ``size x size`` (bilinear, antialiased when shrinking)."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    shrinking = images.shape[-1] > size or images.shape[-2] > size
    return F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking
    )
