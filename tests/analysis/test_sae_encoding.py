"""SAE latents as encoding models: banded ridge, variance partition, the command on the tiny world."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
import yaml

from neurodecode.analysis.encoding import fit_encoder, r2_score_columns
from neurodecode.analysis.sae_encoding import (
    fit_banded_ridge,
    partition_variance,
    roi_latent_weights,
    split_r2,
)
from neurodecode.validation import InvalidInputError


def test_banded_ridge_with_one_band_is_plain_ridge():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 7)) * rng.uniform(0.5, 3, size=7) + 2.0
    y = x @ rng.normal(size=(7, 5)) + rng.normal(size=(90, 5)) * np.array([0.1, 1, 3, 10, 30])
    banded = fit_banded_ridge({"only": x}, y)
    plain = fit_encoder(x, y)
    assert np.allclose(banded.encoder.weights, plain.weights)
    assert np.array_equal(banded.encoder.alpha, plain.alpha)
    assert np.all(banded.band_scales == 1.0)
    assert np.allclose(banded.predict({"only": x}), plain.predict(x))
    # closed form at each voxel's alpha: (Xs'Xs + alpha I)^-1 Xs'y on centred, standardised X
    xs = (x - banded.encoder.feature_mean) / banded.encoder.feature_scale
    yc = y - y.mean(0)
    for v, alpha in enumerate(banded.encoder.alpha):
        w = np.linalg.solve(xs.T @ xs + alpha * np.eye(7), xs.T @ yc[:, v])
        assert np.allclose(banded.encoder.weights[:, v], w, atol=1e-8)
    assert len(set(banded.encoder.alpha.tolist())) > 1  # the noise levels get different alphas


def test_banded_ridge_recovers_the_planted_band():
    """Voxels driven by a narrow band A, by a wide band B, or by both: the chosen band penalties
    and the held-out partition say which, and banded beats one shared penalty on A's voxels."""
    rng = np.random.default_rng(1)
    n_train, n_test = 300, 300
    n = n_train + n_test
    a = rng.normal(size=(n, 8))
    b = rng.normal(size=(n, 160))
    drive_a = a @ rng.normal(size=(8, 10))
    drive_b = b[:, :20] @ rng.normal(size=(20, 10))  # B's signal lives in few of its columns
    drive_a /= drive_a.std(0)
    drive_b /= drive_b.std(0)
    y = np.hstack([drive_a, drive_b, (drive_a + drive_b) / np.sqrt(2)])
    y = y + 0.6 * rng.normal(size=y.shape)
    train, test = slice(0, n_train), slice(n_train, n)
    bands = {"a": a[train], "b": b[train]}
    model = fit_banded_ridge(bands, y[train])
    only_a, only_b = slice(0, 10), slice(10, 20)
    # B's penalty relative to A's: high where only A drives the voxel, low where only B does
    ratio = model.band_alphas[:, 1] / model.band_alphas[:, 0]
    assert np.median(ratio[only_a]) >= 16 and np.median(ratio[only_b]) <= 1 / 4

    r2 = {
        name: r2_score_columns(y[test], fit_encoder(x[train], y[train]).predict(x[test]))
        for name, x in (("a", a), ("b", b))
    }
    joint = r2_score_columns(y[test], model.predict({"a": a[test], "b": b[test]}))
    parts = partition_variance(r2["a"], r2["b"], joint)
    assert parts["unique_a"][only_a].mean() > 0.5 and abs(parts["unique_b"][only_a].mean()) < 0.05
    assert parts["unique_b"][only_b].mean() > 0.4 and abs(parts["unique_a"][only_b].mean()) < 0.05
    both = slice(20, 30)
    assert parts["unique_a"][both].mean() > 0.2 and parts["unique_b"][both].mean() > 0.15
    split = split_r2(y[test], model.predict_bands({"a": a[test], "b": b[test]}))
    assert split["a"][only_a].mean() > 10 * abs(split["b"][only_a].mean())
    assert split["b"][only_b].mean() > 10 * abs(split["a"][only_b].mean())

    # one penalty for both bands (plain ridge on the same standardised stack) does worse on A's
    # voxels, where B's 160 noise columns need a penalty of their own
    plain = fit_encoder({"a": a[train], "b": b[train]}, y[train])
    plain_r2 = r2_score_columns(y[test], plain.predict(np.hstack([a[test], b[test]])))
    assert joint[only_a].mean() > plain_r2[only_a].mean() + 0.02


def test_partition_and_split_closed_forms():
    parts = partition_variance(np.array([0.3, 0.1]), np.array([0.2, 0.4]), np.array([0.4, 0.45]))
    assert np.allclose(parts["shared"], [0.1, 0.05])
    assert np.allclose(parts["unique_a"], [0.2, 0.05]) and np.allclose(
        parts["unique_b"], [0.1, 0.35]
    )
    rng = np.random.default_rng(2)
    y = rng.normal(size=(50, 3)) + 4.0
    pa, pb = rng.normal(size=(50, 3)), 0.5 * rng.normal(size=(50, 3)) + 1.0
    split = split_r2(y, {"a": pa, "b": pb})
    total = pa + pb
    joint = r2_score_columns(y, total - total.mean(0) + y.mean(0))
    assert np.allclose(split["a"] + split["b"], joint)
    alone = split_r2(y, {"a": pa})["a"]
    assert np.allclose(alone, r2_score_columns(y, pa - pa.mean(0) + y.mean(0)))
    names, w = roi_latent_weights(np.array([[1.0, 3.0, 0.0], [0.0, 2.0, 5.0]]), ["B", "B", "A"])
    assert names == ["A", "B"] and np.allclose(w, [[0.0, 2.0], [5.0, 1.0]])
    with pytest.raises(InvalidInputError, match="expected equal shapes"):
        partition_variance(np.zeros(2), np.zeros(3), np.zeros(2))
    with pytest.raises(InvalidInputError, match="band_scales"):
        fit_banded_ridge({"a": np.zeros((10, 2))}, np.zeros((10, 1)), band_scales=[0.0])
    with pytest.raises(InvalidInputError, match="one per voxel"):
        roi_latent_weights(np.zeros((2, 3)), ["A"])


