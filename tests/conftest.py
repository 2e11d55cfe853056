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
