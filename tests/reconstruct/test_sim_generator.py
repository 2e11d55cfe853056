"""The embedded default generator: interface contract, caching, img2img and conditioning."""

from __future__ import annotations

import pytest
import torch

import neurodecode
from neurodecode.embedded.cache import config_key
from neurodecode.embedded.generator import (
    PRESETS,
    ConditionedUNet,
    SimGenerator,
    SimGeneratorConfig,
    get_sim_generator,
)
from neurodecode.evaluate.image_metrics import pixcorr_per_image
from neurodecode.reconstruct.generators import Generator, images_to_tensor
from neurodecode.sim.stimuli import generate_stimuli
from neurodecode.validation import InvalidInputError


@pytest.fixture(scope="module")
def held_out(embed_fn):
    """Stimuli the generator never saw (another seed) and their embeddings."""
    stimuli = generate_stimuli(24, size=32, seed=12345)
    return images_to_tensor(stimuli.images), torch.as_tensor(embed_fn(stimuli.images))


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_output_shape_range_and_protocol(tiny_generator, held_out):
    _, embeds = held_out
    assert isinstance(tiny_generator, Generator)
    out = tiny_generator.generate(embeds[:3], num_samples=2, generator=seeded())
    assert out.shape == (3, 2, 3, 32, 32)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not torch.equal(out[:, 0], out[:, 1])  # samples differ


