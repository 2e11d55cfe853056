"""The simulated-stimulus VAE: a small diffusers :class:`~diffusers.AutoencoderKL` trained on the
simulated world's stimuli (32 px -> 4 x 8 x 8 latents), the embedded stand-in for Stable Diffusion's
VAE. Kept in diffusers' own folder format (``save_pretrained``: config.json + safetensors), the
format a real SD-VAE arrives in, under the one cache root (:mod:`neurodecode.embedded.cache`).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from torch.utils.data import DataLoader, TensorDataset

from neurodecode.embedded.cache import cache_root, config_key
from neurodecode.models.training import adamw_onecycle, fit_lightning
from neurodecode.pretrained import atomic_folder
from neurodecode.reconstruct.generators import images_to_tensor
from neurodecode.reconstruct.lowlevel import encode_images
from neurodecode.sim.stimuli import generate_stimuli
from neurodecode.validation import check_option

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
        return adamw_onecycle(
            self, self.config.learning_rate, 0.01, pct_start=0.15, final_div_factor=1e4
        )


def train_sim_vae(
    config: SimVAEConfig, images: torch.Tensor | None = None, progress: str | None = None
) -> AutoencoderKL:
    """Train the sim VAE and set its ``scaling_factor`` to 1 / std of its training latents.

    Parameters
    ----------
    config : SimVAEConfig
    images : Tensor, shape (n, 3, image_size, image_size), in [0, 1], optional
        Default: ``generate_stimuli(config.n_stimuli, size=config.image_size)``.
    progress : str, optional
        Description of a step progress bar; none when omitted.

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
    fit_lightning(module, loader, config.train_steps, progress=progress)
    vae = module.vae.cpu().eval()
    latents = encode_images(vae, images[:512])
    vae.register_to_config(scaling_factor=float(1.0 / latents.std().clamp_min(1e-6)))
    return vae


def get_sim_vae(
    preset: str = "default",
    cache_dir: str | Path | None = None,
    force_retrain: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> AutoencoderKL:
    """The embedded default VAE: loaded from ``<cache>/sim-vae/<hash>/``, else trained and saved.

    Parameters
    ----------
    preset : {"default", "tiny"}
    cache_dir : path, optional
        Cache root (default ``$NEURODECODE_CACHE`` or ``~/.cache/neurodecode``).
    force_retrain : bool
    progress : bool
        Show a step progress bar when it trains.
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
        vae = train_sim_vae(
            config,
            progress=f"sim-vae {preset} (first use: trained once, cached)" if progress else None,
        )
        with atomic_folder(folder) as tmp:
            vae.save_pretrained(tmp, safe_serialization=True)
    vae = AutoencoderKL.from_pretrained(folder, local_files_only=True)
    return vae.eval().requires_grad_(False)
