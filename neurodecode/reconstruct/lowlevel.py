"""The low-level pathway (MindEye): brain -> VAE latent -> a blurry image used as img2img init.

Owns the brain-to-image modules and the VAE helpers (the simulated-stimulus VAE, the embedded
default, is :func:`neurodecode.embedded.vae.get_sim_vae`):

- :func:`load_sd_vae`: Stable Diffusion's VAE for real use, read only from a local folder or the
  Hugging Face cache (same loader as :mod:`neurodecode.reconstruct.diffusers_pipelines`).
- :class:`LowLevelModule`: a LightningModule mapping brain activity (B, V) to scaled VAE latents
  (MindEye's low-level head: an MLP to a coarse latent grid refined by a small conv block, L1 loss
  on latents) with :meth:`LowLevelModule.decode` giving the blurry reconstruction; for real use
  with SD's VAE.
- :class:`RidgeLowLevel`: the embedded default's pathway, a closed-form ridge from voxels to a
  16 px image, in seconds; :func:`save_lowlevel` / :func:`load_lowlevel` keep it beside a saved decoder
  (``<decoder>/lowlevel/``, a model folder of :mod:`neurodecode.pretrained`) with the strength and
  blend the reconstructor uses as its metadata.

Latents are always *scaled* (multiplied by the VAE's ``scaling_factor``, as Stable Diffusion does),
so that they have roughly unit variance; for the sim VAE the factor is measured after training.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from torch import nn

from neurodecode.models.training import adamw_onecycle
from neurodecode.pretrained import PretrainedMixin, load_pretrained, read_config, save_pretrained
from neurodecode.reconstruct.diffusers_pipelines import load_local_pretrained
from neurodecode.reconstruct.generators import resize_images
from neurodecode.reconstruct.reconstructor import BLEND_MODES
from neurodecode.validation import InvalidInputError, check_option

log = logging.getLogger(__name__)


def vae_downsampling(vae: AutoencoderKL) -> int:
    """How many pixels one latent cell covers per side."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def latent_shape(vae: AutoencoderKL, image_size: int | None = None) -> tuple[int, int, int]:
    """``(channels, h, w)`` of the latents of ``image_size`` px images (default the VAE's size)."""
    size = image_size or vae.config.sample_size
    side = size // vae_downsampling(vae)
    return (vae.config.latent_channels, side, side)


