"""Stitching SAEs of different sizes (Bussmann et al. 2024): which latents of a larger SAE are new,
and the path of SAEs between the two.

Owns the classification of a larger SAE's latents against a smaller one's by the maximum cosine
similarity of their decoder directions (:func:`classify_latents`: a latent whose best match in the
small SAE is at least ``threshold`` is a *reconstruction* latent — it re-learns a direction the
small SAE has — the rest are *novel* latents), and :func:`stitch_path`: starting from the small
SAE, add the large SAE's novel latents one at a time, then swap each group of reconstruction
latents (a connected component of the small/large cosine >= threshold graph) for its small
counterparts, ending at the large SAE; FVU and L0 are measured after every step.

A stitched SAE keeps each latent's activation as its own SAE computes it (for TopK that is the
top-k of its own SAE) and sums the kept latents' raw-unit decoder contributions; the decoder bias
moves linearly from the small SAE's to the large SAE's along the path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from neurodecode.analysis.sae.core import SparseAutoencoder
from neurodecode.validation import InvalidInputError


@dataclass
class LatentMatch:
    """How each large-SAE latent matches the small SAE.

    Attributes
    ----------
    max_cosine : ndarray, shape (n_large,), float64
        Best cosine of each large decoder row to any small decoder row, in [-1, 1].
    best_small : ndarray, shape (n_large,), int64
        Index of that best small latent.
    novel : ndarray, shape (n_large,), bool
        ``max_cosine < threshold``.
    threshold : float
    """

    max_cosine: np.ndarray
    best_small: np.ndarray
    novel: np.ndarray
    threshold: float

    @property
    def novel_fraction(self) -> float:
        """Fraction of the large SAE's latents that are novel."""
        return float(self.novel.mean())


def _unit(name: str, rows: np.ndarray | Tensor) -> Tensor:
    array = (
        rows.detach().cpu().double()
        if isinstance(rows, Tensor)
        else torch.as_tensor(np.asarray(rows, dtype=np.float64))
    )
    if array.ndim != 2 or array.shape[0] < 1:
        raise InvalidInputError(f"{name} must be a non-empty 2-D array; got {tuple(array.shape)}.")
    if not torch.isfinite(array).all():
        raise InvalidInputError(f"{name} contains NaN or infinite values.")
    return array / torch.linalg.vector_norm(array, dim=1, keepdim=True).clamp_min(1e-12)


def classify_latents(
    small_decoder: np.ndarray | Tensor, large_decoder: np.ndarray | Tensor, threshold: float = 0.7
) -> LatentMatch:
    """Split the larger SAE's latents into novel and reconstruction latents.

    Parameters
    ----------
    small_decoder : array, shape (n_small, d)
        Decoder rows (``W_dec``) of the smaller SAE.
    large_decoder : array, shape (n_large, d)
        Decoder rows of the larger SAE, same ``d``.
    threshold : float
        Cosine at or above which a large latent counts as a reconstruction latent; in (-1, 1].
    """
    if not -1.0 < threshold <= 1.0:
        raise InvalidInputError(f"threshold must be in (-1, 1]; got {threshold}.")
    small = _unit("small_decoder", small_decoder)
    large = _unit("large_decoder", large_decoder)
    if small.shape[1] != large.shape[1]:
        raise InvalidInputError(
            f"small_decoder {tuple(small.shape)} and large_decoder {tuple(large.shape)} must share "
            "their second (feature) dimension."
        )
    best = (large @ small.T).max(dim=1)
    max_cosine = best.values.numpy()
    return LatentMatch(
        max_cosine=max_cosine,
        best_small=best.indices.numpy().astype(np.int64),
        novel=max_cosine < threshold,
        threshold=float(threshold),
    )


@dataclass
class StitchPath:
    """FVU and L0 of every SAE on the path from a small SAE to a large one.

    Attributes
    ----------
    fvu : ndarray, shape (n_steps + 1,), float64
        Entry 0 is the small SAE, the last entry the large SAE.
    l0 : ndarray, shape (n_steps + 1,), float64
        Mean active (kept) latents per row.
    kinds : list of str, length n_steps + 1
        ``"small"``, then ``"novel"`` (one novel latent added) or ``"swap"`` (one reconstruction
        group swapped) per step.
    added : list of list of int
        Large-SAE latents added at each step (empty for the start).
    removed : list of list of int
        Small-SAE latents removed at each step.
    match : LatentMatch
        The classification the path was built from.
    """

    fvu: np.ndarray
    l0: np.ndarray
    kinds: list[str]
    added: list[list[int]] = field(default_factory=list)
    removed: list[list[int]] = field(default_factory=list)
    match: LatentMatch | None = None

    def is_monotone(self, tolerance: float = 1e-9) -> bool:
        """FVU never rises and L0 never falls by more than ``tolerance`` along the path."""
        return bool(
            np.all(np.diff(self.fvu) <= tolerance) and np.all(np.diff(self.l0) >= -tolerance)
        )


