"""Real pipelines are read from local files only, with one clear error otherwise."""

from __future__ import annotations

import pytest

from neurodecode.reconstruct.diffusers_pipelines import (
    WeightsNotFoundError,
    load_generator,
    load_pipeline,
)
from neurodecode.validation import InvalidInputError


@pytest.mark.parametrize("kind", ["unclip", "versatile-diffusion", "image-variations"])
def test_missing_local_folder_says_how_to_provide_weights(kind, tmp_path):
    with pytest.raises(WeightsNotFoundError) as error:
        load_generator(kind, tmp_path / "nothing")
    message = str(error.value)
    assert str(tmp_path / "nothing") in message
    assert "huggingface-cli download" in message and "Nothing is downloaded" in message


def test_uncached_repo_id_fails_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="not in the local Hugging Face cache"):
        load_pipeline("unclip", "nobody/not-a-cached-model")


def test_unknown_kind_is_named():
    with pytest.raises(InvalidInputError, match="kind='dalle'"):
        load_pipeline("dalle")
