"""One factory over open_clip: a model name plus a hub tag, a local checkpoint or random weights.

:func:`load_clip` returns a :class:`ClipEncoder` that embeds images (pooled, or all tokens of the
last layer as MindEye's 257 x 768 targets) and captions, with the model's own preprocessing, and
describes itself in :attr:`ClipEncoder.settings` for a :class:`~neurodecode.features.store.FeatureStore`.

Weights are never downloaded. A hub tag is looked up in the local caches (the Hugging Face hub
cache, or open_clip's ``~/.cache/clip`` for URL-hosted weights) and loaded from there; a tag that is
not cached fails at once with a message saying how to provide the weights offline. Model configs
that are not open_clip's own (the simulated world's ``sim-clip-*``) are registered by the module that
owns them (:mod:`neurodecode.embedded.clip`) with ``open_clip.add_model_config``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from PIL import Image

from neurodecode.features.hooks import capture_activations
from neurodecode.validation import InvalidInputError, check_option

OUTPUTS = ("pooled", "tokens", "patch_tokens")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")


def file_sha256(path: str | Path, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _cached_hub_weights(tag_cfg: dict[str, Any], cache_dir: str | None) -> str | None:
    """The local file holding a tag's weights, or ``None`` when nothing is cached."""
    if tag_cfg.get("file"):
        return tag_cfg["file"] if os.path.isfile(tag_cfg["file"]) else None
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(hub)
        filename = filename or "open_clip_pytorch_model.bin"
        candidates = [filename]
        if filename.endswith((".bin", ".pth")):
            candidates.insert(0, filename[:-4] + ".safetensors")
        if filename == "open_clip_pytorch_model.bin":
            candidates.insert(0, "open_clip_model.safetensors")
        for name in candidates:
            found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
            if isinstance(found, str) and os.path.isfile(found):
                return found
    url = tag_cfg.get("url", "")
    if url:
        local = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if local.is_file():
            return str(local)
    return None


def _offline_message(model_name: str, tag: str, tag_cfg: dict[str, Any]) -> str:
    where = tag_cfg.get("hf_hub") or tag_cfg.get("url") or "?"
    return (
        f"pretrained={tag!r} for {model_name!r} is an open_clip hub tag whose weights are not in "
        f"the local cache, and this machine is offline (HF_HUB_OFFLINE); nothing is downloaded. "
        f"Provide the weights offline in one of two ways: (1) pass pretrained=<path to a local "
        f"checkpoint> (.safetensors/.bin/.pt of this architecture, e.g. copied from a machine with "
        f"network from {where}); or (2) pre-populate the Hugging Face cache (HF_HOME / "
        f"HF_HUB_CACHE, or the cache_dir argument) on a machine with network with "
        f"open_clip.create_model({model_name!r}, pretrained={tag!r}) and copy it here."
    )


