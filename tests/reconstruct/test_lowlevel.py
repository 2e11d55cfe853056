"""Low-level pathway: the sim VAE's shapes and cache, the SD VAE loader, brain -> latent module."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import neurodecode
from neurodecode.reconstruct.diffusers_pipelines import WeightsNotFoundError
from neurodecode.reconstruct.generators import images_to_tensor
from neurodecode.reconstruct.lowlevel import (
    LowLevelModule,
    decode_latents,
    encode_images,
    load_sd_vae,
)
from neurodecode.sim.stimuli import generate_stimuli
from neurodecode.validation import InvalidInputError


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return images_to_tensor(generate_stimuli(16, size=16, seed=77).images)


def test_vae_encode_decode_shapes_and_scaling(tiny_vae, images, cache_dir):
    latents = encode_images(tiny_vae, images)
    assert latents.shape == (16, 4, 8, 8)  # tiny preset: 16 px, two levels, factor 2
    assert 0.3 < latents.std() < 3.0  # scaling_factor brings latents near unit variance
    decoded = decode_latents(tiny_vae, latents)
    assert decoded.shape == images.shape
    assert decoded.min() >= 0 and decoded.max() <= 1
    error = (decoded - images).abs().mean()
    assert error < (images.mean(0, keepdim=True) - images).abs().mean()  # beats the mean image
    folder = next((cache_dir / "sim-vae").iterdir())
    assert (folder / "config.json").is_file()
    assert any(p.suffix == ".safetensors" for p in folder.iterdir())


def test_sd_vae_loader_is_offline_and_clear(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="huggingface-cli download"):
        load_sd_vae(tmp_path / "no-vae-here")


def test_lowlevel_module_learns_a_planted_mapping(tiny_vae, images):
    torch.manual_seed(0)
    latents = encode_images(tiny_vae, images)
    mixing = torch.randn(latents[0].numel(), 50) / latents[0].numel() ** 0.5
    brain = latents.flatten(1) @ mixing  # a linear brain that sees the latents
    module = LowLevelModule(50, tiny_vae, hidden=64, dropout=0.0, learning_rate=3e-3)
    before = torch.nn.functional.l1_loss(module(brain), latents).item()
    loader = DataLoader(TensorDataset(brain, images), batch_size=8, shuffle=True)
    trainer = L.Trainer(
        max_steps=60,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, loader)
    after = torch.nn.functional.l1_loss(module(brain), latents).item()
    assert after < 0.7 * before
    blurry = module.decode(brain)
    assert blurry.shape == (16, 3, 16, 16) and blurry.min() >= 0 and blurry.max() <= 1
    assert all(not p.requires_grad for p in module.vae.parameters())
    with pytest.raises(InvalidInputError, match=r"expected \(B, 50\)"):
        module(torch.zeros(2, 49))


def test_ridge_lowlevel_recovers_a_planted_linear_brain_and_round_trips(tmp_path):
    from neurodecode.reconstruct.generators import resize_images
    from neurodecode.reconstruct.lowlevel import (
        LowLevelPathway,
        RidgeLowLevel,
        load_lowlevel,
        save_lowlevel,
    )

    gen = torch.Generator().manual_seed(0)
    images = torch.rand(200, 3, 16, 16, generator=gen)
    small = resize_images(images, 4)  # what the pathway predicts: the 4 px image
    mixing = torch.randn(48, 60, generator=gen)
    brain = small.flatten(1) @ mixing + 0.01 * torch.randn(200, 60, generator=gen)
    module = RidgeLowLevel.fit(brain[:150], images[:150], image_size=4, alphas=[1e-3, 1e-1, 10.0])
    predicted = module.decode(brain[150:])
    assert predicted.shape == (50, 3, 4, 4)
    assert (predicted - small[150:]).abs().mean() < 0.01  # vs 0.04 for the mean image
    save_lowlevel(LowLevelPathway(module, "subj01", 0.45, 0.8, "luminance"), tmp_path / "ll")
    loaded = load_lowlevel(tmp_path / "ll")
    assert (loaded.subject, loaded.strength, loaded.blend, loaded.blend_mode) == (
        "subj01",
        0.45,
        0.8,
        "luminance",
    )
    torch.testing.assert_close(loaded.module.decode(brain[150:]), predicted)
    with pytest.raises(InvalidInputError, match=r"expected \(B, 60\)"):
        loaded.module(torch.zeros(2, 59))
    with pytest.raises(InvalidInputError, match="expected a directory"):
        load_lowlevel(tmp_path / "missing")
    assert isinstance(neurodecode.load_pretrained(tmp_path / "ll"), RidgeLowLevel)
