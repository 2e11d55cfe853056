"""load_clip: random init, local checkpoints, offline hub tags, tokens; sim-clip zero-shot."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import neurodecode.embedded.clip  # noqa: F401  (registers the sim-clip-* configs with open_clip)
from neurodecode.features.clip import load_clip
from neurodecode.sim.stimuli import generate_stimuli
from neurodecode.validation import InvalidInputError


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return generate_stimuli(4, size=40, seed=3).images  # 40 px: the transform must resize


def test_random_init_is_seeded_and_preprocesses_as_open_clip(images):
    a = load_clip("sim-clip-tiny", None, seed=1)
    b = load_clip("sim-clip-tiny", None, seed=1)
    c = load_clip("sim-clip-tiny", None, seed=2)
    emb = a.encode_image(images)
    assert emb.shape == (4, a.embed_dim) == (4, 64) and emb.dtype == torch.float32
    torch.testing.assert_close(emb, b.encode_image(images), rtol=0, atol=0)
    assert not torch.allclose(emb, c.encode_image(images))
    # exactly open_clip's own transform on PIL images, then the model
    pixels = torch.stack([a.preprocess(Image.fromarray(im)) for im in images])
    assert pixels.shape == (4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(emb, a.model.encode_image(pixels), rtol=0, atol=0)
    settings = a.settings
    assert settings["pretrained"] is None and settings["init_seed"] == 1
    assert settings["image_size"] == 32 and settings["preprocess"]["interpolation"] == "bicubic"
    text = a.encode_text(["a red face", "two blue houses in a field"], normalize=True)
    assert text.shape == (2, 64)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(2))


def test_cpu_forward_in_small_calls_equals_one_call():
    from neurodecode.features import clip

    encoder = load_clip("sim-clip-tiny", None, seed=1)
    many = generate_stimuli(clip.CPU_FORWARD_IMAGES + 5, size=32, seed=4).images
    embeddings = encoder.encode_image(many)  # two forward calls, 32 + 5 images
    with torch.no_grad():
        whole = encoder.model.encode_image(encoder.preprocess_images(many))
    assert embeddings.shape == (len(many), encoder.embed_dim)
    torch.testing.assert_close(embeddings, whole, rtol=0, atol=1e-6)
    assert encoder.encode_image(many[:0]).shape == (0, encoder.embed_dim)


def test_local_checkpoint_round_trip(tmp_path, images):
    source = load_clip("sim-clip-tiny", None, seed=5)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, path)
    loaded = load_clip("sim-clip-tiny", path)
    torch.testing.assert_close(
        loaded.encode_image(images), source.encode_image(images), rtol=0, atol=0
    )
    torch.testing.assert_close(
        loaded.encode_text(["a green apple"]), source.encode_text(["a green apple"]), rtol=0, atol=0
    )
    assert loaded.settings["pretrained"] == "checkpoint"
    assert len(loaded.settings["checkpoint_sha256"]) == 64
    with pytest.raises(InvalidInputError, match="checkpoint not found"):
        load_clip("sim-clip-tiny", tmp_path / "absent.safetensors")


def test_tokens_output_holds_all_last_layer_tokens(images):
    pooled = load_clip("sim-clip-vit-tiny", None, seed=0)
    tokens = load_clip("sim-clip-vit-tiny", None, seed=0, output="tokens")
    out = tokens.encode_image(images)
    assert out.shape == (4, 1 + (32 // 8) ** 2, 64)  # class token + 4 x 4 patches, projected
    # token 0 is the class token: the pooled embedding of class-token pooling
    torch.testing.assert_close(out[:, 0], pooled.encode_image(images), rtol=1e-5, atol=1e-6)
    assert tokens.settings["output"] == "tokens" and pooled.settings["output"] == "pooled"
    convnet = load_clip("sim-clip-tiny", None, output="tokens")  # no tokens: a clear error
    with pytest.raises(InvalidInputError, match="needs a plain open_clip VisionTransformer"):
        convnet.encode_image(images)


def test_uncached_hub_tag_fails_fast_with_offline_instructions(tmp_path):
    with pytest.raises(InvalidInputError) as err:
        load_clip("ViT-B-32", "laion2b_s34b_b79k", cache_dir=tmp_path)
    message = str(err.value)
    assert "not in the local cache" in message and "offline" in message
    assert "pretrained=<path to a local checkpoint>" in message and "HF_HUB_CACHE" in message


def test_bad_names():
    with pytest.raises(InvalidInputError, match="not an open_clip model config"):
        load_clip("ViT-Nope")
    with pytest.raises(InvalidInputError, match="neither a local checkpoint file nor an open_clip"):
        load_clip("ViT-B-32", "no_such_tag")
    with pytest.raises(InvalidInputError, match="output="):
        load_clip("sim-clip-tiny", output="spatial")


def test_tiny_sim_clip_zero_shot_and_cache(tiny_clip, sim_clip_cache, monkeypatch):
    from neurodecode.embedded import clip as sim_clip

    folder = sim_clip.cache_dir_for("tiny")
    assert str(folder).startswith(sim_clip_cache)
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "metrics.json",
        "open_clip_model.safetensors",
    ]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["category_chance"] == pytest.approx(1 / 6)
    assert metrics["category_accuracy"] > 0.3  # chance 0.167; ~0.47 measured
    assert metrics["caption_top5"] > 10 * metrics["caption_chance"] * 5
    assert tiny_clip.settings["checkpoint_sha256"]

    def no_training(*args, **kwargs):
        raise AssertionError("cached sim-clip must not be retrained")

    monkeypatch.setattr(sim_clip, "train_sim_clip", no_training)
    again = sim_clip.get_sim_clip("tiny", progress=False)
    assert again.settings == tiny_clip.settings
