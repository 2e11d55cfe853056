"""A plain-text summary of a simulated data set, read back from its files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from neurodecode.sim.fmri import betas_dir
from neurodecode.sim.ground_truth import read_ground_truth, read_subject_truth


def fmri_summary(root: str | Path, with_oracle: bool = True) -> str:
    """Table of subjects, voxels, sources, trials, ROI sizes, noise ceilings and the oracle."""
    root = Path(root)
    world = read_ground_truth(root)
    config = world.config
    lines = [f"Simulated NSD-layout data set at {root}", ""]
    header = (
        f"{'subject':<8} {'voxels':>7} {'sources':>7} {'sessions':>8} {'trials':>7} "
        f"{'NC % mean':>9} {'median':>6}"
    )
    header += f" {'oracle top-1 (b->i / i->b)':>27}" if with_oracle else ""
    lines += [header, "-" * len(header)]
    rois = {}
    for subject in world.subjects:
        truth = read_subject_truth(root, subject, responses=False)
        files = sorted(betas_dir(root, subject).glob("betas_session*.hdf5"))
        n_trials = 0
        for path in files:
            with h5py.File(path, "r") as f:
                n_trials += f["betas"].shape[0]
        n_sources = len(truth.sources.ijk) if truth.sources is not None else len(truth.voxel_ijk)
        nc = truth.noise_ceiling
        row = (
            f"{subject:<8} {len(truth.voxel_ijk):>7} {n_sources:>7} {len(files):>8} "
            f"{n_trials:>7} {np.mean(nc):>9.1f} {np.median(nc):>6.1f}"
        )
        if with_oracle:
            from neurodecode.sim.oracle import oracle_retrieval

            n_way = min(300, config["n_shared"])
            metrics = oracle_retrieval(root, subject, n_way=n_way)
            row += (
                f" {metrics['brain_to_image_top1']:>10.3f} / "
                f"{metrics['image_to_brain_top1']:.3f} ({n_way}-way)"
            )
        lines.append(row)
        names, counts = np.unique(truth.roi, return_counts=True)
        rois[subject] = dict(zip(names, counts))
    lines += [
        "",
        f"images: {config['n_shared']} shared (test) + "
        f"{config['n_train_per_subject']} per subject (train), {config['n_repeats']} repeats",
    ]
    lines.append("ROI voxels (" + ", ".join(world.subjects) + "):")
    names = sorted({n for r in rois.values() for n in r if n})
    lines.append(
        "  "
        + "  ".join(
            f"{n}={'/'.join(str(rois[s].get(n, 0)) for s in world.subjects)}" for n in names
        )
    )
    return "\n".join(lines)
