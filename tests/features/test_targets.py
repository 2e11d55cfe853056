"""Image-only decoding targets (neurodecode.features.targets) and the validation-split feature
oracle that chooses among them (neurodecode.demo.ladder.validation_feature_oracles)."""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode.features.targets import (
    block_average,
    lab_thumbnail,
    local_contrast,
    oriented_energy,
    srgb_to_lab,
    standardise_blocks,
    tower_maps,
)
from neurodecode.validation import InvalidInputError


def test_lab_of_white_black_and_primaries_matches_the_cie_formulas():
    pixels = np.array([[[[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 0, 255]]]], dtype=np.uint8)
    lab = srgb_to_lab(pixels)[0, 0]
    np.testing.assert_allclose(lab[0], [100, 0, 0], atol=0.01)
    np.testing.assert_allclose(lab[1], [0, 0, 0], atol=0.01)
    np.testing.assert_allclose(lab[2], [53.24, 80.09, 67.20], atol=0.05)  # sRGB red
    np.testing.assert_allclose(lab[3], [32.30, 79.19, -107.86], atol=0.05)  # sRGB blue


def test_thumbnail_and_contrast_of_halves_and_a_checkerboard():
    images = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    images[0, :, 8:] = 255  # left black, right white
    images[1] = (np.indices((16, 16)).sum(0) % 2 * 255)[..., None]  # 1-px checkerboard
    thumb = lab_thumbnail(images, grid=2)
    assert thumb.shape == (2, 3, 2, 2) and thumb.dtype == np.float32
    np.testing.assert_allclose(thumb[0, 0], [[0, 100], [0, 100]], atol=0.01)
    np.testing.assert_allclose(thumb[1, 0], 50, atol=0.01)
    contrast = local_contrast(images, grid=2)
    assert contrast.shape == (2, 1, 2, 2)
    np.testing.assert_allclose(contrast[0], 0, atol=1e-3)  # each cell is uniform
    np.testing.assert_allclose(contrast[1], 50, atol=0.01)  # half 0, half 100: SD 50


def test_block_average_is_the_mean_of_each_block_and_refuses_a_grid_that_does_not_divide():
    maps = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    out = block_average(maps, 2)
    np.testing.assert_allclose(out[1, 2, 0, 1], maps[1, 2, :2, 2:].mean())
    with pytest.raises(InvalidInputError, match="grid must divide"):
        block_average(maps, 3)


def test_oriented_energy_peaks_at_the_gratings_orientation():
    _y, x = np.mgrid[0:32, 0:32]
    vertical = (127.5 + 127.5 * np.cos(2 * np.pi * x / 8)).astype(np.uint8)  # varies along x
    horizontal = vertical.T
    images = np.stack([vertical, horizontal])[..., None].repeat(3, -1)
    energy = oriented_energy(images, grid=4, n_orientations=4, wavelengths=(8.0,))
    assert energy.shape == (2, 4, 4, 4)
    per_orientation = energy.mean((2, 3))
    assert per_orientation[0].argmax() == 0 and per_orientation[1].argmax() == 2
    assert per_orientation[0, 0] > 5 * per_orientation[0, 2]


def test_oriented_energy_is_the_direct_correlation_and_the_same_on_every_call():
    from neurodecode.features.targets import gabor_pairs

    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    energy = oriented_energy(images, grid=16, n_orientations=2, wavelengths=(4.0,))
    # the same numbers on every call, whatever the batch: a target space's statistics digest
    # (recorded in the store) depends on them
    for _ in range(3):
        np.testing.assert_array_equal(
            oriented_energy(images, grid=16, n_orientations=2, wavelengths=(4.0,), batch_size=2),
            energy,
        )
    # against a direct sum: energy = sqrt(even^2 + odd^2) of the reflect-padded L* correlated
    # with each kernel (grid = the image size: no averaging)
    kernels, size = gabor_pairs(2, (4.0,))
    kernels = kernels[:, 0].double().numpy()
    half = size // 2
    lightness = srgb_to_lab(images)[..., 0].astype(np.float64) / 100.0
    padded = np.pad(lightness, ((0, 0), (half, half), (half, half)), mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(1, 2))
    response = np.einsum("nijuv,kuv->nkij", windows, kernels)  # (3, 4, 16, 16)
    direct = np.sqrt(response[:, 0::2] ** 2 + response[:, 1::2] ** 2)
    np.testing.assert_allclose(energy, direct, rtol=1e-5, atol=1e-5)


