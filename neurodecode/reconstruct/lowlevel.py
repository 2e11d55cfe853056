"""The low-level pathway (MindEye): brain -> VAE latent -> a blurry image used as img2img init.

Owns the VAEs and the brain-to-latent module:

- :func:`get_sim_vae`: a small diffusers :class:`~diffusers.AutoencoderKL` trained on simulated
  stimuli (32 px -> 4 x 8 x 8 latents), cached like the sim generator; the embedded default.
- :func:`load_sd_vae`: Stable Diffusion's VAE for real use, read only from a local folder or the
  Hugging Face cache (same loader as :mod:`neurodecode.reconstruct.diffusers_pipelines`).
- :class:`LowLevelModule`: a LightningModule mapping brain activity (B, V) to scaled VAE latents
  (MindEye's low-level head: an MLP to a coarse latent grid refined by a small conv block, L1 loss
  on latents) with :meth:`LowLevelModule.decode` giving the blurry reconstruction; for real use
  with SD's VAE.
- :class:`RidgeLowLevel`: the embedded default's pathway, a closed-form ridge from voxels to a
  16 px image (decodes the simulated stimuli better than the small VAE's latents do, in seconds);
  :func:`save_lowlevel` / :func:`load_lowlevel` keep it beside a saved decoder
  (``<decoder>/lowlevel/``: config.json + model.safetensors, no pickle) with the strength and
  blend the reconstructor uses.

Latents are always *scaled* (multiplied by the VAE's ``scaling_factor``, as Stable Diffusion does),
so that they have roughly unit variance; for the sim VAE the factor is measured after training.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from neurodecode.reconstruct.diffusers_pipelines import load_local_pretrained
from neurodecode.reconstruct.generators import images_to_tensor, resize_images
from neurodecode.embedded.cache import atomic_folder, cache_root, config_key
from neurodecode.reconstruct.reconstructor import BLEND_MODES
from neurodecode.embedded.generator import fit_lightning
from neurodecode.sim.stimuli import generate_stimuli
from neurodecode.validation import InvalidInputError, check_option

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimVAEConfig:
    """Architecture and training recipe of the simulated-stimulus VAE.

    Attributes
    ----------
    image_size : int
        Side of the images (px).
    block_out_channels : tuple of int
        Encoder/decoder widths; each level after the first halves the resolution.
    latent_channels : int
    kl_weight : float
        Weight of the KL term against the per-pixel MSE.
    n_stimuli, stimulus_seed, train_steps, batch_size, learning_rate, seed
        Training set (``generate_stimuli``) and optimisation.
    """

    image_size: int = 32
    block_out_channels: tuple[int, ...] = (16, 32, 64)
    latent_channels: int = 4
    kl_weight: float = 1e-6
    n_stimuli: int = 4000
    stimulus_seed: int = 15485863
    train_steps: int = 250
    batch_size: int = 32
    learning_rate: float = 2e-3
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


VAE_PRESETS: dict[str, SimVAEConfig] = {
    "default": SimVAEConfig(),
    "tiny": SimVAEConfig(
        image_size=16,
        block_out_channels=(16, 32),
        n_stimuli=128,
        train_steps=60,
        batch_size=16,
        learning_rate=1e-2,
    ),
}


def build_sim_vae(config: SimVAEConfig) -> AutoencoderKL:
    """An untrained :class:`AutoencoderKL` with the architecture of ``config``."""
    levels = len(config.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=1,
        latent_channels=config.latent_channels,
        norm_num_groups=8,
        sample_size=config.image_size,
        scaling_factor=1.0,
        mid_block_add_attention=False,
    )


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


class SimVAEModule(L.LightningModule):
    """Trains an :class:`AutoencoderKL`: per-pixel MSE + ``kl_weight`` x KL. Batches: (images,)."""

    def __init__(self, config: SimVAEConfig):
        super().__init__()
        self.config = config
        self.vae = build_sim_vae(config)

    def training_step(self, batch, batch_idx: int):
        (images,) = batch
        x = images * 2 - 1
        posterior = self.vae.encode(x).latent_dist
        recon = self.vae.decode(posterior.sample()).sample
        loss = F.mse_loss(recon, x) + self.config.kl_weight * posterior.kl().mean()
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.config.learning_rate)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=self.config.learning_rate,
            total_steps=max(self.config.train_steps, 2),
            pct_start=0.15,
        )
        return [optimizer], [{"scheduler": schedule, "interval": "step"}]


def train_sim_vae(config: SimVAEConfig, images: torch.Tensor | None = None) -> AutoencoderKL:
    """Train the sim VAE and set its ``scaling_factor`` to 1 / std of its training latents.

    Parameters
    ----------
    config : SimVAEConfig
    images : Tensor, shape (n, 3, image_size, image_size), in [0, 1], optional
        Default: ``generate_stimuli(config.n_stimuli, size=config.image_size)``.

    Returns
    -------
    AutoencoderKL
        On the CPU, in eval mode.
    """
    if images is None:
        stimuli = generate_stimuli(
            config.n_stimuli, size=config.image_size, seed=config.stimulus_seed
        )
        images = images_to_tensor(stimuli.images)
    torch.manual_seed(config.seed)
    module = SimVAEModule(config)
    loader = DataLoader(
        TensorDataset(images.float()),
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=len(images) >= config.batch_size,
        generator=torch.Generator().manual_seed(config.seed),
    )
    fit_lightning(module, loader, config.train_steps)
    vae = module.vae.cpu().eval()
    latents = encode_images(vae, images[:512])
    vae.register_to_config(scaling_factor=float(1.0 / latents.std().clamp_min(1e-6)))
    return vae


def get_sim_vae(
    preset: str = "default",
    cache_dir: str | Path | None = None,
    force_retrain: bool = False,
    **overrides: Any,
) -> AutoencoderKL:
    """The embedded default VAE: loaded from ``<cache>/sim-vae/<hash>/``, else trained and saved.

    Parameters
    ----------
    preset : {"default", "tiny"}
    cache_dir : path, optional
        Cache root (default ``$NEURODECODE_CACHE`` or ``~/.cache/neurodecode``).
    force_retrain : bool
    **overrides
        Fields of :class:`SimVAEConfig`.

    Returns
    -------
    AutoencoderKL
        Frozen, eval mode; saved with diffusers' ``save_pretrained`` (config.json + safetensors).
    """
    check_option("preset", preset, VAE_PRESETS)
    config = dataclasses.replace(VAE_PRESETS[preset], **overrides)
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    folder = root / "sim-vae" / config_key(config.to_dict())
    if folder.exists() and force_retrain:
        shutil.rmtree(folder)
    if not folder.exists():
        log.info("training the sim VAE (preset %r) into %s", preset, folder)
        vae = train_sim_vae(config)
        with atomic_folder(folder) as tmp:
            vae.save_pretrained(tmp, safe_serialization=True)
    vae = AutoencoderKL.from_pretrained(folder, local_files_only=True)
    return vae.eval().requires_grad_(False)


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
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
        return torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.learning_rate,
        )


class RidgeLowLevel(nn.Module):
    """Brain activity -> a blurry image by closed-form ridge regression (the embedded default).

    One linear map from voxels to the pixels of a small (``image_size`` px) version of the
    stimulus, fitted with :class:`neurodecode.models.ridge.RidgeRegression` (one cross-validated
    alpha shared by all pixels). It is the conditional-mean image given the brain: on the simulated
    world it decodes better than a ridge or MLP to the small VAE's latents, whose decoder turns
    shrunken latents into off-manifold images (PixCorr 0.154 against 0.092 for ridge -> latents on
    the demo's test trials).

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
LOWLEVEL_FORMAT_VERSION = 1


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
    """Write ``config.json`` + ``model.safetensors`` (no pickle) to ``folder``, replacing it.

    Returns
    -------
    Path
        ``folder``.
    """
    from neurodecode import __version__
    from neurodecode.embedded.cache import save_model_folder

    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    config = {
        "kind": "ridge-pixels",
        "n_voxels": pathway.module.n_voxels,
        "image_size": pathway.module.image_size,
        "subject": pathway.subject,
        "strength": float(pathway.strength),
        "blend": float(pathway.blend),
        "blend_mode": pathway.blend_mode,
        "neurodecode_version": __version__,
        "format_version": LOWLEVEL_FORMAT_VERSION,
    }
    return save_model_folder(folder, pathway.module.state_dict(), config)


def load_lowlevel(folder: str | Path) -> LowLevelPathway:
    """Read a folder written by :func:`save_lowlevel`.

    Raises
    ------
    InvalidInputError
        Missing files, an unknown kind, or weights that do not fit the config (names the folder).
    """
    from neurodecode.embedded.cache import load_model_folder

    folder = Path(folder)
    state, config = load_model_folder(folder)
    if config.get("kind") != "ridge-pixels":
        raise InvalidInputError(
            f"{folder}/config.json has kind={config.get('kind')!r}; expected 'ridge-pixels'."
        )
    try:
        module = RidgeLowLevel(int(config["n_voxels"]), int(config["image_size"]))
        module.load_state_dict(state)
        pathway = LowLevelPathway(
            module.eval(),
            str(config["subject"]),
            float(config["strength"]),
            float(config["blend"]),
            check_option(f"{folder}/config.json blend_mode", config["blend_mode"], BLEND_MODES),
        )
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        raise InvalidInputError(f"low-level pathway in {folder} is invalid: {err}") from err
    if not (0.0 <= pathway.strength <= 1.0 and 0.0 <= pathway.blend <= 1.0):
        raise InvalidInputError(
            f"{folder}/config.json has strength={pathway.strength}, blend={pathway.blend}; "
            "expected both in [0, 1]."
        )
    return pathway
