"""Brain -> caption (MindEye2's captions): captions of decoded image embeddings and their scores.

A decoder predicts image embeddings from brain trials; a prefix captioner
(:class:`~neurodecode.analysis.captioning.PrefixCaptioner`, e.g. the ClipCap model of
:mod:`neurodecode.analysis.prefix_captioner`) turns each into a caption
(:func:`caption_embeddings`). :func:`score_paired_captions` scores generated captions against the
true caption of each image by sentence-embedding cosine similarity (any
:data:`~neurodecode.analysis.captioning.TextEncoder`; the offline all-MiniLM-L6-v2 of
:func:`~neurodecode.analysis.captioning.minilm_text_encoder` is the one the project ships), next
to its chance level: the same captions paired with the wrong images (every other image of the set,
so the shuffled-trial control is an exact average over pairings rather than one random draw). The
same function applied to captions of the *true* image embeddings gives the captioner's ceiling.

This module consumes arrays and texts; the decoder, the captioner and the encoders that produce
them live elsewhere (the demo's use, with the simulated world's captioner, is
:mod:`neurodecode.demo.captions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from neurodecode.analysis.captioning import PrefixCaptioner, TextEncoder, unit_rows
from neurodecode.validation import InvalidInputError, check_array


def caption_embeddings(
    captioner: PrefixCaptioner,
    embeddings: np.ndarray | torch.Tensor,
    batch_size: int = 64,
) -> list[str]:
    """One caption per image embedding.

    Parameters
    ----------
    captioner : PrefixCaptioner
        ``generate(Tensor (n, D)) -> n captions``; its config's ``embed_dim`` (when it has one)
        must equal ``D``.
    embeddings : array, shape (N, D)
        Image embeddings (decoded from brain trials, or of the true images), any norm.
    batch_size : int
        Embeddings per ``generate`` call (bounds the memory of beam search).

    Returns
    -------
    list of str, length N
    """
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().cpu().numpy()
    embeddings = check_array("embeddings", np.asarray(embeddings), ndim=2, kind="biuf", finite=True)
    expected = getattr(getattr(captioner, "config", None), "embed_dim", None)
    if expected is not None and embeddings.shape[1] != expected:
        raise InvalidInputError(
            f"embeddings have {embeddings.shape[1]} dimensions but the captioner takes "
            f"{expected}-D image embeddings; expected embeddings in the captioner's space."
        )
    if int(batch_size) < 1:
        raise InvalidInputError(f"batch_size={batch_size!r}; expected a positive integer.")
    tensor = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))
    captions: list[str] = []
    for start in range(0, len(tensor), int(batch_size)):
        captions += list(captioner.generate(tensor[start : start + int(batch_size)]))
    if len(captions) != len(tensor):
        raise InvalidInputError(
            f"the captioner returned {len(captions)} captions for {len(tensor)} embeddings."
        )
    return captions


@dataclass
class PairedCaptionScore:
    """How well generated captions match the true captions of their images.

    Attributes
    ----------
    similarity : float
        Mean cosine similarity (sentence embeddings) of each generated caption with the true
        caption of its own image.
    shuffled : float
        The shuffled-trial control: mean similarity of each generated caption with the true
        captions of every *other* image (the exact mean over wrong pairings).
    two_way : float
        Caption identification: the fraction of (image, other image) pairs in which a generated
        caption is closer to its own image's true caption than to the other's (ties count half;
        chance 0.5).
    n : int
        Number of images.
    per_image : ndarray, shape (n,)
        Each generated caption's similarity with its own image's true caption.
    """

    similarity: float
    shuffled: float
    two_way: float
    n: int
    per_image: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def to_dict(self) -> dict:
        """The summary fields (not ``per_image``) as a JSON-ready dict."""
        out = asdict(self)
        out.pop("per_image")
        return out


def similarity_matrix(
    generated: Sequence[str], references: Sequence[str], text_encoder: TextEncoder
) -> np.ndarray:
    """Cosine similarities of sentence embeddings, ``(len(generated), len(references))``."""
    generated, references = list(generated), list(references)
    if not generated or not references:
        raise InvalidInputError("similarity_matrix needs at least one text on each side.")
    a = unit_rows(torch.as_tensor(np.asarray(text_encoder(generated), dtype=np.float32)))
    b = unit_rows(torch.as_tensor(np.asarray(text_encoder(references), dtype=np.float32)))
    if a.ndim != 2 or b.ndim != 2 or len(a) != len(generated) or len(b) != len(references):
        raise InvalidInputError(
            f"text_encoder returned shapes {tuple(a.shape)} and {tuple(b.shape)}; expected "
            f"({len(generated)}, D) and ({len(references)}, D)."
        )
    if a.shape[1] != b.shape[1]:
        raise InvalidInputError(
            f"text_encoder returned {a.shape[1]}- and {b.shape[1]}-D embeddings; expected one D."
        )
    return (a @ b.T).numpy()


def score_paired_captions(
    generated: Sequence[str], references: Sequence[str], text_encoder: TextEncoder
) -> PairedCaptionScore:
    """Score generated captions against the true caption of each image and the shuffled control.

    Parameters
    ----------
    generated : sequence of str, length N
        One generated caption per image (e.g. from decoded embeddings).
    references : sequence of str, length N
        The true caption of each image, in the same order.
    text_encoder : callable
        ``texts -> (n, D)`` sentence embeddings (e.g. all-MiniLM-L6-v2); cosine is used.

    Returns
    -------
    PairedCaptionScore
    """
    generated, references = list(generated), list(references)
    if len(generated) != len(references) or len(generated) < 2:
        raise InvalidInputError(
            f"{len(generated)} generated captions and {len(references)} references; expected "
            "one reference per generated caption and at least 2 images (the shuffled control "
            "pairs captions with other images)."
        )
    s = similarity_matrix(generated, references, text_encoder).astype(np.float64)
    n = len(s)
    own = np.diag(s)
    off = ~np.eye(n, dtype=bool)
    shuffled = float(s[off].mean())
    wins = (own[:, None] > s) + 0.5 * (own[:, None] == s)  # ties (equal references) count half
    two_way = float(wins[off].mean())
    return PairedCaptionScore(float(own.mean()), shuffled, two_way, n, own.astype(np.float32))