def test_tower_maps_of_a_convnet_and_a_vit_have_their_grid_shapes():
    from neurodecode.embedded.clip import register_model_configs
    from neurodecode.features.clip import load_clip

    register_model_configs()
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    convnet = load_clip("sim-clip-tiny")
    maps = tower_maps(convnet, images, ["trunk.features.3", "trunk.features.11"], batch_size=2)
    assert maps["trunk.features.3"].shape == (3, 16, 16, 16)
    assert maps["trunk.features.11"].shape == (3, 64, 4, 4)
    pooled = tower_maps(convnet, images, ["trunk.features.3"], grid=4)["trunk.features.3"]
    np.testing.assert_allclose(pooled, block_average(maps["trunk.features.3"], 4), rtol=1e-5)
    vit = load_clip("sim-clip-vit-tiny")
    tokens = tower_maps(vit, images, ["transformer.resblocks.0"])["transformer.resblocks.0"]
    assert tokens.shape == (3, 64, 4, 4)  # 32 px / patch 8 -> 4 x 4 patches of width 64


def test_standardise_blocks_gives_every_block_unit_total_variance_on_the_reference_rows():
    rng = np.random.default_rng(0)
    blocks = {"big": rng.normal(5, 30, (50, 40)), "small": rng.normal(-2, 0.1, (50, 2, 3))}
    reference = np.arange(30)
    out = standardise_blocks(blocks, reference)
    assert out.shape == (50, 46)
    for part in (out[reference, :40], out[reference, 40:]):
        np.testing.assert_allclose(part.mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(part.var(0).sum(), 1, rtol=1e-4)
    with pytest.raises(InvalidInputError, match="different numbers of rows"):
        standardise_blocks({"a": np.ones((3, 2)), "b": np.ones((4, 2))})


def test_validation_feature_oracle_ranks_the_planted_features_above_noise(tiny_nsd):
    from neurodecode.data.nsd import read_nsd_betas
    from neurodecode.demo.ladder import validation_feature_oracles, validation_split
    from neurodecode.sim.ground_truth import read_ground_truth

    world = read_ground_truth(tiny_nsd)
    planted = world.features.values.astype(np.float32)  # the generating features, by row id
    noise = np.random.default_rng(1).normal(size=(len(planted), 64)).astype(np.float32)
    trials = read_nsd_betas(tiny_nsd, "subj01", zscore=False, progress=False)
    train_ids = np.unique(trials.stimulus_id[trials.split == "train"])
    fit_ids, val_ids = validation_split(train_ids, 0.2, seed=0)
    assert not set(val_ids) & set(fit_ids) and not set(val_ids) & set(world.sharedix)
    assert len(fit_ids) + len(val_ids) == len(train_ids)

    result = validation_feature_oracles(
        tiny_nsd,
        "subj01",
        {"planted": lambda ids: planted[ids], "noise": lambda ids: noise[ids]},
        train_ids,
    )
    n_way = len(val_ids)
    assert result["n_validation_images"] == n_way and result["oracle"]["n_way"] == n_way
    planted_row, noise_row = result["feature_oracle"]["planted"], result["feature_oracle"]["noise"]
    for key in ("brain_to_image_top1", "image_to_brain_top1"):
        assert planted_row[key] > 0.5 and noise_row[key] < min(0.25, planted_row[key] / 3)
        assert result["oracle"][key] >= planted_row[key] - 0.1
