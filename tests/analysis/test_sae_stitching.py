import numpy as np
import pytest

from neurodecode.analysis.sae.stitching import classify_latents
from neurodecode.validation import InvalidInputError


def test_planted_novel_latents_are_found():
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.standard_normal((64, 64)))
    small = basis[:10] * rng.uniform(0.5, 2.0, size=(10, 1))  # scale must not matter
    # large = noisy copies of 6 small atoms + 8 directions orthogonal to all small atoms
    copies = basis[[0, 2, 3, 5, 7, 9]] + 0.05 * rng.standard_normal((6, 64))
    large = np.concatenate([copies, basis[20:28]])
    match = classify_latents(small, large, threshold=0.7)
    assert match.novel.tolist() == [False] * 6 + [True] * 8
    assert match.best_small[:6].tolist() == [0, 2, 3, 5, 7, 9]
    assert match.novel_fraction == pytest.approx(8 / 14)
    assert np.all(match.max_cosine[6:] < 0.1)


def test_bad_inputs():
    with pytest.raises(InvalidInputError, match="second"):
        classify_latents(np.ones((3, 4)), np.ones((3, 5)))
    with pytest.raises(InvalidInputError, match="threshold"):
        classify_latents(np.ones((3, 4)), np.ones((3, 4)), threshold=1.5)
    with pytest.raises(InvalidInputError, match="NaN"):
        classify_latents(np.full((3, 4), np.nan), np.ones((3, 4)))


def _relu_sae(directions: np.ndarray):
    """A hand-built ReLU SAE: encoder = decoder = the given unit directions, no biases."""
    import torch

    from neurodecode.analysis.sae.core import create_sae

    sae = create_sae("relu_l1", directions.shape[1], directions.shape[0])
    with torch.no_grad():
        sae.W_dec.copy_(torch.from_numpy(directions).float())
        sae.W_enc.copy_(torch.from_numpy(directions.T).float())
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


def _orthonormal_planted(n: int = 3000, d: int = 32, n_atoms: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    atoms = np.linalg.qr(rng.standard_normal((d, d)))[0].T[:n_atoms]
    codes = rng.uniform(0.5, 1.5, (n, n_atoms)) * (rng.random((n, n_atoms)) < 0.15)
    return atoms, (codes @ atoms).astype(np.float32)


def test_stitching_interpolates_fvu_and_l0_monotonically_on_planted_atoms():
    from neurodecode.analysis.sae.stitching import stitch_path

    atoms, x = _orthonormal_planted()
    # small SAE: atoms 0..9 exactly, plus atoms 10 and 11 merged into one latent
    merged = (atoms[10] + atoms[11]) / np.sqrt(2)
    small = _relu_sae(np.concatenate([atoms[:10], merged[None]]))
    large = _relu_sae(atoms)  # all 24 atoms: 12 novel (12..23), 10 copies, 2 split from `merged`
    path = stitch_path(small, large, x, threshold=0.7)
    assert path.kinds.count("novel") == 12
    assert path.kinds.count("swap") == 11  # ten copies and one (merged -> 10, 11) group
    assert [10] in path.removed and sorted(path.added[path.removed.index([10])]) == [10, 11]
    assert path.is_monotone()
    # the ends are the two SAEs themselves
    import torch

    from neurodecode.analysis.sae.metrics import fraction_of_variance_unexplained

    xt = torch.from_numpy(x)
    with torch.no_grad():
        for sae, end in ((small, 0), (large, -1)):
            fvu = fraction_of_variance_unexplained(xt, sae(xt).output)
            assert path.fvu[end] == pytest.approx(fvu, abs=1e-9)
            assert path.l0[end] == pytest.approx(float((sae.encode(xt) > 0).sum(1).float().mean()))
    assert path.fvu[-1] == pytest.approx(0.0, abs=1e-9)  # the large SAE knows every atom
    # each novel latent strictly lowers FVU and raises L0; a copy swap changes neither
    novel = np.array([kind == "novel" for kind in path.kinds])
    assert np.all(np.diff(path.fvu)[novel[1:]] < 0)
    assert np.all(np.diff(path.l0)[novel[1:]] > 0)
    copies = [n for n, (a, r) in enumerate(zip(path.added, path.removed)) if len(a) == 1 and r]
    assert len(copies) == 10
    for n in copies:
        assert path.fvu[n] == pytest.approx(path.fvu[n - 1], abs=1e-9)
    # novel latents come in order of their contribution: the first one lowers FVU the most
    drops = -np.diff(path.fvu)[novel[1:]]
    assert np.all(np.diff(drops) <= 1e-9)


def test_stitch_path_refuses_transcoders_and_width_mismatch():
    from neurodecode.analysis.sae.core import create_sae
    from neurodecode.analysis.sae.stitching import stitch_path

    small = create_sae("topk", 8, 16, k=2)
    with pytest.raises(InvalidInputError, match="transcoder"):
        stitch_path(small, create_sae("topk", 8, 32, k=2, transcoder=True), np.ones((4, 8)))
    with pytest.raises(InvalidInputError, match="d_in"):
        stitch_path(small, create_sae("topk", 6, 32, k=2), np.ones((4, 8)))
    with pytest.raises(InvalidInputError, match="inputs"):
        stitch_path(small, create_sae("topk", 8, 32, k=2), np.ones((4, 7)))
