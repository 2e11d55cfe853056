"""Reconstruction on the embedded default: the step ``make demo`` runs after decoding.

The decoder (retrieval head + diffusion prior) predicts sim-clip image embeddings from the eval
subject's averaged test trials; a low-level pathway (brain -> small-VAE latent) gives a blurry
init image; the embedded default generator draws ``num_samples`` images per trial by img2img from
that init and keeps the one whose sim-clip embedding is closest to the predicted one (MindEye's
best-of-n). Scored with MindEye's metric table against two controls: the same pipeline on
*shuffled* test trials, and the mean training image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


def train_lowlevel(
    brain: np.ndarray, images: np.ndarray, vae, image_size: int, max_epochs: int = 15, seed: int = 0
):
    """Fit :class:`~neurodecode.reconstruct.lowlevel.LowLevelModule` on (trials, stimulus images).

    Parameters
    ----------
    brain : ndarray, shape (n_trials, n_voxels)
    images : ndarray, shape (n_trials, H, W, 3), uint8
        The stimulus of each trial.
    """
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from neurodecode.reconstruct.generators import images_to_tensor
    from neurodecode.reconstruct.lowlevel import LowLevelModule

    L.seed_everything(seed, verbose=False)
    module = LowLevelModule(n_voxels=brain.shape[1], vae=vae, image_size=image_size)
    data = TensorDataset(
        torch.as_tensor(brain, dtype=torch.float32), images_to_tensor(images, size=image_size)
    )
    trainer = L.Trainer(
        max_epochs=max_epochs,
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=True,
    )
    trainer.fit(module, DataLoader(data, batch_size=64, shuffle=True))
    return module.eval()


def reconstruct_and_score(
    model,
    datamodule,
    data_root: Path,
    encoder,
    out: Path,
    preset: str = "default",
    num_samples: int = 4,
    strength: float = 0.6,
    seed: int = 0,
) -> dict[str, Any]:
    """Reconstruct the eval subject's test trials, score them and their controls, save a figure.

    Returns
    -------
    dict
        ``pixcorr``, ``ssim``, ``clip_2way`` (and the other available network metrics),
        ``controls.shuffled`` and ``controls.mean_image`` with the same keys, ``networks`` (where each
        metric network's weights came from), ``n_trials``, ``table`` (markdown).
    """
    from neurodecode.data.nsd import read_stimuli
    from neurodecode.evaluate.image_metrics import compare_methods, feature_networks, metric_table
    from neurodecode.reconstruct.figures import plot_reconstructions
    from neurodecode.reconstruct.generators import images_to_tensor
    from neurodecode.reconstruct.lowlevel import get_sim_vae
    from neurodecode.reconstruct.reconstructor import Reconstructor
    from neurodecode.reconstruct.sim_generator import get_sim_generator

    def embed_images(images: np.ndarray) -> torch.Tensor:
        return encoder.encode_image(images)

    generator = get_sim_generator(embed_images, preset=preset, embed_key=str(encoder.settings))
    vae = get_sim_vae(preset)
    k = datamodule.eval_index
    train = datamodule.train_set.trials[k]
    lowlevel = train_lowlevel(
        train.data, read_stimuli(data_root, train.stimulus_id), vae, generator.image_size, seed=seed
    )

    def lowlevel_images(brain: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return lowlevel.decode(brain).clamp(0, 1)

    subject = datamodule.eval_subject

    def decoder_embed(brain: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return model.embed(brain, subject, output="prior", generator=g)

    reconstructor = Reconstructor(
        decoder_embed,
        generator,
        lowlevel=lowlevel_images,
        strength=strength,
        num_samples=num_samples,
        select_with=embed_images,
    )
    test = datamodule.test_trials
    stimuli = read_stimuli(data_root, test.stimulus_id)
    ours = reconstructor.reconstruct(test.data, generator=torch.Generator().manual_seed(seed))
    shuffled_rows = np.random.default_rng(seed).permutation(len(test))
    shuffled = reconstructor.reconstruct(
        test.data[shuffled_rows], generator=torch.Generator().manual_seed(seed)
    )
    train_images = images_to_tensor(
        read_stimuli(data_root, np.unique(train.stimulus_id)[:500]), size=generator.image_size
    )
    mean_image = train_images.mean(0, keepdim=True).expand(len(test), -1, -1, -1)

    def clip_fn(images: torch.Tensor) -> torch.Tensor:
        uint8 = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return encoder.encode_image(uint8)

    # AlexNet/Inception/EffNet/SwAV run only with local weights; a randomly initialised AlexNet
    # would say little and costs minutes at 300 images, so the demo leaves it out
    networks = feature_networks(clip_fn=clip_fn, clip_source="sim-clip", random_fallback=False)
    scored = compare_methods(
        {
            "reconstruction": ours.images,
            "shuffled trials": shuffled.images,
            "mean training image": mean_image,
        },
        stimuli,
        networks=networks,
        size=int(stimuli.shape[1]),  # PixCorr/SSIM at the stimuli's own size (NSD's is 425)
    )
    plot_reconstructions(stimuli, ours.lowlevel, ours.images, out / "reconstruction.png")
    result = dict(scored["reconstruction"].values)
    result["controls"] = {
        "shuffled": scored["shuffled trials"].values,
        "mean_image": scored["mean training image"].values,
    }
    result["networks"] = scored["reconstruction"].networks
    result["n_trials"] = len(test)
    result["table"] = metric_table(scored)
    return result
