"""Planted-dictionary ground truth for SAEs and transcoders.

Owns the synthetic activations whose dictionary is known — sparse non-negative combinations of
unit atoms in superposition (more atoms than dimensions) — the recovery score of a learned
decoder against the planted atoms, and two planted hierarchies: atoms composed of shared parts
(:func:`make_composed_atoms`, the truth for meta-SAEs) and parent/child features that always
co-occur (:func:`make_planted_hierarchy`, the setting of feature absorption).
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


@dataclass
class ComposedAtoms:
    """A planted two-level dictionary: every observed atom is the sum of a few shared parts.

    Attributes
    ----------
    atoms : ndarray, shape (n_atoms, d), float32
        Unit-norm observed atoms, ``normalise(composition @ parts)``.
    parts : ndarray, shape (n_parts, d), float32
        Unit-norm shared parts (the planted meta-latents).
    composition : ndarray, shape (n_atoms, n_parts), bool
        Which parts each atom is made of (exactly ``parts_per_atom`` per row).
    """

    atoms: np.ndarray
    parts: np.ndarray
    composition: np.ndarray


def make_composed_atoms(
    n_atoms: int = 512, n_parts: int = 48, d: int = 64, parts_per_atom: int = 3, seed: int = 0
) -> ComposedAtoms:
    """Observed atoms built from shared parts — the planted truth for meta-SAEs.

    Each atom sums ``parts_per_atom`` distinct random parts (equal weights) and is rescaled to unit
    norm, so atoms that share a part share a direction; a meta-SAE trained on the atoms (or on
    an SAE's decoder rows that recovered them) should recover the parts.

    Parameters
    ----------
    n_atoms : int
        Number of observed atoms (distinct compositions are not enforced).
    n_parts : int
        Number of shared parts, unit random directions in ``d`` dimensions.
    parts_per_atom : int
        Parts per atom, in 1..n_parts.
    seed : int
    """
    if not 0 < parts_per_atom <= n_parts:
        raise InvalidInputError(
            f"parts_per_atom must be in 1..n_parts={n_parts}; got {parts_per_atom}."
        )
    if n_atoms < 1 or d < 1:
        raise InvalidInputError(f"n_atoms and d must be >= 1; got {n_atoms}, {d}.")
    rng = np.random.default_rng(seed)
    parts = _unit_rows(rng, n_parts, d)
    chosen = np.argpartition(rng.random((n_atoms, n_parts)), parts_per_atom - 1, axis=1)
    composition = np.zeros((n_atoms, n_parts), dtype=bool)
    np.put_along_axis(composition, chosen[:, :parts_per_atom], True, axis=1)
    atoms = composition.astype(np.float64) @ parts
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    return ComposedAtoms(
        atoms=atoms.astype(np.float32), parts=parts.astype(np.float32), composition=composition
    )


@dataclass
class PlantedHierarchy:
    """Activations with a planted parent/child hierarchy (the setting of feature absorption).

    A row holds active *items*; an item is a parent (a first letter, say) and, with probability
    ``child_probability``, one of that parent's children (a word starting with it). An active
    child always comes with its parent: ``x = Σ a·parent + Σ b·child``.

    Attributes
    ----------
    inputs : ndarray, shape (n, d), float32
    parents : ndarray, shape (n_parents, d), float32
        Unit-norm parent directions (the ground-truth probes).
    children : ndarray, shape (n_parents * children_per_parent, d), float32
        Unit-norm child directions; child ``c`` belongs to parent ``c // children_per_parent``.
    parent_codes : ndarray, shape (n, n_parents), float32
        Coefficient of each parent (0 when absent).
    child_codes : ndarray, shape (n, n_children), float32
    children_per_parent : int
    """

    inputs: np.ndarray
    parents: np.ndarray
    children: np.ndarray
    parent_codes: np.ndarray
    child_codes: np.ndarray
    children_per_parent: int

    def child_parent(self) -> np.ndarray:
        """Parent index of each child, shape (n_children,), int64."""
        return np.arange(len(self.children)) // self.children_per_parent


def make_planted_hierarchy(
    n_samples: int,
    d: int = 64,
    n_parents: int = 8,
    children_per_parent: int = 4,
    n_active: int = 2,
    child_probability: float = 0.5,
    magnitude: tuple[float, float] = (0.5, 1.5),
    seed: int = 0,
) -> PlantedHierarchy:
    """Rows of ``n_active`` distinct parents, each with one of its children half the time.

    All parent and child directions are orthonormal (``n_parents * (1 + children_per_parent) <=
    d``) so that the only entanglement is the planted co-occurrence: a child never fires
    without its parent.

    Parameters
    ----------
    n_samples : int
    d : int
        Width of the rows.
    n_parents, children_per_parent : int
    n_active : int
        Distinct parents per row, in 1..n_parents.
    child_probability : float
        Chance that an active parent brings one of its children (chosen uniformly), in [0, 1].
    magnitude : (low, high)
        Parent and child coefficients are uniform in this range.
    seed : int
    """
    n_children = n_parents * children_per_parent
    if n_parents + n_children > d:
        raise InvalidInputError(
            f"n_parents * (1 + children_per_parent) = {n_parents + n_children} directions do "
            f"not fit orthogonally in d={d}."
        )
    if not 0 < n_active <= n_parents:
        raise InvalidInputError(f"n_active must be in 1..n_parents={n_parents}; got {n_active}.")
    if not 0.0 <= child_probability <= 1.0:
        raise InvalidInputError(f"child_probability must be in [0, 1]; got {child_probability}.")
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    directions = basis.T[: n_parents + n_children]
    parents, children = directions[:n_parents], directions[n_parents:]
    chosen = np.argpartition(rng.random((n_samples, n_parents)), n_active - 1, axis=1)
    chosen = chosen[:, :n_active]
    parent_codes = np.zeros((n_samples, n_parents))
    np.put_along_axis(
        parent_codes, chosen, rng.uniform(*magnitude, size=(n_samples, n_active)), axis=1
    )
    has_child = rng.random((n_samples, n_active)) < child_probability
    child = chosen * children_per_parent + rng.integers(0, children_per_parent, chosen.shape)
    child_codes = np.zeros((n_samples, n_children))
    rows = np.repeat(np.arange(n_samples)[:, None], n_active, axis=1)
    child_codes[rows[has_child], child[has_child]] = rng.uniform(
        *magnitude, size=int(has_child.sum())
    )
    inputs = parent_codes @ parents + child_codes @ children
    f32 = np.float32
    return PlantedHierarchy(
        inputs=inputs.astype(f32),
        parents=parents.astype(f32),
        children=children.astype(f32),
        parent_codes=parent_codes.astype(f32),
        child_codes=child_codes.astype(f32),
        children_per_parent=int(children_per_parent),
    )