@torch.no_grad()
def encode_images(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Scaled posterior-mean latents of images.

    Parameters
    ----------
    images : Tensor, shape (N, 3, H, W), in [0, 1]

    Returns
    -------
    Tensor, shape (N, latent_channels, H / f, W / f)
    """
    device = next(vae.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].float().to(device) * 2 - 1
        out.append(vae.encode(x).latent_dist.mean * vae.config.scaling_factor)
    return torch.cat(out)


def decode_latents(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] ``(N, 3, H, W)`` from scaled latents (differentiable)."""
    images = vae.decode(latents / vae.config.scaling_factor).sample
    return ((images + 1) / 2).clamp(0, 1)


def load_sd_vae(
    name_or_path: str | Path = "stabilityai/sd-vae-ft-mse", subfolder: str | None = None
) -> AutoencoderKL:
    """Stable Diffusion's VAE from a local folder or the Hugging Face cache (never downloaded).

    Parameters
    ----------
    name_or_path : str or path
        A folder with ``config.json`` and weights, or a hub repo id already in the local cache
        (e.g. ``"stabilityai/sd-vae-ft-mse"``, or an SD repo with ``subfolder="vae"``).
    subfolder : str, optional

    Returns
    -------
    AutoencoderKL
        Frozen, eval mode.
    """
    vae = load_local_pretrained(AutoencoderKL, name_or_path, subfolder=subfolder, what="SD VAE")
    return vae.eval().requires_grad_(False)


class LowLevelModule(L.LightningModule):
    """Brain activity -> scaled VAE latents (MindEye's low-level pathway).

    An MLP (Linear -> LayerNorm -> GELU -> Dropout, one residual block) maps voxels to a coarse
    latent grid, refined by a residual conv block; trained with L1 on the target latents.

    Parameters
    ----------
    n_voxels : int
        Input length ``V``.
    vae : AutoencoderKL
        Frozen; gives the latent shape, encodes target images and decodes predictions.
    image_size : int, optional
        Side of the images the latents stand for (default the VAE's ``sample_size``).
    hidden : int
        MLP width.
    dropout : float
    learning_rate, weight_decay : float
        AdamW settings (no decay on biases and norms).

    Notes
    -----
    Batches are mappings with ``"brain"`` (B, V) and either ``"latent"`` (B, C, h, w, scaled) or
    ``"image"`` (B, 3, H, W in [0, 1]; encoded with the frozen VAE), or tuples ``(brain, image)``.
    """

    def __init__(
        self,
        n_voxels: int,
        vae: AutoencoderKL,
        image_size: int | None = None,
        hidden: int = 1024,
        dropout: float = 0.3,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.01,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["vae"])
        self.vae = vae.eval().requires_grad_(False)
        self.image_size = image_size or vae.config.sample_size
        self.latent_shape = latent_shape(vae, self.image_size)
        c, h, w = self.latent_shape
        self.input = nn.Sequential(
            nn.Linear(n_voxels, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout)
        )
        self.block = nn.Sequential(
            nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout)
        )
        self.to_grid = nn.Linear(hidden, c * h * w)
        self.refine = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1),
            nn.GroupNorm(4, 32),
            nn.SiLU(),
            nn.Conv2d(32, c, 3, padding=1),
        )

    def train(self, mode: bool = True):
        super().train(mode)
        self.vae.eval()  # frozen: never in training mode
        return self

    def forward(self, brain: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``(B, C, h, w)`` from brain activity ``(B, V)``."""
        if brain.ndim != 2 or brain.shape[1] != self.hparams.n_voxels:
            raise InvalidInputError(
                f"brain has shape {tuple(brain.shape)}; expected (B, {self.hparams.n_voxels})."
            )
        hidden = self.input(brain.float())
        hidden = hidden + self.block(hidden)
        grid = self.to_grid(hidden).view(len(brain), *self.latent_shape)
        return grid + self.refine(grid)

    @torch.no_grad()
    def decode(self, brain: torch.Tensor) -> torch.Tensor:
        """Blurry reconstructions ``(B, 3, H, W)`` in [0, 1] from brain activity ``(B, V)``."""
        was_training = self.training
        self.eval()
        images = decode_latents(self.vae, self(brain.to(self.device)))
        self.train(was_training)
        return images

    def _targets(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(batch, Mapping):
            brain = batch["brain"]
            if "latent" in batch:
                return brain, batch["latent"]
            images = batch["image"]
        else:
            brain, images = batch[0], batch[1]
        images = resize_images(images.float(), self.image_size)
        return brain, encode_images(self.vae, images)

    def _step(self, batch, stage: str) -> torch.Tensor:
        brain, target = self._targets(batch)
        loss = F.l1_loss(self(brain), target)
        self.log(f"{stage}_loss", loss, prog_bar=stage == "train", batch_size=len(brain))
        return loss

    def training_step(self, batch, batch_idx: int):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int):
        return self._step(batch, "val")

    def configure_optimizers(self):
        return adamw_onecycle(
            self, self.hparams.learning_rate, self.hparams.weight_decay, schedule="constant"
        )


class RidgeLowLevel(PretrainedMixin, nn.Module):
    """Brain activity -> a blurry image by closed-form ridge regression (the embedded default).

    One linear map from voxels to the pixels of a small (``image_size`` px) version of the
    stimulus, fitted with :class:`neurodecode.models.ridge.RidgeRegression` (one cross-validated
    alpha shared by all pixels). It is the conditional-mean image given the brain; unlike a ridge to
    a small VAE's latents, it cannot leave the image manifold through a decoder that turns shrunken
    latents into off-manifold images (benchmarks/README.md compares the two).

    Parameters
    ----------
    n_voxels : int
        Input length ``V``.
    image_size : int
        Side of the predicted image (px).
    """

    def __init__(self, n_voxels: int, image_size: int = 16):
        super().__init__()
        self.n_voxels = int(n_voxels)
        self.image_size = int(image_size)
        n_out = 3 * self.image_size**2
        self.register_buffer("weight", torch.zeros(self.n_voxels, n_out))
        self.register_buffer("intercept", torch.zeros(n_out))

    def get_config(self) -> dict[str, Any]:
        """Init arguments (voxel count and image side), as JSON types."""
        return {"n_voxels": self.n_voxels, "image_size": self.image_size}

    @classmethod
    def fit(
        cls,
        brain: torch.Tensor | Any,
        images: torch.Tensor,
        image_size: int = 16,
        alphas: Any = None,
        n_folds: int = 5,
    ) -> RidgeLowLevel:
        """Fit on trials and their stimuli.

        Parameters
        ----------
        brain : array or Tensor, shape (n, V)
            Preferably repeat-averaged trials (as the test trials are).
        images : Tensor, shape (n, 3, H, W), in [0, 1]
            The stimulus of each row (resized to ``image_size``).
        image_size : int
        alphas : array-like, optional
            Ridge grid (default ``logspace(1, 6, 11)``).
        n_folds : int

        Returns
        -------
        RidgeLowLevel
        """
        import numpy as np

        from neurodecode.models.ridge import RidgeRegression

        brain = torch.as_tensor(brain).float().cpu()
        if brain.ndim != 2 or images.ndim != 4 or len(brain) != len(images):
            raise InvalidInputError(
                f"brain has shape {tuple(brain.shape)} and images {tuple(images.shape)}; "
                "expected (n, V) and (n, 3, H, W) with the same n."
            )
        target = resize_images(images.float().cpu(), image_size).flatten(1)
        grid = np.logspace(1, 6, 11) if alphas is None else alphas
        ridge = RidgeRegression(alphas=grid, n_folds=n_folds, per_target=False)
        ridge.fit(brain.numpy(), target.numpy())
        module = cls(brain.shape[1], image_size)
        module.weight.copy_(torch.as_tensor(ridge.coef_.T, dtype=torch.float32))
        module.intercept.copy_(torch.as_tensor(ridge.intercept_, dtype=torch.float32))
        module.alpha = float(np.asarray(ridge.alpha_).ravel()[0])
        return module.eval()

    def forward(self, brain: torch.Tensor) -> torch.Tensor:
        """Blurry images ``(B, 3, image_size, image_size)`` in [0, 1] from ``(B, V)``."""
        brain = torch.as_tensor(brain)
        if brain.ndim != 2 or brain.shape[1] != self.n_voxels:
            raise InvalidInputError(
                f"brain has shape {tuple(brain.shape)}; expected (B, {self.n_voxels})."
            )
        flat = brain.float().to(self.weight.device) @ self.weight + self.intercept
        return flat.view(len(brain), 3, self.image_size, self.image_size).clamp(0, 1)

    @torch.no_grad()
    def decode(self, brain: torch.Tensor) -> torch.Tensor:
        """Same as calling the module, without gradients (the low-level interface)."""
        return self(brain)


#: Sub-folder of a saved decoder that holds its low-level pathway.
LOWLEVEL_FOLDER = "lowlevel"


@dataclass
class LowLevelPathway:
    """A fitted low-level pathway and how the reconstructor uses it.

    Attributes
    ----------
    module : RidgeLowLevel
    subject : str
        Decoder subject whose voxels it reads.
    strength : float
        img2img strength from its output.
    blend : float in [0, 1]
        Weight of its output in the final image (MindEye2's blend of the blurry and the generated
        reconstruction; see :func:`neurodecode.reconstruct.reconstructor.blend_images`).
    blend_mode : {"rgb", "luminance"}
    """

    module: RidgeLowLevel
    subject: str
    strength: float
    blend: float
    blend_mode: str = "luminance"

    @property
    def n_voxels(self) -> int:
        return self.module.n_voxels


def save_lowlevel(pathway: LowLevelPathway, folder: str | Path) -> Path:
    """Write the pathway as a model folder (:func:`neurodecode.pretrained.save_pretrained`).

    The ridge map is the model; subject, strength and blend are its ``metadata``.

    Returns
    -------
    Path
        ``folder``.
    """
    settings = {
        "subject": pathway.subject,
        "strength": float(pathway.strength),
        "blend": float(pathway.blend),
        "blend_mode": pathway.blend_mode,
    }
    return save_pretrained(pathway.module, folder, metadata=settings)


def load_lowlevel(folder: str | Path) -> LowLevelPathway:
    """Read a folder written by :func:`save_lowlevel`.

    Raises
    ------
    InvalidInputError
        Missing files, another kind of model, or settings out of range (names the folder).
    """
    folder = Path(folder)
    module = load_pretrained(folder)
    if not isinstance(module, RidgeLowLevel):
        raise InvalidInputError(
            f"{folder}/config.json holds a {type(module).__name__}; expected a RidgeLowLevel."
        )
    settings = read_config(folder)["metadata"]
    try:
        pathway = LowLevelPathway(
            module,
            str(settings["subject"]),
            float(settings["strength"]),
            float(settings["blend"]),
            check_option(f"{folder}/config.json blend_mode", settings["blend_mode"], BLEND_MODES),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidInputError(f"low-level pathway in {folder} is invalid: {err}") from err
    if not (0.0 <= pathway.strength <= 1.0 and 0.0 <= pathway.blend <= 1.0):
        raise InvalidInputError(
            f"{folder}/config.json has strength={pathway.strength}, blend={pathway.blend}; "
            "expected both in [0, 1]."
        )
    return pathway
