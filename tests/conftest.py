"""Test-wide settings: offline hub, headless plotting, few threads, shared tiny simulations."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_nsd(tmp_path_factory) -> Path:
    """The tiny simulated NSD world (datasets/sim/tiny.yaml), written once per test session."""
    from neurodecode.sim.fmri import FMRISimConfig, simulate_fmri

    config = FMRISimConfig.from_yaml(REPO / "datasets/sim/tiny.yaml")
    return simulate_fmri(config, tmp_path_factory.mktemp("sim") / "tiny", progress=False)


@pytest.fixture(scope="session", autouse=True)
def _shared_model_cache(tmp_path_factory):
    """One NEURODECODE_CACHE per test session (sim-clip etc. train once), never the user's."""
    if "NEURODECODE_CACHE" not in os.environ or not os.environ.get("NEURODECODE_KEEP_CACHE"):
        os.environ["NEURODECODE_CACHE"] = str(tmp_path_factory.mktemp("neurodecode-cache"))
    yield


def write_projected_features(
    root: Path, path: Path, width: int, scaled: bool = True, seed: int = 0
) -> Path:
    """A FeatureStore (entry ``gt-projection/image``) of a fixed random projection of a simulated
    world's standardised generating features: deterministic, cheap target features for tests.

    ``scaled`` divides the projection by sqrt(n_features) (unit-variance embeddings).
    """
    import numpy as np

    from neurodecode.features.store import FeatureStore
    from neurodecode.sim.ground_truth import read_ground_truth

    values = read_ground_truth(root).features.values.astype(np.float64)
    values = (values - values.mean(0)) / (values.std(0) + 1e-9)
    projection = np.random.default_rng(seed).normal(size=(values.shape[1], width))
    if scaled:
        projection /= values.shape[1] ** 0.5
    embeddings = (values @ projection).astype(np.float32)
    FeatureStore(path).fill(
        "gt-projection",
        "image",
        np.arange(len(values)),
        lambda ids: embeddings[[int(i) for i in ids]],
        {"model": "gt-projection"},
        progress=False,
    )
    return path
