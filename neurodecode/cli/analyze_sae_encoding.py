"""Runner of ``neurodecode analyze sae-encoding --config FILE``: SAE latents vs dense activations
as voxel-wise encoding models, with banded ridge and variance partitioning per ROI.

One subject of an NSD-layout data set (real or simulated) is read as in
:mod:`neurodecode.cli.analyze_cortex`; the *dense* features are one layer's activations of every
stimulus (a FeatureStore entry, or sim-clip's image embeddings), and a sparse autoencoder is
trained on the training images' rows of that layer (or loaded). Both spaces encode every voxel
alone and jointly (:func:`neurodecode.analysis.sae_encoding.encode_two_bands`). Config (unknown
keys are errors)::

    run_dir: runs/analysis_sae_encoding
    seed: 0
    data: {root: data/sim/default, subject: subj01, roi: nsdgeneral, sessions: null}
    features:
      source: feature_store     # feature_store | sim_clip
      path: data/sim/default-features.h5
      model_name: sim-clip-default
      layer: image
      preset: default           # sim_clip preset
    encoding: {n_folds: 5, train_on: average, band_scales: [0.125, ..., 8], alphas: null}
    sae: {architecture: topk, n_latents: 512, hyperparameters: {k: 16}, steps: 2000,
          batch_size: 256, lr: 0.001, sae_path: null}
    maps: {surface: auto, top_latents: 5}   # surface: auto | box | data_affine | none

Writes ``config.json``, ``sae/`` (when trained here), ``voxels.csv`` (per voxel: ROI, NC, R² of
each model, the partition and split), ``sae_encoding.json`` (per ROI: R²/NC of dense, SAE and
joint, shared and unique variance over NC, top latents by mean encoding weight),
``latent_roi_weights.npy`` ((n_latents, n_rois), ROI order in the JSON), ``partition.png`` and
maps (slice mosaics; fsaverage surfaces through nilearn for ``surface`` ``box`` (the brain's
bounding box stretched onto MNI152, for volumes without a registration, as the simulated
worlds), ``data_affine`` (the data's own affine, when it is MNI) or ``auto`` (``box`` on a
simulated world, none otherwise)).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.analysis.sae_encoding import DEFAULT_BAND_SCALES
from neurodecode.cli.analyze_cortex import _Subject, _write_csv
from neurodecode.cli.config import section
from neurodecode.validation import InvalidInputError, check_keys, check_option

BANDS = ("dense", "sae")

SECTIONS: dict[str, dict[str, Any]] = {
    "data": {"root": None, "subject": "subj01", "roi": "nsdgeneral", "sessions": None},
    "features": {
        "source": "feature_store",
        "preset": "default",
        "path": None,
        "model_name": None,
        "layer": None,
    },
    "encoding": {
        "n_folds": 5,
        "train_on": "average",
        "band_scales": list(DEFAULT_BAND_SCALES),
        "alphas": None,
    },
    "sae": {
        "architecture": "topk",
        "n_latents": 512,
        "hyperparameters": {"k": 16},
        "steps": 2000,
        "batch_size": 256,
        "lr": 1e-3,
        "sae_path": None,
    },
    "maps": {"surface": "auto", "top_latents": 5},
}


def _config(config: dict[str, Any], where: str) -> dict[str, Any]:
    check_keys(where, config, ["run_dir", "seed", *SECTIONS])
    cfg: dict[str, Any] = {"run_dir": config.get("run_dir"), "seed": int(config.get("seed", 0))}
    if not cfg["run_dir"]:
        raise InvalidInputError(f"{where}: run_dir is missing; expected a folder for the outputs.")
    for name, defaults in SECTIONS.items():
        cfg[name] = section(config, name, defaults, where)
    if not cfg["data"]["root"]:
        raise InvalidInputError(f"{where}: data.root is missing; expected an NSD-layout folder.")
    check_option("features.source", cfg["features"]["source"], ("feature_store", "sim_clip"))
    check_option("encoding.train_on", cfg["encoding"]["train_on"], ("average", "trials"))
    check_option("maps.surface", cfg["maps"]["surface"], ("auto", "box", "data_affine", "none"))
    if not isinstance(cfg["sae"]["hyperparameters"] or {}, dict):
        raise InvalidInputError(
            f"{where}: sae.hyperparameters must be a mapping (e.g. {{k: 16}}); "
            f"got {cfg['sae']['hyperparameters']!r}."
        )
    return cfg


def _sae(cfg: dict[str, Any], features: np.ndarray, train_rows: np.ndarray, run_dir: Path):
    import torch

    from neurodecode.analysis.sae.core import SparseAutoencoder, create_sae
    from neurodecode.analysis.sae.training import ArrayActivationDataModule, train_sae

    s = cfg["sae"]
    if s["sae_path"]:
        sae = SparseAutoencoder.from_pretrained(s["sae_path"])
        if sae.d_in != features.shape[1]:
            raise InvalidInputError(
                f"sae.sae_path {s['sae_path']} takes {sae.d_in}-D inputs; the layer's "
                f"activations are {features.shape[1]}-D."
            )
        return sae
    sae = create_sae(
        s["architecture"], features.shape[1], int(s["n_latents"]), **(s["hyperparameters"] or {})
    )
    rows = torch.from_numpy(np.ascontiguousarray(features[train_rows]))
    train_sae(
        sae,
        ArrayActivationDataModule(rows.numpy(), batch_size=int(s["batch_size"])),
        steps=int(s["steps"]),
        lr=float(s["lr"]),
        seed=cfg["seed"],
    )
    sae.save_pretrained(run_dir / "sae")
    return sae


def _surface_affine(cfg: dict[str, Any], subject: _Subject) -> np.ndarray | None:
    mode = cfg["maps"]["surface"]
    if mode == "auto":
        mode = "box" if subject.truth is not None else "none"
    if mode == "none":
        return None
    if mode == "data_affine":
        return np.asarray(subject.trials.info["affine"], dtype=float)
    from neurodecode.data.nsd import roi_path
    from neurodecode.data.rois import read_roi_volume
    from neurodecode.plotting.brain_maps import box_to_mni_affine

    labels = read_roi_volume(roi_path(subject.root, subject.subject, "nsdgeneral"), subject.subject)
    return box_to_mni_affine(labels.labels >= 0)


def run_sae_encoding(config: dict[str, Any], config_path: Path | None = None) -> Path:
    """SAE latents vs dense activations: per-voxel and per-ROI partition, latents, maps."""
    import torch

    from neurodecode.analysis.sae.training import encode_rows
    from neurodecode.analysis.sae_encoding import (
        encode_two_bands,
        roi_latent_weights,
        roi_partition_summary,
    )
    from neurodecode.models.ridge import DEFAULT_ALPHAS
    from neurodecode.plotting.brain_maps import (
        plot_slice_mosaic,
        plot_surface_map,
        values_to_nifti,
    )
    from neurodecode.plotting.sae_encoding import plot_variance_partition

    cfg = _config(config, f"sae-encoding config {config_path or ''}".strip())
    run_dir = Path(cfg["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
    subject = _Subject(cfg)
    trials = subject.trials
    n = int(trials.stimulus_id.max() + 1)
    dense = np.asarray(subject.lookup()(np.arange(n)), dtype=np.float32).reshape(n, -1)
    train_ids = np.unique(trials.stimulus_id[trials.split == "train"])
    sae = _sae(cfg, dense, train_ids, run_dir)
    latents = encode_rows(sae, torch.from_numpy(dense)).numpy().astype(np.float64)
    enc = cfg["encoding"]
    result = encode_two_bands(
        trials,
        {"dense": lambda ids: dense[np.asarray(ids)], "sae": lambda ids: latents[np.asarray(ids)]},
        train_on=enc["train_on"],
        band_scales=enc["band_scales"],
        alphas=DEFAULT_ALPHAS if enc["alphas"] is None else enc["alphas"],
        n_folds=int(enc["n_folds"]),
    )
    _write_csv(
        run_dir / "voxels.csv",
        {
            "x": subject.ijk[:, 0],
            "y": subject.ijk[:, 1],
            "z": subject.ijk[:, 2],
            "roi": subject.roi,
            **result.table(),
        },
    )
    summary = roi_partition_summary(result, subject.roi)
    names, weights = roi_latent_weights(result.encoders["sae"].weights, subject.roi)
    np.save(run_dir / "latent_roi_weights.npy", weights)
    n_top = int(cfg["maps"]["top_latents"])
    top = {
        name: [
            {"latent": int(i), "mean_weight": float(weights[i, j])}
            for i in np.argsort(-weights[:, j], kind="stable")[:n_top]
        ]
        for j, name in enumerate(names)
    }
    train_latents = latents[train_ids]
    report = {
        "bands": list(BANDS),
        "dense_width": int(dense.shape[1]),
        "n_latents": int(latents.shape[1]),
        "sae_l0": float((train_latents > 0).sum(1).mean()),
        "sae_dead_fraction": float((train_latents.max(0) <= 0).mean()),
        "rois": summary,
        "roi_order": names,
        "top_latents": top,
        "units": "fractions of variance; *_over_nc = sum over voxels / sum of noise ceilings",
    }
    (run_dir / "sae_encoding.json").write_text(json.dumps(report, indent=2))
    plot_variance_partition(
        summary, BANDS, run_dir / "partition.png", f"{subject.subject}: dense vs SAE latents"
    )
    nc = result.noise_ceiling
    with np.errstate(divide="ignore", invalid="ignore"):
        joint_over_nc = np.where(nc > 0, result.r2["joint"] / nc, np.nan)
    maps = {
        "r2_over_nc_joint": joint_over_nc,
        "unique_dense": result.partition["unique_dense"],
        "unique_sae": result.partition["unique_sae"],
    }
    shape = subject.volume_shape()
    affine = _surface_affine(cfg, subject)
    for key, values in maps.items():
        values = np.clip(np.nan_to_num(values), -1, 1.5)
        plot_slice_mosaic(values, subject.ijk, shape, run_dir / f"{key}.png", key)
        if affine is not None:
            image = values_to_nifti(values, subject.ijk, shape, affine)
            plot_surface_map(image, run_dir / f"{key}_fsaverage.png", f"{key} (fsaverage5)")
    return run_dir
