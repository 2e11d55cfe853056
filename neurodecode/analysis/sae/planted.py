"""Planted-dictionary ground truth for SAEs and transcoders.

Owns the synthetic activations whose dictionary is known — sparse non-negative combinations of
unit atoms in superposition (more atoms than dimensions) — and the recovery score of a learned
decoder against the planted atoms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from neurodecode.validation import InvalidInputError


@dataclass
class PlantedActivations:
    """Activations generated from a known dictionary.

    Attributes
    ----------
    inputs : ndarray, shape (n, d), float32
        ``codes @ atoms`` (+ noise).
    atoms : ndarray, shape (n_atoms, d), float32
        Unit-norm planted atoms.
    codes : ndarray, shape (n, n_atoms), float32
        Sparse non-negative coefficients (exactly ``n_active`` non-zero per row).
    targets : ndarray, shape (n, d_out), float32, optional
        ``codes @ output_atoms`` for a transcoder task.
    output_atoms : ndarray, shape (n_atoms, d_out), float32, optional
        Unit-norm atoms of the target side.
    """

    inputs: np.ndarray
    atoms: np.ndarray
    codes: np.ndarray
    targets: np.ndarray | None = None
    output_atoms: np.ndarray | None = None


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    rows = rng.standard_normal((n, d))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def make_planted_activations(
    n_samples: int,
    d: int = 64,
    n_atoms: int = 256,
    n_active: int = 5,
    magnitude: tuple[float, float] = (0.5, 1.5),
    noise: float = 0.0,
    d_out: int | None = None,
    seed: int = 0,
) -> PlantedActivations:
    """Sparse combinations of ``n_active`` random unit atoms out of ``n_atoms`` in ``d`` dims.

    Parameters
    ----------
    n_samples : int
        Rows to draw.
    magnitude : (low, high)
        Active coefficients are uniform in this range.
    noise : float
        Standard deviation of isotropic Gaussian noise added to ``inputs``.
    d_out : int, optional
        Also draw a second atom set of width ``d_out`` and return ``targets = codes @
        output_atoms`` — a planted sparse map for transcoders.
    seed : int
    """
    if not 0 < n_active <= n_atoms:
        raise InvalidInputError(f"n_active must be in 1..n_atoms={n_atoms}; got {n_active}.")
    rng = np.random.default_rng(seed)
    atoms = _unit_rows(rng, n_atoms, d)
    output_atoms = None if d_out is None else _unit_rows(rng, n_atoms, d_out)
    # n_active distinct atoms per row: argsort of random keys, first n_active columns
    chosen = np.argpartition(rng.random((n_samples, n_atoms)), n_active - 1, axis=1)[:, :n_active]
    codes = np.zeros((n_samples, n_atoms))
    values = rng.uniform(magnitude[0], magnitude[1], size=(n_samples, n_active))
    np.put_along_axis(codes, chosen, values, axis=1)
    inputs = codes @ atoms + noise * rng.standard_normal((n_samples, d))
    targets = None if output_atoms is None else codes @ output_atoms
    f32 = np.float32
    return PlantedActivations(
        inputs=inputs.astype(f32),
        atoms=atoms.astype(f32),
        codes=codes.astype(f32),
        targets=None if targets is None else targets.astype(f32),
        output_atoms=None if output_atoms is None else output_atoms.astype(f32),
    )


def dictionary_recovery(
    true_atoms: np.ndarray | Tensor, learned_atoms: np.ndarray | Tensor, threshold: float = 0.9
) -> float:
    """Fraction of planted atoms matched at cosine ≥ ``threshold`` by some learned atom.

    Parameters
    ----------
    true_atoms : array, shape (n_atoms, d)
    learned_atoms : array, shape (n_latents, d)
        E.g. an SAE's decoder rows ``W_dec``.
    """
    true = torch.as_tensor(np.asarray(true_atoms, dtype=np.float64))
    learned = torch.as_tensor(
        learned_atoms.detach().cpu().double().numpy()
        if isinstance(learned_atoms, Tensor)
        else np.asarray(learned_atoms, dtype=np.float64)
    )
    if true.shape[1] != learned.shape[1]:
        raise InvalidInputError(
            f"true_atoms {tuple(true.shape)} and learned_atoms {tuple(learned.shape)} must share "
            "their second (feature) dimension."
        )
    true = true / torch.linalg.vector_norm(true, dim=1, keepdim=True).clamp_min(1e-12)
    learned = learned / torch.linalg.vector_norm(learned, dim=1, keepdim=True).clamp_min(1e-12)
    best = (true @ learned.T).max(dim=1).values
    return float((best >= threshold).double().mean())
