"""``neurodecode simulate {fmri,meg} --config FILE --out DIR [--set KEY=VALUE ...]``."""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import h5py
import numpy as np
import yaml

from neurodecode.demo.ladder import oracle_retrieval
from neurodecode.sim.fmri import betas_dir
from neurodecode.sim.ground_truth import read_ground_truth, read_subject_truth
from neurodecode.validation import InvalidInputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``neurodecode simulate``."""
    parser.add_argument("modality", choices=["fmri", "meg"], help="what to simulate")
    parser.add_argument(
        "--config", required=True, type=Path, help="simulation YAML, e.g. datasets/sim/default.yaml"
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (absent or empty)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config setting (YAML value), e.g. --set n_train_per_subject=2250",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def apply_overrides(config: object, overrides: list[str]) -> None:
    """Set ``KEY=VALUE`` pairs (values parsed as YAML) on a config dataclass, in place.

    Raises
    ------
    InvalidInputError
        A pair without ``=`` or a key the config does not have.
    """
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"--set {item!r}: expected KEY=VALUE.")
        if not hasattr(config, key):
            raise InvalidInputError(
                f"--set {item!r}: {type(config).__name__} has no setting {key!r}."
            )
        setattr(config, key, yaml.safe_load(value))


def run(args: argparse.Namespace) -> int:
    """Write the simulated data set and print a summary of what was written."""
    start = time.perf_counter()
    if args.out.is_dir() and not any(args.out.iterdir()):
        args.out.rmdir()  # an empty folder made for the data set is as good as none
    if args.modality == "fmri":
        from neurodecode.sim.fmri import FMRISimConfig, simulate_fmri

        config = FMRISimConfig.from_yaml(args.config)
        apply_overrides(config, args.set)
        out = simulate_fmri(config, args.out, progress=not args.quiet)
        print(fmri_summary(out))
    else:
        from neurodecode.sim.meg import MEGSimConfig, simulate_meg

        config = MEGSimConfig.from_yaml(args.config)
        apply_overrides(config, args.set)
        out = simulate_meg(config, args.out)
        print(f"wrote THINGS-MEG layout under {out}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB
    print(f"done in {time.perf_counter() - start:.1f} s, peak memory {peak:.2f} GiB")
    return 0


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
