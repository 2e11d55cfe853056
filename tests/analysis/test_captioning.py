"""BrainSCUBA voxel captions: projection, text ranking, and planted categories of the tiny world.

The tiny world's captions are scored in a toy joint image-text space built from the stimuli's
own words (category and colour axes), so the test checks the captioning machinery (encoder on
embeddings -> softmax projection onto the image pool -> text ranking) against the simulator's
planted ROIs in seconds; the sim-clip version runs in ``benchmarks/bench_analysis.py``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from neurodecode.analysis.captioning import (
    MINILM_PACKAGE,
    caption_voxels,
    minilm_text_encoder,
    project_to_image_manifold,
    rank_texts,
)
from neurodecode.analysis.encoding import encode_trials
from neurodecode.data.nsd import read_captions, read_nsd_betas
from neurodecode.embedded.caption_bank import (
    caption_category,
    is_lowlevel_text,
    score_captions,
    semantic_categories,
    semantic_fraction_correct,
    simulated_caption_bank,
    word_bank,
)
from neurodecode.sim.brain import CATEGORY_ROIS
from neurodecode.sim.stimuli import CATEGORIES, COLOURS
from neurodecode.validation import InvalidInputError

AXES = list(CATEGORIES) + list(COLOURS)


def toy_text_embedding(texts: list[str]) -> np.ndarray:
    """Category word -> its axis, colour word -> its axis (unit-normalised sum)."""
    out = np.full((len(texts), len(AXES)), 0.05)
    for row, text in enumerate(texts):
        category = caption_category(text)
        if category is not None:
            out[row, AXES.index(category)] += 1.0
        for token in re.findall(r"[a-z]+", re.sub(r'"[^"]*"', " ", text.lower())):
            if token in COLOURS:
                out[row, AXES.index(token)] += 0.6
    return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def toy_world(tiny_nsd):
    captions = read_captions(tiny_nsd)
    ids = np.arange(len(captions))
    rng = np.random.default_rng(0)
    images = toy_text_embedding([captions[i] for i in ids]) + 0.05 * rng.normal(
        size=(len(ids), len(AXES))
    )
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    trials = read_nsd_betas(tiny_nsd, "subj01", progress=False)
    import h5py

    with h5py.File(tiny_nsd / "ground_truth.h5", "r") as f:
        roi = f["subj01/roi"][:].astype(str)
    run = encode_trials(trials, lambda s: images[s], standardize=False)
    return images, run.encoder, roi


def test_category_rois_get_captions_naming_their_category(toy_world):
    images, encoder, roi = toy_world
    bank = simulated_caption_bank(n_images=300)
    bank_emb = toy_text_embedding(bank)
    fractions = {}
    for name, (category, _, _) in CATEGORY_ROIS.items():
        voxels = roi == name
        if voxels.sum() < 3:
            continue
        caps = caption_voxels(encoder.weights[:, voxels].T, images, bank_emb, bank, top_k=3)
        assert len(caps.texts) == voxels.sum() and all(len(t) == 3 for t in caps.texts)
        assert np.all(np.diff(caps.scores, axis=1) <= 1e-6)  # best first
        fractions[name] = score_captions(caps.best, category).fraction_correct
    assert {"FFA-1", "PPA", "food"} <= set(fractions)
    assert fractions["FFA-1"] >= 0.8  # chance is 1/6
    assert np.mean(list(fractions.values())) >= 0.8
    # control: voxels that see no category (early visual, energy only) rarely caption as faces
    early = np.char.startswith(roi, "V")
    caps = caption_voxels(encoder.weights[:, early].T, images, bank_emb, bank)
    assert score_captions(caps.best, "face").fraction_correct < 0.5


def test_projection_temperature_limits():
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(50, 8))
    unit = pool / np.linalg.norm(pool, axis=1, keepdims=True)
    direction = unit[7] + 0.01 * rng.normal(size=8)
    sharp = project_to_image_manifold(direction[None], pool, temperature=1e-4)
    assert np.allclose(sharp[0], unit[7], atol=1e-4)  # nearest real embedding
    flat = project_to_image_manifold(direction[None], pool, temperature=1e4)
    mean = unit.mean(0) / np.linalg.norm(unit.mean(0))
    assert np.allclose(flat[0], mean, atol=1e-3)  # pool mean
    assert np.allclose(np.linalg.norm(sharp, axis=1), 1.0, atol=1e-5)


def test_rank_texts_orders_by_cosine():
    bank = np.eye(4)
    idx, scores = rank_texts(np.array([[0.1, 0.9, 0.5, 0.0]]), bank, top_k=3)
    assert idx.tolist() == [[1, 2, 0]]
    assert np.allclose(scores[0, 0], 0.9 / np.linalg.norm([0.1, 0.9, 0.5]), atol=1e-6)


def test_caption_parsing_and_scores():
    assert caption_category('the letters "FACE" in red at the top') == "word"
    assert caption_category("two large blue faces on the left") == "face"
    assert caption_category("a red apple") == "food"
    assert caption_category("something red") is None
    assert is_lowlevel_text("something red") and not is_lowlevel_text("a red face")
    score = score_captions(["a face", "two faces", "a house", "something red"], "face")
    assert score.fraction_correct == 0.5 and score.fraction_lowlevel == 0.25
    assert score.category_counts["place"] == 1 and score.category_counts["none"] == 1
    assert np.isnan(score_captions(["on the left"], None).fraction_correct)
    assert set(word_bank()) <= set(simulated_caption_bank(n_images=10))


def test_errors():
    with pytest.raises(InvalidInputError, match="one embedding per text"):
        caption_voxels(np.ones((2, 3)), np.ones((4, 3)), np.ones((2, 3)), ["a"])
    with pytest.raises(InvalidInputError, match="expected 3"):
        project_to_image_manifold(np.ones((2, 4)), np.ones((4, 3)))
    with pytest.raises(InvalidInputError, match="temperature"):
        project_to_image_manifold(np.ones((2, 3)), np.ones((4, 3)), temperature=0)
    with pytest.raises(InvalidInputError, match="expected_category"):
        score_captions(["a face"], "cat")
    with pytest.raises(InvalidInputError, match="empty"):
        score_captions([], "face")


def bag_of_words_encoder(texts):
    """A planted text encoder: one axis per content word (so descriptions match by shared words)."""
    vocab = ["face", "person", "building", "letters", "fruit", "block", "red"]
    out = np.full((len(texts), len(vocab)), 0.01)
    for row, text in enumerate(texts):
        for col, word in enumerate(vocab):
            out[row, col] += text.lower().count(word)
    return out


def test_semantic_categories_with_a_planted_encoder():
    descriptions = {"face": "a face", "body": "a person", "place": "a building"}
    texts = ["two faces", "one person on the left", "a tall building", "a face and a person face"]
    names, similarity = semantic_categories(texts, bag_of_words_encoder, descriptions)
    assert names.tolist() == ["face", "body", "place", "face"]
    assert similarity.shape == (4, 3)
    assert semantic_fraction_correct(["a face", "a block"], "face", bag_of_words_encoder) == 0.5
    with pytest.raises(InvalidInputError, match="expected_category"):
        semantic_fraction_correct(["a face"], "tree", bag_of_words_encoder)
    with pytest.raises(InvalidInputError, match="at least one text"):
        semantic_categories([], bag_of_words_encoder)
    with pytest.raises(InvalidInputError, match="text_encoder returned"):
        semantic_categories(["a face"], lambda t: np.ones((len(t) + 1, 3)), descriptions)


def test_minilm_scorer_names_categories_when_installed():
    pytest.importorskip(MINILM_PACKAGE)
    encoder = minilm_text_encoder()
    assert encoder is not None
    texts = ["two black faces in the centre", "three red apples on the right", "the letters KRT"]
    names, _ = semantic_categories(texts, encoder)
    assert names.tolist() == ["face", "food", "word"]
    embeddings = encoder(texts)
    assert embeddings.shape == (3, 384)
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)


def test_minilm_scorer_is_none_without_the_package(monkeypatch):
    import importlib

    real = importlib.import_module

    def missing(name, *args):
        if name == MINILM_PACKAGE:
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", missing)
    assert minilm_text_encoder() is None
