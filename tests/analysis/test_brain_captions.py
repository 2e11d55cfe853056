"""Brain -> caption scoring: closed forms on a bag-of-words text encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodecode.analysis.brain_captions import caption_embeddings, score_paired_captions
from neurodecode.validation import InvalidInputError

WORDS = ("red", "blue", "face", "house", "apple")


def bag_of_words(texts):
    return np.array([[float(w in t.split()) + 1e-3 for w in WORDS] for t in texts], np.float32)


def test_exact_captions_score_one_and_identify_every_pair():
    refs = ["red face", "blue house", "red apple"]
    score = score_paired_captions(refs, refs, bag_of_words)
    assert score.similarity == pytest.approx(1.0, abs=1e-5)
    assert score.two_way == 1.0  # each caption is closer to its own reference than to the others
    # shuffled control: the mean cosine of the wrong pairs, in closed form
    e = bag_of_words(refs)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    s = e @ e.T
    assert score.shuffled == pytest.approx(s[~np.eye(3, dtype=bool)].mean(), abs=1e-5)
    assert score.shuffled < score.similarity
    np.testing.assert_allclose(score.per_image, 1.0, atol=1e-5)
    assert set(score.to_dict()) == {"similarity", "shuffled", "two_way", "n"}


def test_captions_of_the_wrong_images_fall_to_chance():
    refs = ["red face", "blue house", "red apple", "blue face"]
    rolled = refs[1:] + refs[:1]  # every caption describes another image
    score = score_paired_captions(rolled, refs, bag_of_words)
    assert (
        score.two_way < 0.5
        and score.similarity < score_paired_captions(refs, refs, bag_of_words).similarity
    )
    one = score_paired_captions(["red"] * 4, refs, bag_of_words)  # ties count half
    assert 0.0 < one.two_way < 1.0


def test_caption_embeddings_batches_and_checks_shapes():
    class Echo:
        class config:
            embed_dim = 3

        def generate(self, embeddings):
            return [f"{int(e.argmax())}" for e in embeddings]

    emb = torch.eye(3)[[0, 2, 1, 2, 0]]
    assert caption_embeddings(Echo(), emb, batch_size=2) == ["0", "2", "1", "2", "0"]
    with pytest.raises(InvalidInputError, match="captioner takes 3-D"):
        caption_embeddings(Echo(), torch.zeros(2, 4))
    with pytest.raises(InvalidInputError, match="at least 2 images"):
        score_paired_captions(["a"], ["a"], bag_of_words)
