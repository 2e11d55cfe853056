"""Meta-SAEs recover the planted parts of composed atoms."""

import numpy as np
import pytest
import torch

from neurodecode.analysis.sae.meta import train_meta_sae
from neurodecode.analysis.sae.planted import dictionary_recovery, make_composed_atoms
from neurodecode.validation import InvalidInputError


def test_composed_atoms_are_unit_sums_of_their_parts():
    planted = make_composed_atoms(n_atoms=50, n_parts=10, d=16, parts_per_atom=3, seed=1)
    assert planted.composition.sum(1).tolist() == [3] * 50
    assert np.allclose(np.linalg.norm(planted.atoms, axis=1), 1, atol=1e-6)
    rebuilt = planted.composition.astype(np.float64) @ planted.parts
    rebuilt /= np.linalg.norm(rebuilt, axis=1, keepdims=True)
    assert np.allclose(rebuilt, planted.atoms, atol=1e-6)
    with pytest.raises(InvalidInputError, match="parts_per_atom"):
        make_composed_atoms(n_parts=4, parts_per_atom=5)


def test_meta_sae_recovers_the_planted_parts_and_a_random_dictionary_does_not():
    planted = make_composed_atoms(n_atoms=300, n_parts=32, d=48, parts_per_atom=3, seed=0)
    # the decoder of an SAE that learned the atoms, with arbitrary row norms
    scales = np.random.default_rng(0).uniform(0.5, 2.0, size=(300, 1))
    result = train_meta_sae(planted.atoms * scales, 64, k=3, steps=600, lr=3e-3)
    assert dictionary_recovery(planted.parts, result.meta_sae.W_dec, 0.9) >= 0.9
    random = torch.randn(64, 48, generator=torch.Generator().manual_seed(0))
    assert dictionary_recovery(planted.parts, random, 0.9) == 0.0
    assert result.fvu < 0.05
    assert 2.5 <= result.l0 <= 3.5
    # meta-latents that match a part are shared by many atoms (each part is in ~28 atoms)
    unit = torch.nn.functional.normalize(result.meta_sae.W_dec.detach(), dim=1).numpy()
    cos = unit @ planted.parts.T
    best_part, is_part = cos.argmax(1), cos.max(1) >= 0.9
    assert np.median(result.usage()[is_part]) >= 5
    # a latent decomposes into (meta-latents matching) exactly its own planted parts
    hits = 0
    for atom in range(300):
        found = {best_part[j] for j, _ in result.decomposition(atom) if is_part[j]}
        hits += found == set(np.flatnonzero(planted.composition[atom]))
    assert hits / 300 >= 0.8


def test_bad_inputs():
    with pytest.raises(InvalidInputError, match="decoder"):
        train_meta_sae(np.ones(5), 4)
    with pytest.raises(InvalidInputError, match="zero rows"):
        train_meta_sae(np.zeros((4, 3)), 4)
