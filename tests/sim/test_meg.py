"""The simulated THINGS-MEG world, read back with mne/h5py/pandas directly (not our reader)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import mne
import numpy as np
import pandas as pd
import pytest

from neurodecode.sim.meg import MEGSimConfig, simulate_meg
from neurodecode.validation import InvalidInputError

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "datasets/sim/meg-tiny.yaml"


@pytest.fixture(scope="module")
def tiny_meg(tmp_path_factory) -> Path:
    return simulate_meg(MEGSimConfig.from_yaml(TINY), tmp_path_factory.mktemp("meg") / "tiny")


def _read(root: Path, n: int = 1) -> mne.Epochs:
    path = root / "derivatives/preprocessed" / f"preprocessed_P{n}-epo.fif"
    return mne.read_epochs(path, preload=True, verbose="error")


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_epochs_have_ctf275_channels_window_and_rate(tiny_meg):
    config = MEGSimConfig.from_yaml(TINY)
    epochs = _read(tiny_meg)
    layout = mne.channels.read_layout("CTF-275")
    assert epochs.ch_names == list(layout.names)
    assert len(epochs.ch_names) == 275
    assert set(epochs.get_channel_types()) == {"mag"}
    assert epochs.info["sfreq"] == 200.0
    assert epochs.times[0] == pytest.approx(-0.1)
    assert epochs.times[-1] == pytest.approx(1.3)
    assert len(epochs.times) == 281
    n_expected = config.n_train_images + config.n_test_images * config.n_test_repeats
    assert len(epochs) == n_expected
    data = epochs.get_data()
    assert np.isfinite(data).all()
    assert 1e-14 < data.std() < 1e-11  # tesla: tens to hundreds of femtotesla


def test_metadata_names_existing_images_and_splits(tiny_meg):
    config = MEGSimConfig.from_yaml(TINY)
    md = _read(tiny_meg, 2).metadata
    for column in ("stimulus_id", "image_path", "category", "trial_type", "session_nr"):
        assert column in md.columns
    assert set(md["trial_type"]) == {"exp", "test"}
    counts = md.groupby("stimulus_id").size()
    test_ids = md.loc[md["trial_type"] == "test", "stimulus_id"].unique()
    assert len(test_ids) == config.n_test_images
    assert (counts[test_ids] == config.n_test_repeats).all()
    train_ids = md.loc[md["trial_type"] == "exp", "stimulus_id"]
    assert train_ids.is_unique and len(train_ids) == config.n_train_images
    assert set(md["session_nr"]) == set(range(1, config.n_sessions + 1))
    for path in md["image_path"].unique()[:5]:
        assert (tiny_meg / path).is_file()
    table = pd.read_csv(tiny_meg / "stimuli/stimuli.tsv", sep="\t")
    assert len(table) == config.n_train_images + config.n_test_images
    row = table.set_index("stimulus_id").loc[md["stimulus_id"].iloc[0]]
    assert row["category"] == md["category"].iloc[0]
    assert row["image_path"] == md["image_path"].iloc[0]


def test_same_seed_gives_byte_identical_files(tmp_path):
    def micro(seed: int) -> MEGSimConfig:
        return MEGSimConfig(
            seed=seed,
            n_subjects=1,
            n_train_images=6,
            n_test_images=2,
            n_test_repeats=2,
            image_size=16,
        )

    first = _digest(simulate_meg(micro(0), tmp_path / "first"))
    again = _digest(simulate_meg(micro(0), tmp_path / "again"))
    other = _digest(simulate_meg(micro(1), tmp_path / "other"))
    assert again == first
    assert len(first) == 1 + 1 + 8 + 1  # epochs, stimuli.tsv, 8 PNGs, ground truth
    for name in ("derivatives/preprocessed/preprocessed_P1-epo.fif", "ground_truth.h5"):
        assert other[name] != first[name]


def test_category_response_peaks_at_planted_latency(tiny_meg):
    """Category-minus-rest evoked responses, seen through each category source's true pattern."""
    epochs = _read(tiny_meg)
    data = epochs.get_data()
    data = data - data[:, :, epochs.times < 0].mean(-1, keepdims=True)
    md = epochs.metadata
    with h5py.File(tiny_meg / "ground_truth.h5", "r") as f:
        names = list(f["source_name"].asstr()[...])
        patterns = f["P1/sensor_pattern"][...]
        latencies = f["P1/latency_s"][...]
    contrast = np.zeros(len(epochs.times))
    planted = []
    for category in md["category"].unique():
        k = names.index(f"category_{category}")
        course = np.einsum("nct,c->nt", data, patterns[k])
        is_cat = (md["category"] == category).to_numpy()
        contrast += np.abs(course[is_cat].mean(0) - course[~is_cat].mean(0))
        planted.append(latencies[k])
    peak = epochs.times[np.argmax(contrast)]
    assert abs(peak - np.mean(planted)) < 0.04, (peak, planted)
    assert 0.12 < peak < 0.23


def test_ground_truth_holds_features_patterns_and_latencies(tiny_meg):
    config = MEGSimConfig.from_yaml(TINY)
    with h5py.File(tiny_meg / "ground_truth.h5", "r") as f:
        n_images = config.n_train_images + config.n_test_images
        assert f["features"].shape == (n_images, len(f["feature_names"]))
        assert f["stimulus_id"].shape == (n_images,)
        kinds = set(f["source_kind"].asstr()[...])
        assert kinds == {"early", "category", "semantic", "generic"}
        for subject in ("P1", "P2"):
            assert f[f"{subject}/sensor_pattern"].shape == (len(f["source_name"]), 275)
        # subjects differ in anatomy and physiology
        assert not np.allclose(f["P1/sensor_pattern"][...], f["P2/sensor_pattern"][...])
        assert not np.allclose(f["P1/latency_s"][...], f["P2/latency_s"][...])
        assert "noise_ft" in f["noise"].attrs


def test_config_rejects_unknown_keys_naming_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("seed: 0\nn_subject: 2\n")
    with pytest.raises(InvalidInputError, match=r"bad\.yaml.*n_subject"):
        MEGSimConfig.from_yaml(path)
