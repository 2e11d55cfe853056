"""Real image generators: diffusers pipelines read from local weights, wrapped as ``Generator``.

Three pipelines that take CLIP image embeddings, as the reconstruction literature uses them:

- :class:`UnCLIPGenerator` — Stable unCLIP (``StableUnCLIPImg2ImgPipeline``, e.g.
  ``stabilityai/stable-diffusion-2-1-unclip``; OpenCLIP ViT-H/14 image embeddings, 1024-d);
- :class:`VersatileDiffusionGenerator` — Versatile Diffusion dual-guided
  (``VersatileDiffusionDualGuidedPipeline``, ``shi-labs/versatile-diffusion``; MindEye1's generator,
  CLIP ViT-L/14 image tokens 257 x 768, flattened, with an optional text prompt);
- :class:`ImageVariationGenerator` — SD image variations (``StableDiffusionImageVariationPipeline``,
  ``lambdalabs/sd-image-variations-diffusers``; CLIP ViT-L/14 image embeddings, 768-d).

Weights are never downloaded: :func:`load_local_pretrained` reads a local folder or the user's
Hugging Face cache with ``local_files_only=True`` and otherwise raises one
:class:`WeightsNotFoundError` that says how to provide them. The pipelines compute embeddings from
images themselves; the adapters hand them the decoded embeddings instead by replacing the pipeline
instance's image-encoding method for the duration of one call (nothing is subclassed).

None of these diffusers pipelines starts from an init image: ``init_images``/``strength`` are
ignored (with a warning) — MindEye's img2img from the low-level image needs the embedded default
(:mod:`neurodecode.embedded.generator`) or a custom loop.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from neurodecode.reconstruct.generators import check_generate_arguments
from neurodecode.validation import InvalidInputError

log = logging.getLogger(__name__)

#: pipeline kind -> (diffusers class name, default hub repo id)
PIPELINES: dict[str, tuple[str, str]] = {
    "unclip": ("StableUnCLIPImg2ImgPipeline", "stabilityai/stable-diffusion-2-1-unclip"),
    "versatile-diffusion": ("VersatileDiffusionDualGuidedPipeline", "shi-labs/versatile-diffusion"),
    "image-variations": (
        "StableDiffusionImageVariationPipeline",
        "lambdalabs/sd-image-variations-diffusers",
    ),
}


class WeightsNotFoundError(InvalidInputError):
    """Model weights are not on this machine (and are never downloaded)."""


def _how_to_provide(repo: str) -> str:
    return (
        "Nothing is downloaded at run time. To provide the weights, on a machine with internet "
        f"run `huggingface-cli download {repo}` (it fills the Hugging Face cache, "
        "~/.cache/huggingface/hub or $HF_HOME; copy that folder here), or save the model with "
        "`save_pretrained(DIR)` and pass DIR as the path."
    )


def resolve_local_weights(name_or_path: str | Path, what: str) -> Path:
    """The local folder holding ``name_or_path``'s files: the path itself or its cached snapshot.

    Raises
    ------
    WeightsNotFoundError
        Neither a folder at that path nor a cached snapshot of that hub repo exists.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    text = str(name_or_path)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise WeightsNotFoundError(
            f"{what} weights not found: expected a model folder at {path}. "
            + _how_to_provide(text if text.count("/") == 1 else "<repo-id>")
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(text, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError) as error:
        raise WeightsNotFoundError(
            f"{what} weights for {text!r} are not in the local Hugging Face cache. "
            + _how_to_provide(text)
        ) from error


def load_local_pretrained(
    cls: Any,
    name_or_path: str | Path,
    subfolder: str | None = None,
    what: str = "model",
    **kwargs: Any,
) -> Any:
    """``cls.from_pretrained`` from local files only, with one clear error otherwise.

    Parameters
    ----------
    cls : diffusers model or pipeline class
    name_or_path : str or path
        A local folder, or a hub repo id already in the Hugging Face cache.
    subfolder : str, optional
        Sub-folder of the repo (e.g. ``"vae"``).
    what : str
        What is being loaded, for messages.
    **kwargs
        Passed to ``from_pretrained``.
    """
    folder = resolve_local_weights(name_or_path, what)
    if type(cls).__name__ == "DummyObject" or "dummy" in getattr(cls, "__module__", ""):
        raise InvalidInputError(
            f"{what} ({cls.__name__}) needs the `transformers` package, which is not installed: "
            "`pip install transformers`."
        )
    if subfolder is not None:
        kwargs["subfolder"] = subfolder
    try:
        return cls.from_pretrained(str(folder), local_files_only=True, **kwargs)
    except (OSError, ValueError) as error:
        raise WeightsNotFoundError(
            f"{what} weights in {folder} are incomplete or of the wrong kind ({error}). "
            + _how_to_provide(str(name_or_path))
        ) from error


def load_pipeline(kind: str, name_or_path: str | Path | None = None, **kwargs: Any) -> Any:
    """Load one of :data:`PIPELINES` from local weights.

    Parameters
    ----------
    kind : {"unclip", "versatile-diffusion", "image-variations"}
    name_or_path : str or path, optional
        Local folder or cached hub repo id (default: the kind's usual repo).
    **kwargs
        Passed to ``from_pretrained`` (e.g. ``torch_dtype``).
    """
    if kind not in PIPELINES:
        raise InvalidInputError(
            f"kind={kind!r} is not valid; expected one of {', '.join(map(repr, PIPELINES))}."
        )
    import diffusers

    class_name, repo = PIPELINES[kind]
    return load_local_pretrained(
        getattr(diffusers, class_name), name_or_path or repo, what=f"{kind} pipeline", **kwargs
    )


@contextmanager
def _replaced_method(pipe: Any, name: str, replacement: Callable) -> Iterator[None]:
    """Set ``pipe.<name>`` (instance attribute) to ``replacement`` for the duration of a block."""
    had = name in vars(pipe)
    previous = vars(pipe).get(name)
    setattr(pipe, name, replacement)
    try:
        yield
    finally:
        if had:
            setattr(pipe, name, previous)
        else:
            delattr(pipe, name)


def _warn_init_ignored(init_images: torch.Tensor | None, kind: str) -> None:
    if init_images is not None:
        warnings.warn(
            f"the {kind} pipeline does not start from an init image; init_images and strength are "
            "ignored.",
            stacklevel=3,
        )


def _repeat_with_negative(
    embeds: torch.Tensor, num_samples: int, negative: torch.Tensor | None, guidance: bool
) -> torch.Tensor:
    embeds = embeds.repeat_interleave(num_samples, dim=0)
    if not guidance:
        return embeds
    negative = torch.zeros_like(embeds) if negative is None else negative.expand_as(embeds)
    return torch.cat([negative, embeds])


def _as_output(images: torch.Tensor, n: int, num_samples: int) -> torch.Tensor:
    images = torch.as_tensor(images).float().clamp(0, 1)
    return images.view(n, num_samples, *images.shape[1:])


class _PipelineGenerator:
    """Shared state of the adapters: the pipeline, its device and default guidance."""

    kind = ""

    def __init__(self, pipe: Any, guidance_scale: float = 7.5):
        self.pipe = pipe
        self.guidance_scale = guidance_scale

    @property
    def device(self) -> torch.device:
        return self.pipe.device

    def to(self, device: str | torch.device):
        self.pipe.to(device)
        return self


class UnCLIPGenerator(_PipelineGenerator):
    """Stable unCLIP as a :class:`~neurodecode.reconstruct.generators.Generator`.

    Parameters
    ----------
    pipe : StableUnCLIPImg2ImgPipeline
    guidance_scale : float
    noise_level : int
        unCLIP's noise augmentation of the image embedding (0 = none).
    prompt : str
        Optional text prompt (empty by default).
    """

    kind = "unclip"

    def __init__(
        self, pipe: Any, guidance_scale: float = 7.5, noise_level: int = 0, prompt: str = ""
    ):
        super().__init__(pipe, guidance_scale)
        self.noise_level = noise_level
        self.prompt = prompt
        self.embed_dim = int(pipe.image_encoder.config.projection_dim)
        self.image_size = int(pipe.unet.config.sample_size * pipe.vae_scale_factor)

    @torch.no_grad()
    def generate(
        self,
        image_embeds,
        init_images=None,
        strength=0.6,
        num_samples=1,
        num_inference_steps=20,
        generator=None,
    ) -> torch.Tensor:
        """See :class:`~neurodecode.reconstruct.generators.Generator`; init images are ignored."""
        check_generate_arguments(
            image_embeds, init_images, strength, num_samples, num_inference_steps, self.embed_dim
        )
        _warn_init_ignored(init_images, self.kind)
        n = len(image_embeds)
        out = self.pipe(
            prompt=[self.prompt] * n,
            image_embeds=image_embeds.to(self.device),
            num_images_per_prompt=num_samples,
            num_inference_steps=num_inference_steps,
            guidance_scale=self.guidance_scale,
            noise_level=self.noise_level,
            generator=generator,
            output_type="pt",
        ).images
        return _as_output(out, n, num_samples)


class ImageVariationGenerator(_PipelineGenerator):
    """SD image variations as a :class:`~neurodecode.reconstruct.generators.Generator`.

    The pipeline's CLIP image embedding (``image_embeds`` of a ViT-L/14 projection, 768-d) is
    replaced by the given embeddings; the unconditional embedding is zeros, as in the pipeline.
    """

    kind = "image-variations"

    def __init__(self, pipe: Any, guidance_scale: float = 3.0):
        super().__init__(pipe, guidance_scale)
        self.embed_dim = int(pipe.image_encoder.config.projection_dim)
        self.image_size = int(pipe.unet.config.sample_size * pipe.vae_scale_factor)

    @torch.no_grad()
    def generate(
        self,
        image_embeds,
        init_images=None,
        strength=0.6,
        num_samples=1,
        num_inference_steps=20,
        generator=None,
    ) -> torch.Tensor:
        """See :class:`~neurodecode.reconstruct.generators.Generator`; init images are ignored."""
        check_generate_arguments(
            image_embeds, init_images, strength, num_samples, num_inference_steps, self.embed_dim
        )
        _warn_init_ignored(init_images, self.kind)
        n = len(image_embeds)
        dtype = self.pipe.unet.dtype

        def encode(image, device, num_images_per_prompt, do_classifier_free_guidance):
            embeds = image_embeds.to(device=device, dtype=dtype)[:, None, :]
            return _repeat_with_negative(
                embeds, num_images_per_prompt, None, do_classifier_free_guidance
            )

        placeholder = torch.zeros(n, 3, 224, 224, device=self.device)  # sets the batch size only
        with _replaced_method(self.pipe, "_encode_image", encode):
            out = self.pipe(
                placeholder,
                num_images_per_prompt=num_samples,
                num_inference_steps=num_inference_steps,
                guidance_scale=self.guidance_scale,
                generator=generator,
                output_type="pt",
            ).images
        return _as_output(out, n, num_samples)


@contextmanager
def _dual_transformers_ignore_encoder_mask(unet: torch.nn.Module) -> Iterator[None]:
    """Let the dual-guided UNet's ``DualTransformer2DModel`` blocks accept a ``None`` mask.

    diffusers' UNet blocks pass ``encoder_attention_mask=None`` to every attention block, but
    ``DualTransformer2DModel.forward`` has no such argument (TypeError in diffusers 0.42); the mask
    is dropped for the duration of a block (it is always ``None`` in this pipeline).
    """
    from diffusers.models import DualTransformer2DModel

    patched = []
    for module in unet.modules():
        if isinstance(module, DualTransformer2DModel) and "forward" not in vars(module):

            def forward(*args, _forward=module.forward, encoder_attention_mask=None, **kwargs):
                if encoder_attention_mask is not None:
                    raise InvalidInputError("Versatile Diffusion takes no encoder attention mask.")
                return _forward(*args, **kwargs)

            module.forward = forward
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward


class VersatileDiffusionGenerator(_PipelineGenerator):
    """Versatile Diffusion dual-guided as a :class:`~neurodecode.reconstruct.generators.Generator`.

    Embeddings are CLIP ViT-L/14 image tokens ``(N, 257 * 768)`` (flattened; MindEye1's targets),
    normalised as the pipeline does (divided by the norm of the first, pooled token). The text
    guidance is ``prompt`` mixed in at ``text_to_image_strength`` (0 = image only).
    """

    kind = "versatile-diffusion"

    def __init__(
        self,
        pipe: Any,
        guidance_scale: float = 3.5,
        prompt: str = "",
        text_to_image_strength: float = 0.0,
    ):
        super().__init__(pipe, guidance_scale)
        self.prompt = prompt
        self.text_to_image_strength = text_to_image_strength
        vision = pipe.image_encoder.config
        self.tokens = (vision.image_size // vision.patch_size) ** 2 + 1
        self.token_dim = int(vision.projection_dim)
        self.embed_dim = self.tokens * self.token_dim
        self.image_size = int(pipe.image_unet.config.sample_size * pipe.vae_scale_factor)

    @torch.no_grad()
    def generate(
        self,
        image_embeds,
        init_images=None,
        strength=0.6,
        num_samples=1,
        num_inference_steps=20,
        generator=None,
    ) -> torch.Tensor:
        """See :class:`~neurodecode.reconstruct.generators.Generator`; init images are ignored."""
        check_generate_arguments(
            image_embeds, init_images, strength, num_samples, num_inference_steps, self.embed_dim
        )
        _warn_init_ignored(init_images, self.kind)
        n = len(image_embeds)
        pipe = self.pipe
        tokens = image_embeds.view(n, self.tokens, self.token_dim)
        tokens = tokens / tokens[:, :1].norm(dim=-1, keepdim=True).clamp_min(1e-8)
        original = type(pipe)._encode_image_prompt

        def encode(prompt, device, num_images_per_prompt, do_classifier_free_guidance):
            negative = None
            if do_classifier_free_guidance:  # the pipeline's own null image (grey), once
                grey = original(pipe, [torch.full((3, 224, 224), 0.5)], device, 1, False)
                negative = grey.to(device)
            embeds = tokens.to(device=device, dtype=pipe.image_unet.dtype)
            return _repeat_with_negative(
                embeds, num_images_per_prompt, negative, do_classifier_free_guidance
            )

        placeholder = [torch.zeros(3, 224, 224)] * n  # sets the batch size only
        with (
            _replaced_method(pipe, "_encode_image_prompt", encode),
            _dual_transformers_ignore_encoder_mask(pipe.image_unet),
        ):
            out = pipe(
                prompt=[self.prompt] * n,
                image=placeholder,
                text_to_image_strength=self.text_to_image_strength,
                num_images_per_prompt=num_samples,
                num_inference_steps=num_inference_steps,
                guidance_scale=self.guidance_scale,
                generator=generator,
                output_type="pt",
            ).images
        return _as_output(out, n, num_samples)


ADAPTERS = {
    "unclip": UnCLIPGenerator,
    "versatile-diffusion": VersatileDiffusionGenerator,
    "image-variations": ImageVariationGenerator,
}


def load_generator(
    kind: str, name_or_path: str | Path | None = None, device: str = "cpu", **adapter_kwargs: Any
):
    """A real pipeline, loaded from local weights and wrapped as a ``Generator``.

    Parameters
    ----------
    kind : {"unclip", "versatile-diffusion", "image-variations"}
    name_or_path : str or path, optional
        Local folder or cached hub repo id (default: the kind's usual repo).
    device : str
    **adapter_kwargs
        Passed to the adapter (e.g. ``guidance_scale``).

    Raises
    ------
    WeightsNotFoundError
        The weights are not on this machine; the message says how to provide them.
    """
    pipe = load_pipeline(kind, name_or_path)
    return ADAPTERS[kind](pipe.to(device), **adapter_kwargs)
