"""A plain-text summary of a simulated data set, read back from its files."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from neurodecode.sim.fmri import betas_dir


def fmri_summary(root: str | Path, with_oracle: bool = True) -> str:
    """Table of subjects, voxels, trials, ROI sizes, noise ceilings and the oracle's top-1."""
    root = Path(root)
    lines = [f"Simulated NSD-layout data set at {root}", ""]
    with h5py.File(root / "ground_truth.h5", "r") as gt:
        config = json.loads(gt.attrs["config"])
        subjects = [k for k in gt if k.startswith("subj")]
        header = f"{'subject':<8} {'voxels':>7} {'sessions':>8} {'trials':>7} {'mean NC %':>9}"
        header += f" {'oracle top-1':>12}" if with_oracle else ""
        lines += [header, "-" * len(header)]
        rois = {}
        for subject in subjects:
            g = gt[subject]
            files = sorted(betas_dir(root, subject).glob("betas_session*.hdf5"))
            n_trials = 0
            for path in files:
                with h5py.File(path, "r") as f:
                    n_trials += f["betas"].shape[0]
            row = (
                f"{subject:<8} {len(g['voxel_ijk']):>7} {len(files):>8} {n_trials:>7} "
                f"{np.mean(g['noise_ceiling'][:]):>9.1f}"
            )
            if with_oracle:
                from neurodecode.sim.oracle import oracle_retrieval

                n_way = min(300, config["n_shared"])
                metrics = oracle_retrieval(root, subject, n_way=n_way)
                row += f" {metrics['brain_to_image_top1']:>8.3f} ({n_way}-way)"
            lines.append(row)
            names, counts = np.unique(g["roi"][:].astype(str), return_counts=True)
            rois[subject] = dict(zip(names, counts))
    lines += [
        "",
        f"images: {config['n_shared']} shared (test) + "
        f"{config['n_train_per_subject']} per subject (train), {config['n_repeats']} repeats",
    ]
    lines.append("ROI voxels (" + ", ".join(subjects) + "):")
    names = sorted({n for r in rois.values() for n in r if n})
    lines.append(
        "  " + "  ".join(f"{n}={'/'.join(str(rois[s].get(n, 0)) for s in subjects)}" for n in names)
    )
    return "\n".join(lines)