def resolve_pretrained(
    model_name: str, pretrained: str | Path | None, cache_dir: str | None = None
) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """Turn ``pretrained`` into a local checkpoint file, without touching the network.

    Returns
    -------
    checkpoint : str or None
        A local file, or ``None`` for random initialisation.
    description : dict
        ``{"pretrained": tag or None, "checkpoint_sha256": ... or None}`` for the settings.
    overrides : dict
        Keyword arguments for ``open_clip.create_model_and_transforms`` that a tag implies
        (its preprocessing mean/std/interpolation and QuickGELU).
    """
    if pretrained is None:
        return None, {"pretrained": None, "checkpoint_sha256": None}, {}
    path = Path(pretrained).expanduser()
    if path.is_file():
        return (
            str(path),
            {"pretrained": "checkpoint", "checkpoint_sha256": file_sha256(path)},
            {},
        )
    text = str(pretrained)
    tag_cfg = open_clip.get_pretrained_cfg(model_name, text)
    if not tag_cfg:
        if os.sep in text or text.endswith(_CHECKPOINT_SUFFIXES):
            raise InvalidInputError(
                f"pretrained checkpoint not found: expected a file at {path} (weights for "
                f"{model_name!r})."
            )
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise InvalidInputError(
            f"pretrained={text!r} is neither a local checkpoint file nor an open_clip tag of "
            f"{model_name!r}; known tags: {tags or 'none'}."
        )
    local = _cached_hub_weights(tag_cfg, cache_dir)
    if local is None:
        raise InvalidInputError(_offline_message(model_name, text, tag_cfg))
    overrides: dict[str, Any] = {
        "image_mean": tag_cfg.get("mean"),
        "image_std": tag_cfg.get("std"),
        "image_interpolation": tag_cfg.get("interpolation"),
        "image_resize_mode": tag_cfg.get("resize_mode"),
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if tag_cfg.get("quick_gelu"):
        overrides["force_quick_gelu"] = True
    return local, {"pretrained": text, "checkpoint_sha256": file_sha256(local)}, overrides


#: Images per image-tower forward call on a CPU (:meth:`ClipEncoder.encode_image`).
CPU_FORWARD_IMAGES = 32


class ClipEncoder:
    """An open_clip model with its preprocessing and tokenizer, in eval mode.

    Parameters
    ----------
    model : open_clip.CLIP
        The model.
    preprocess : callable
        open_clip's inference transform (PIL image -> tensor (3, S, S)).
    tokenizer : callable
        open_clip's tokenizer for the model.
    model_name : str
        The open_clip config name.
    weights : dict
        ``{"pretrained": ..., "checkpoint_sha256": ...}`` (see :func:`resolve_pretrained`).
    output : {"pooled", "tokens"}
        What :meth:`encode_image` returns.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Any,
        tokenizer: Any,
        model_name: str,
        weights: dict[str, Any],
        output: str = "pooled",
    ) -> None:
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.weights = dict(weights)
        self.output = check_option("output", output, OUTPUTS)

    def __repr__(self) -> str:
        return (
            f"ClipEncoder({self.model_name!r}, pretrained={self.weights.get('pretrained')!r}, "
            f"output={self.output!r}, embed_dim={self.embed_dim})"
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def embed_dim(self) -> int:
        """Dimension D of the joint image-text space."""
        return int(self.model.text_projection.shape[-1]) if self._has_text_proj else self._probe()

    @property
    def _has_text_proj(self) -> bool:
        proj = getattr(self.model, "text_projection", None)
        return isinstance(proj, torch.Tensor) and proj.ndim == 2

    def _probe(self) -> int:
        with torch.no_grad():
            return int(self.encode_text(["a"]).shape[-1])

    @property
    def image_size(self) -> int:
        """Side S of the square input the image tower takes, in pixels."""
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, tuple | list) else size)

    @property
    def settings(self) -> dict[str, Any]:
        """What determines the features, for :meth:`FeatureStore.fill`."""
        pp = dict(getattr(self.model.visual, "preprocess_cfg", {}))
        return {
            "model_name": self.model_name,
            **self.weights,
            "output": self.output,
            "image_size": self.image_size,
            "preprocess": {k: list(v) if isinstance(v, tuple) else v for k, v in pp.items()},
            "preprocess_repr": " ".join(repr(self.preprocess).split()),
            "precision": "fp32",
        }

    # ------------------------------------------------------------------ images

    def preprocess_images(
        self, images: np.ndarray | torch.Tensor | Sequence[np.ndarray | Image.Image]
    ) -> torch.Tensor:
        """Apply open_clip's transform to each image.

        Parameters
        ----------
        images : ndarray (N, H, W, 3) uint8, sequence of (H, W, 3) uint8 arrays or PIL images,
            or a float tensor (N, 3, S, S) that is already preprocessed (returned as is).

        Returns
        -------
        Tensor, shape (N, 3, S, S), float32, on the model's device.
        """
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
                raise InvalidInputError(
                    f"image tensor has shape {tuple(images.shape)} and dtype {images.dtype}; "
                    "expected a preprocessed float tensor (N, 3, S, S)."
                )
            return images.to(self.device, torch.float32)
        if isinstance(images, np.ndarray):
            if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
                raise InvalidInputError(
                    f"images have shape {images.shape} and dtype {images.dtype}; expected "
                    "(N, H, W, 3) uint8 RGB."
                )
        pils = []
        for k, image in enumerate(images):
            if not isinstance(image, Image.Image):
                array = np.asarray(image)
                if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
                    raise InvalidInputError(
                        f"image {k} has shape {array.shape} and dtype {array.dtype}; expected "
                        "(H, W, 3) uint8 RGB."
                    )
                image = Image.fromarray(array, mode="RGB")
            pils.append(image)
        if not pils:
            return torch.empty(0, 3, self.image_size, self.image_size, device=self.device)
        return torch.stack([self.preprocess(im) for im in pils]).to(self.device, torch.float32)

    def encode_image(
        self,
        images: np.ndarray | torch.Tensor | Sequence[np.ndarray | Image.Image],
        normalize: bool = False,
    ) -> torch.Tensor:
        """Embed images.

        With ``output="pooled"``: the model's image embedding, shape (N, D), as
        ``open_clip.CLIP.encode_image``. With ``output="tokens"``: every token of the last layer of
        the vision transformer — class token first, then the patch tokens in raster order — after
        the final LayerNorm (``visual.ln_post``) and projected by ``visual.proj`` into the joint
        space, shape (N, 1 + P, D) (257 x 768 for ViT-L/14 at 224 px, as MindEye). Token 0 equals
        the pooled embedding for class-token pooling (MindEye1's targets). With
        ``output="patch_tokens"``: the patch tokens only (no class token) after ``ln_post`` and
        *not* projected, shape (N, P, width) — 256 x 1664 for ViT-bigG/14 at 224 px, what
        MindEye2's ``FrozenOpenCLIPImageEmbedder(output_tokens=True, only_tokens=True)`` takes
        from open_clip's ``visual(..., output_tokens)``. ``normalize`` L2-normalises the last
        axis.
        """
        pixels = self.preprocess_images(images)
        # on a CPU, small forward calls keep the activations in cache (sim-clip: half the time
        # at 32 images per call vs 256, the same embeddings; benchmarks/README.md, 2026-12-07)
        # (not in training mode, where batch statistics would depend on the split)
        small = pixels.device.type == "cpu" and not self.model.training
        chunk = CPU_FORWARD_IMAGES if small else max(len(pixels), 1)
        with torch.no_grad():
            forward = self.model.encode_image if self.output == "pooled" else self._image_tokens
            out = torch.cat([forward(part) for part in pixels.split(chunk)])
        out = out.float()
        return torch.nn.functional.normalize(out, dim=-1) if normalize else out

    def _image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        visual = self.model.visual
        if (
            not isinstance(visual, open_clip.transformer.VisionTransformer)
            or visual.attn_pool is not None
            or visual.final_ln_after_pool
        ):
            raise InvalidInputError(
                f"output='tokens' needs a plain open_clip VisionTransformer image tower (LayerNorm "
                f"over all tokens, no attentional pooler); {self.model_name!r} has "
                f"{type(visual).__name__}. Use output='pooled' or capture_activations()."
            )
        tokens = capture_activations(visual, ["ln_post"], pixels, pooled=False)["ln_post"]
        if self.output == "patch_tokens":
            return tokens[:, getattr(visual, "num_prefix_tokens", 1) :]
        return tokens @ visual.proj if visual.proj is not None else tokens

    # ------------------------------------------------------------------ text

    def encode_text(self, captions: Sequence[str], normalize: bool = False) -> torch.Tensor:
        """Embed captions; returns shape (N, D), float32 (L2-normalised if ``normalize``)."""
        if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
            raise InvalidInputError("captions must be a list of strings.")
        tokens = self.tokenizer(list(captions)).to(self.device)
        with torch.no_grad():
            out = self.model.encode_text(tokens).float()
        return torch.nn.functional.normalize(out, dim=-1) if normalize else out


def load_clip(
    model_name: str,
    pretrained: str | Path | None = None,
    device: str | torch.device = "cpu",
    output: str = "pooled",
    cache_dir: str | Path | None = None,
    seed: int = 0,
) -> ClipEncoder:
    """Build an open_clip model with its weights, preprocessing and tokenizer.

    Parameters
    ----------
    model_name : str
        An open_clip config name (``open_clip.list_models()``), e.g. ``"ViT-B-32"``; the simulated
        world's ``sim-clip-*`` names once :mod:`neurodecode.embedded.clip` is imported.
    pretrained : str, Path or None
        An open_clip tag (``"laion2b_s34b_b79k"``) whose weights are already cached, a local
        checkpoint file, or ``None`` for random weights (seeded by ``seed``).
    device : str or torch.device
        Where the model runs.
    output : {"pooled", "tokens"}
        What :meth:`ClipEncoder.encode_image` returns.
    cache_dir : path, optional
        Where cached hub weights live (default: the Hugging Face hub cache and ``~/.cache/clip``).
    seed : int
        Seed of the random initialisation when ``pretrained`` is ``None``.

    Raises
    ------
    InvalidInputError
        Unknown model name or tag, missing checkpoint file, or a tag whose weights are not cached
        (the message says how to provide them offline).
    """
    check_option("output", output, OUTPUTS)
    if model_name not in open_clip.list_models():
        raise InvalidInputError(
            f"model_name={model_name!r} is not an open_clip model config; expected one of "
            f"open_clip.list_models() (e.g. {', '.join(open_clip.list_models()[:5])}, "
            "sim-clip-default)."
        )
    cache = str(cache_dir) if cache_dir is not None else None
    checkpoint, weights, overrides = resolve_pretrained(model_name, pretrained, cache)
    if checkpoint is None:
        weights = {**weights, "init_seed": seed}
        torch.manual_seed(seed)
    import logging

    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))  # open_clip warns loudly about random init
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=checkpoint, device=device, precision="fp32", **overrides
        )
    except RuntimeError as err:
        raise InvalidInputError(
            f"could not load {model_name!r} weights from {checkpoint}: {err}"
        ) from None
    finally:
        logger.setLevel(level)
    tokenizer = open_clip.get_tokenizer(model_name)
    return ClipEncoder(model, preprocess, tokenizer, model_name, weights, output=output)
