"""The ViT sim-clip preset: trains, caches, loads through get_sim_clip and the train-clip command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from neurodecode.analysis.sae.vision import token_activations
from neurodecode.cli.main import main
from neurodecode.embedded import clip as sim_clip
from neurodecode.features.clip import load_clip
from neurodecode.sim.stimuli import generate_stimuli

PRESET = "vit"


@pytest.fixture
def tiny_budget(monkeypatch, tmp_path):
    """The ViT preset's recipe with a few steps on a few scenes, cached under tmp_path."""
    recipe = dict(sim_clip.PRESETS[PRESET], n_train=96, n_eval=48, steps=6, batch_size=32, warmup=2)
    monkeypatch.setitem(sim_clip.PRESETS, PRESET, recipe)
    return tmp_path / "cache"


def test_vit_preset_is_a_distinct_vit_recipe():
    recipe = sim_clip.PRESETS[PRESET]
    config = sim_clip.preset_config(PRESET)
    vision = config["model_config"]["vision_cfg"]
    assert "timm_model_name" not in vision and vision["patch_size"] < vision["image_size"]
    assert vision["image_size"] == recipe["image_size"]
    hashes = {sim_clip.config_hash(sim_clip.preset_config(p)) for p in sim_clip.PRESETS}
    assert len(hashes) == len(sim_clip.PRESETS)  # each preset its own cache folder


def test_vit_preset_trains_saves_and_loads_through_the_cache(tiny_budget, monkeypatch, capsys):
    assert main(["train-clip", "--preset", PRESET, "--cache-dir", str(tiny_budget), "--quiet"]) == 0
    assert '"category_accuracy"' in capsys.readouterr().out
    folder = sim_clip.cache_dir_for(PRESET, tiny_budget)
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "metrics.json",
        "open_clip_model.safetensors",
    ]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["preset"] == PRESET and metrics["n_images"] == 48
    assert 0 <= metrics["category_accuracy"] <= 1

    def no_training(*args, **kwargs):
        raise AssertionError("cached sim-clip must not be retrained")

    monkeypatch.setattr(sim_clip, "train_sim_clip", no_training)
    encoder = sim_clip.get_sim_clip(PRESET, cache_dir=tiny_budget, progress=False)
    assert encoder.weights["sim_clip_preset"] == PRESET
    # the cached weights are the trained ones, not the seeded random initialisation
    config = sim_clip.PRESETS[PRESET]
    scratch = load_clip(config["model_name"], None, seed=config["seed"])
    trained = encoder.model.state_dict()
    moved = [k for k, v in scratch.model.state_dict().items() if not torch.equal(v, trained[k])]
    assert any(k.startswith("visual.") for k in moved)
    # a ViT: the SAE analysis's hook sees (N, patches, width) tokens at a transformer block
    images = generate_stimuli(3, size=64, seed=5).images
    pixels = encoder.preprocess_images(images)
    acts = token_activations(encoder.model.visual, "transformer.resblocks.0", pixels)
    grid = config["image_size"] // encoder.model.visual.patch_size[0]
    assert acts.shape == (3, grid * grid, encoder.model.visual.transformer.width)
    tokens = sim_clip.get_sim_clip(PRESET, cache_dir=tiny_budget, output="tokens", progress=False)
    assert tokens.encode_image(images).shape == (3, 1 + grid * grid, encoder.embed_dim)


def test_random_shift_moves_each_image_within_the_bound():
    generator = torch.Generator().manual_seed(0)
    pixels = torch.zeros(40, 1, 9, 9)
    pixels[:, :, 4, 4] = 1.0  # one bright pixel in the middle
    shifted = sim_clip.random_shift(pixels, 2, generator)
    assert shifted.shape == pixels.shape
    where = shifted[:, 0].flatten(1).argmax(1)
    rows, cols = (where // 9).numpy(), (where % 9).numpy()
    assert np.all(np.abs(rows - 4) <= 2) and np.all(np.abs(cols - 4) <= 2)
    assert len(set(zip(rows, cols))) > 10  # offsets vary per image
    assert torch.equal(sim_clip.random_shift(pixels, 0, generator), pixels)
