"""``neurodecode simulate {fmri,meg} --config FILE --out DIR [--set KEY=VALUE ...]``."""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import yaml

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
        from neurodecode.sim.summary import fmri_summary

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
