"""SAE latents vs dense activations as encoding models of the simulated cortex.

Runs ``neurodecode analyze sae-encoding`` (:func:`neurodecode.cli.analyze_sae_encoding.
run_sae_encoding`, the settings of ``experiments/analysis_sae_encoding.yaml`` unless overridden)
on one subject of a simulated world: a TopK SAE on the sim-clip image embeddings of the training
images, ridge from the dense embeddings, ridge from the latents and banded ridge on both, scored
on the repeat-averaged shared images. Reports per ROI the pooled R²/NC of the three models, the
shared and unique variance over NC, and, from the simulation's ground truth (the check only,
the analysis never reads it), the category that each category ROI's top latent (highest mean
encoding weight) fires for most; ``category_rois_correct`` is the fraction of category ROIs whose
top latent prefers the ROI's planted category.

Run: ``.venv/bin/python -m benchmarks.bench_sae_encoding [--root data/sim/default]
[--features data/sim/default-features.h5]``. Writes ``benchmarks/results/sae_encoding.json`` and
prints a table. The feature store is copied to a temporary folder first (read-only use).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "sae_encoding.json"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from neurodecode.analysis.sae.core import SparseAutoencoder
    from neurodecode.analysis.sae.training import encode_rows
    from neurodecode.analysis.selectivity import unit_label_preference
    from neurodecode.cli.analyze_sae_encoding import run_sae_encoding
    from neurodecode.features.store import FeatureStore
    from neurodecode.sim.brain import CATEGORY_ROIS
    from neurodecode.sim.stimuli import CATEGORIES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO / "data/sim/default")
    parser.add_argument("--features", type=Path, default=REPO / "data/sim/default-features.h5")
    parser.add_argument("--subject", default="subj01")
    parser.add_argument("--n-latents", type=int, default=None)
    parser.add_argument("--k", type=int, default=None)
    parser.add_argument("--sae-steps", type=int, default=None)
    parser.add_argument("--band-scales", type=float, nargs="+", default=None)
    parser.add_argument("--surface", default="none", choices=["auto", "box", "none"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    config = yaml.safe_load((REPO / "experiments/analysis_sae_encoding.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "features.h5"
        shutil.copy(args.features, store)
        config["run_dir"] = str(Path(tmp) / "run")
        config["data"] = {**config["data"], "root": str(args.root), "subject": args.subject}
        config["features"] = {**config["features"], "path": str(store)}
        if args.n_latents is not None:
            config["sae"]["n_latents"] = args.n_latents
        if args.k is not None:
            config["sae"]["hyperparameters"] = {"k": args.k}
        if args.sae_steps is not None:
            config["sae"]["steps"] = args.sae_steps
        if args.band_scales is not None:
            config["encoding"]["band_scales"] = args.band_scales
        config["maps"] = {**config["maps"], "surface": args.surface}
        t0 = time.perf_counter()
        run_dir = run_sae_encoding(config)
        seconds = time.perf_counter() - t0
        report = json.loads((run_dir / "sae_encoding.json").read_text())
        cfg = config["features"]
        fs = FeatureStore(store)
        with h5py.File(args.root / "ground_truth.h5", "r") as f:
            category = f["category"][:].astype(str)
        dense = fs.read(cfg["model_name"], cfg["layer"], np.arange(len(category)))
        sae = SparseAutoencoder.from_pretrained(run_dir / "sae")
        latents = encode_rows(sae, torch.from_numpy(dense.astype(np.float32))).numpy()
    _, _, preferred = unit_label_preference(latents, category, CATEGORIES)
    rois = report["rois"]
    per_roi = {}
    correct = []
    for name, row in rois.items():
        entry = {
            k: round(v, 4) if isinstance(v, float) else v
            for k, v in row.items()
            if not k.startswith("split_")
        }
        if name in report["top_latents"]:
            top = report["top_latents"][name][0]["latent"]
            entry["top_latent"] = top
            entry["top_latent_category"] = str(preferred[top])
            if name in CATEGORY_ROIS:
                entry["planted_category"] = CATEGORY_ROIS[name][0]
                correct.append(bool(preferred[top] == CATEGORY_ROIS[name][0]))
        per_roi[name] = entry
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads (shared, contended)",
        "root": str(args.root),
        "subject": args.subject,
        "sae": {**config["sae"], "l0": report["sae_l0"], "dead": report["sae_dead_fraction"]},
        "band_scales": config["encoding"]["band_scales"],
        "dense_width": report["dense_width"],
        "seconds": round(seconds, 1),
        "category_rois_correct": float(np.mean(correct)) if correct else float("nan"),
        "n_category_rois": len(correct),
        "rois": per_roi,
        "units": report["units"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(
        f"{'roi':10s} {'n':>5s} {'NC':>5s} {'dense':>6s} {'sae':>6s} {'joint':>6s} "
        f"{'shared':>6s} {'u_dns':>6s} {'u_sae':>6s}  top latent (category)"
    )
    for name, r in per_roi.items():
        print(
            f"{name:10s} {r['n_voxels']:5d} {r['noise_ceiling']:5.2f} "
            f"{r['r2_over_nc_dense']:6.3f} {r['r2_over_nc_sae']:6.3f} {r['r2_over_nc_joint']:6.3f} "
            f"{r['shared_over_nc']:6.3f} {r['unique_dense_over_nc']:6.3f} "
            f"{r['unique_sae_over_nc']:6.3f}  {r.get('top_latent', '')} "
            f"({r.get('top_latent_category', '')})"
        )
    print(
        f"category ROIs whose top latent prefers their category: {results['category_rois_correct']:.2f}"
        f" of {len(correct)}; {seconds:.0f} s"
    )
    return results


if __name__ == "__main__":
    main()
