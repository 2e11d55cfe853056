"""The image-manifold projection that conditions the generator on decoded embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodecode.reconstruct.conditioning import (
    ImageManifoldProjection,
    load_condition,
    save_condition,
)
from neurodecode.validation import InvalidInputError


def _pool(n=50, d=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * rng.uniform(2.0, 4.0, size=(n, 1))


def test_cold_softmax_returns_the_nearest_pool_embedding_at_the_mean_norm():
    pool = _pool()
    projection = ImageManifoldProjection.from_pool(pool, temperature=1e-4)
    # a decoded embedding that is a noisy, shrunken, offset copy of pool row 7's direction
    decoded = torch.as_tensor(0.1 * pool[7] / np.linalg.norm(pool[7]), dtype=torch.float32)
    out = projection(decoded[None] + 0.001)[0].numpy()
    expected = pool[7] / np.linalg.norm(pool[7]) * np.linalg.norm(pool, axis=1).mean()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_hot_softmax_tends_to_the_pool_mean_direction():
    pool = _pool()
    projection = ImageManifoldProjection.from_pool(pool, temperature=1e4)
    out = projection(torch.randn(3, 16)).numpy()
    unit = pool / np.linalg.norm(pool, axis=1, keepdims=True)
    mean_direction = unit.mean(0) / np.linalg.norm(unit.mean(0))
    for row in out:
        assert np.dot(row / np.linalg.norm(row), mean_direction) > 0.999


def test_equals_the_captioning_projection_and_keeps_trailing_shape():
    from neurodecode.analysis.captioning import project_to_image_manifold

    pool = _pool(d=12)
    decoded = np.random.default_rng(1).normal(size=(5, 12))
    projection = ImageManifoldProjection.from_pool(pool.reshape(50, 3, 4), temperature=0.05)
    out = projection(torch.as_tensor(decoded, dtype=torch.float32).reshape(5, 3, 4))
    assert out.shape == (5, 3, 4)
    scale = np.linalg.norm(pool, axis=1).mean()
    np.testing.assert_allclose(
        out.reshape(5, 12).numpy(),
        project_to_image_manifold(decoded, pool, temperature=0.05) * scale,
        rtol=1e-5,
        atol=1e-5,
    )


def test_round_trip_and_errors(tmp_path):
    projection = ImageManifoldProjection.from_pool(_pool(), temperature=0.02)
    folder = save_condition(projection, tmp_path / "condition")
    loaded = load_condition(folder)
    x = torch.randn(4, 16)
    torch.testing.assert_close(loaded(x), projection(x))
    assert loaded.temperature == 0.02
    with pytest.raises(InvalidInputError, match="16"):
        projection(torch.randn(2, 15))
    with pytest.raises(InvalidInputError, match="all-zero"):
        ImageManifoldProjection.from_pool(np.zeros((3, 4)))
    with pytest.raises(InvalidInputError, match="temperature"):
        ImageManifoldProjection.from_pool(_pool(), temperature=0.0)


def test_values_in_another_space_are_averaged_with_the_pool_weights(tmp_path):
    # keys: a rich decoding space (40 d); values: the same images' generator embeddings (16 d)
    keys, values = _pool(d=40, seed=2), _pool(d=16, seed=3)
    cold = ImageManifoldProjection.from_pool(keys, temperature=1e-4, values=values)
    decoded = torch.as_tensor(keys[[11, 30]] * 0.2, dtype=torch.float32)
    out = cold(decoded).numpy()
    assert out.shape == (2, 16)
    scale = np.linalg.norm(values, axis=1).mean()
    for row, image in zip(out, (11, 30), strict=True):
        expected = values[image] / np.linalg.norm(values[image]) * scale
        np.testing.assert_allclose(row, expected, rtol=1e-4, atol=1e-4)

    # warm: the weights come from the keys, not from the values
    warm = ImageManifoldProjection.from_pool(keys, temperature=0.05, values=values)
    x = torch.randn(3, 40)
    unit_keys = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    unit_values = values / np.linalg.norm(values, axis=1, keepdims=True)
    cos = (x.numpy() / np.linalg.norm(x.numpy(), axis=1, keepdims=True)) @ unit_keys.T
    weights = np.exp((cos - cos.max(1, keepdims=True)) / 0.05)
    weights /= weights.sum(1, keepdims=True)
    mixed = weights @ unit_values
    expected = mixed / np.linalg.norm(mixed, axis=1, keepdims=True) * scale
    np.testing.assert_allclose(warm(x).numpy(), expected, rtol=1e-4, atol=1e-5)

    loaded = load_condition(save_condition(warm, tmp_path / "condition"))
    assert loaded.value_dim == 16
    torch.testing.assert_close(loaded(x), warm(x))
    with pytest.raises(InvalidInputError, match="one per pool row"):
        ImageManifoldProjection.from_pool(keys, values=values[:10])


def test_the_demo_chooses_the_temperature_that_identifies_validation_images():
    from neurodecode.demo.reconstruction import choose_temperature

    rng = np.random.default_rng(0)
    keys = rng.normal(size=(300, 16)).astype(np.float32)  # decoder space (e.g. a rich target)
    values = (keys @ rng.normal(size=(16, 8))).astype(np.float32)  # generator space
    val = np.arange(40)  # decoded validation outputs: their images' keys plus noise
    decoded = keys[val] + 0.3 * rng.normal(size=(40, 16)).astype(np.float32)
    temperature, scores = choose_temperature(
        decoded, values[val], keys, values, grid=(0.01, 0.1, 100.0)
    )
    assert set(scores) == {"0.01", "0.1", "100.0"}
    assert temperature != 100.0  # a flat softmax averages every image: near chance
    assert scores[str(temperature)] == max(scores.values()) > 0.9
    assert scores["100.0"] < scores[str(temperature)] - 0.2


def test_nearest_sampling_conditions_each_sample_on_one_of_the_nearest_images(tmp_path):
    keys, values = _pool(d=40, seed=2), _pool(d=16, seed=3)
    nearest = ImageManifoldProjection.from_pool(
        keys, temperature=0.02, values=values, sampling="nearest", guidance_scale=3.0
    )
    x = torch.randn(3, 40)
    conditions = nearest.sample_conditions(x, 4)
    assert conditions.shape == (3, 4, 16)
    unit_keys = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    order = np.argsort(-(x.numpy() @ unit_keys.T), axis=1)[:, :4]  # most similar first
    scale = np.linalg.norm(values, axis=1).mean()
    expected = values[order] / np.linalg.norm(values[order], axis=2, keepdims=True) * scale
    np.testing.assert_allclose(conditions.numpy(), expected, rtol=1e-5, atol=1e-5)
    # the projection (what picks the best sample) is the same as with sampling="mean"
    mean = ImageManifoldProjection.from_pool(keys, temperature=0.02, values=values)
    torch.testing.assert_close(nearest(x), mean(x))
    torch.testing.assert_close(mean.sample_conditions(x, 2), mean(x)[:, None].expand(-1, 2, -1))
    # a call may ask for the other sampling; set_sampling records the choice that is saved
    torch.testing.assert_close(mean.sample_conditions(x, 4, sampling="nearest"), conditions)
    mean.set_sampling("nearest", 3.0)
    assert (mean.get_config()["sampling"], mean.get_config()["guidance_scale"]) == ("nearest", 3.0)

    loaded = load_condition(save_condition(nearest, tmp_path / "condition"))
    assert (loaded.sampling, loaded.guidance_scale) == ("nearest", 3.0)
    torch.testing.assert_close(loaded.sample_conditions(x, 4), conditions)
    # folders written before these options load as the projection for every sample
    old = mean.get_config()
    del old["sampling"]
    assert ImageManifoldProjection(**old).sampling == "mean"
    with pytest.raises(InvalidInputError, match="pool has 50"):
        nearest.sample_conditions(x, 51)
    with pytest.raises(InvalidInputError, match="sampling"):
        ImageManifoldProjection.from_pool(keys, sampling="closest")
    with pytest.raises(InvalidInputError, match="guidance_scale"):
        ImageManifoldProjection.from_pool(keys, guidance_scale=0.5)
