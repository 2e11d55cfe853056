"""Shared fixtures of the features tests: a private cache and one tiny sim-clip per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def sim_clip_cache(tmp_path_factory) -> str:
    """A NEURODECODE_CACHE folder in which the tiny sim-clip is trained once per test session."""
    return str(tmp_path_factory.mktemp("neurodecode-cache"))


@pytest.fixture
def tiny_clip(sim_clip_cache, monkeypatch):
    """The tiny sim-clip encoder (trained on first use, ~15 s on one core)."""
    monkeypatch.setenv("NEURODECODE_CACHE", sim_clip_cache)
    from neurodecode.embedded.clip import get_sim_clip

    return get_sim_clip("tiny", progress=False)
