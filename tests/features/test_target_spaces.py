"""Named target spaces (neurodecode.features.target_spaces): block statistics fitted on training
images only and applied to the test images, and `neurodecode extract`'s ``targets:`` section."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from neurodecode.features.target_spaces import (
    compute_blocks,
    fit_target_space,
    piece_columns,
    space_blocks,
    statistics_path,
    target_space_features,
    unstandardise_block,
)
from neurodecode.features.targets import BlockStatistics, standardise_blocks
from neurodecode.sim.stimuli import generate_stimuli
from neurodecode.validation import InvalidInputError


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return generate_stimuli(24, size=32, seed=3).images


def test_space_names_expand_groups_and_refuse_unknown_or_repeated_pieces():
    assert space_blocks("pooled+rectified8") == ("pooled", "opponent8", "contrast8", "energy8")
    assert space_blocks("lowlevel8") == ("lab8", "contrast8", "energy8")
    with pytest.raises(InvalidInputError, match="unknown piece 'stage9'"):
        space_blocks("pooled+stage9")
    with pytest.raises(InvalidInputError, match="names block 'contrast8' twice"):
        space_blocks("rectified8+contrast8")
    with pytest.raises(InvalidInputError, match="non-empty string"):
        space_blocks("")


def test_piece_columns_follow_the_recorded_blocks_and_refuse_other_blocks():
    blocks = [["pooled", 2], ["opponent8", 3], ["contrast8", 1], ["energy8", 2]]
    columns = piece_columns("pooled+rectified8", blocks)
    assert list(columns) == ["pooled", "rectified8"]
    assert columns["pooled"].tolist() == [0, 1]
    assert columns["rectified8"].tolist() == [2, 3, 4, 5, 6, 7]
    with pytest.raises(InvalidInputError, match="recorded blocks"):
        piece_columns("pooled+lowlevel8", blocks)


def test_training_statistics_standardise_the_test_images_as_the_benchmarks_did(images):
    embeddings = np.random.default_rng(0).normal(size=(len(images), 5)).astype(np.float32)
    train = np.arange(16)
    statistics = fit_target_space("pooled+rectified8", images[train], embeddings[train])
    assert statistics.dims == 5 + 6 * 64 + 64 + 8 * 64  # pooled + opponent8 + contrast8 + energy8
    assert statistics.n_reference == 16
    features = target_space_features("pooled+rectified8", statistics, images, embeddings)
    assert features.shape == (24, statistics.dims) and features.dtype == np.float32

    # the benchmarks' assembly: all rows standardised with the training rows' statistics
    blocks = compute_blocks("pooled+rectified8", images, embeddings)
    np.testing.assert_allclose(features, standardise_blocks(blocks, train), atol=1e-6)
    # every block is centred with unit total variance on the training rows only
    start = 0
    for name, width in (("pooled", 5), ("opponent8", 384), ("contrast8", 64), ("energy8", 512)):
        block = features[:, start : start + width].astype(np.float64)
        start += width
        np.testing.assert_allclose(block[train].mean(0), 0, atol=1e-5, err_msg=name)
        total = ((block[train] - block[train].mean(0)) ** 2).sum(1).mean()
        np.testing.assert_allclose(total, 1.0, rtol=1e-4, err_msg=name)
    # the test rows keep the training statistics: refitting on them would change them
    refit = fit_target_space("pooled+rectified8", images[16:], embeddings[16:])
    assert refit.digest() != statistics.digest()
    assert not np.allclose(
        target_space_features("pooled+rectified8", refit, images[16:], embeddings[16:]),
        features[16:],
    )


def test_statistics_round_trip_through_a_file_and_bad_inputs_are_refused(tmp_path, images):
    statistics = fit_target_space("rectified8", images[:12])
    loaded = BlockStatistics.load(statistics.save(tmp_path / "stats.npz"))
    assert loaded.digest() == statistics.digest() and loaded.n_reference == 12
    np.testing.assert_array_equal(
        target_space_features("rectified8", loaded, images[12:]),
        target_space_features("rectified8", statistics, images[12:]),
    )
    pooled = np.random.default_rng(1).normal(size=(len(images), 3))
    both = fit_target_space("pooled+contrast8", images[:12], pooled[:12])
    rows = target_space_features("pooled+contrast8", both, images, pooled)
    np.testing.assert_allclose(unstandardise_block(both, rows), pooled, rtol=1e-5, atol=1e-5)
    with pytest.raises(InvalidInputError, match="not among"):
        unstandardise_block(both, rows, "energy8")
    with pytest.raises(InvalidInputError, match="expected \\(N, 67\\)"):
        unstandardise_block(both, rows[:, :10])
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InvalidInputError, match="not a block-statistics file"):
        BlockStatistics.load(tmp_path / "bad.npz")
    with pytest.raises(InvalidInputError, match="pass the images' embeddings"):
        fit_target_space("pooled+rectified8", images[:12])
    with pytest.raises(InvalidInputError, match="one row per image"):
        fit_target_space("pooled+contrast8", images[:12], np.zeros((11, 4)))
    with pytest.raises(InvalidInputError, match="uint8 RGB"):
        fit_target_space("contrast8", images[:12].astype(np.float32))
    with pytest.raises(InvalidInputError, match="statistics are of blocks"):
        target_space_features("lowlevel8", statistics, images)
    with pytest.raises(InvalidInputError, match="at least 2 reference rows"):
        fit_target_space("contrast8", images[:1])


#: an untrained sim-clip-tiny (open_clip, seeded): a real image embedding without training one
RANDOM_CLIP = {"name": "sim-clip-tiny", "pretrained": None}
EMBEDDING = "sim-clip-tiny@random"


def test_extract_writes_a_rich_target_the_datamodule_trains_on(tmp_path, tiny_nsd):
    from neurodecode.cli.extract import load_extract_config
    from neurodecode.cli.main import main
    from neurodecode.data.nsd import read_stimuli, training_image_ids
    from neurodecode.datamodules.nsd import NSDDataModule
    from neurodecode.features.store import FeatureStore
    from neurodecode.sim.ground_truth import read_ground_truth

    store_path = tmp_path / "features.h5"
    config = {
        "stimuli": str(tiny_nsd),
        "store": str(store_path),
        "model": RANDOM_CLIP,
        "outputs": ["image"],
        "targets": {"spaces": ["pooled+rectified8"], "fit_on": "subj01"},
        "batch_size": 64,
        "device": "cpu",
    }
    (tmp_path / "extract.yaml").write_text(yaml.safe_dump(config))
    assert main(["extract", "--config", str(tmp_path / "extract.yaml"), "--quiet"]) == 0

    store = FeatureStore(store_path)
    train_ids = training_image_ids(tiny_nsd, "subj01")
    shared = np.asarray(read_ground_truth(tiny_nsd).sharedix)
    assert len(train_ids) == 120 and not np.isin(shared, train_ids).any()
    width = store.feature_shape(EMBEDDING, "image")[0]
    assert store.feature_shape("targets", "pooled+rectified8") == (width + 960,)
    settings = store.settings("targets", "pooled+rectified8")
    assert settings["standardised_on_images"] == 120 and settings["space"] == "pooled+rectified8"

    # the test images carry subj01's training statistics, computed here independently
    statistics = fit_target_space(
        "pooled+rectified8",
        read_stimuli(tiny_nsd, train_ids),
        store.read(EMBEDDING, "image", train_ids),
    )
    saved = BlockStatistics.load(statistics_path(store_path, "targets", "pooled+rectified8"))
    assert saved.digest() == statistics.digest() == settings["statistics_sha256"]
    expected = target_space_features(
        "pooled+rectified8",
        statistics,
        read_stimuli(tiny_nsd, shared),
        store.read(EMBEDDING, "image", shared),
    )
    np.testing.assert_allclose(
        store.read("targets", "pooled+rectified8", shared), expected, atol=1e-5
    )
    train_rows = store.read("targets", "pooled+rectified8", train_ids)
    np.testing.assert_allclose(train_rows.mean(0), 0, atol=1e-4)
    # the training rows (written from the blocks kept from the fit) are each image's own
    expected_train = target_space_features(
        "pooled+rectified8",
        statistics,
        read_stimuli(tiny_nsd, train_ids),
        store.read(EMBEDDING, "image", train_ids),
    )
    np.testing.assert_allclose(train_rows, expected_train, atol=1e-5)

    datamodule = NSDDataModule(
        root=str(tiny_nsd),
        feature_store=str(store_path),
        feature_model="targets",
        feature_layer="pooled+rectified8",
    )
    assert datamodule.geometry["target_shape"] == [width + 960]

    for targets, message in (
        ({"spaces": ["pooled+stage9"], "fit_on": "subj01"}, "unknown piece 'stage9'"),
        ({"spaces": ["pooled+rectified8"]}, "targets.fit_on"),
        ({"spaces": [], "fit_on": "subj01"}, "must list target spaces"),
        ({"spaces": ["rectified8"], "fit_on": "subj01", "grid": 4}, "grid"),
    ):
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**config, "targets": targets}))
        with pytest.raises(InvalidInputError, match=message):
            load_extract_config(tmp_path / "bad.yaml")


def test_the_rich_experiment_parses_and_trains_on_the_rich_entry(capsys):
    from pathlib import Path

    from neurodecode.cli.main import main

    config = Path(__file__).resolve().parents[2] / "experiments/sim_retrieval_rich.yaml"
    with pytest.raises(SystemExit):
        main(["fit", "-c", str(config), "--print_config"])
    printed = capsys.readouterr().out
    assert "feature_layer: pooled+rectified8" in printed and "feature_model: targets" in printed
    assert "prior: null" in printed and "RetrievalModule" in printed
