"""``neurodecode simulate {fmri,meg} --config FILE --out DIR``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``neurodecode simulate``."""
    parser.add_argument("modality", choices=["fmri", "meg"], help="what to simulate")
    parser.add_argument(
        "--config", required=True, type=Path, help="simulation YAML, e.g. datasets/sim/default.yaml"
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (must not exist)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Write the simulated data set and print a summary of what was written."""
    start = time.perf_counter()
    if args.modality == "fmri":
        from neurodecode.sim.fmri import FMRISimConfig, simulate_fmri
        from neurodecode.sim.summary import fmri_summary

        config = FMRISimConfig.from_yaml(args.config)
        out = simulate_fmri(config, args.out, progress=not args.quiet)
        print(fmri_summary(out))
    else:
        from neurodecode.sim.meg import MEGSimConfig, simulate_meg

        config = MEGSimConfig.from_yaml(args.config)
        out = simulate_meg(config, args.out)
        print(f"wrote THINGS-MEG layout under {out}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0
