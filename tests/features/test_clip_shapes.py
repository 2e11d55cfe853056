"""MindEye token targets from open_clip ViTs: shapes, semantics and float16 storage."""

from __future__ import annotations

import json

import h5py
import numpy as np
import open_clip
import pytest
import torch

from neurodecode.features.clip import load_clip
from neurodecode.features.store import FeatureStore
from neurodecode.validation import InvalidInputError

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 28, "layers": 2, "width": 32, "head_width": 16, "patch_size": 14},
    "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_name(tmp_path_factory):
    folder = tmp_path_factory.mktemp("configs")
    (folder / "test-tiny-vit.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(folder)
    return "test-tiny-vit"


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 40, 40, 3), dtype=np.uint8)


def test_tokens_are_projected_with_token0_the_pooled_embedding(tiny_name):
    encoder = load_clip(tiny_name, None, output="tokens")
    images = _images(2)
    tokens = encoder.encode_image(images)
    assert tokens.shape == (2, 1 + 4, 16) and tokens.dtype == torch.float32
    encoder.output = "pooled"
    pooled = encoder.encode_image(images)
    torch.testing.assert_close(tokens[:, 0], pooled, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(tokens[:, 1], pooled)  # patch tokens differ from the pooled one


def test_patch_tokens_are_ln_post_without_cls_or_projection(tiny_name):
    encoder = load_clip(tiny_name, None, output="patch_tokens")
    images = _images(2)
    patches = encoder.encode_image(images)
    assert patches.shape == (2, 4, 32)  # (N, P, width): no class token, not projected
    visual = encoder.model.visual
    visual.output_tokens = True  # open_clip's own token output (what MindEye2 reads)
    try:
        with torch.no_grad():
            _, expected = visual(encoder.preprocess_images(images))
    finally:
        visual.output_tokens = False
    torch.testing.assert_close(patches, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("name", "output", "shape"),
    [("ViT-L-14", "tokens", (257, 768)), ("ViT-bigG-14", "patch_tokens", (256, 1664))],
)
def test_real_configs_give_mindeye_shapes(name, output, shape):
    """The token counts and widths implied by the real configs (nothing is allocated)."""
    vision = open_clip.get_model_config(name)["vision_cfg"]
    n_patches = (vision["image_size"] // vision["patch_size"]) ** 2
    width = open_clip.get_model_config(name)["embed_dim"] if output == "tokens" else vision["width"]
    n_tokens = n_patches + 1 if output == "tokens" else n_patches
    assert (n_tokens, width) == shape


def test_float16_store_round_trip_and_no_mixing(tmp_path, tiny_name):
    encoder = load_clip(tiny_name, None, output="tokens")
    images = _images(3)
    store = FeatureStore(tmp_path / "f.h5")

    def compute(ids):
        return encoder.encode_image(images[[int(i) for i in ids]])

    settings = encoder.settings
    assert (
        store.fill("tiny", "tokens", ["0", "1", "2"], compute, settings, 2, False, 1, "float16")
        == 3
    )
    with h5py.File(tmp_path / "f.h5") as f:
        assert f["tiny/tokens/features"].dtype == np.float16
        assert f["tiny/tokens/features"].shape == (3, 5, 16)
    got = store.read("tiny", "tokens", ["2", "0"])
    assert got.dtype == np.float32
    expected = encoder.encode_image(images[[2, 0]]).numpy()
    np.testing.assert_allclose(got, expected.astype(np.float16).astype(np.float32))
    with pytest.raises(InvalidInputError):  # the same entry, now asked for in float32
        store.fill("tiny", "tokens", ["0", "1", "2", "3"], compute, settings, 2, False)
    with pytest.raises(InvalidInputError, match="dtype"):
        store.fill("tiny", "other", ["0"], compute, settings, dtype="int8")


def test_extract_config_accepts_mindeye_outputs_and_checks_dtype(tmp_path):
    from neurodecode.cli.extract import load_extract_config

    good = tmp_path / "good.yaml"
    good.write_text(
        "stimuli: s\nstore: f.h5\noutputs: [image_tokens, image_patch_tokens]\ndtype: float16\n"
    )
    config = load_extract_config(good)
    assert config["dtype"] == "float16" and config["outputs"][1] == "image_patch_tokens"
    bad = tmp_path / "bad.yaml"
    bad.write_text("stimuli: s\nstore: f.h5\ndtype: bfloat16\n")
    with pytest.raises(InvalidInputError, match="dtype"):
        load_extract_config(bad)
