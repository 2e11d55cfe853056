"""The simulated world's text side: its caption bank (captions of generated scenes, which voxel
captioning (:mod:`neurodecode.analysis.captioning`) ranks when no captioner weights exist), the
words that name its categories and low-level attributes, and scorers of captions against the
planted category (by words, and semantically through the offline MiniLM encoder)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from neurodecode.analysis.captioning import TextEncoder, unit_rows
from neurodecode.sim.stimuli import CATEGORIES, COLOURS, generate_stimuli
from neurodecode.validation import InvalidInputError


def simulated_caption_bank(
    n_images: int = 2000, seed: int = 65537, include_words: bool = True
) -> list[str]:
    """Distinct captions of simulated scenes drawn with their own seed, plus :func:`word_bank`.

    The seed differs from the experiments' and from sim-clip's training seed, so the bank holds
    no caption of a stimulus any subject saw by construction of the seed streams.
    """
    stimuli = generate_stimuli(n_images, size=32, seed=seed)
    bank = sorted(set(stimuli.captions))
    if include_words:
        bank += [w for w in word_bank() if w not in bank]
    return bank


#: Words that name each simulated category in captions (singular and plural).
CATEGORY_WORDS: dict[str, tuple[str, ...]] = {
    "face": ("face", "faces"),
    "body": ("person", "people", "body", "bodies"),
    "place": ("house", "houses", "field", "place", "building"),
    "word": ("letters", "letter", "word", "words"),
    "food": ("apple", "apples", "food"),
    "object": ("block", "blocks", "object"),
}


_WORD_TO_CATEGORY = {w: c for c, words in CATEGORY_WORDS.items() for w in words}


#: Low-level words: colours, positions, sizes.
LOWLEVEL_WORDS: frozenset[str] = frozenset(
    [*COLOURS, "left", "right", "top", "bottom", "centre", "small", "large"]
)


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def caption_category(text: str) -> str | None:
    """The simulated category a caption names (first category word), or None.

    Letter strings quoted in word-image captions (``the letters "ABC"``) are not read as words.
    """
    unquoted = re.sub(r'"[^"]*"', " ", text)
    for token in _tokens(unquoted):
        if token in _WORD_TO_CATEGORY:
            return _WORD_TO_CATEGORY[token]
    return None


def is_lowlevel_text(text: str) -> bool:
    """True when a text names no category but has a colour, position or size word."""
    return caption_category(text) is None and any(t in LOWLEVEL_WORDS for t in _tokens(text))


def word_bank() -> list[str]:
    """Short phrases: one per category, colour, position and size (the low-level vocabulary)."""
    phrases = [f"a photo of {CATEGORY_WORDS[c][0]}" for c in CATEGORIES]
    phrases += [f"something {colour}" for colour in COLOURS]
    phrases += ["on the left", "on the right", "at the top", "at the bottom", "in the centre"]
    phrases += ["something small", "something large"]
    return phrases


@dataclass
class CaptionScore:
    """How the captions of one ROI name its planted category."""

    fraction_correct: float
    fraction_lowlevel: float
    category_counts: dict[str, int]
    n: int


def score_captions(texts: Sequence[str], expected_category: str | None) -> CaptionScore:
    """Fraction of captions naming ``expected_category`` (and of low-level-only captions).

    Parameters
    ----------
    texts : sequence of str
        One caption per voxel (e.g. :attr:`VoxelCaptions.best`).
    expected_category : str or None
        A :data:`~neurodecode.sim.stimuli.CATEGORIES` entry; None for early-visual ROIs (then
        ``fraction_correct`` is NaN and ``fraction_lowlevel`` is the score to read).
    """
    if expected_category is not None and expected_category not in CATEGORIES:
        raise InvalidInputError(
            f"expected_category={expected_category!r}; expected one of {CATEGORIES} or None."
        )
    texts = list(texts)
    if not texts:
        raise InvalidInputError("texts is empty; expected at least one caption to score.")
    named = [caption_category(t) for t in texts]
    counts = {c: named.count(c) for c in CATEGORIES}
    counts["none"] = named.count(None)
    correct = (
        float(np.mean([n == expected_category for n in named]))
        if expected_category is not None
        else float("nan")
    )
    lowlevel = float(np.mean([is_lowlevel_text(t) for t in texts]))
    return CaptionScore(correct, lowlevel, counts, len(texts))


#: One plain-language description per simulated category, for the semantic scorer (no caption
#: template words: the scorer must recognise the meaning, not the bank's phrasing).
CATEGORY_DESCRIPTIONS: dict[str, str] = {
    "face": "a human face",
    "body": "people, the human body",
    "place": "a building or a scene outdoors",
    "word": "written text made of letters",
    "food": "a piece of fruit to eat",
    "object": "a toy block or another plain object",
}


def semantic_categories(
    texts: Sequence[str],
    text_encoder: TextEncoder,
    descriptions: dict[str, str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The category whose description each text is semantically closest to.

    Parameters
    ----------
    texts : sequence of str
        Captions (e.g. :attr:`VoxelCaptions.best`).
    text_encoder : callable
        ``texts -> (n, D)`` embeddings (e.g. :func:`minilm_text_encoder`); cosine similarity is
        used, so they need not be normalised.
    descriptions : dict of str -> str, optional
        Category -> description; default :data:`CATEGORY_DESCRIPTIONS`.

    Returns
    -------
    categories : ndarray of str, shape (n,)
    similarity : ndarray, shape (n, n_categories)
        Cosine similarities, columns in the order of ``descriptions``.
    """
    descriptions = dict(descriptions or CATEGORY_DESCRIPTIONS)
    texts = list(texts)
    if not texts or not descriptions:
        raise InvalidInputError("semantic_categories needs at least one text and one category.")
    names = list(descriptions)
    a = unit_rows(torch.as_tensor(np.asarray(text_encoder(texts), dtype=np.float32)))
    b = unit_rows(
        torch.as_tensor(np.asarray(text_encoder(list(descriptions.values())), np.float32))
    )
    if a.shape[0] != len(texts) or b.shape[0] != len(names) or a.shape[1] != b.shape[1]:
        raise InvalidInputError(
            f"text_encoder returned shapes {tuple(a.shape)} and {tuple(b.shape)}; expected "
            f"({len(texts)}, D) and ({len(names)}, D)."
        )
    similarity = (a @ b.T).numpy()
    return np.array(names)[similarity.argmax(1)], similarity


def semantic_fraction_correct(
    texts: Sequence[str], expected_category: str, text_encoder: TextEncoder
) -> float:
    """Fraction of ``texts`` semantically closest to ``expected_category``'s description."""
    if expected_category not in CATEGORY_DESCRIPTIONS:
        raise InvalidInputError(
            f"expected_category={expected_category!r}; expected one of {list(CATEGORY_DESCRIPTIONS)}."
        )
    categories, _ = semantic_categories(texts, text_encoder)
    return float(np.mean(categories == expected_category))