def _category_store(root, path):
    """Dense features of the tiny world's images with category and colour content, as a CLIP's
    (built from the simulation's recorded stimulus labels, for this test only)."""
    from neurodecode.features.store import FeatureStore
    from neurodecode.sim.stimuli import CATEGORIES, COLOURS

    with h5py.File(root / "ground_truth.h5", "r") as f:
        category = f["category"][:].astype(str)
        colour = f["colour"][:].astype(str) if "colour" in f else None
    n = len(category)
    rng = np.random.default_rng(0)
    colour_index = (
        rng.integers(len(COLOURS), size=n)
        if colour is None
        else np.array([COLOURS.index(c) for c in colour])
    )
    embeds = np.zeros((n, len(CATEGORIES) + len(COLOURS)), dtype=np.float32)
    embeds[np.arange(n), [CATEGORIES.index(c) for c in category]] = 1.0
    embeds[np.arange(n), len(CATEGORIES) + colour_index] = 0.7
    embeds += 0.05 * rng.normal(size=embeds.shape).astype(np.float32)
    FeatureStore(path).fill(
        "cat-colour",
        "embed",
        np.arange(n),
        lambda ids: embeds[[int(i) for i in ids]],
        {"model": "cat-colour"},
        progress=False,
    )
    return category, embeds


def test_command_on_the_tiny_world_category_rois_prefer_their_latents(tiny_nsd, tmp_path):
    from neurodecode.analysis.sae.core import SparseAutoencoder
    from neurodecode.analysis.sae.training import encode_rows
    from neurodecode.analysis.selectivity import unit_label_preference
    from neurodecode.cli.analyze_sae_encoding import run_sae_encoding
    from neurodecode.cli.main import main
    from neurodecode.sim.brain import CATEGORY_ROIS
    from neurodecode.sim.stimuli import CATEGORIES

    category, embeds = _category_store(tiny_nsd, tmp_path / "features.h5")
    config = {
        "run_dir": str(tmp_path / "run"),
        "data": {"root": str(tiny_nsd), "subject": "subj01"},
        "features": {
            "source": "feature_store",
            "path": str(tmp_path / "features.h5"),
            "model_name": "cat-colour",
            "layer": "embed",
        },
        "encoding": {"band_scales": [0.25, 1.0, 4.0]},
        "sae": {"n_latents": 32, "hyperparameters": {"k": 2}, "steps": 120, "lr": 5e-3},
    }
    path = tmp_path / "sae_encoding.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["analyze", "sae-encoding", "--config", str(path)]) == 0
    run_dir = tmp_path / "run"
    report = json.loads((run_dir / "sae_encoding.json").read_text())
    for name in ("partition", "r2_over_nc_joint", "unique_sae", "unique_dense"):
        assert (run_dir / f"{name}.png").stat().st_size > 0
    assert (run_dir / "unique_sae_fsaverage.png").stat().st_size > 0  # simulated: box affine
    rois = report["rois"]
    for row in rois.values():  # the partition adds up, pooled as per voxel
        total = row["shared_over_nc"] + row["unique_dense_over_nc"] + row["unique_sae_over_nc"]
        assert total == pytest.approx(row["r2_over_nc_joint"], abs=1e-9)
    # features with category content only: category ROIs are predicted, early visual ones not
    category_rois = [r for r in ("FFA-1", "OFA", "FBA-1", "PPA", "OWFA") if r in rois]
    early = [r for r in rois if r.startswith(("V1", "V2", "V3", "hV4"))]
    for model in ("dense", "sae", "joint"):
        key = f"r2_over_nc_{model}"
        assert np.mean([rois[r][key] for r in category_rois]) > 0.2
        assert np.mean([rois[r][key] for r in early]) < 0.05

    # ground truth, for the check only: each category ROI's top latent fires for its category
    sae = SparseAutoencoder.from_pretrained(run_dir / "sae")
    latents = encode_rows(sae, torch.from_numpy(embeds)).numpy()
    _, _, preferred = unit_label_preference(latents, category, CATEGORIES)
    checked = [r for r in report["roi_order"] if r in CATEGORY_ROIS and rois[r]["n_voxels"] >= 3]
    correct = [
        preferred[report["top_latents"][r][0]["latent"]] == CATEGORY_ROIS[r][0] for r in checked
    ]
    assert len(checked) >= 6 and np.mean(correct) >= 0.8, list(zip(checked, correct))

    with pytest.raises(InvalidInputError, match=r"unknown keys \['folds'\]"):
        run_sae_encoding({**config, "encoding": {"folds": 3}})
    with pytest.raises(InvalidInputError, match=r"features\.source"):
        run_sae_encoding({**config, "features": {"source": "ground_truth"}})
