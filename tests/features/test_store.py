"""FeatureStore: round trips, resumable fills, crash safety and refusal to mix settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from neurodecode.features.store import FeatureStore
from neurodecode.validation import InvalidInputError

SETTINGS = {"model_name": "toy", "pretrained": None, "image_size": 8}


def planted(ids) -> np.ndarray:
    """Features that encode their own id: row for id i is i * [1, 2, 3] in a (2, 3) block."""
    values = np.array([float(i) for i in ids], dtype=np.float32)
    return values[:, None, None] * np.arange(1, 7, dtype=np.float32).reshape(1, 2, 3)


def test_round_trip_in_asked_order(tmp_path):
    store = FeatureStore(tmp_path / "f.h5")
    assert store.keys() == []
    n = store.fill(
        "toy/model", "layer 1", range(10), planted, SETTINGS, batch_size=3, progress=False
    )
    assert n == 10
    assert store.keys() == [("toy/model", "layer 1")]
    out = store.read("toy/model", "layer 1", [7, "2", 9, 2])
    assert out.dtype == np.float32 and out.shape == (4, 2, 3)
    np.testing.assert_array_equal(out, planted([7, 2, 9, 2]))
    np.testing.assert_array_equal(store.read("toy/model", "layer 1"), planted(range(10)))
    ids = store.stimulus_ids("toy/model", "layer 1")
    assert ids.tolist() == [str(i) for i in range(10)]
    settings = store.settings("toy/model", "layer 1")
    assert settings["image_size"] == 8 and settings["model_name"] == "toy"
    assert {"torch", "open_clip", "neurodecode"} <= set(settings["versions"])
    with h5py.File(store.path, "r") as f:  # the documented layout: model/layer groups
        assert f["toy_model/layer_1/features"].shape == (10, 2, 3)


def test_missing_ids_are_named(tmp_path):
    store = FeatureStore(tmp_path / "f.h5")
    store.fill("m", "l", range(5), planted, SETTINGS, progress=False)
    with pytest.raises(InvalidInputError, match=r"lacks 2 of the 3 .*'11', '12'"):
        store.read("m", "l", [1, 11, 12])
    with pytest.raises(InvalidInputError, match="no entry for model 'm', layer 'other'"):
        store.read("m", "other")


def test_resumable_fill_computes_only_missing(tmp_path):
    store = FeatureStore(tmp_path / "f.h5")
    store.fill("m", "l", range(0, 20, 2), planted, SETTINGS, progress=False)
    asked: list[str] = []

    def compute(ids):
        asked.extend(ids)
        return planted(ids)

    n = store.fill("m", "l", range(20), compute, SETTINGS, batch_size=4, progress=False)
    assert n == 10
    assert sorted(asked, key=int) == [str(i) for i in range(1, 20, 2)]
    np.testing.assert_array_equal(store.read("m", "l", range(20)), planted(range(20)))
    assert store.fill("m", "l", range(20), compute, SETTINGS, progress=False) == 0


def test_refuses_mismatched_settings(tmp_path):
    store = FeatureStore(tmp_path / "f.h5")
    store.fill("m", "l", range(4), planted, SETTINGS, progress=False)
    other = {**SETTINGS, "image_size": 16, "pretrained": "laion"}
    with pytest.raises(InvalidInputError, match=r"Differing keys: \['image_size', 'pretrained'\]"):
        store.fill("m", "l", range(8), planted, other, progress=False)
    assert len(store.stimulus_ids("m", "l")) == 4
    # a different layer of the same model is a separate entry and may have its own settings
    assert store.fill("m", "l2", range(3), planted, other, progress=False) == 3


def test_bad_compute_output_is_refused(tmp_path):
    store = FeatureStore(tmp_path / "f.h5")
    with pytest.raises(InvalidInputError, match="compute returned shape"):
        store.fill("m", "l", range(4), lambda ids: np.zeros((1, 3)), SETTINGS, progress=False)
    with pytest.raises(InvalidInputError, match="NaN"):
        store.fill(
            "m", "l", range(2), lambda ids: np.full((len(ids), 3), np.nan), SETTINGS, progress=False
        )
    assert not store.path.exists()


SLOW_FILL = """
import sys, time
import numpy as np
from neurodecode.features.store import FeatureStore

def compute(ids):
    time.sleep(0.15)
    values = np.array([float(i) for i in ids], dtype=np.float32)
    return values[:, None, None] * np.arange(1, 7, dtype=np.float32).reshape(1, 2, 3)

FeatureStore(sys.argv[1]).fill("m", "l", range(200), compute, {"model_name": "toy",
    "pretrained": None, "image_size": 8}, batch_size=5, checkpoint_every=1, progress=False)
"""


def test_survives_kill_mid_write(tmp_path):
    path = tmp_path / "f.h5"
    script = tmp_path / "slow_fill.py"
    script.write_text(SLOW_FILL)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path)], env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait for a few checkpoints, then kill mid-fill
            if path.exists() and len(FeatureStore(path).stimulus_ids("m", "l")) >= 15:
                break
            assert proc.poll() is None, "the filler exited early"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    store = FeatureStore(path)
    ids = store.stimulus_ids("m", "l")
    assert 15 <= len(ids) < 200 and len(ids) % 5 == 0  # whole batches only
    np.testing.assert_array_equal(store.read("m", "l", ids), planted(ids))

    asked: list[str] = []

    def compute(batch):
        asked.extend(batch)
        return planted(batch)

    settings = {"model_name": "toy", "pretrained": None, "image_size": 8}
    n = store.fill("m", "l", range(200), compute, settings, batch_size=50, progress=False)
    assert n == 200 - len(ids)
    assert set(asked) == {str(i) for i in range(200)} - set(ids.tolist())
    np.testing.assert_array_equal(store.read("m", "l", range(200)), planted(range(200)))
    leftovers = [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert leftovers == []  # the killed writer's temporary file was cleaned up


def test_delete_entry(tmp_path):
    store = FeatureStore(tmp_path / "f.h5")
    store.fill("m", "a", range(3), planted, SETTINGS, progress=False)
    store.fill("m", "b", range(3), planted, SETTINGS, progress=False)
    store.delete("m", "a")
    assert store.keys() == [("m", "b")]
    np.testing.assert_array_equal(store.read("m", "b"), planted(range(3)))


def test_not_an_hdf5_file(tmp_path):
    bad = Path(tmp_path / "f.h5")
    bad.write_text(json.dumps({"not": "hdf5"}))
    with pytest.raises(InvalidInputError, match="not a readable HDF5 file"):
        FeatureStore(bad).read("m", "l")