def _reconstruction_groups(
    small: Tensor, large: Tensor, reconstruction: np.ndarray, threshold: float
) -> list[tuple[list[int], list[int]]]:
    """Connected components (small latents, large latents) of the cosine >= threshold graph."""
    cos = (large @ small.T).numpy()
    parent = list(range(len(small) + len(large)))  # union-find over small then large nodes

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for j in np.flatnonzero(reconstruction):
        for i in np.flatnonzero(cos[j] >= threshold):
            parent[find(len(small) + int(j))] = find(int(i))
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for j in np.flatnonzero(reconstruction):
        groups.setdefault(find(len(small) + int(j)), ([], []))[1].append(int(j))
    for i in range(len(small)):
        if find(i) in groups:
            groups[find(i)][0].append(i)
    return sorted(groups.values(), key=lambda g: g[1][0])


def _check_stitchable(name: str, sae: SparseAutoencoder) -> None:
    if not isinstance(sae, SparseAutoencoder):
        raise InvalidInputError(f"{name} must be a SparseAutoencoder; got {type(sae).__name__}.")
    if sae.transcoder:
        raise InvalidInputError(f"{name} is a transcoder; stitching is defined for SAEs only.")


@torch.no_grad()
def stitch_path(
    small_sae: SparseAutoencoder,
    large_sae: SparseAutoencoder,
    inputs: np.ndarray | Tensor,
    threshold: float = 0.7,
) -> StitchPath:
    """Walk from ``small_sae`` to ``large_sae`` by adding novel and swapping matched latents.

    Parameters
    ----------
    small_sae, large_sae : SparseAutoencoder
        Two SAEs (not transcoders) trained on the same activations (same ``d_in``).
    inputs : array, shape (n, d_in)
        Raw activation rows to measure FVU and L0 on (held-out rows of both SAEs).
    threshold : float
        Cosine for a reconstruction latent (see :func:`classify_latents`).

    Returns
    -------
    StitchPath
        Novel latents are added in order of decreasing mean squared contribution on ``inputs``,
        then reconstruction groups are swapped in order of their first large latent.
    """
    _check_stitchable("small_sae", small_sae)
    _check_stitchable("large_sae", large_sae)
    if small_sae.d_in != large_sae.d_in:
        raise InvalidInputError(
            f"small_sae has d_in={small_sae.d_in} but large_sae has d_in={large_sae.d_in}."
        )
    x = inputs.detach().cpu() if isinstance(inputs, Tensor) else torch.as_tensor(inputs)
    if x.ndim != 2 or x.shape[1] != small_sae.d_in or x.shape[0] < 2:
        raise InvalidInputError(
            f"inputs must be (n >= 2, {small_sae.d_in}) rows; got {tuple(x.shape)}."
        )
    if not torch.isfinite(x).all():
        raise InvalidInputError("inputs contain NaN or infinite values.")
    match = classify_latents(small_sae.W_dec, large_sae.W_dec, threshold)
    x = x.double()
    parts = []
    for sae in (small_sae, large_sae):
        was_training = sae.training
        sae.eval()
        z = sae.encode(x.to(sae.W_enc)).double().cpu()
        sae.train(was_training)
        scale = float(sae.output_scale)
        parts.append(
            (z, sae.W_dec.detach().double().cpu() / scale, sae.b_dec.double().cpu() / scale)
        )
    (z_s, dec_s, bias_s), (z_l, dec_l, bias_l) = parts
    total_variance = float(((x - x.mean(0)) ** 2).sum())

    novel = np.flatnonzero(match.novel)
    energy = (z_l[:, novel] ** 2).mean(0) * (dec_l[novel] ** 2).sum(1)
    novel = novel[np.argsort(-energy.numpy(), kind="stable")]
    groups = _reconstruction_groups(
        _unit("small_decoder", small_sae.W_dec),
        _unit("large_decoder", large_sae.W_dec),
        ~match.novel,
        match.threshold,
    )
    steps: list[tuple[str, list[int], list[int]]] = [("novel", [int(j)], []) for j in novel]
    steps += [("swap", large, small) for small, large in groups]
    # small latents no group claims are removed with the last step, so the path ends at large
    claimed = {i for small, _ in groups for i in small}
    leftover = [i for i in range(small_sae.n_latents) if i not in claimed]
    if leftover:
        if steps:
            kind, add, remove = steps[-1]
            steps[-1] = (kind, add, remove + leftover)
        else:
            steps.append(("swap", [], leftover))

    recon = z_s @ dec_s
    active = (z_s != 0).double().sum(1)
    fvu, l0 = [], []

    def record(t: float) -> None:
        bias = (1 - t) * bias_s + t * bias_l
        fvu.append(float(((x - recon - bias) ** 2).sum()) / total_variance)
        l0.append(float(active.mean()))

    record(0.0)
    for n, (_, add, remove) in enumerate(steps, start=1):
        if add:
            recon += z_l[:, add] @ dec_l[add]
            active += (z_l[:, add] != 0).double().sum(1)
        if remove:
            recon -= z_s[:, remove] @ dec_s[remove]
            active -= (z_s[:, remove] != 0).double().sum(1)
        record(n / len(steps))
    return StitchPath(
        fvu=np.asarray(fvu),
        l0=np.asarray(l0),
        kinds=["small"] + [kind for kind, _, _ in steps],
        added=[[]] + [add for _, add, _ in steps],
        removed=[[]] + [remove for _, _, remove in steps],
        match=match,
    )