def test_seeded_generation_is_deterministic(tiny_generator, held_out):
    _, embeds = held_out
    a = tiny_generator.generate(embeds[:2], generator=seeded(3))
    b = tiny_generator.generate(embeds[:2], generator=seeded(3))
    c = tiny_generator.generate(embeds[:2], generator=seeded(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_img2img_strength_zero_returns_init_and_small_strength_stays_close(
    tiny_generator, held_out
):
    images, embeds = held_out
    same = tiny_generator.generate(
        embeds[:4], init_images=images[:4], strength=0.0, generator=seeded()
    )
    torch.testing.assert_close(same[:, 0], images[:4], atol=1e-6, rtol=0)
    near = tiny_generator.generate(
        embeds[:4], init_images=images[:4], strength=0.25, num_inference_steps=8, generator=seeded()
    )[:, 0]
    far = tiny_generator.generate(embeds[:4], generator=seeded())[:, 0]
    assert (near - images[:4]).abs().mean() < (far - images[:4]).abs().mean()


def test_conditioning_beats_shuffled_embeddings(tiny_generator, held_out):
    images, embeds = held_out
    shuffled = embeds.roll(1, dims=0)
    own = tiny_generator.generate(embeds, generator=seeded())[:, 0]
    other = tiny_generator.generate(shuffled, generator=seeded())[:, 0]
    r_own = pixcorr_per_image(own, images, size=None)
    r_other = pixcorr_per_image(other, images, size=None)
    assert r_own.mean() > r_other.mean() + 0.1
    assert (r_own > r_other).mean() > 0.6


def test_cache_round_trip_and_key(tiny_generator, embed_fn, cache_dir, held_out):
    _, embeds = held_out
    folders = list((cache_dir / "sim-generator").iterdir())
    assert len(folders) == 1
    assert {"config.json", "model.safetensors"} <= {p.name for p in folders[0].iterdir()}
    assert isinstance(neurodecode.load_pretrained(folders[0]), ConditionedUNet)
    again = get_sim_generator(embed_fn, preset="tiny", cache_dir=cache_dir)  # loads, no training
    torch.testing.assert_close(
        again.generate(embeds[:2], generator=seeded()),
        tiny_generator.generate(embeds[:2], generator=seeded()),
    )
    loaded = SimGenerator.load(folders[0])
    assert loaded.embed_dim == tiny_generator.embed_dim == embeds.shape[1]


def test_bad_arguments_are_named(tiny_generator, held_out):
    _, embeds = held_out
    with pytest.raises(InvalidInputError, match="32-dimensional"):
        tiny_generator.generate(torch.zeros(2, 7))
    with pytest.raises(InvalidInputError, match="strength"):
        tiny_generator.generate(embeds[:2], strength=1.5)
    with pytest.raises(InvalidInputError, match="one init image per embedding"):
        tiny_generator.generate(embeds[:2], init_images=torch.zeros(3, 3, 32, 32))
    with pytest.raises(InvalidInputError, match="preset"):
        get_sim_generator(lambda x: x, preset="huge")


def test_default_preset_is_pinned():
    """The demo's generator (and its cache key) must not drift when other presets are added."""
    assert PRESETS["default"] == SimGeneratorConfig()
    assert PRESETS["default"].to_dict() == {
        "image_size": 32,
        "embed_image_size": 64,
        "block_out_channels": [32, 48, 48],
        "layers_per_block": 1,
        "coarse_size": 8,
        "num_train_timesteps": 1000,
        "beta_schedule": "squaredcos_cap_v2",
        "prediction_type": "sample",
        "cond_dropout": 0.1,
        "n_stimuli": 4000,
        "stimulus_seed": 104729,
        "train_steps": 200,
        "batch_size": 32,
        "learning_rate": 0.003,
        "seed": 0,
        "guidance_scale": 1.5,
        "num_inference_steps": 10,
    }


def test_braindive_preset_changes_only_the_training_recipe():
    """Same network and sizes as "default" (the guidance code sees the same UNet), its own cache."""
    default, braindive = PRESETS["default"].to_dict(), PRESETS["braindive"].to_dict()
    changed = {k for k in default if default[k] != braindive[k]}
    assert changed == {"prediction_type", "n_stimuli", "train_steps"}
    assert config_key({"config": default, "embed": "e"}) != config_key(
        {"config": braindive, "embed": "e"}
    )


@pytest.fixture(scope="module")
def hinted_generator(embed_fn, cache_dir):
    """The tiny recipe with an 8 px low-level hint."""
    return get_sim_generator(embed_fn, preset="tiny", cache_dir=cache_dir, hint_size=8)


def test_low_level_hint_carries_the_layout(hinted_generator, held_out):
    """From pure noise (strength 1), the hint alone must move the image toward its source: own
    hint vs another image's hint, same embedding and noise."""
    images, embeds = held_out
    hints = torch.nn.functional.interpolate(images, size=8, mode="area")
    own = hinted_generator.generate(embeds, init_images=hints, strength=1.0, generator=seeded())
    other = hinted_generator.generate(
        embeds, init_images=hints.roll(1, dims=0), strength=1.0, generator=seeded()
    )
    r_own = pixcorr_per_image(own[:, 0], images, size=None)
    r_other = pixcorr_per_image(other[:, 0], images, size=None)
    assert r_own.mean() > r_other.mean() + 0.2
    assert (r_own > r_other).mean() > 0.75
    # without init images it still generates (the "no hint" channel it was trained with)
    assert hinted_generator.generate(embeds[:2], generator=seeded()).shape == (2, 1, 3, 32, 32)


def test_hint_recipe_round_trips_and_has_its_own_cache_key(hinted_generator):
    recipe = hinted_generator.config
    assert recipe.to_dict()["hint_size"] == 8
    assert SimGeneratorConfig.from_dict(recipe.to_dict()) == recipe
    assert config_key({"config": recipe.to_dict(), "embed": "e"}) != config_key(
        {"config": PRESETS["tiny"].to_dict(), "embed": "e"}
    )


def test_hint_channels_mark_absent_rows(hinted_generator):
    model = hinted_generator.model
    hint = torch.rand(3, 3, 16, 16)
    channels = model.hint_channels(hint, 3, 32, present=torch.tensor([True, False, True]))
    assert channels.shape == (3, 4, 32, 32)
    assert torch.equal(channels[:, 3, 0, 0], torch.tensor([1.0, 0.0, 1.0]))
    assert channels[1].abs().max() == 0
    assert torch.equal(model.hint_channels(None, 2, 32), torch.zeros(2, 4, 32, 32))
